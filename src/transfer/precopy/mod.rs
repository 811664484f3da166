//! Pre-copy (SPEC §10, docs/transport.md "Pre-copy"): the source sends a
//! first pass while the server runs, stops it, then sends only what
//! changed (`ferry_delta`) and the stopped tree's `ferry_manifest`, both
//! inside the segmented transport's body; the destination applies the
//! delta in staging and verifies the tree against the manifest.
//!
//! - `record`: pass 1's record and the change rule (pure);
//! - `wire`: the two parts' format (pure);
//! - `delta`: the source's final pass (walks, reads changed files);
//! - `apply`: the destination's side (applies, verifies);
//! - `stop`: stopping the server before a transfer (shared with the
//!   classic start).

pub mod apply;
pub mod delta;
pub mod record;
pub mod stop;
pub mod wire;

use crate::config::Precopy;

/// Whether pre-copy is on: `FERRY_PRECOPY=off|auto` overrides
/// `system.transfers.precopy` (benches comparing the two).
pub fn enabled(configured: Precopy) -> bool {
    match std::env::var("FERRY_PRECOPY").as_deref() {
        Ok("off") => false,
        Ok("auto") => true,
        _ => configured == Precopy::Auto,
    }
}
