//! Transfer records, status machine, manager and pipelines.
