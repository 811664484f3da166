//! ferry: a minimal-footprint node daemon that moves game servers between
//! nodes, speaking the Pterodactyl Wings transfer protocol.
//!
//! The crate is a library with a thin binary (`src/main.rs`). Each module
//! owns one job; see `docs/design.md` for the map.
//!
//! `unsafe` code is denied here and allowed only in the `sys` modules
//! (this crate's `sys`, `archive::sys`, `http::sys`), each block with a
//! `SAFETY:` note saying why it is sound.

#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod api;
pub mod archive;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod environment;
pub mod events;
pub mod histogram;
pub mod http;
pub mod jwt;
pub mod logger;
pub mod multipart;
pub mod node;
pub mod panel;
pub mod server;
pub mod statefile;
#[allow(unsafe_code)]
pub(crate) mod sys;
pub mod timefmt;
pub mod transfer;
pub mod trust;

/// The version reported by `GET /api/system` and in the panel `User-Agent`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit the binary was built from (build.rs), or "unknown"
/// (a source tarball without git, and no `FERRY_COMMIT` in the build's env).
pub const COMMIT: &str = env!("FERRY_COMMIT");
