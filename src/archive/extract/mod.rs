//! The extraction pipeline: input → SHA-256 tee (caller's thread) →
//! multi-member gunzip (thread, `gzip::GunzipReader`) → tar parsing and safe writes (thread).
//!
//! Every input byte is hashed, including anything after the tar end
//! marker. Tar entries are parsed and validated here, not by a library, so
//! every length is bounded; the writes themselves live in `unpack`.
//!
//! - this file: the pipeline, its input and inflate stages;
//! - `blocks.rs`: the tar stage's view of the decompressed stream;
//! - `untar.rs`: the tar stage (entries, sparse maps, limits).

use super::gzip::GunzipReader;
use super::pipe::{self, Halt};
use super::{Codec, Counters, ExtractError, ExtractLimits, ExtractSummary, Stage, Staging};
use crossbeam_channel::{bounded, Receiver, Sender};
use sha2::{Digest, Sha256};
use std::io::{self, BufRead, Read};
use std::sync::atomic::{AtomicBool, Ordering};

mod blocks;
mod untar;

pub(crate) use blocks::Blocks;
use untar::untar;

/// Most entries (headers included) one archive may hold.
pub const MAX_ENTRIES: u64 = 10_000_000;
/// Decompressed bytes tolerated after the end-of-archive marker (record
/// padding is at most 10 KiB; more is a bomb or garbage).
pub const MAX_TRAILING: u64 = 16 << 20;
/// Compressed bytes per input chunk.
const IN_CHUNK: usize = 256 * 1024;
/// Decompressed bytes per block handed to the tar stage.
const OUT_CHUNK: usize = 1 << 20;
const IN_DEPTH: usize = 6;
const OUT_DEPTH: usize = 4;

enum Msg {
    Data(Vec<u8>, usize),
    End,
}

/// Internal stage outcome: `Halt::Closed` means a neighbour failed first.
pub(crate) enum Fail {
    Halt(Halt),
    Error(ExtractError),
}

impl From<Halt> for Fail {
    fn from(h: Halt) -> Fail {
        Fail::Halt(h)
    }
}

impl From<ExtractError> for Fail {
    fn from(e: ExtractError) -> Fail {
        Fail::Error(e)
    }
}

fn corrupt(m: impl Into<String>) -> Fail {
    Fail::Error(ExtractError::Corrupt(m.into()))
}

pub fn extract<R: Read>(
    mut input: R,
    codec: Codec,
    staging: &Staging,
    limits: &ExtractLimits,
    cancel: &AtomicBool,
    counters: &Counters,
) -> Result<ExtractSummary, ExtractError> {
    let root = staging.dir_fd();
    // Depths let each stage run ahead when the scheduler gives it the CPU
    // (about 2 MiB of input and 6 MiB of output in flight at most; the
    // bench measured no gain from bigger chunks, which delay network input).
    let (in_tx, in_rx) = bounded::<Msg>(IN_DEPTH);
    let (in_pool_tx, in_pool_rx) = bounded::<Vec<u8>>(IN_DEPTH + 2);
    let (out_tx, out_rx) = bounded::<Msg>(OUT_DEPTH);
    let (out_pool_tx, out_pool_rx) = bounded::<Vec<u8>>(OUT_DEPTH + 2);

    let mut sha = Sha256::new();
    let mut wire: u64 = 0;
    let mut input_error: Option<io::Error> = None;

    let (inflated, untarred) = std::thread::scope(|s| {
        let inflater = s.spawn(move || {
            inflate(
                codec,
                in_rx,
                in_pool_tx,
                out_tx,
                out_pool_rx,
                cancel,
                counters,
            )
        });
        let untar_thread =
            s.spawn(move || untar(out_rx, out_pool_tx, root, limits, cancel, counters));
        // The tee runs here: `input` need not be Send.
        let receive_clock = counters.stage_clock(Stage::Receive);
        'tee: loop {
            let mut buf = in_pool_rx.try_recv().unwrap_or_else(|_| vec![0; IN_CHUNK]);
            let mut fill = 0;
            let mut eof = false;
            while fill < buf.len() {
                if cancel.load(Ordering::Relaxed) {
                    break 'tee;
                }
                match input.read(&mut buf[fill..]) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        sha.update(&buf[fill..fill + n]);
                        fill += n;
                        wire += n as u64;
                        counters.wire_bytes.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        input_error = Some(e);
                        break 'tee;
                    }
                }
            }
            if fill > 0 && pipe::send(&in_tx, Msg::Data(buf, fill), cancel).is_err() {
                break;
            }
            if eof {
                let _ = pipe::send(&in_tx, Msg::End, cancel);
                break;
            }
        }
        drop(receive_clock);
        // Closing our end stops the stages if we stopped early.
        drop(in_tx);
        let panicked = || corrupt("internal: an extract thread panicked");
        let inflated = inflater.join().unwrap_or_else(|_| Err(panicked()));
        let untarred = untar_thread.join().unwrap_or_else(|_| Err(panicked()));
        (inflated, untarred)
    });

    if cancel.load(Ordering::Relaxed) {
        return Err(ExtractError::Cancelled);
    }
    if let Some(e) = input_error {
        return Err(ExtractError::Input(e));
    }
    // The gzip stage's own error comes first: the tar stage only saw its
    // input end early.
    if let Err(Fail::Error(e)) = inflated {
        return Err(e);
    }
    match untarred {
        Ok((files, bytes)) => Ok(ExtractSummary {
            sha256_hex: hex::encode(sha.finalize()),
            wire_bytes: wire,
            files,
            bytes,
        }),
        Err(Fail::Error(e)) => Err(e),
        Err(Fail::Halt(Halt::Cancelled)) => Err(ExtractError::Cancelled),
        Err(Fail::Halt(Halt::Closed)) => Err(ExtractError::Corrupt(
            "internal: extract pipeline stopped".into(),
        )),
    }
}

/// Reads the compressed chunks as a `BufRead` for the gzip decoder.
struct ChanReader<'a> {
    rx: Receiver<Msg>,
    pool: Sender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    len: usize,
    ended: bool,
    halted: Option<Halt>,
    cancel: &'a AtomicBool,
}

impl BufRead for ChanReader<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos == self.len && !self.ended {
            let old = std::mem::take(&mut self.cur);
            // The buffer is gone: `pos`/`len` must not point into it, or
            // the slice below panics when `End` follows.
            (self.pos, self.len) = (0, 0);
            if !old.is_empty() {
                let _ = self.pool.try_send(old);
            }
            match pipe::recv(&self.rx, self.cancel) {
                Ok(Msg::Data(buf, n)) => {
                    self.cur = buf;
                    self.pos = 0;
                    self.len = n;
                }
                Ok(Msg::End) => self.ended = true,
                Err(h) => {
                    self.halted = Some(h);
                    return Err(io::Error::other("upstream stopped"));
                }
            }
        }
        Ok(&self.cur[self.pos..self.len])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.len);
    }
}

impl Read for ChanReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

fn inflate(
    codec: Codec,
    rx: Receiver<Msg>,
    in_pool: Sender<Vec<u8>>,
    tx: Sender<Msg>,
    out_pool: Receiver<Vec<u8>>,
    cancel: &AtomicBool,
    counters: &Counters,
) -> Result<(), Fail> {
    let _clock = counters.stage_clock(Stage::Inflate);
    let reader = ChanReader {
        rx,
        pool: in_pool,
        cur: Vec::new(),
        pos: 0,
        len: 0,
        ended: false,
        halted: None,
        cancel,
    };
    match codec {
        Codec::Gzip => pump(
            GunzipReader::new(reader),
            "gzip",
            tx,
            out_pool,
            cancel,
            |d| d.get_mut().halted.take(),
        ),
        Codec::Zstd => {
            let dec = zstd::stream::read::Decoder::with_buffer(reader)
                .map_err(|e| corrupt(format!("zstd: {e}")))?;
            pump(dec, "zstd", tx, out_pool, cancel, |d| {
                d.get_mut().halted.take()
            })
        }
        Codec::Plain => pump(reader, "tar", tx, out_pool, cancel, |d| d.halted.take()),
    }
}

/// Moves decompressed blocks to the tar stage. `halted` tells an error of
/// the decoder from the input stage having stopped first.
fn pump<D: Read>(
    mut dec: D,
    what: &str,
    tx: Sender<Msg>,
    out_pool: Receiver<Vec<u8>>,
    cancel: &AtomicBool,
    halted: impl Fn(&mut D) -> Option<Halt>,
) -> Result<(), Fail> {
    loop {
        let mut buf = out_pool.try_recv().unwrap_or_else(|_| vec![0; OUT_CHUNK]);
        let mut fill = 0;
        let mut eof = false;
        while fill < buf.len() {
            match dec.read(&mut buf[fill..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => fill += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if let Some(h) = halted(&mut dec) {
                        return Err(Fail::Halt(h));
                    }
                    return Err(corrupt(format!("{what}: {e}")));
                }
            }
            if cancel.load(Ordering::Relaxed) {
                return Err(Fail::Halt(Halt::Cancelled));
            }
        }
        if fill > 0 {
            match pipe::send(&tx, Msg::Data(buf, fill), cancel) {
                Ok(()) => {}
                Err(Halt::Closed) => return Ok(()),
                Err(h) => return Err(Fail::Halt(h)),
            }
        }
        if eof {
            let _ = pipe::send(&tx, Msg::End, cancel);
            return Ok(());
        }
    }
}
