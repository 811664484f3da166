//! Transfers: the record and its status machine, the manager, the source
//! and destination pipelines, progress, throttling and the audit log.

pub mod audit;
pub mod destination;
pub mod manager;
pub mod pipe;
pub mod progress;
pub mod record;
pub mod segmented;
pub mod source;
pub mod throttle;

pub use manager::{CancelFilter, Manager, Transfer};
pub use record::{Direction, Progress, Record, Status};
