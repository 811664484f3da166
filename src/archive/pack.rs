//! The packing pipeline: walker+tar → N× deflate → ordered writer (+SHA-256).
//! With zstd (between ferry nodes) each block is its own zstd frame
//! instead: frames concatenate into one valid stream, and a block's bytes
//! depend on nothing but the block.
//!
//! A fixed pool of slots (tar block + its compressed form) circulates
//! walker → workers → writer → walker, which bounds memory whatever the
//! tree size and makes a slow output throttle the walk. Every stage
//! watches the cancel flag between slices of a block.
//!
//! - this file: the pipeline, its slots, the deflate workers and the
//!   ordered writer;
//! - `pack/producer.rs`: the walk turned into tar bytes in slots.

use super::gzip::{self, BlockDeflater, DeflateError};
use super::pipe::{self, Halt};
use super::{Codec, Counters, PackError, PackOptions, PackSummary, Stage};
use crossbeam_channel::{bounded, Receiver, Sender};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

mod producer;

use producer::produce;
pub(crate) use producer::{check_name_length, HardLinks};
pub use producer::{EntryKind, PackObserver};

/// Uncompressed bytes per compression job.
pub const BLOCK_SIZE: usize = 1 << 20;
/// Largest single write to the output.
const WRITE_SLICE: usize = 256 * 1024;

struct Slot {
    /// Tar bytes; always `BLOCK_SIZE` long, `len` of them used.
    raw: Vec<u8>,
    len: usize,
    /// The previous block's last 32 KiB (deflate dictionary).
    dict: Vec<u8>,
    /// Block and dictionary are all zeros: the worker may reuse a cached result.
    zero: bool,
    out: Vec<u8>,
    crc: u32,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            // calloc'd: pages cost memory only once written.
            raw: vec![0; BLOCK_SIZE],
            len: 0,
            dict: Vec::with_capacity(gzip::DICT),
            zero: false,
            out: Vec::new(),
            crc: 0,
        }
    }
}

struct Job {
    seq: u64,
    slot: Slot,
    last: bool,
}

/// Internal stage failure; `Halt::Closed` means another stage failed first.
enum Fail {
    Halt(Halt),
    Error(String),
}

impl From<Halt> for Fail {
    fn from(h: Halt) -> Fail {
        Fail::Halt(h)
    }
}

pub fn pack<W: Write>(
    root: &Path,
    mut out: W,
    options: &PackOptions,
    cancel: &AtomicBool,
    counters: &Counters,
    observer: Option<&mut (dyn PackObserver + 'static)>,
) -> Result<PackSummary, PackError> {
    let threads = match options.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let level = options.level.min(9);
    let codec = options.codec;
    let slots = threads * 2 + 2;
    let (pool_tx, pool_rx) = bounded(slots);
    for _ in 0..slots {
        // Cannot fail: the channel has room for every slot.
        let _ = pool_tx.send(Slot::new());
    }
    let (job_tx, job_rx) = bounded::<Job>(slots);
    let (done_tx, done_rx) = bounded::<Job>(slots);

    let (walked, worked, written) = std::thread::scope(|s| {
        let files_first = options.files_first;
        let walker = s.spawn(move || {
            produce(
                root,
                (pool_rx, job_tx),
                files_first,
                cancel,
                counters,
                observer,
            )
        });
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let rx = job_rx.clone();
                let tx = done_tx.clone();
                s.spawn(move || compress(rx, tx, codec, level, cancel, counters))
            })
            .collect();
        drop(job_rx);
        drop(done_tx);
        let written = write_out(&mut out, done_rx, pool_tx, codec, level, cancel, counters);
        let walked = walker.join().unwrap_or_else(|_| Err(panicked()));
        let worked: Vec<_> = workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err(panicked())))
            .collect();
        (walked, worked, written)
    });

    if cancel.load(Ordering::Relaxed) {
        return Err(PackError::Cancelled);
    }
    // Report the first real error in pipeline order; the other stages only
    // saw a neighbour go away (`Halt::Closed`).
    let mut fails: Vec<Fail> = Vec::new();
    let totals = walked.map_err(|f| fails.push(f)).ok();
    fails.extend(worked.into_iter().filter_map(Result::err));
    let written = written.map_err(|f| fails.push(f)).ok();
    if let Some(i) = fails.iter().position(|f| matches!(f, Fail::Error(_))) {
        if let Fail::Error(m) = fails.swap_remove(i) {
            return Err(PackError::Io(m));
        }
    }
    if fails
        .iter()
        .any(|f| matches!(f, Fail::Halt(Halt::Cancelled)))
    {
        return Err(PackError::Cancelled);
    }
    match (totals, written, fails.is_empty()) {
        (Some((files, bytes)), Some((wire_bytes, sha256_hex)), true) => Ok(PackSummary {
            sha256_hex,
            wire_bytes,
            files,
            bytes,
        }),
        _ => Err(PackError::Io(
            "internal: pack pipeline stopped early".into(),
        )),
    }
}

fn panicked() -> Fail {
    Fail::Error("internal: a pack thread panicked".into())
}

/// One worker's compressor, reused from block to block.
enum BlockCompressor {
    Gzip(Box<BlockDeflater>),
    Zstd(zstd::bulk::Compressor<'static>),
    Plain,
}

impl BlockCompressor {
    fn new(codec: Codec, level: u32) -> Result<BlockCompressor, Fail> {
        Ok(match codec {
            Codec::Gzip => BlockCompressor::Gzip(Box::new(BlockDeflater::new(level))),
            Codec::Zstd => BlockCompressor::Zstd(
                zstd::bulk::Compressor::new(level as i32)
                    .map_err(|e| Fail::Error(format!("zstd: {e}")))?,
            ),
            Codec::Plain => BlockCompressor::Plain,
        })
    }

    /// Compresses the slot's block into its `out` (and, for gzip, notes
    /// its CRC-32).
    fn compress(&mut self, s: &mut Slot, last: bool, cancel: &AtomicBool) -> Result<(), Fail> {
        let data = &s.raw[..s.len];
        match self {
            BlockCompressor::Gzip(deflater) => {
                s.crc = deflater
                    .compress(&s.dict, data, s.zero, last, &mut s.out, cancel)
                    .map_err(|e| match e {
                        DeflateError::Cancelled => Fail::Halt(Halt::Cancelled),
                        DeflateError::Failed(m) => Fail::Error(m),
                    })?;
            }
            BlockCompressor::Zstd(c) => {
                // One call per block: a cancel is seen within one block,
                // which zstd compresses in milliseconds.
                if cancel.load(Ordering::Relaxed) {
                    return Err(Fail::Halt(Halt::Cancelled));
                }
                s.out.clear();
                s.out.reserve(zstd::zstd_safe::compress_bound(data.len()));
                c.compress_to_buffer(data, &mut s.out)
                    .map_err(|e| Fail::Error(format!("zstd: {e}")))?;
            }
            BlockCompressor::Plain => {
                s.out.clear();
                s.out.extend_from_slice(data);
            }
        }
        Ok(())
    }
}

fn compress(
    jobs: Receiver<Job>,
    done: Sender<Job>,
    codec: Codec,
    level: u32,
    cancel: &AtomicBool,
    counters: &Counters,
) -> Result<(), Fail> {
    let _clock = counters.stage_clock(Stage::Deflate);
    let mut compressor = BlockCompressor::new(codec, level)?;
    loop {
        let mut job = match pipe::recv(&jobs, cancel) {
            Ok(j) => j,
            Err(Halt::Closed) => return Ok(()),
            Err(h) => return Err(Fail::Halt(h)),
        };
        compressor.compress(&mut job.slot, job.last, cancel)?;
        match pipe::send(&done, job, cancel) {
            Ok(()) => {}
            Err(Halt::Closed) => return Ok(()),
            Err(h) => return Err(Fail::Halt(h)),
        }
    }
}

/// Writes blocks in order (gzip: with its header and trailer), hashing
/// exactly the bytes written. Returns (bytes written, SHA-256 hex).
fn write_out<W: Write>(
    out: &mut W,
    done: Receiver<Job>,
    pool: Sender<Slot>,
    codec: Codec,
    level: u32,
    cancel: &AtomicBool,
    counters: &Counters,
) -> Result<(u64, String), Fail> {
    let _clock = counters.stage_clock(Stage::Write);
    let mut sha = Sha256::new();
    let mut wire: u64 = 0;
    // Written in slices so a cancel is seen even when the output is slow.
    let mut emit = |bytes: &[u8], out: &mut W| -> Result<(), Fail> {
        for piece in bytes.chunks(WRITE_SLICE) {
            if cancel.load(Ordering::Relaxed) {
                return Err(Fail::Halt(Halt::Cancelled));
            }
            out.write_all(piece)
                .map_err(|e| Fail::Error(format!("writing the archive: {e}")))?;
            sha.update(piece);
            wire += piece.len() as u64;
            counters
                .wire_bytes
                .fetch_add(piece.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    };
    let gzip = codec == Codec::Gzip;
    if gzip {
        emit(&gzip::header(level), out)?;
    }
    let mut crc = crc32fast::Hasher::new();
    let mut total: u64 = 0;
    let mut next: u64 = 0;
    let mut pending: BTreeMap<u64, Job> = BTreeMap::new();
    loop {
        let job = pipe::recv(&done, cancel)?;
        pending.insert(job.seq, job);
        while let Some(job) = pending.remove(&next) {
            if cancel.load(Ordering::Relaxed) {
                return Err(Fail::Halt(Halt::Cancelled));
            }
            emit(&job.slot.out, out)?;
            crc.combine(&crc32fast::Hasher::new_with_initial_len(
                job.slot.crc,
                job.slot.len as u64,
            ));
            total += job.slot.len as u64;
            next += 1;
            if job.last {
                if gzip {
                    emit(&gzip::trailer(crc.finalize(), total), out)?;
                }
                out.flush()
                    .map_err(|e| Fail::Error(format!("writing the archive: {e}")))?;
                return Ok((wire, hex::encode(sha.finalize())));
            }
            // The walker may be gone already; the slot is then just freed.
            let _ = pool.send(job.slot);
        }
    }
}
