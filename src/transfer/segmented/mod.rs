//! The ferry-to-ferry segmented transport (SPEC §10, docs/transport.md).
//!
//! In scope, pure (no I/O, STYLE 1): the destination's session ledger and
//! its states (`ledger`), the ack log a restart resumes from (`acks`), the
//! header of one segment request (`segment`), and the source's plan of
//! what to send next (`plan`), the session secret (`secret`). Thin
//! drivers so far: `spool` (the files that make an acknowledged segment
//! durable) and `follow` (the extractor's reader that follows the spool).
//!
//! Drivers: `session` (one destination session: segments in, the
//! extractor, its end), `store` (open, find, expire, take up after a
//! restart) and `sender` (the source's probe, segments out, resume, the
//! polled finish).
//!
//! Out of scope: sockets, the JWT (checked by
//! `jwt::verify_transfer_token` before a session exists) and the end of
//! the transfer, which belongs to the shared finish (`transfer::finish`),
//! never to a copy of it here.
//!
//! Segments carry bytes of the same multipart body the classic POST
//! sends, so the classic receiver reads the spool unchanged.

pub mod acks;
pub mod follow;
pub mod ledger;
pub mod plan;
pub mod secret;
pub mod segment;
pub mod sender;
pub mod session;
pub mod spool;
pub mod store;

/// `system.transfers.segment_size` default: under a 100 MB proxy limit.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 * 1024 * 1024;
/// `system.transfers.resume_window` default, in seconds.
pub const DEFAULT_RESUME_WINDOW: u64 = 15 * 60;
/// The source never shrinks a segment below this after a proxy's 413.
pub const MIN_SEGMENT_SIZE: u64 = 1024 * 1024;
