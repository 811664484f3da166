//! Server registry (persisted), server view, power.
