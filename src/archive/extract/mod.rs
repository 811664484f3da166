//! The extraction pipeline: input → SHA-256 tee (caller's thread) →
//! multi-member gunzip (thread, `gzip::GunzipReader`) → tar parsing and safe writes (thread).
//!
//! Every input byte is hashed, including anything after the tar end
//! marker. Tar entries are parsed and validated here, not by a library, so
//! every length is bounded; the writes themselves live in `unpack`.

use super::gzip::GunzipReader;
use super::pipe::{self, Halt};
use super::tarfmt::{self, Overrides, BLOCK};
use super::unpack::{Kind, Target};
use super::{Codec, Counters, ExtractError, ExtractLimits, ExtractSummary, Stage, Staging};
use crossbeam_channel::{bounded, Receiver, Sender};
use sha2::{Digest, Sha256};
use std::io::{self, BufRead, Read};
use std::sync::atomic::{AtomicBool, Ordering};

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

/// The decompressed stream, read in place from the blocks it arrives in.
pub(crate) struct Blocks<'a> {
    rx: Receiver<Msg>,
    pool: Sender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    len: usize,
    ended: bool,
    cancel: &'a AtomicBool,
}

impl Blocks<'_> {
    /// Makes data available; false at the end of the stream.
    fn fill(&mut self) -> Result<bool, Fail> {
        while self.pos == self.len {
            if self.ended {
                return Ok(false);
            }
            let old = std::mem::take(&mut self.cur);
            (self.pos, self.len) = (0, 0);
            if !old.is_empty() {
                let _ = self.pool.try_send(old);
            }
            match pipe::recv(&self.rx, self.cancel)? {
                Msg::Data(buf, n) => {
                    self.cur = buf;
                    self.pos = 0;
                    self.len = n;
                }
                Msg::End => self.ended = true,
            }
        }
        Ok(true)
    }

    /// Up to `max` bytes in place; `None` at the end of the stream.
    pub(crate) fn slice(&mut self, max: usize) -> Result<Option<&[u8]>, Fail> {
        if !self.fill()? {
            return Ok(None);
        }
        let n = (self.len - self.pos).min(max);
        let s = &self.cur[self.pos..self.pos + n];
        self.pos += n;
        Ok(Some(s))
    }

    /// Fills `out`; returns how many bytes were available (short at the end).
    fn read_full(&mut self, out: &mut [u8]) -> Result<usize, Fail> {
        let mut got = 0;
        while got < out.len() {
            match self.slice(out.len() - got)? {
                Some(s) => {
                    out[got..got + s.len()].copy_from_slice(s);
                    got += s.len();
                }
                None => break,
            }
        }
        Ok(got)
    }

    fn skip(&mut self, mut n: u64) -> Result<(), Fail> {
        while n > 0 {
            match self.slice(n.min(usize::MAX as u64) as usize)? {
                Some(s) => n -= s.len() as u64,
                None => return Err(corrupt("tar: truncated archive")),
            }
        }
        Ok(())
    }

    fn read_vec(&mut self, n: u64) -> Result<Vec<u8>, Fail> {
        let mut v = vec![0; n as usize];
        if self.read_full(&mut v)? < v.len() {
            return Err(corrupt("tar: truncated archive"));
        }
        self.skip(tarfmt::padding(n) as u64)?;
        Ok(v)
    }
}

/// Most bytes a PAX 1.0 sparse map may take at the start of the data.
const MAX_SPARSE_MAP: usize = 16 << 20;

/// The map of an old GNU `S` entry: the header's regions plus those of
/// its extension blocks (each counted as an entry).
fn gnu_sparse_map(
    blocks: &mut Blocks<'_>,
    g: &tarfmt::GnuSparse,
    entries: &mut u64,
) -> Result<tarfmt::Sparse, Fail> {
    let mut regions = g.regions.clone();
    let mut more = g.extended;
    let mut ext = [0u8; BLOCK];
    while more {
        if regions.len() > tarfmt::MAX_SPARSE_REGIONS {
            return Err(corrupt("tar: sparse map has too many regions"));
        }
        *entries += 1;
        if blocks.read_full(&mut ext)? < BLOCK {
            return Err(corrupt("tar: truncated archive"));
        }
        more = tarfmt::decode_gnu_sparse_ext(&ext, &mut regions)
            .map_err(|e| corrupt(format!("tar: {e}")))?;
    }
    Ok(tarfmt::Sparse {
        regions,
        real_size: g.real_size,
    })
}

/// The map of a PAX sparse entry. For format 1.0 the map is read from the
/// start of the data, and `size` shrinks to the data that follows it.
fn pax_sparse_map(
    blocks: &mut Blocks<'_>,
    records: tarfmt::SparseRecords,
    size: &mut u64,
) -> Result<tarfmt::Sparse, Fail> {
    let real_size = records.real_size.unwrap_or(*size);
    if !records.map_in_data {
        return Ok(tarfmt::Sparse {
            regions: records.regions,
            real_size,
        });
    }
    let mut head: Vec<u8> = Vec::new();
    let mut block = [0u8; BLOCK];
    // Parsed once every number's newline has arrived (the first line is
    // the count), so a long map is read in one pass.
    let mut newlines = 0usize;
    loop {
        if head.len() as u64 + BLOCK as u64 > *size || head.len() >= MAX_SPARSE_MAP {
            return Err(corrupt("tar: malformed sparse map"));
        }
        if blocks.read_full(&mut block)? < BLOCK {
            return Err(corrupt("tar: truncated archive"));
        }
        head.extend_from_slice(&block);
        newlines += block.iter().filter(|&&b| b == b'\n').count();
        let count_known = head
            .iter()
            .position(|&b| b == b'\n')
            .and_then(|nl| std::str::from_utf8(&head[..nl]).ok()?.parse::<usize>().ok());
        match count_known {
            Some(n) if n <= tarfmt::MAX_SPARSE_REGIONS && newlines <= n * 2 => continue,
            None if newlines == 0 && head.len() < 32 => continue,
            _ => {}
        }
        match tarfmt::parse_sparse_map_1_0(&head) {
            Ok(Some((regions, _))) => {
                *size -= head.len() as u64;
                return Ok(tarfmt::Sparse { regions, real_size });
            }
            Ok(None) => {}
            Err(e) => return Err(corrupt(format!("tar: {e}"))),
        }
    }
}

fn lossy(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

fn untar(
    rx: Receiver<Msg>,
    pool: Sender<Vec<u8>>,
    root: std::os::fd::RawFd,
    limits: &ExtractLimits,
    cancel: &AtomicBool,
    counters: &Counters,
) -> Result<(u64, u64), Fail> {
    let _clock = counters.stage_clock(Stage::Unpack);
    let mut blocks = Blocks {
        rx,
        pool,
        cur: Vec::new(),
        pos: 0,
        len: 0,
        ended: false,
        cancel,
    };
    let mut target = Target::new(root, limits, counters)?;
    let mut ov = Overrides::default();
    let mut entries: u64 = 0;
    let mut hdr = [0u8; BLOCK];
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(Fail::Halt(Halt::Cancelled));
        }
        match blocks.read_full(&mut hdr)? {
            0 => return Err(corrupt("tar: missing end-of-archive marker")),
            BLOCK => {}
            _ => return Err(corrupt("tar: truncated archive")),
        }
        if tarfmt::is_zero_block(&hdr) {
            break;
        }
        entries += 1;
        if entries > MAX_ENTRIES {
            return Err(corrupt(format!("tar: more than {MAX_ENTRIES} entries")));
        }
        let h = tarfmt::decode(&hdr).map_err(|e| corrupt(format!("tar: {e}")))?;
        match h.kind {
            b'x' | b'g' => {
                if h.size > tarfmt::MAX_PAX {
                    return Err(corrupt("tar: PAX header too large"));
                }
                let data = blocks.read_vec(h.size)?;
                // Global headers ('g') carry nothing we apply.
                if h.kind == b'x' {
                    tarfmt::parse_pax(&data, &mut ov).map_err(|e| corrupt(format!("tar: {e}")))?;
                }
                continue;
            }
            b'L' | b'K' => {
                if h.size > tarfmt::MAX_NAME as u64 + 1 {
                    return Err(corrupt("tar: entry name longer than 4096 bytes"));
                }
                let mut data = blocks.read_vec(h.size)?;
                while data.last() == Some(&0) {
                    data.pop();
                }
                if h.kind == b'L' {
                    ov.path = Some(data);
                } else {
                    ov.link = Some(data);
                }
                continue;
            }
            _ => {}
        }
        let o = std::mem::take(&mut ov);
        let mut size = o.size.unwrap_or(h.size);
        let mtime = o.mtime.unwrap_or((h.mtime, 0));
        // A sparse file's real name (PAX 0.1 and 1.0) beats the
        // `GNUSparseFile.<pid>/…` placeholder in `path`.
        let path = o.sparse.name.clone().or(o.path).unwrap_or(h.path);
        let link = o.link.unwrap_or(h.link);
        if path.len() > tarfmt::MAX_NAME || link.len() > tarfmt::MAX_NAME {
            return Err(corrupt(format!(
                "tar: entry name longer than {} bytes: {}",
                tarfmt::MAX_NAME,
                lossy(&path[..path.len().min(200)])
            )));
        }
        let unsafe_path = || Fail::Error(ExtractError::Unsafe(lossy(&path)));
        let comps = tarfmt::components(&path).map_err(|_| unsafe_path())?;
        let sparse = match (&h.gnu_sparse, o.sparse.present()) {
            (Some(g), _) => Some(gnu_sparse_map(&mut blocks, g, &mut entries)?),
            (None, true) if matches!(h.kind, b'0' | 0 | b'7') => {
                Some(pax_sparse_map(&mut blocks, o.sparse, &mut size)?)
            }
            _ => None,
        };
        if let Some(map) = &sparse {
            map.validate(size)
                .map_err(|e| corrupt(format!("tar: {e} for {}", lossy(&path))))?;
        }
        let kind = match h.kind {
            b'S' => Kind::File,
            // Old tars mark directories only by a trailing slash.
            b'0' | 0 | b'7' if path.ends_with(b"/") && sparse.is_none() => Kind::Dir,
            b'0' | 0 | b'7' => Kind::File,
            b'5' => Kind::Dir,
            b'2' => Kind::Symlink,
            b'1' => Kind::HardLink,
            // Character/block devices and FIFOs.
            b'3' | b'4' | b'6' => return Err(unsafe_path()),
            other => {
                return Err(corrupt(format!(
                    "tar: unsupported entry type {:?} for {}",
                    other as char,
                    lossy(&path)
                )))
            }
        };
        if comps.is_empty() {
            // The root itself (`./`): staging already exists.
            if kind != Kind::Dir {
                return Err(unsafe_path());
            }
            blocks.skip(size + tarfmt::padding(size) as u64)?;
            continue;
        }
        let display = lossy(&path);
        match kind {
            Kind::File => {
                let map = sparse.unwrap_or(tarfmt::Sparse {
                    regions: vec![(0, size)],
                    real_size: size,
                });
                target.file(&mut blocks, &comps, &display, h.mode, mtime, &map)?;
                blocks.skip(tarfmt::padding(size) as u64)?;
            }
            Kind::Dir => {
                target.dir(&comps, &display, h.mode, mtime)?;
                blocks.skip(size + tarfmt::padding(size) as u64)?;
            }
            Kind::Symlink => {
                target.symlink(&comps, &display, &link, mtime)?;
                blocks.skip(size + tarfmt::padding(size) as u64)?;
            }
            Kind::HardLink => {
                // Only a link to a regular file already extracted beneath
                // the root is accepted; `unpack` checks what it names.
                let to = tarfmt::components(&link).map_err(|_| unsafe_path())?;
                if to.is_empty() {
                    return Err(unsafe_path());
                }
                target.hard_link(&comps, &display, &to)?;
                blocks.skip(size + tarfmt::padding(size) as u64)?;
            }
        }
    }
    // Past the end marker: drain so the gzip stage reaches EOF (every byte
    // is hashed and the gzip CRC checked), but bounded.
    let mut trailing: u64 = 0;
    while let Some(s) = blocks.slice(usize::MAX)? {
        trailing += s.len() as u64;
        if trailing > MAX_TRAILING {
            return Err(corrupt(
                "tar: too much data after the end-of-archive marker",
            ));
        }
    }
    target.finish()?;
    Ok((target.files, target.bytes))
}
