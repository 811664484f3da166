//! The chunked body decoder: the outcome must not depend on how the bytes
//! are split across reads or how little body a reader takes per step, it
//! never yields more body than it was given, and what the server's own
//! chunk headers frame decodes back exactly.
//!
//! Input: byte 0 the number of piece sizes (0-7), then the sizes, a byte
//! for the per-step body cap, then the wire bytes.
//!
//! Shared by the cargo-fuzz target and `tests/adversarial_fuzz_corpus.rs`,
//! which replays the committed seeds in `make test`.

use ferry::http::fuzzing::{chunk_header, decode_chunked};

/// Runs one input; panics when an invariant breaks.
pub fn run(data: &[u8]) {
    let [npieces, rest @ ..] = data else {
        return;
    };
    let npieces = usize::from(npieces & 7).min(rest.len());
    let (sizes, rest) = rest.split_at(npieces);
    let [cap, wire @ ..] = rest else {
        return;
    };
    let pieces: Vec<usize> = sizes.iter().map(|&b| usize::from(b)).collect();

    let whole = decode_chunked(wire, &[usize::MAX], usize::MAX);
    let split = decode_chunked(wire, &pieces, usize::from(*cap).max(1));
    let bytewise = decode_chunked(wire, &[1], 1);
    assert_eq!(
        whole, split,
        "pieces {pieces:?} cap {cap} changed the outcome"
    );
    assert_eq!(whole, bytewise, "byte-at-a-time changed the outcome");
    assert!(whole.consumed <= wire.len());
    assert!(whole.body.len() < wire.len().max(1));
    if whole.result == Ok(false) {
        assert_eq!(whole.consumed, wire.len(), "stopped early without an error");
    }

    // Round trip: frame the input as chunks of sizes taken from it.
    let mut framed = Vec::new();
    let mut at = 0;
    let mut sizes = wire.iter().cycle();
    while at < wire.len() {
        let n = usize::from(*sizes.next().unwrap_or(&1))
            .max(1)
            .min(wire.len() - at);
        framed.extend_from_slice(&chunk_header(n));
        framed.extend_from_slice(&wire[at..at + n]);
        framed.extend_from_slice(b"\r\n");
        at += n;
    }
    framed.extend_from_slice(&chunk_header(0));
    framed.extend_from_slice(b"\r\n");
    let back = decode_chunked(&framed, &pieces, usize::from(*cap).max(1));
    assert_eq!(back.result, Ok(true));
    assert_eq!(back.consumed, framed.len());
    assert_eq!(back.body, wire);
}
