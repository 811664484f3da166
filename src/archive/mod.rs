//! The archive engine: a parallel tar.gz out of a data directory, and safe
//! streaming extraction into a private staging directory.
//!
//! Packing never follows a symlink; extraction validates every entry and
//! writes beneath the staging root only. Both hash the compressed bytes
//! with SHA-256 and stop within one block when the cancel flag is set.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};

/// Live counters a pipeline updates and progress reporting reads.
#[derive(Debug, Default)]
pub struct Counters {
    pub files_done: AtomicU64,
    /// Uncompressed file content bytes.
    pub bytes_done: AtomicU64,
    /// Compressed archive bytes produced or consumed.
    pub wire_bytes: AtomicU64,
}

/// Size of a data directory, counted before packing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeTotals {
    /// Entries that will be archived (files, directories, symlinks).
    pub files: u64,
    /// Regular-file content bytes.
    pub bytes: u64,
}

#[derive(Debug, Clone)]
pub struct PackOptions {
    /// gzip level 0–9 (0 = stored, still valid gzip).
    pub level: u32,
    /// Compression workers; 0 = one per core.
    pub threads: usize,
}

#[derive(Debug, Clone)]
pub struct PackSummary {
    /// Lowercase hex SHA-256 of exactly the bytes written to the output.
    pub sha256_hex: String,
    pub wire_bytes: u64,
    pub files: u64,
    pub bytes: u64,
}

#[derive(Debug)]
pub enum PackError {
    Cancelled,
    /// Reading the tree or writing the output failed; the message names
    /// the step and path.
    Io(String),
}

/// Counts what `pack` will archive, without following links.
pub fn scan(_root: &Path) -> std::io::Result<TreeTotals> {
    unimplemented!("archive engine")
}

/// Writes a gzip-compressed tar of `root` to `out`.
pub fn pack<W: Write>(
    _root: &Path,
    _out: W,
    _options: &PackOptions,
    _cancel: &AtomicBool,
    _counters: &Counters,
) -> Result<PackSummary, PackError> {
    unimplemented!("archive engine")
}

#[derive(Debug, Clone, Default)]
pub struct ExtractLimits {
    /// The server's `build.disk_space` in bytes; None = unlimited.
    pub max_bytes: Option<u64>,
    /// Owner to give every entry (applied only when running as root).
    pub owner: Option<(u32, u32)>,
}

#[derive(Debug, Clone)]
pub struct ExtractSummary {
    /// Lowercase hex SHA-256 of every byte read from the input.
    pub sha256_hex: String,
    pub wire_bytes: u64,
    pub files: u64,
    pub bytes: u64,
}

#[derive(Debug)]
pub enum ExtractError {
    /// An entry that may not be written; carries the entry path.
    Unsafe(String),
    /// `disk_space` or the filesystem's free space would be exceeded.
    NoSpace,
    /// The gzip or tar stream is malformed.
    Corrupt(String),
    /// Writing into staging failed.
    Io(String),
    Cancelled,
    /// Reading the input failed (the caller owns that error's meaning).
    Input(std::io::Error),
}

/// A private directory beneath `<data>/.ferry-staging/` on the same
/// filesystem as the data directory. Dropping it without `commit` removes it.
pub struct Staging {
    _private: (),
}

impl Staging {
    pub fn create(_data_dir: &Path, _uuid: &str, _transfer_id: &str) -> std::io::Result<Staging> {
        unimplemented!("archive engine")
    }

    pub fn path(&self) -> &Path {
        unimplemented!("archive engine")
    }

    /// Renames staging to `<data>/<uuid>`; fails if that already exists.
    pub fn commit(self) -> std::io::Result<PathBuf> {
        unimplemented!("archive engine")
    }

    /// Removes staging without following links.
    pub fn abort(self) -> std::io::Result<()> {
        unimplemented!("archive engine")
    }
}

/// Streams `input` through SHA-256, multi-member gunzip and tar into staging.
pub fn extract<R: Read>(
    _input: R,
    _staging: &Staging,
    _limits: &ExtractLimits,
    _cancel: &AtomicBool,
    _counters: &Counters,
) -> Result<ExtractSummary, ExtractError> {
    unimplemented!("archive engine")
}

/// Removes a directory tree without ever following a symlink.
pub fn remove_tree(_path: &Path) -> std::io::Result<()> {
    unimplemented!("archive engine")
}

/// Removes every staging directory left under `<data>/.ferry-staging/` by a
/// daemon that died; returns the names removed.
pub fn remove_stale_staging(_data_dir: &Path) -> std::io::Result<Vec<String>> {
    unimplemented!("archive engine")
}
