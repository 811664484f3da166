//! The multipart reader over arbitrary bytes: every part is drained, and
//! the parts, their bodies and the final verdict must not depend on how
//! the body arrives (read sizes) or how it is read (buffer sizes). Bodies
//! never hold more bytes than the input, and the reader always finishes.
//!
//! Input: byte 0 picks the boundary, byte 1 the number of read sizes
//! (0-7), then the sizes, a byte for the body buffer size, then the body.
//!
//! Shared by the cargo-fuzz target and `tests/adversarial_fuzz_corpus.rs`,
//! which replays the committed seeds in `make test`.

use std::io::{self, Read};

use ferry::multipart::{MultipartReader, PartInfo};

const BOUNDARIES: [&str; 4] = [
    "ferryfuzz",
    "-",
    "a b'()+_,-./:=?",
    "0123456789012345678901234567890123456789012345678901234567890123456789",
];

/// Hands out `data` in reads of the given sizes (cycled).
struct Dribble<'a> {
    data: &'a [u8],
    sizes: &'a [usize],
    next: usize,
}

impl Read for Dribble<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let want = self.sizes[self.next % self.sizes.len()].max(1);
        self.next += 1;
        let n = want.min(out.len()).min(self.data.len());
        out[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    parts: Vec<(PartInfo, Vec<u8>)>,
    /// None: the closing boundary was reached.
    error: Option<String>,
}

fn drain(data: &[u8], boundary: &str, reads: &[usize], buffer: usize) -> Outcome {
    let mut reader = MultipartReader::new(
        Dribble {
            data,
            sizes: reads,
            next: 0,
        },
        boundary,
    );
    let mut parts = Vec::new();
    let mut buf = vec![0u8; buffer.max(1)];
    loop {
        let info = match reader.next_part() {
            Ok(Some(info)) => info,
            Ok(None) => return Outcome { parts, error: None },
            Err(e) => {
                return Outcome {
                    parts,
                    error: Some(e.to_string()),
                }
            }
        };
        let mut body = Vec::new();
        let mut part = reader.part_body();
        let error = loop {
            match part.read(&mut buf) {
                Ok(0) => break None,
                Ok(n) => body.extend_from_slice(&buf[..n]),
                Err(e) => break Some(format!("{:?}: {e}", e.kind())),
            }
        };
        parts.push((info, body));
        if error.is_some() {
            return Outcome { parts, error };
        }
    }
}

/// Runs one input; panics when an invariant breaks.
pub fn run(data: &[u8]) {
    let [pick, nreads, rest @ ..] = data else {
        return;
    };
    let boundary = BOUNDARIES[usize::from(pick & 3)];
    let nreads = usize::from(nreads & 7).min(rest.len());
    let (sizes, rest) = rest.split_at(nreads);
    let [buffer, body @ ..] = rest else {
        return;
    };
    let mut reads: Vec<usize> = sizes.iter().map(|&b| usize::from(b) * 61 + 1).collect();
    if reads.is_empty() {
        reads.push(usize::MAX);
    }

    let whole = drain(body, boundary, &[usize::MAX], 1 << 20);
    let chosen = drain(body, boundary, &reads, usize::from(*buffer));
    let bytewise = drain(body, boundary, &[1], 7);
    assert_eq!(
        whole, chosen,
        "reads {reads:?} buffer {buffer} changed the outcome"
    );
    assert_eq!(whole, bytewise, "byte-at-a-time changed the outcome");

    let total: usize = whole.parts.iter().map(|(_, b)| b.len()).sum();
    assert!(total <= body.len());
}
