//! The archive engine: a parallel tar.gz out of a data directory, and safe
//! streaming extraction into a private staging directory.
//!
//! Packing never follows a symlink; extraction validates every entry and
//! writes beneath the staging root only. Both hash the compressed bytes
//! with SHA-256 and stop within one block when the cancel flag is set.
//!
//! Layout: `walk` (dirfd tree walk), `tarfmt` (tar headers as bytes),
//! `gzip` (block deflate), `pack` (the packing pipeline), `extract` (the
//! extraction pipeline and tar reader), `unpack` (safe writes beneath the
//! staging root), `staging` (staging, commit, tree removal), `pipe` and
//! `sys` (channel and libc helpers), `sched` (the scheduling class of bulk
//! work).
//!
//! Archive layout (what GNU tar, Go's archive/tar and Python's tarfile all
//! read, and what Wings writes): entries relative to the data directory,
//! no leading `/` or `./`, directories with a trailing `/`, the root itself
//! not an entry; extraction accepts `./`-prefixed paths and a `./` entry.
//! A file with several links is archived once; its other paths become
//! hard-link entries. Extraction reads what GNU tar and bsdtar write in
//! every format: ustar, PAX, GNU (long names, base-256 numbers, negative
//! mtimes) and GNU sparse files (old `S` and PAX 0.0/0.1/1.0, as holes).

mod extract;
mod gzip;
mod pack;
mod pipe;
pub mod sched;
mod staging;
#[allow(unsafe_code)]
mod sys;
mod tarfmt;
mod unpack;
pub(crate) mod walk;

pub use extract::{MAX_ENTRIES, MAX_TRAILING};
pub use pack::{EntryKind, PackObserver, BLOCK_SIZE};
pub use staging::STAGING_DIR;
pub use tarfmt::{MAX_NAME, MAX_PAX};
pub use unpack::patch::{count_entries, Expected, PatchFile, Patcher};

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Live counters a pipeline updates and progress reporting reads.
#[derive(Debug, Default)]
pub struct Counters {
    pub files_done: AtomicU64,
    /// Uncompressed file content bytes.
    pub bytes_done: AtomicU64,
    /// Compressed archive bytes produced or consumed.
    pub wire_bytes: AtomicU64,
    /// CPU nanoseconds each stage's threads used, by `Stage`.
    stage_cpu_ns: [AtomicU64; Stage::ALL.len()],
}

/// The stages of the two pipelines, for their CPU accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Source: walking the tree and reading files into blocks.
    Walk,
    /// Source: the compression workers together.
    Deflate,
    /// Source: ordering blocks, hashing them, handing them to the sender.
    Write,
    /// Source: the HTTP upload (chunking, TLS, socket).
    Send,
    /// Destination: socket, chunked and multipart decoding, SHA-256.
    Receive,
    /// Destination: gunzip.
    Inflate,
    /// Destination: tar parsing and the writes into staging.
    Unpack,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::Walk,
        Stage::Deflate,
        Stage::Write,
        Stage::Send,
        Stage::Receive,
        Stage::Inflate,
        Stage::Unpack,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Walk => "walk",
            Stage::Deflate => "deflate",
            Stage::Write => "write",
            Stage::Send => "send",
            Stage::Receive => "receive",
            Stage::Inflate => "inflate",
            Stage::Unpack => "unpack",
        }
    }
}

impl Counters {
    /// CPU time the stage's threads used so far (added as each finishes).
    pub fn stage_cpu(&self, stage: Stage) -> std::time::Duration {
        std::time::Duration::from_nanos(self.stage_cpu_ns[stage as usize].load(Ordering::Relaxed))
    }

    /// Starts charging the calling thread's CPU time to `stage`; the time
    /// is added when the returned clock is dropped.
    pub fn stage_clock(&self, stage: Stage) -> StageClock<'_> {
        StageClock {
            counters: self,
            stage,
            started_ns: thread_cpu_ns(),
        }
    }

    /// "walk 0.41 s, deflate 1.20 s, …" for the stages that ran.
    pub fn stage_summary(&self) -> String {
        let parts: Vec<String> = Stage::ALL
            .iter()
            .filter(|s| self.stage_cpu_ns[**s as usize].load(Ordering::Relaxed) > 0)
            .map(|s| format!("{} {:.2} s", s.name(), self.stage_cpu(*s).as_secs_f64()))
            .collect();
        parts.join(", ")
    }
}

/// Charges a thread's CPU time to a stage when dropped.
pub struct StageClock<'a> {
    counters: &'a Counters,
    stage: Stage,
    started_ns: u64,
}

impl Drop for StageClock<'_> {
    fn drop(&mut self) {
        let used = thread_cpu_ns().saturating_sub(self.started_ns);
        self.counters.stage_cpu_ns[self.stage as usize].fetch_add(used, Ordering::Relaxed);
    }
}

/// Bytes an unprivileged writer may still use on the filesystem holding
/// `path` (a trusted path, e.g. the data directory).
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    sys::free_bytes_at(path)
}

/// CPU time of the calling thread (0 if the clock is unavailable).
fn thread_cpu_ns() -> u64 {
    sys::thread_cpu_ns().unwrap_or(0)
}

/// Size of a data directory, counted before packing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeTotals {
    /// Entries that will be archived (files, directories, symlinks).
    pub files: u64,
    /// Regular-file content bytes (apparent sizes; each file once however
    /// many links it has): what the archive carries.
    pub bytes: u64,
    /// Bytes those files take on disk (allocated blocks, at most their
    /// size): what the destination will write, since it writes holes.
    pub disk_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct PackOptions {
    /// Compression level 0–9 (gzip: 0 = stored, still valid gzip; zstd:
    /// the same number as zstd's level, 0 its default).
    pub level: u32,
    /// Compression workers; 0 = one per core.
    pub threads: usize,
    /// The compression around the tar stream: gzip for anyone (Wings
    /// reads only gzip); zstd between ferry nodes (docs/transport.md).
    pub codec: Codec,
    /// Each directory's files (and links) before its subdirectories,
    /// instead of plain name order: a server's top-level files (its jar)
    /// come before the thousands of small files in its subdirectories,
    /// so a fast link has bytes from the start while those are packed.
    /// Pre-copy's live pass keeps name order (its record and final pass
    /// compare in that order).
    pub files_first: bool,
}

impl Default for PackOptions {
    fn default() -> PackOptions {
        PackOptions {
            level: 1,
            threads: 0,
            codec: Codec::Gzip,
            files_first: false,
        }
    }
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

/// Counts what `pack` will archive, without following links, and refuses
/// (naming it) a path the destination would refuse. Stops with
/// `ErrorKind::Interrupted` within one directory entry of `cancel` being set.
pub fn scan(root: &Path, cancel: &AtomicBool) -> std::io::Result<TreeTotals> {
    struct Count<'a> {
        totals: TreeTotals,
        links: pack::HardLinks,
        cancel: &'a AtomicBool,
    }
    impl walk::Visitor for Count<'_> {
        type Error = String;
        fn visit(&mut self, path: &[u8], node: walk::Node) -> Result<(), Self::Error> {
            let (is_dir, link) = match &node {
                walk::Node::Dir(_) => (true, &[][..]),
                walk::Node::File(..) => (false, &[][..]),
                walk::Node::Symlink(_, target) => (false, &target[..]),
            };
            pack::check_name_length(path, is_dir, link)?;
            self.totals.files += 1;
            if let walk::Node::File(st, _) = node {
                // A second link to a file is archived without content.
                if self.links.first_path(path, &st).is_none() {
                    let size = st.st_size.max(0) as u64;
                    self.totals.bytes += size;
                    let allocated = (st.st_blocks.max(0) as u64).saturating_mul(512);
                    self.totals.disk_bytes += allocated.min(size);
                }
            }
            Ok(())
        }
        fn cancelled(&self) -> bool {
            self.cancel.load(Ordering::Relaxed)
        }
    }
    let mut c = Count {
        totals: TreeTotals::default(),
        links: pack::HardLinks::default(),
        cancel,
    };
    match walk::walk(root, false, &mut c) {
        Ok(()) => Ok(c.totals),
        Err(walk::WalkStop::Io(m)) => Err(std::io::Error::other(m)),
        Err(walk::WalkStop::Cancelled) => Err(std::io::Error::new(
            std::io::ErrorKind::Interrupted,
            "cancelled",
        )),
        Err(walk::WalkStop::Visitor(m)) => {
            Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, m))
        }
    }
}

/// Writes a compressed tar of `root` to `out`.
///
/// Entries are sorted bytewise within each directory; regular files,
/// directories and symlinks are stored, other file types skipped. Blocks
/// of `BLOCK_SIZE` are compressed on `threads` workers into one gzip member
/// (or one zstd frame each).
pub fn pack<W: Write>(
    root: &Path,
    out: W,
    options: &PackOptions,
    cancel: &AtomicBool,
    counters: &Counters,
) -> Result<PackSummary, PackError> {
    pack_observed(root, out, options, cancel, counters, None)
}

/// `pack` with an observer of every entry and content byte sent
/// (pre-copy's record of its live pass).
pub fn pack_observed<W: Write>(
    root: &Path,
    out: W,
    options: &PackOptions,
    cancel: &AtomicBool,
    counters: &Counters,
    observer: Option<&mut (dyn PackObserver + 'static)>,
) -> Result<PackSummary, PackError> {
    sys::map_large_buffers();
    pack::pack(root, out, options, cancel, counters, observer)
}

#[derive(Debug, Clone, Default)]
pub struct ExtractLimits {
    /// The server's `build.disk_space` in bytes; None = unlimited. Counts
    /// the bytes written: holes (and zero runs, written as holes) are free.
    pub max_bytes: Option<u64>,
    /// Owner to give every entry (applied only when running as root).
    pub owner: Option<(u32, u32)>,
}

/// The compression around a received tar stream. Senders other than
/// Wings choose it (calagopus' `archive_format`); the caller names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// Gzip, one or more members (Wings, Pelican, ferry).
    #[default]
    Gzip,
    /// Zstandard, one or more frames.
    Zstd,
    /// No compression: the tar stream itself.
    Plain,
}

impl Codec {
    /// How logs name it.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
            Codec::Plain => "uncompressed",
        }
    }
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
///
/// Layout: `<data>/.ferry-staging/` (mode 0700, created if missing) holds
/// `<uuid>.<transfer_id>/` (mode 0700) for each incoming transfer.
pub use staging::Staging;

/// Makes the allocator hand large pipeline buffers back to the system
/// (see `sys::map_large_buffers`). The daemon calls it at start-up, before
/// any thread allocates; `pack` and `extract` call it too (once per
/// process) for other users of the library.
pub fn tune_allocator() {
    sys::map_large_buffers();
}

/// Streams `input` through SHA-256, multi-member gunzip and tar into staging.
///
/// Reads `input` to its end (the digest covers every byte, even past the
/// tar end marker). Errors from `input` come back untouched as `Input`.
/// On any error the caller drops or aborts `staging`.
pub fn extract<R: Read>(
    input: R,
    staging: &Staging,
    limits: &ExtractLimits,
    cancel: &AtomicBool,
    counters: &Counters,
) -> Result<ExtractSummary, ExtractError> {
    extract_codec(input, Codec::Gzip, staging, limits, cancel, counters)
}

/// [`extract`] for a tar stream in another compression (calagopus'
/// `archive_format`); the digest still covers the input bytes.
pub fn extract_codec<R: Read>(
    input: R,
    codec: Codec,
    staging: &Staging,
    limits: &ExtractLimits,
    cancel: &AtomicBool,
    counters: &Counters,
) -> Result<ExtractSummary, ExtractError> {
    sys::map_large_buffers();
    extract::extract(input, codec, staging, limits, cancel, counters)
}

/// Removes a directory tree without ever following a symlink. The final
/// component itself is not followed either (a link is just unlinked); a
/// missing path is not an error. Runs as bulk work (`sched::batch`): a
/// large tree is thousands of unlinks, called from API threads.
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    let _batch = sched::batch();
    staging::remove_tree(path)
}

/// Moves the server directory `<data>/<uuid>` out of place, into staging
/// (one rename; start-up sweeps what a killed daemon left there), so a
/// crash while removing a large tree never leaves half a server in place.
/// Returns where it went for `remove_tree`; None when there was nothing.
pub fn move_out_of_place(data_dir: &Path, uuid: &str) -> std::io::Result<Option<PathBuf>> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nonce = format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    staging::move_out(data_dir, uuid, &nonce)
}

/// `move_out_of_place`, then `remove_tree`.
pub fn remove_server_dir(data_dir: &Path, uuid: &str) -> std::io::Result<()> {
    match move_out_of_place(data_dir, uuid)? {
        Some(moved) => remove_tree(&moved),
        None => Ok(()),
    }
}

/// Removes every staging directory left under `<data>/.ferry-staging/` by a
/// daemon that died; returns the names removed.
pub fn remove_stale_staging(data_dir: &Path) -> std::io::Result<Vec<String>> {
    staging::remove_stale_staging(data_dir)
}

impl std::fmt::Display for PackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PackError::Cancelled => f.write_str("archiving was cancelled"),
            PackError::Io(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for PackError {}

/// The texts SPEC §4 prescribes for `Unsafe` and `NoSpace`.
impl std::fmt::Display for ExtractError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExtractError::Unsafe(p) => write!(f, "unsafe path in archive: {p}"),
            ExtractError::NoSpace => {
                f.write_str("There is not enough disk space available to perform that action.")
            }
            ExtractError::Corrupt(m) => write!(f, "corrupt archive: {m}"),
            ExtractError::Io(m) => write!(f, "extracting the archive: {m}"),
            ExtractError::Cancelled => f.write_str("extraction was cancelled"),
            ExtractError::Input(e) => write!(f, "reading the archive: {e}"),
        }
    }
}

impl std::error::Error for ExtractError {}
