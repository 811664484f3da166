//! Transfers: the record and its status machine, the manager, the source
//! and destination pipelines, the finish machine (`finish/`), crash state,
//! the token replay guard, metric totals, progress, throttling and the
//! audit log.

pub mod audit;
pub mod destination;
pub mod early_answer;
pub mod extras;
pub mod finish;
pub mod manager;
pub mod persist;
pub mod pipe;
pub mod precopy;
pub mod progress;
pub mod record;
pub mod replay;
pub mod segmented;
pub mod source;
pub mod throttle;
pub mod totals;
pub mod wire;

pub use manager::{CancelFilter, Manager, Transfer};
pub use record::{Direction, Progress, Record, Status};
