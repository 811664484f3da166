//! The request-head parser: the head reader's incremental search, whatever
//! the read sizes, must reach one-shot parsing's decision (or still wait
//! where one-shot already saw an error), and a head it accepts must
//! satisfy the framing rules the rest of the server trusts.
//!
//! Input: byte 0 picks the limits, byte 1 the number of read sizes (0-7),
//! then that many read sizes, then the bytes on the wire.
//!
//! Shared by the cargo-fuzz target and `tests/adversarial_fuzz_corpus.rs`,
//! which replays the committed seeds in `make test`.

use ferry::http::fuzzing::{parse_head_in_reads, parse_head_whole, HeadOutcome};

const HEADER_BYTES: [usize; 4] = [64, 300, 1024, 64 * 1024];
const HEADERS: [usize; 4] = [1, 4, 16, 100];

/// Runs one input; panics when an invariant breaks.
pub fn run(data: &[u8]) {
    let [pick, nreads, rest @ ..] = data else {
        return;
    };
    let max_header_bytes = HEADER_BYTES[usize::from(pick & 3)];
    let max_headers = HEADERS[usize::from((pick >> 2) & 3)];
    let nreads = usize::from(nreads & 7).min(rest.len());
    let (sizes, wire) = rest.split_at(nreads);
    let reads: Vec<usize> = sizes.iter().map(|&b| usize::from(b)).collect();

    let whole = parse_head_whole(wire, max_header_bytes, max_headers);
    let pieces = parse_head_in_reads(wire, &reads, max_header_bytes, max_headers);
    let bytewise = parse_head_in_reads(wire, &[1], max_header_bytes, max_headers);
    let chosen = format!("reads {reads:?}");
    for (incremental, how) in [(&pieces, chosen.as_str()), (&bytewise, "byte reads")] {
        // The reader may notice an error in a partial head only once an
        // end of head could be there or the buffer is full (it waits for
        // more instead); otherwise it decides exactly as one-shot parsing.
        let lazy =
            *incremental == HeadOutcome::NeedMore && matches!(whole, HeadOutcome::Rejected(..));
        assert!(
            lazy || *incremental == whole,
            "{how}: {incremental:?} but one-shot {whole:?}"
        );
    }

    match whole {
        HeadOutcome::NeedMore => {
            // Waiting is only allowed while the head still fits.
            let blank = wire
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            assert!(wire.len() - blank < max_header_bytes);
        }
        HeadOutcome::Rejected(status, message) => {
            assert!(status == 400 || status == 431, "status {status}: {message}");
        }
        HeadOutcome::Complete(h) => {
            assert!(h.consumed <= wire.len());
            assert!(h.headers.len() <= max_headers);
            assert!(
                h.path.starts_with('/') || h.path == "*",
                "path {:?}",
                h.path
            );
            assert!(!h.method.is_empty());
            assert!(h.minor_version <= 1);
            // Framing is never ambiguous: one of the two, never both.
            let has_te = h.headers.iter().any(|(k, _)| k == "transfer-encoding");
            let has_cl = h.headers.iter().any(|(k, _)| k == "content-length");
            assert!(!(has_te && has_cl), "both framings accepted");
            assert_eq!(h.chunked, has_te);
            if h.chunked {
                assert_eq!(h.content_length, None);
                if h.minor_version == 0 {
                    assert!(!h.keep_alive);
                }
            } else {
                assert_eq!(h.content_length.is_some(), has_cl);
                assert_eq!(h.content_length.unwrap_or(0), h.length);
            }
            for (name, value) in &h.headers {
                assert!(!name.is_empty());
                assert_eq!(name, &name.to_ascii_lowercase());
                assert!(!value.contains(['\r', '\n']), "value {value:?}");
            }
            // The head alone parses to the same thing: nothing after it
            // influenced the decision.
            let again = parse_head_whole(&wire[..h.consumed], max_header_bytes, max_headers);
            assert_eq!(again, HeadOutcome::Complete(h));
        }
    }
}
