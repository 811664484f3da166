//! The `none` environment: servers without a runtime, always offline.
