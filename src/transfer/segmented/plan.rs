//! The source's plan: which bytes of the body to send next, given what the
//! destination says it holds. Pure; the sender loop does the requests.
//!
//! The body is produced once, front to back (the packer is not
//! restartable), so the source keeps only the current segment for resend
//! (in a temporary file, not memory: a 64 MiB segment would break the
//! RSS budget). That is why a resume can resend at most one segment: any
//! `held` outside the kept segment is a destination that lost acknowledged
//! bytes, and the transfer fails rather than guess.
//!
//! ```text
//!  fill(kept = [start, end)) ──► send [held, min(end, held + size))
//!        ▲                           │ 200 {held}        │ cut / 5xx → status {held}
//!        └── held == end ◄───────────┘                   │ 409 {held} → resync
//!                                                        │ 413 → size /= 2
//! ```

use std::fmt;

use super::MIN_SEGMENT_SIZE;

/// What the sender does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Send `[offset, offset + length)` of the kept segment.
    Send { offset: u64, length: u64 },
    /// The kept segment is held: read the next one from the body.
    Fill,
}

/// A destination answer the plan cannot continue from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// `held` is outside the kept segment: acknowledged bytes were lost.
    Lost { held: u64, start: u64, end: u64 },
    /// A 413 at the smallest segment size: the path refuses any body.
    TooSmall,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::Lost { held, start, end } => write!(
                f,
                "destination holds {held} bytes, outside the segment kept for resend ({start}..{end})"
            ),
            PlanError::TooSmall => f.write_str("the path refuses even the smallest segment (413)"),
        }
    }
}

impl std::error::Error for PlanError {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    size: u64,
    start: u64,
    end: u64,
    held: u64,
    /// Bytes sent more than once (for the log and the bench).
    pub resent: u64,
    sent_upto: u64,
}

impl Plan {
    /// A plan for a session whose destination holds `held` (0 when new).
    pub fn new(size: u64, held: u64) -> Plan {
        Plan {
            size: size.max(MIN_SEGMENT_SIZE),
            start: held,
            end: held,
            held,
            resent: 0,
            sent_upto: held,
        }
    }

    /// How many bytes the next `fill` should read into the kept segment.
    pub fn segment_size(&self) -> u64 {
        self.size
    }

    pub fn held(&self) -> u64 {
        self.held
    }

    /// The sender read `length` more body bytes (0 at the body's end) into
    /// the kept segment, replacing the previous (fully held) one.
    pub fn filled(&mut self, length: u64) {
        debug_assert_eq!(self.held, self.end);
        self.start = self.end;
        self.end += length;
    }

    pub fn next(&self) -> Next {
        if self.held >= self.end {
            return Next::Fill;
        }
        Next::Send {
            offset: self.held,
            length: (self.end - self.held).min(self.size),
        }
    }

    /// `[offset, offset + length)` went out (all or the part an attempt
    /// handed to its connection): count what had gone out before.
    pub fn sending(&mut self, offset: u64, length: u64) {
        let again = self.sent_upto.saturating_sub(offset).min(length);
        self.resent += again;
        self.sent_upto = self.sent_upto.max(offset + length);
    }

    /// The destination said it holds `held` (a 200, a 409, or status after
    /// a cut).
    pub fn held_is(&mut self, held: u64) -> Result<(), PlanError> {
        if held < self.start || held > self.end {
            return Err(PlanError::Lost {
                held,
                start: self.start,
                end: self.end,
            });
        }
        self.held = held;
        Ok(())
    }

    /// A proxy answered 413: send smaller pieces from now on.
    pub fn too_large(&mut self) -> Result<(), PlanError> {
        if self.size <= MIN_SEGMENT_SIZE {
            return Err(PlanError::TooSmall);
        }
        self.size = (self.size / 2).max(MIN_SEGMENT_SIZE);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u64 = MIN_SEGMENT_SIZE;

    /// Drive a plan over a body of `total` bytes against a destination
    /// that fails the request at each index in `cuts` (after receiving
    /// `got` bytes of it, which it never acknowledges), and answers 413 to
    /// bodies over `proxy_limit`. Returns (requests, resent bytes).
    fn run(total: u64, size: u64, cuts: &[usize], proxy_limit: u64) -> (usize, u64) {
        let mut plan = Plan::new(size, 0);
        let mut dest_held = 0u64;
        let mut produced = 0u64;
        let mut requests = 0;
        loop {
            match plan.next() {
                Next::Fill => {
                    let n = plan.segment_size().min(total - produced);
                    if n == 0 {
                        break;
                    }
                    produced += n;
                    plan.filled(n);
                }
                Next::Send { offset, length } => {
                    requests += 1;
                    if length > proxy_limit {
                        plan.too_large().unwrap();
                        continue;
                    }
                    plan.sending(offset, length);
                    if cuts.contains(&requests) {
                        // Cut: status tells what is held (nothing new).
                        plan.held_is(dest_held).unwrap();
                        continue;
                    }
                    assert_eq!(offset, dest_held, "sent at the held offset");
                    dest_held += length;
                    plan.held_is(dest_held).unwrap();
                }
            }
        }
        assert_eq!(dest_held, total, "the whole body arrived");
        (requests, plan.resent)
    }

    #[test]
    fn no_faults_no_resends() {
        assert_eq!(run(10 * M + 5, 4 * M, &[], u64::MAX), (3, 0));
    }

    #[test]
    fn a_cut_resends_at_most_one_segment() {
        let (_, resent) = run(10 * M, 4 * M, &[2], u64::MAX);
        assert!(resent <= 4 * M && resent > 0, "resent {resent}");
    }

    #[test]
    fn a_proxy_limit_halves_the_segment_and_costs_no_bytes() {
        // 64 MiB segments through a 20 MiB proxy: 32, then 16 passes.
        let (_, resent) = run(100 * M, 64 * M, &[], 20 * M);
        assert_eq!(resent, 0);
    }

    #[test]
    fn resync_inside_the_kept_segment_only() {
        let mut p = Plan::new(4 * M, 0);
        p.filled(4 * M);
        p.sending(0, 4 * M);
        // The destination acked half (e.g. a smaller earlier piece).
        p.held_is(2 * M).unwrap();
        assert_eq!(
            p.next(),
            Next::Send {
                offset: 2 * M,
                length: 2 * M
            }
        );
        p.held_is(4 * M).unwrap();
        assert_eq!(p.next(), Next::Fill);
        p.filled(M);
        // Behind the kept segment: bytes were lost; never guess.
        assert_eq!(
            p.held_is(M),
            Err(PlanError::Lost {
                held: M,
                start: 4 * M,
                end: 5 * M
            })
        );
        assert!(p.held_is(6 * M).is_err());
    }

    #[test]
    fn a_413_at_the_floor_fails() {
        let mut p = Plan::new(2 * M, 0);
        p.too_large().unwrap();
        assert_eq!(p.too_large(), Err(PlanError::TooSmall));
    }
}
