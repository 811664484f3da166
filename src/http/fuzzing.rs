//! Entry points for the cargo-fuzz targets in `fuzz/`: the sans-I/O head
//! parser (one shot, and fed in pieces exactly as the head reader feeds
//! it) and the chunked body decoder, with plain owned results a fuzz
//! target can compare and check invariants on.
//!
//! Not part of the crate's API (hidden from the docs); nothing here is used
//! by the daemon. The functions never panic on any input: a panic in a
//! fuzz run is always a bug in the code under test or in an invariant the
//! target asserts.

use super::chunked::{self, ChunkedDecoder};
use super::head::{self, Limits, Scan};

/// A parsed head, flattened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadSummary {
    /// Bytes of the input used: skipped blank lines plus the head.
    pub consumed: usize,
    pub method: String,
    pub path: String,
    pub query: String,
    pub minor_version: u8,
    pub headers: Vec<(String, String)>,
    /// Chunked body framing (else `length`).
    pub chunked: bool,
    /// Body length under Content-Length framing (0 when there is no body).
    pub length: u64,
    pub content_length: Option<u64>,
    pub keep_alive: bool,
    pub expect_continue: bool,
}

/// What the head reader decides about some input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadOutcome {
    /// The input ended before a decision: the reader would wait for more.
    NeedMore,
    Complete(HeadSummary),
    /// Refused with this status (400 or 431) and message.
    Rejected(u16, String),
}

fn summary(h: head::Head, consumed: usize) -> HeadSummary {
    let (chunked, length) = match h.framing {
        head::Framing::Chunked => (true, 0),
        head::Framing::Length(n) => (false, n),
    };
    HeadSummary {
        consumed,
        method: h.method,
        path: h.path,
        query: h.query,
        minor_version: h.minor_version,
        headers: h.headers,
        chunked,
        length,
        content_length: h.content_length,
        keep_alive: h.keep_alive,
        expect_continue: h.expect_continue,
    }
}

/// The head of `input` parsed in one go, the way the head reader would see
/// it if every byte arrived in a single read: blank lines skipped, at most
/// `max_header_bytes` of head held, 431 when that fills up without a head.
pub fn parse_head_whole(input: &[u8], max_header_bytes: usize, max_headers: usize) -> HeadOutcome {
    let limits = Limits {
        max_header_bytes,
        max_headers,
    };
    let skip = head::leading_empty_lines(input);
    let rest = &input[skip..];
    let held = &rest[..rest.len().min(max_header_bytes)];
    let outcome = match head::parse_head(held, &limits) {
        Ok(head::Parsed::Complete(h, n)) => Ok((h, n)),
        Ok(head::Parsed::Partial) if held.len() == max_header_bytes => {
            head::scan_full(held, &limits)
        }
        Ok(head::Parsed::Partial) => return HeadOutcome::NeedMore,
        Err(e) => Err(e),
    };
    match outcome {
        Ok((h, n)) => HeadOutcome::Complete(summary(h, skip + n)),
        Err(e) => HeadOutcome::Rejected(e.status, e.message.to_string()),
    }
}

/// The head of `input` as the head reader finds it when the bytes arrive
/// in reads of the given sizes (cycled; a 0 is taken as 1): the same
/// incremental search, blank-line skipping and full-buffer verdict the
/// reactor uses, each read capped by the room left under
/// `max_header_bytes`.
pub fn parse_head_in_reads(
    input: &[u8],
    reads: &[usize],
    max_header_bytes: usize,
    max_headers: usize,
) -> HeadOutcome {
    let limits = Limits {
        max_header_bytes,
        max_headers,
    };
    // `buf[start..end]` is what the reactor would hold; `start` counts
    // everything consumed so far (skipped blank lines).
    let (mut start, mut end) = (0usize, 0usize);
    let mut scanned = 0usize;
    let mut read = 0usize;
    loop {
        let pending = &input[start..end];
        let room = max_header_bytes.saturating_sub(pending.len());
        if room == 0 {
            return match head::scan_full(pending, &limits) {
                Ok((h, n)) => HeadOutcome::Complete(summary(h, start + n)),
                Err(e) => HeadOutcome::Rejected(e.status, e.message.to_string()),
            };
        }
        if end == input.len() {
            return HeadOutcome::NeedMore;
        }
        let want = reads
            .get(read % reads.len().max(1))
            .copied()
            .unwrap_or(usize::MAX)
            .max(1);
        read += 1;
        end = (end + want.min(room)).min(input.len());
        let (skip, scan) = head::scan_buffered(&input[start..end], &mut scanned, &limits);
        start += skip;
        match scan {
            Scan::NeedMore => {}
            Scan::Complete(h, n) => return HeadOutcome::Complete(summary(h, start + n)),
            Scan::Reject(e) => return HeadOutcome::Rejected(e.status, e.message.to_string()),
        }
    }
}

/// The end of a chunked decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedOutcome {
    /// Body data decoded, in order.
    pub body: Vec<u8>,
    /// Input bytes used (framing and data); 0 after an error, since where
    /// the decoder stopped inside a refused piece is not reported.
    pub consumed: usize,
    /// Ok(true): the last chunk and trailers were read; Ok(false): the
    /// input ended first; Err: refused, with the decoder's reason.
    pub result: Result<bool, &'static str>,
}

/// Decodes a chunked body from `input` handed to the decoder in pieces of
/// the given sizes (cycled; 0 taken as 1), taking at most `max_data` body
/// bytes per step like a reader with a small buffer.
pub fn decode_chunked(input: &[u8], pieces: &[usize], max_data: usize) -> ChunkedOutcome {
    let mut dec = ChunkedDecoder::new();
    let mut body = Vec::new();
    let (mut pos, mut end) = (0usize, 0usize);
    let mut piece = 0usize;
    let result = loop {
        if dec.is_done() {
            break Ok(true);
        }
        if pos == end {
            if end == input.len() {
                break Ok(false);
            }
            let want = pieces
                .get(piece % pieces.len().max(1))
                .copied()
                .unwrap_or(usize::MAX)
                .max(1);
            piece += 1;
            end = end.saturating_add(want).min(input.len());
        }
        match dec.next(&input[pos..end]) {
            Err(e) => {
                pos = 0;
                break Err(e.0);
            }
            Ok((framing, data)) => {
                pos += framing;
                let take = data.min(max_data.max(1));
                body.extend_from_slice(&input[pos..pos + take]);
                dec.consume_data(take);
                pos += take;
            }
        }
    };
    ChunkedOutcome {
        body,
        consumed: pos,
        result,
    }
}

/// The chunk-size line the server writes before a chunk of `len` bytes.
pub fn chunk_header(len: usize) -> Vec<u8> {
    let mut buf = [0u8; 18];
    let n = chunked::encode_chunk_header(len, &mut buf);
    buf[..n].to_vec()
}
