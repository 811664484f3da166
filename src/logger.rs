//! A small logger for the `log` facade.
