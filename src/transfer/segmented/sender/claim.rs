//! What the source knows the destination holds, segment by segment, and
//! the finish's claim over it (docs/transport.md, `finish`). Pure.
//!
//! Each segment the destination acknowledged is one line of its ack log;
//! the source notes the same lines from its own requests (the digest of
//! each taken from the body as it was packed) and claims their digest at
//! the finish (`acks::digest`). So neither side hashes the whole body a
//! second time: the segments' digests were checked on arrival, the claim
//! checks that they are exactly the source's, in order, and nothing else.

use std::fmt;

use crate::transfer::segmented::acks::{self, Ack};

/// The destination says it holds a length that no segment this source
/// sent ends at: it cannot be what the source sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unaccounted {
    pub held: u64,
}

impl fmt::Display for Unaccounted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the destination holds {} bytes, which is not where a segment this source sent ends",
            self.held
        )
    }
}

impl std::error::Error for Unaccounted {}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeldSegments {
    acks: Vec<Ack>,
}

impl HeldSegments {
    /// The segments a destination holds, as its ack lines say (a session
    /// a restarted source takes up).
    pub fn from_acks(acks: Vec<Ack>) -> HeldSegments {
        HeldSegments { acks }
    }

    /// After sending `[offset, offset + length)` with `sha256`, the
    /// destination says it holds `held`: that segment is held (held is its
    /// end), or it is not (held is where it began, or less after the
    /// destination lost acknowledged bytes: those are dropped and will be
    /// sent and noted again).
    pub fn noted(
        &mut self,
        offset: u64,
        length: u64,
        sha256: [u8; 32],
        held: u64,
    ) -> Result<(), Unaccounted> {
        self.acks.retain(|a| a.offset + a.length <= held);
        if offset + length == held && self.end() == offset {
            self.acks.push(Ack {
                offset,
                length,
                sha256,
            });
        }
        if self.end() != held {
            return Err(Unaccounted { held });
        }
        Ok(())
    }

    fn end(&self) -> u64 {
        self.acks.last().map_or(0, |a| a.offset + a.length)
    }

    /// The finish's claim: the digest of the ack log the destination
    /// should have.
    pub fn claim(&self) -> [u8; 32] {
        acks::digest(&self.acks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_segments_make_the_claim_of_the_destination_log() {
        let mut h = HeldSegments::default();
        h.noted(0, 10, [1; 32], 10).unwrap();
        // Sent, answer lost, status says it was not held: nothing noted.
        h.noted(10, 5, [2; 32], 10).unwrap();
        h.noted(10, 5, [2; 32], 15).unwrap();
        let log = [
            Ack {
                offset: 0,
                length: 10,
                sha256: [1; 32],
            },
            Ack {
                offset: 10,
                length: 5,
                sha256: [2; 32],
            },
        ];
        assert_eq!(h.claim(), acks::digest(&log));
    }

    #[test]
    fn a_destination_that_lost_held_segments_gets_them_again() {
        let mut h = HeldSegments::default();
        h.noted(0, 4, [1; 32], 4).unwrap();
        h.noted(4, 4, [2; 32], 8).unwrap();
        // The next request finds the destination back at 4.
        h.noted(8, 4, [3; 32], 4).unwrap();
        h.noted(4, 4, [2; 32], 8).unwrap();
        h.noted(8, 4, [3; 32], 12).unwrap();
        let mut again = HeldSegments::default();
        for (o, f) in [(0, 1), (4, 2), (8, 3)] {
            again.noted(o, 4, [f; 32], o + 4).unwrap();
        }
        assert_eq!(h, again);
    }

    #[test]
    fn a_held_length_no_segment_ends_at_is_refused() {
        let mut h = HeldSegments::default();
        h.noted(0, 10, [1; 32], 10).unwrap();
        assert_eq!(h.noted(10, 10, [2; 32], 13), Err(Unaccounted { held: 13 }));
        assert_eq!(h.noted(10, 10, [2; 32], 25), Err(Unaccounted { held: 25 }));
    }
}
