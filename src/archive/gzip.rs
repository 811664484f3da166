//! pigz-style parallel gzip: one gzip member made of independently
//! compressed raw-deflate blocks. Each block is primed with the previous
//! block's last 32 KiB as a dictionary and ends with a sync flush (a byte
//! boundary), so blocks concatenate into one valid deflate stream; the
//! last block finishes it. The member CRC is combined from per-block CRCs.

use flate2::{Compress, Compression, FlushCompress, Status};
use std::sync::atomic::{AtomicBool, Ordering};

/// Deflate's window: the dictionary carried from one block to the next.
pub const DICT: usize = 32 * 1024;
/// Input is fed in slices this big so a cancel is seen mid-block.
const SLICE: usize = 128 * 1024;

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

/// One worker's compressor, reused from block to block.
pub struct BlockDeflater {
    c: Compress,
    /// Compressed form of a full block of zeros after a zero dictionary
    /// (sparse files, preallocated space): computed once, reused.
    zero_block: Option<(usize, Vec<u8>, u32)>,
}

impl BlockDeflater {
    pub fn new(level: u32) -> BlockDeflater {
        BlockDeflater {
            c: Compress::new(Compression::new(level.min(9)), false),
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
            let crc = self.deflate(dict, data, false, out, cancel)?;
            self.zero_block = Some((data.len(), out.clone(), crc));
            return Ok(crc);
        }
        self.deflate(dict, data, last, out, cancel)
    }

    fn deflate(
        &mut self,
        dict: &[u8],
        data: &[u8],
        last: bool,
        out: &mut Vec<u8>,
        cancel: &AtomicBool,
    ) -> Result<u32, DeflateError> {
        let fail = |e: flate2::CompressError| DeflateError::Failed(format!("deflate: {e}"));
        self.c.reset();
        if !dict.is_empty() {
            self.c.set_dictionary(dict).map_err(fail)?;
        }
        out.clear();
        let want = out_capacity(data.len());
        if out.capacity() < want {
            out.reserve(want);
        }
        let mut crc = crc32fast::Hasher::new();
        for slice in data.chunks(SLICE) {
            if cancel.load(Ordering::Relaxed) {
                return Err(DeflateError::Cancelled);
            }
            crc.update(slice);
            let mut rest = slice;
            while !rest.is_empty() {
                if out.capacity() - out.len() < 1024 {
                    out.reserve(SLICE);
                }
                let before = self.c.total_in();
                self.c
                    .compress_vec(rest, out, FlushCompress::None)
                    .map_err(fail)?;
                let used = (self.c.total_in() - before) as usize;
                rest = &rest[used..];
            }
        }
        let flush = if last {
            FlushCompress::Finish
        } else {
            FlushCompress::Sync
        };
        loop {
            if out.capacity() - out.len() < 1024 {
                out.reserve(SLICE);
            }
            let status = self.c.compress_vec(&[], out, flush).map_err(fail)?;
            // Done when the stream ended (Finish) or the flush left room
            // in the output (Sync: everything pending was emitted).
            let done = match flush {
                FlushCompress::Finish => status == Status::StreamEnd,
                _ => out.len() < out.capacity(),
            };
            if done {
                return Ok(crc.finalize());
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
    fn zero_block_cache_matches_real_output() {
        let cancel = AtomicBool::new(false);
        let zeros = vec![0u8; 70_000];
        let dict = vec![0u8; DICT];
        let mut d = BlockDeflater::new(1);
        let mut a = Vec::new();
        let ca = d
            .compress(&dict, &zeros, true, false, &mut a, &cancel)
            .unwrap();
        let mut b = Vec::new();
        let cb = d
            .compress(&dict, &zeros, true, false, &mut b, &cancel)
            .unwrap();
        let mut c = Vec::new();
        let cc = d
            .compress(&dict, &zeros, false, false, &mut c, &cancel)
            .unwrap();
        assert_eq!((a.clone(), ca), (b, cb));
        assert_eq!((a, ca), (c, cc));
    }
}
