//! gzip both ways. Writing is pigz-style: one gzip member made of
//! independently compressed raw-deflate blocks, each primed with the
//! previous block's last 32 KiB as a dictionary and ending with a sync
//! flush (a byte boundary), so blocks concatenate into one valid deflate
//! stream; the last block finishes it and the member CRC is combined from
//! per-block CRCs. Reading is a multi-member decoder over raw inflate that
//! skips header fields without buffering them and checks each trailer.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::io::{self, BufRead, Read};
use std::sync::atomic::{AtomicBool, Ordering};

/// Zero bytes tolerated after the last gzip member (block padding).
const MAX_ZERO_PADDING: usize = 1 << 20;

/// Deflate's window: the dictionary carried from one block to the next.
pub const DICT: usize = 32 * 1024;
/// Input is fed in slices this big so a cancel is seen mid-block (even in
/// an unoptimised build, where deflate runs at a few MB/s).
const SLICE: usize = 32 * 1024;

/// The 10-byte gzip member header: no name, no mtime, OS = Unix.
pub fn header(level: u32) -> [u8; 10] {
    let xfl = match level {
        1 => 4,
        9 => 2,
        _ => 0,
    };
    [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 3]
}

/// The 8-byte gzip trailer: CRC-32 and length mod 2^32, little-endian.
pub fn trailer(crc: u32, len: u64) -> [u8; 8] {
    let mut t = [0u8; 8];
    t[..4].copy_from_slice(&crc.to_le_bytes());
    t[4..].copy_from_slice(&(len as u32).to_le_bytes());
    t
}

/// Upper bound of deflate output for `n` input bytes plus a flush.
pub fn out_capacity(n: usize) -> usize {
    n + n / 8 + 4096
}

#[derive(Debug)]
pub enum DeflateError {
    Cancelled,
    Failed(String),
}

impl std::fmt::Display for DeflateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeflateError::Cancelled => f.write_str("compression cancelled"),
            DeflateError::Failed(why) => write!(f, "compression failed: {why}"),
        }
    }
}

impl std::error::Error for DeflateError {}

/// One worker's compressor, reused from block to block.
pub struct BlockDeflater {
    c: Compress,
    /// Level 0, for blocks that look incompressible (already-compressed
    /// jars, region chunks): deflate would spend time only to expand them.
    stored: Compress,
    level: u32,
    /// Compressed form of a full block of zeros after a zero dictionary
    /// (sparse files, preallocated space): computed once, reused.
    zero_block: Option<(usize, Vec<u8>, u32)>,
}

impl BlockDeflater {
    pub fn new(level: u32) -> BlockDeflater {
        BlockDeflater {
            c: Compress::new(Compression::new(level.min(9)), false),
            stored: Compress::new(Compression::new(0), false),
            level: level.min(9),
            zero_block: None,
        }
    }

    /// Compresses `data` (primed with `dict`) into `out` and returns the
    /// CRC-32 of `data`. `last` finishes the deflate stream.
    pub fn compress(
        &mut self,
        dict: &[u8],
        data: &[u8],
        zero: bool,
        last: bool,
        out: &mut Vec<u8>,
        cancel: &AtomicBool,
    ) -> Result<u32, DeflateError> {
        if zero && !last {
            if let Some((len, bytes, crc)) = &self.zero_block {
                if *len == data.len() {
                    out.clear();
                    out.extend_from_slice(bytes);
                    return Ok(*crc);
                }
            }
            zero_run(data.len(), out);
            let crc = crc32fast::hash(data);
            self.zero_block = Some((data.len(), out.clone(), crc));
            return Ok(crc);
        }
        let entropy = probe_entropy(data);
        let store = self.level > 0 && entropy > INCOMPRESSIBLE;
        if !store && !dict.is_empty() {
            // zlib-rs primes a dictionary differently in a new stream than
            // after a reset, so a block's bytes would depend on what this
            // worker compressed before (and on timing): a restarted
            // source must pack the same body again. A new compressor per
            // block costs ~12 µs.
            self.c = Compress::new(Compression::new(self.level), false);
        }
        if self.level > 0 && !store && entropy > MIXED {
            let runs = mixed_runs(data);
            if runs.iter().any(|r| r.stored) {
                return self.deflate_mixed(dict, data, &runs, last, out, cancel);
            }
        }
        self.deflate(dict, data, last, store, out, cancel)
    }

    /// A block mixing incompressible runs (random or already-compressed
    /// sectors) with compressible ones: the former become stored blocks,
    /// the latter are deflated, each run ending byte-aligned (sync flush).
    /// deflate spends as much time on random bytes as on text and gains
    /// nothing, so this is several times faster on such blocks.
    fn deflate_mixed(
        &mut self,
        dict: &[u8],
        data: &[u8],
        runs: &[Run],
        last: bool,
        out: &mut Vec<u8>,
        cancel: &AtomicBool,
    ) -> Result<u32, DeflateError> {
        out.clear();
        let want = out_capacity(data.len());
        if out.capacity() < want {
            out.reserve(want);
        }
        for run in runs {
            if cancel.load(Ordering::Relaxed) {
                return Err(DeflateError::Cancelled);
            }
            let bytes = &data[run.start..run.end];
            if run.stored {
                stored_blocks(bytes, out);
            } else {
                // The decoder's history holds the stored bytes the
                // compressor never saw, so after a reset matches reach only
                // into this run; the first run may also use the dictionary,
                // which is the history right before the block.
                let d = if run.start == 0 { dict } else { &[] };
                deflate_into(&mut self.c, d, bytes, FlushCompress::Sync, out, cancel)?;
            }
        }
        if last {
            // An empty final stored block ends the deflate stream.
            out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
        }
        Ok(crc32fast::hash(data))
    }

    fn deflate(
        &mut self,
        dict: &[u8],
        data: &[u8],
        last: bool,
        store: bool,
        out: &mut Vec<u8>,
        cancel: &AtomicBool,
    ) -> Result<u32, DeflateError> {
        let c = if store { &mut self.stored } else { &mut self.c };
        // Stored blocks never refer back, so they need no dictionary.
        let dict = if store { &[][..] } else { dict };
        out.clear();
        let want = out_capacity(data.len());
        if out.capacity() < want {
            out.reserve(want);
        }
        let flush = if last {
            FlushCompress::Finish
        } else {
            FlushCompress::Sync
        };
        deflate_into(c, dict, data, flush, out, cancel)?;
        Ok(crc32fast::hash(data))
    }
}

/// Resets `c`, primes it with `dict` and appends the raw deflate of
/// `data` to `out`, ending with `flush` (Sync: byte-aligned; Finish: the
/// final block).
fn deflate_into(
    c: &mut Compress,
    dict: &[u8],
    data: &[u8],
    flush: FlushCompress,
    out: &mut Vec<u8>,
    cancel: &AtomicBool,
) -> Result<(), DeflateError> {
    let fail = |e: flate2::CompressError| DeflateError::Failed(format!("deflate: {e}"));
    c.reset();
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(fail)?;
    }
    for slice in data.chunks(SLICE) {
        if cancel.load(Ordering::Relaxed) {
            return Err(DeflateError::Cancelled);
        }
        let mut rest = slice;
        while !rest.is_empty() {
            if out.capacity() - out.len() < 1024 {
                out.reserve(SLICE);
            }
            let before = c.total_in();
            c.compress_vec(rest, out, FlushCompress::None)
                .map_err(fail)?;
            let used = (c.total_in() - before) as usize;
            rest = &rest[used..];
        }
    }
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(SLICE);
        }
        let status = c.compress_vec(&[], out, flush).map_err(fail)?;
        // Done when the stream ended (Finish) or the flush left room
        // in the output (Sync: everything pending was emitted).
        let done = match flush {
            FlushCompress::Finish => status == Status::StreamEnd,
            _ => out.len() < out.capacity(),
        };
        if done {
            return Ok(());
        }
    }
}

/// Appends `data` as non-final stored deflate blocks. The stream must be
/// byte-aligned here, and stays so.
fn stored_blocks(data: &[u8], out: &mut Vec<u8>) {
    for chunk in data.chunks(u16::MAX as usize) {
        let len = chunk.len() as u16;
        // BFINAL=0, BTYPE=00, padding to the byte boundary.
        out.push(0);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
}

/// Probe entropy (bits per byte) above which a block is stored whole.
const INCOMPRESSIBLE: f64 = 7.97;
/// Probe entropy above which a block may mix incompressible runs with
/// compressible ones and is classified piece by piece. Text, configs and
/// structured game data stay well below.
const MIXED: f64 = 6.0;
/// Classification granularity: tar puts file data on 512-byte boundaries.
const PIECE: usize = 512;
/// Bytes of each piece looked at: the first quarter. Whole pieces cost a
/// sixth of a core per 500 MB here; data changes nature on sector
/// boundaries, not inside 512 bytes.
const SAMPLE: usize = 128;
/// Distinct byte values among those 128 from which a piece counts as
/// incompressible: random or compressed data shows about 101 (sd ~4);
/// base64 about 55, text and structured data fewer still.
const RANDOM_DISTINCT: u32 = 80;
/// Shortest incompressible run stored on its own.
const MIN_STORED: usize = 2048;
/// Shortest compressible run between two stored ones worth a fresh
/// compressor (a reset costs about as much as deflating 4 KiB).
const MIN_DEFLATED: usize = 1024;

/// One run of a mixed block, `data[start..end]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    start: usize,
    end: usize,
    stored: bool,
}

/// Distinct byte values in `piece`.
fn distinct(piece: &[u8]) -> u32 {
    let mut seen = [0u64; 4];
    for &b in piece {
        seen[(b >> 6) as usize] |= 1 << (b & 63);
    }
    seen.iter().map(|w| w.count_ones()).sum()
}

/// Splits a block into stored and deflated runs, in order, covering it.
fn mixed_runs(data: &[u8]) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    fn push(runs: &mut Vec<Run>, start: usize, end: usize, stored: bool) {
        match runs.last_mut() {
            Some(r) if r.stored == stored => r.end = end,
            _ => runs.push(Run { start, end, stored }),
        }
    }
    for (i, piece) in data.chunks(PIECE).enumerate() {
        let start = i * PIECE;
        let random = piece.len() == PIECE && distinct(&piece[..SAMPLE]) >= RANDOM_DISTINCT;
        push(&mut runs, start, start + piece.len(), random);
    }
    // Short stored runs are deflated with their neighbours; then short
    // deflated runs between stored ones are stored with them.
    let mut merged: Vec<Run> = Vec::with_capacity(runs.len());
    for r in runs {
        let stored = r.stored && r.end - r.start >= MIN_STORED;
        push(&mut merged, r.start, r.end, stored);
    }
    let mut out: Vec<Run> = Vec::with_capacity(merged.len());
    for (i, r) in merged.iter().enumerate() {
        let between = i > 0 && i + 1 < merged.len();
        let stored = r.stored || (between && r.end - r.start < MIN_DEFLATED);
        push(&mut out, r.start, r.end, stored);
    }
    out
}

/// Bytes sampled from a block to judge whether it is worth compressing.
const PROBE: usize = 8 * 1024;

/// True when four 8 KiB samples spread over `data` have a byte entropy
/// so close to 8 bits that deflate cannot gain (random or already
/// compressed data). Windows of 8 KiB so data mixing 4 KiB compressed and
/// plain sectors (region files) is never mistaken for incompressible.
#[cfg(test)]
pub fn looks_incompressible(data: &[u8]) -> bool {
    probe_entropy(data) > INCOMPRESSIBLE
}

/// Byte entropy (bits) of four 8 KiB samples spread over `data`; 0 for
/// blocks too short to judge.
fn probe_entropy(data: &[u8]) -> f64 {
    if data.len() < 8 * PROBE {
        return 0.0;
    }
    let mut hist = [0u32; 256];
    for k in 0..4 {
        let off = data.len() / 8 + k * (data.len() / 4);
        for &b in &data[off..off + PROBE] {
            hist[b as usize] += 1;
        }
    }
    let n = (4 * PROBE) as f64;
    hist.iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// Deflate bits, least significant first.
struct Bits<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits<'_> {
    fn put(&mut self, value: u32, bits: u32) {
        self.acc |= (value as u64) << self.n;
        self.n += bits;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// A Huffman code, which deflate stores most significant bit first.
    fn code(&mut self, code: u32, bits: u32) {
        self.put(code.reverse_bits() >> (32 - bits), bits);
    }

    /// A fixed-Huffman literal/length symbol.
    fn symbol(&mut self, s: u32) {
        match s {
            0..=143 => self.code(0x30 + s, 8),
            144..=255 => self.code(0x190 + s - 144, 9),
            256..=279 => self.code(s - 256, 7),
            _ => self.code(0xc0 + s - 280, 8),
        }
    }

    /// A match of `len` (3..=258) bytes at distance 258: never overlapping
    /// itself, so inflaters copy it in one go.
    fn far_match(&mut self, len: u32) {
        const BASE: [u32; 29] = [
            3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99,
            115, 131, 163, 195, 227, 258,
        ];
        const EXTRA: [u32; 29] = [
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
        ];
        let i = if len == 258 {
            28
        } else {
            BASE.iter().rposition(|&b| b <= len).unwrap_or(0)
        };
        self.symbol(257 + i as u32);
        self.put(len - BASE[i], EXTRA[i]);
        // Distance code 16: base 257 + 7 extra bits = 258.
        self.code(16, 5);
        self.put(258 - 257, 7);
    }
}

/// A fixed-Huffman deflate block producing `n` zero bytes by copying from
/// 258 bytes back, then a sync flush. Only valid when the output before it
/// ends in zeros (the caller's `zero` condition: 32 KiB of them).
/// Non-overlapping copies inflate much faster than the distance-1 runs a
/// compressor emits; 20 bits per 258 bytes.
fn zero_run(n: usize, out: &mut Vec<u8>) {
    out.clear();
    let mut b = Bits { out, acc: 0, n: 0 };
    b.put(0b010, 3); // not final, fixed Huffman
    let mut left = n;
    while left >= 3 {
        // 259 or 260 left: split so no match is shorter than 3.
        let take = match left {
            259 | 260 => left - 3,
            _ => left.min(258),
        };
        b.far_match(take as u32);
        left -= take;
    }
    for _ in 0..left {
        b.symbol(0);
    }
    b.symbol(256);
    // Sync flush: an empty stored block, byte-aligned.
    b.put(0, 3);
    if b.n > 0 {
        let pad = 8 - b.n;
        b.put(0, pad);
    }
    b.out.extend_from_slice(&[0, 0, 0xff, 0xff]);
}

enum ReadState {
    /// Before a member header; `first` = nothing decoded yet.
    Header {
        first: bool,
    },
    Body,
    Done,
}

/// A multi-member gzip decoder (RFC 1952) over any `BufRead`. Header
/// fields (name, comment, extra) are skipped, never stored, so a hostile
/// header costs no memory. Anything after the last member that is not
/// another member is an error, as is a truncated stream.
pub struct GunzipReader<R> {
    inner: R,
    inflate: Decompress,
    crc: crc32fast::Hasher,
    len: u64,
    state: ReadState,
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

fn truncated() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "truncated gzip stream")
}

impl<R: BufRead> GunzipReader<R> {
    pub fn new(inner: R) -> GunzipReader<R> {
        GunzipReader {
            inner,
            inflate: Decompress::new(false),
            crc: crc32fast::Hasher::new(),
            len: 0,
            state: ReadState::Header { first: true },
        }
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    fn byte(&mut self) -> io::Result<u8> {
        let b = *self.inner.fill_buf()?.first().ok_or_else(truncated)?;
        self.inner.consume(1);
        Ok(b)
    }

    fn skip(&mut self, mut n: usize) -> io::Result<()> {
        while n > 0 {
            let avail = self.inner.fill_buf()?.len();
            if avail == 0 {
                return Err(truncated());
            }
            let k = avail.min(n);
            self.inner.consume(k);
            n -= k;
        }
        Ok(())
    }

    fn skip_zero_terminated(&mut self) -> io::Result<()> {
        loop {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                return Err(truncated());
            }
            if let Some(i) = buf.iter().position(|&b| b == 0) {
                self.inner.consume(i + 1);
                return Ok(());
            }
            let n = buf.len();
            self.inner.consume(n);
        }
    }

    /// Zero bytes after the last member up to the end of input: tar
    /// writers pad their compressed output to a block (bsdtar writing to
    /// a pipe pads to 10 KiB), and gzip(1) ignores them too. True when
    /// the input ended after only zeros; false (nothing consumed past the
    /// zeros) when something else follows.
    fn zero_padding_to_end(&mut self) -> io::Result<bool> {
        let mut seen: usize = 0;
        loop {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                return Ok(true);
            }
            let zeros = buf.iter().take_while(|&&b| b == 0).count();
            let whole = zeros == buf.len();
            self.inner.consume(zeros);
            seen += zeros;
            if !whole || seen > MAX_ZERO_PADDING {
                return Ok(false);
            }
        }
    }

    /// Parses a member header; false at a clean end of input.
    fn header(&mut self, first: bool) -> io::Result<bool> {
        if self.inner.fill_buf()?.is_empty() {
            return if first { Err(truncated()) } else { Ok(false) };
        }
        if !first && self.inner.fill_buf()?.first() == Some(&0) {
            if self.zero_padding_to_end()? {
                return Ok(false);
            }
            return Err(bad("trailing data after the gzip stream"));
        }
        let id1 = self.byte()?;
        let id2 = self.byte()?;
        if (id1, id2) != (0x1f, 0x8b) {
            return Err(bad(if first {
                "not a gzip stream"
            } else {
                "trailing data after the gzip stream"
            }));
        }
        if self.byte()? != 8 {
            return Err(bad("unknown compression method"));
        }
        let flags = self.byte()?;
        if flags & 0xe0 != 0 {
            return Err(bad("reserved header flags set"));
        }
        self.skip(6)?; // mtime, xfl, os
        if flags & 0x04 != 0 {
            let xlen = self.byte()? as usize | (self.byte()? as usize) << 8;
            self.skip(xlen)?;
        }
        if flags & 0x08 != 0 {
            self.skip_zero_terminated()?;
        }
        if flags & 0x10 != 0 {
            self.skip_zero_terminated()?;
        }
        if flags & 0x02 != 0 {
            self.skip(2)?;
        }
        self.inflate.reset(false);
        self.crc = crc32fast::Hasher::new();
        self.len = 0;
        Ok(true)
    }

    fn trailer(&mut self) -> io::Result<()> {
        let mut t = [0u8; 8];
        for b in t.iter_mut() {
            *b = self.byte()?;
        }
        let crc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
        let len = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
        let ours = std::mem::replace(&mut self.crc, crc32fast::Hasher::new()).finalize();
        if crc != ours || len != self.len as u32 {
            return Err(bad("checksum mismatch"));
        }
        Ok(())
    }
}

impl<R: BufRead> Read for GunzipReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            match self.state {
                ReadState::Done => return Ok(0),
                ReadState::Header { first } => {
                    self.state = if self.header(first)? {
                        ReadState::Body
                    } else {
                        ReadState::Done
                    };
                }
                ReadState::Body => {
                    let input = self.inner.fill_buf()?;
                    if input.is_empty() {
                        return Err(truncated());
                    }
                    let (in0, out0) = (self.inflate.total_in(), self.inflate.total_out());
                    let status = self
                        .inflate
                        .decompress(input, out, FlushDecompress::None)
                        .map_err(|_| bad("corrupt deflate stream"))?;
                    let used = (self.inflate.total_in() - in0) as usize;
                    let made = (self.inflate.total_out() - out0) as usize;
                    self.inner.consume(used);
                    self.crc.update(&out[..made]);
                    self.len += made as u64;
                    if status == Status::StreamEnd {
                        self.trailer()?;
                        self.state = ReadState::Header { first: false };
                    } else if used == 0 && made == 0 {
                        return Err(bad("corrupt deflate stream"));
                    }
                    if made > 0 {
                        return Ok(made);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn blocks_form_one_valid_member() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let cancel = AtomicBool::new(false);
        let mut d = BlockDeflater::new(6);
        let mut gz = header(6).to_vec();
        let mut crc = crc32fast::Hasher::new();
        let chunks: Vec<&[u8]> = data.chunks(100_000).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let start = i * 100_000;
            let dict = &data[start.saturating_sub(DICT)..start];
            let mut out = Vec::new();
            let c = d
                .compress(dict, chunk, false, i == chunks.len() - 1, &mut out, &cancel)
                .unwrap();
            crc.combine(&crc32fast::Hasher::new_with_initial_len(
                c,
                chunk.len() as u64,
            ));
            gz.extend_from_slice(&out);
        }
        gz.extend_from_slice(&trailer(crc.finalize(), data.len() as u64));
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn zero_runs_inflate_to_zeros() {
        let cancel = AtomicBool::new(false);
        for n in [1usize, 2, 3, 257, 258, 259, 260, 261, 516, 70_000, 1 << 20] {
            // Stream: 32 KiB of zeros compressed normally, then the run.
            let zeros = vec![0u8; n];
            let dict = vec![0u8; DICT];
            let mut d = BlockDeflater::new(1);
            let mut gz = header(1).to_vec();
            let mut first = Vec::new();
            let c1 = d
                .compress(&[], &dict, false, false, &mut first, &cancel)
                .unwrap();
            let mut run = Vec::new();
            let c2 = d
                .compress(&dict, &zeros, true, false, &mut run, &cancel)
                .unwrap();
            let mut again = Vec::new();
            d.compress(&dict, &zeros, true, false, &mut again, &cancel)
                .unwrap();
            assert_eq!(run, again, "cached");
            let mut fin = Vec::new();
            let tail = &zeros[n.saturating_sub(DICT)..];
            let c3 = d
                .compress(tail, b"end", false, true, &mut fin, &cancel)
                .unwrap();
            let mut crc = crc32fast::Hasher::new_with_initial_len(c1, DICT as u64);
            crc.combine(&crc32fast::Hasher::new_with_initial_len(c2, n as u64));
            crc.combine(&crc32fast::Hasher::new_with_initial_len(c3, 3));
            for part in [&first, &run, &fin] {
                gz.extend_from_slice(part);
            }
            gz.extend_from_slice(&trailer(crc.finalize(), (DICT + n + 3) as u64));
            let mut back = Vec::new();
            let r = flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut back);
            assert!(r.is_ok(), "n={n}: {r:?} got {} bytes", back.len());
            assert_eq!(back.len(), DICT + n + 3, "n={n}");
            assert!(back[..DICT + n].iter().all(|&b| b == 0));
            assert_eq!(&back[DICT + n..], b"end");
        }
    }

    fn gunzip(data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        GunzipReader::new(data).read_to_end(&mut out)?;
        Ok(out)
    }

    fn member(data: &[u8], with_fields: bool) -> Vec<u8> {
        use std::io::Write;
        let b = if with_fields {
            flate2::GzBuilder::new()
                .filename(&b"name.tar"[..])
                .comment(&b"a comment"[..])
                .extra(vec![1, 2, 3, 4])
        } else {
            flate2::GzBuilder::new()
        };
        let mut e = b.write(Vec::new(), Compression::new(6));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gunzip_reads_members_and_skips_header_fields() {
        let mut gz = member(b"hello ", true);
        gz.extend(member(b"", false));
        gz.extend(member(&vec![b'x'; 100_000], true));
        let out = gunzip(&gz).unwrap();
        assert_eq!(out.len(), 6 + 100_000);
        assert!(out.starts_with(b"hello x"));
    }

    #[test]
    fn gunzip_accepts_zero_padding_after_the_last_member() {
        let mut gz = member(b"hello", true);
        gz.extend_from_slice(&[0u8; 10_000]);
        assert_eq!(gunzip(&gz).unwrap(), b"hello");
        let mut junk = member(b"hello", true);
        junk.extend_from_slice(&[0u8; 100]);
        junk.push(1);
        assert!(gunzip(&junk)
            .unwrap_err()
            .to_string()
            .contains("trailing data"));
        let mut endless = member(b"hello", true);
        endless.extend(std::iter::repeat_n(0u8, MAX_ZERO_PADDING + 2));
        assert!(gunzip(&endless).is_err());
    }

    #[test]
    fn gunzip_refuses_damage() {
        let gz = member(&vec![7u8; 50_000], false);
        let kind = |d: &[u8]| gunzip(d).unwrap_err().kind();
        assert_eq!(kind(&gz[..gz.len() - 3]), io::ErrorKind::UnexpectedEof);
        assert_eq!(kind(&gz[..20]), io::ErrorKind::UnexpectedEof);
        assert_eq!(kind(b""), io::ErrorKind::UnexpectedEof);
        let mut garbage = gz.clone();
        garbage.extend_from_slice(b"garbage");
        let e = gunzip(&garbage).unwrap_err();
        assert!(e.to_string().contains("trailing data"), "{e}");
        let mut bad_crc = gz.clone();
        let n = bad_crc.len();
        bad_crc[n - 8] ^= 1;
        assert!(gunzip(&bad_crc)
            .unwrap_err()
            .to_string()
            .contains("checksum"));
        assert_eq!(kind(b"PK\x03\x04 not gzip"), io::ErrorKind::InvalidData);
    }

    fn xorshift(seed: u64, n: usize) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    /// Random sectors of `sector` bytes alternating with text ones, after a
    /// `skew`-byte text prefix (tar puts file data at 512-byte offsets).
    fn region_like(n: usize, sector: usize, skew: usize) -> Vec<u8> {
        let random = xorshift(7, n);
        let text = b"minecraft:stone Palette 17 BlockStates 3 ".repeat(n / 40 + 1);
        let mut out = text[..skew].to_vec();
        let mut i = 0;
        while out.len() < n {
            let k = sector.min(n - out.len());
            let src = if i % 2 == 0 { &random } else { &text };
            out.extend_from_slice(&src[out.len()..out.len() + k]);
            i += 1;
        }
        out
    }

    /// Compresses `data` in `block`-sized pieces as the pack pipeline
    /// does and gunzips the result.
    fn round_trip(data: &[u8], block: usize) -> (Vec<u8>, usize) {
        let cancel = AtomicBool::new(false);
        let mut d = BlockDeflater::new(1);
        let mut gz = header(1).to_vec();
        let mut crc = crc32fast::Hasher::new();
        let blocks: Vec<&[u8]> = data.chunks(block).collect();
        for (i, b) in blocks.iter().enumerate() {
            let start = i * block;
            let dict = &data[start.saturating_sub(DICT)..start];
            let mut out = Vec::new();
            let c = d
                .compress(dict, b, false, i + 1 == blocks.len(), &mut out, &cancel)
                .unwrap();
            assert_eq!(c, crc32fast::hash(b));
            crc.combine(&crc32fast::Hasher::new_with_initial_len(c, b.len() as u64));
            gz.extend_from_slice(&out);
        }
        gz.extend_from_slice(&trailer(crc.finalize(), data.len() as u64));
        let size = gz.len();
        (gunzip(&gz).unwrap(), size)
    }

    #[test]
    fn mixed_blocks_store_random_runs_and_round_trip() {
        for (sector, skew) in [
            (4096, 0),
            (4096, 512),
            (4096, 3584),
            (8192, 1536),
            (1024, 0),
        ] {
            let data = region_like(3 << 20, sector, skew);
            let (back, size) = round_trip(&data, 1 << 20);
            assert!(back == data, "sector {sector} skew {skew}");
            // Half random: at most a little over half the input plus the
            // compressed text half.
            assert!(size < data.len() * 6 / 10, "sector {sector}: {size}");
        }
        // Blocks that are not a multiple of a piece, and tiny last blocks.
        let data = region_like((1 << 20) + 777, 4096, 1024);
        assert_eq!(round_trip(&data, 300_001).0, data);
    }

    /// Text like the many small configuration files a server has: lines
    /// of words and numbers from a small vocabulary, never one repeat.
    fn config_like(seed: u64, n: usize) -> Vec<u8> {
        let words = [
            "enabled",
            "spawn-protection",
            "max-players",
            "motd",
            "true",
            "false",
            "view-distance",
            "level-seed",
            "world",
            "nether",
            "plugin",
            "version",
        ];
        let noise = xorshift(seed, n);
        let mut out = Vec::with_capacity(n + 64);
        let mut i = 0;
        while out.len() < n {
            let r = noise[i % n] as usize;
            out.extend_from_slice(words[r % words.len()].as_bytes());
            out.extend_from_slice(format!(": {}\n", r * 7 + i % 13).as_bytes());
            i += 1;
        }
        out.truncate(n);
        out
    }

    /// A tar of many small configuration-like files (tar headers, padding).
    fn small_files_tar() -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let sizes = xorshift(11, 6000);
        let mut i = 0;
        while builder.get_ref().len() < 3 << 20 {
            let body = config_like(i as u64 + 1, 100 + sizes[i] as usize * 4);
            let mut header = tar::Header::new_ustar();
            header.set_size(body.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(1_700_000_000 + i as u64);
            header.set_cksum();
            builder
                .append_data(
                    &mut header,
                    format!("config/group-{:02}/config-{i:05}.yml", i % 50),
                    &body[..],
                )
                .unwrap();
            i += 1;
        }
        builder.into_inner().unwrap()
    }

    /// A block compresses to the same bytes whatever its worker compressed
    /// before (a restarted source must produce the same body again, and
    /// which worker takes which block depends on timing). zlib-rs primes
    /// a dictionary differently on a new stream than after a reset.
    #[test]
    fn a_block_compresses_the_same_whatever_the_worker_did_before() {
        let cancel = AtomicBool::new(false);
        let data = small_files_tar();
        let blocks: Vec<&[u8]> = data.chunks(1 << 20).collect();
        let dict = |i: usize| &blocks[i - 1][blocks[i - 1].len() - DICT..];
        for level in [1, 6] {
            for last in [false, true] {
                let compressed = |history: &[usize]| {
                    let mut d = BlockDeflater::new(level);
                    let mut out = Vec::new();
                    for &h in history {
                        let dict = if h == 0 { &[][..] } else { dict(h) };
                        d.compress(dict, blocks[h], false, false, &mut out, &cancel)
                            .unwrap();
                    }
                    d.compress(dict(2), blocks[2], false, last, &mut out, &cancel)
                        .unwrap();
                    out
                };
                let alone = compressed(&[]);
                assert!(
                    compressed(&[0]) == alone && compressed(&[1, 0]) == alone,
                    "level {level}, last {last}: the block depends on the worker's history"
                );
            }
        }
    }

    #[test]
    fn mixed_runs_cover_the_block_and_merge_short_runs() {
        let data = region_like(1 << 20, 4096, 512);
        let runs = mixed_runs(&data);
        assert_eq!(runs.first().map(|r| r.start), Some(0));
        assert_eq!(runs.last().map(|r| r.end), Some(data.len()));
        for w in runs.windows(2) {
            assert_eq!(w[0].end, w[1].start);
            assert_ne!(w[0].stored, w[1].stored, "adjacent runs merge");
        }
        let stored: usize = runs
            .iter()
            .filter(|r| r.stored)
            .map(|r| r.end - r.start)
            .sum();
        // The random half, less the pieces a misaligned sector shares with text.
        assert!(
            stored > data.len() * 4 / 10 && stored <= data.len() / 2,
            "{stored}"
        );
        // A random run shorter than MIN_STORED is deflated with its text.
        let text = b"key=value\n".repeat(100_000);
        let mut d = text[..8192].to_vec();
        d.extend_from_slice(&xorshift(3, 1024));
        d.extend_from_slice(&text[..8192]);
        assert!(mixed_runs(&d).iter().all(|r| !r.stored));
        // Random data has about 101 distinct bytes per sample, text few.
        for seed in 1..200 {
            assert!(distinct(&xorshift(seed, SAMPLE)) >= RANDOM_DISTINCT);
        }
        assert!(distinct(&text[..SAMPLE]) < 20);
        let base64: Vec<u8> = xorshift(5, SAMPLE)
            .iter()
            .map(|b| {
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
                    [(b & 63) as usize]
            })
            .collect();
        assert!(distinct(&base64) < RANDOM_DISTINCT);
    }

    #[test]
    fn incompressible_probe() {
        let mut x = 0x9e3779b97f4a7c15u64;
        let random: Vec<u8> = (0..1 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        assert!(looks_incompressible(&random));
        // 4 KiB random sectors alternating with text: worth compressing.
        let mut mixed = random.clone();
        for (i, sector) in mixed.chunks_mut(4096).enumerate() {
            if i % 2 == 1 {
                sector.copy_from_slice(&b"minecraft:stone ".repeat(256));
            }
        }
        assert!(!looks_incompressible(&mixed));
        assert!(!looks_incompressible(&vec![0u8; 1 << 20]));
        assert!(!looks_incompressible(&random[..1000]));
        // And stored blocks still round-trip.
        let cancel = AtomicBool::new(false);
        let mut d = BlockDeflater::new(1);
        let mut out = Vec::new();
        let crc = d
            .compress(&[], &random, false, true, &mut out, &cancel)
            .unwrap();
        assert!(out.len() < random.len() + random.len() / 100);
        let mut gz = header(1).to_vec();
        gz.extend_from_slice(&out);
        gz.extend_from_slice(&trailer(crc, random.len() as u64));
        assert_eq!(gunzip(&gz).unwrap(), random);
    }
}
