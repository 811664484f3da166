//! The head reader's time and eviction policy, as pure functions of `now`
//! and counts: when a waiting connection expires, how long poll may sleep,
//! which connection makes room when the cap is reached, and how many log
//! lines a burst may write. The reactor keeps the syscalls and asks here.

use std::time::{Duration, Instant};

/// How long a closing connection is drained so the client reads our
/// response rather than a reset.
pub(crate) const LINGER: Duration = Duration::from_secs(2);
/// How long a parked reply may take to leave: a client that doesn't read
/// its answers within this is closed (its worker was freed long before).
pub(crate) const FLUSH: Duration = Duration::from_secs(10);
/// Longest poll sleep, so shutdown and expiry are noticed.
const MAX_POLL: Duration = Duration::from_secs(1);

/// What a connection waiting in the head reader is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Keep-alive, no byte of the next request yet.
    Idle,
    /// Part of a head received.
    Head,
    /// Sending a reply a worker could not finish without blocking; nothing
    /// more is read from it until it is out.
    Flush,
    /// Closing after an error.
    Linger,
}

/// The deadlines, from the server options.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Policy {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Policy {
    /// When a connection entering `phase` at `now` is closed if still there.
    pub fn deadline(&self, phase: Phase, now: Instant) -> Instant {
        now + match phase {
            Phase::Idle => self.idle_timeout,
            Phase::Head => self.header_timeout,
            Phase::Flush => FLUSH,
            Phase::Linger => LINGER,
        }
    }

    /// Milliseconds poll may sleep: until the earliest deadline or the end
    /// of an accept pause, at most a second, rounded up so a
    /// sub-millisecond wait doesn't spin.
    pub fn poll_timeout(
        now: Instant,
        deadlines: impl Iterator<Item = Instant>,
        paused_until: Option<Instant>,
    ) -> i32 {
        let next = deadlines
            .chain(paused_until)
            .fold(now + MAX_POLL, Instant::min);
        let wait = next.saturating_duration_since(now);
        wait.as_micros().div_ceil(1000).min(MAX_POLL.as_millis()) as i32
    }

    /// Which waiting connection to close to admit a new one when the cap is
    /// reached: lingering ones first, then the one waiting longest (ids
    /// break ties within one accept batch). Connections flushing a reply
    /// count as waiting: a reader that stalls is the first to go after
    /// lingering ones of the same age.
    pub fn victim(waiting: impl Iterator<Item = (Phase, Instant, u64)>) -> Option<usize> {
        waiting
            .enumerate()
            .min_by_key(|(_, (phase, since, id))| (*phase != Phase::Linger, *since, *id))
            .map(|(i, _)| i)
    }
}

/// A log-line budget: at most `per_window` lines per `window`; the rest are
/// counted and reported with the next line allowed, so a flood of refusals
/// costs a few lines a second and says how much it hid.
#[derive(Debug)]
pub(crate) struct LogBudget {
    per_window: u32,
    window: Duration,
    started: Option<Instant>,
    used: u32,
    suppressed: u64,
}

/// What to do with one log line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Write it; `suppressed` lines were dropped since the last one written.
    Log {
        suppressed: u64,
    },
    Drop,
}

impl LogBudget {
    pub const fn new(per_window: u32, window: Duration) -> LogBudget {
        LogBudget {
            per_window,
            window,
            started: None,
            used: 0,
            suppressed: 0,
        }
    }

    pub fn check(&mut self, now: Instant) -> Verdict {
        let fresh = self
            .started
            .is_none_or(|s| now.saturating_duration_since(s) >= self.window);
        if fresh {
            self.started = Some(now);
            self.used = 0;
        }
        if self.used >= self.per_window {
            self.suppressed += 1;
            return Verdict::Drop;
        }
        self.used += 1;
        Verdict::Log {
            suppressed: std::mem::take(&mut self.suppressed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn each_phase_has_its_own_deadline() {
        let now = Instant::now();
        let p = policy();
        assert_eq!(p.deadline(Phase::Idle, now), now + Duration::from_secs(60));
        assert_eq!(p.deadline(Phase::Head, now), now + Duration::from_secs(10));
        assert_eq!(p.deadline(Phase::Flush, now), now + FLUSH);
        assert_eq!(p.deadline(Phase::Linger, now), now + LINGER);
    }

    #[test]
    fn poll_sleeps_until_the_earliest_deadline_at_most_a_second() {
        let now = Instant::now();
        let none: [Instant; 0] = [];
        assert_eq!(Policy::poll_timeout(now, none.into_iter(), None), 1000);
        let ds = [
            now + Duration::from_millis(300),
            now + Duration::from_millis(40),
        ];
        assert_eq!(Policy::poll_timeout(now, ds.into_iter(), None), 40);
        let pause = Some(now + Duration::from_millis(5));
        assert_eq!(Policy::poll_timeout(now, ds.into_iter(), pause), 5);
        // Past deadlines: don't sleep; a sub-millisecond wait rounds up.
        let past = [now];
        assert_eq!(Policy::poll_timeout(now, past.into_iter(), None), 0);
        let tiny = [now + Duration::from_micros(10)];
        assert_eq!(Policy::poll_timeout(now, tiny.into_iter(), None), 1);
    }

    #[test]
    fn the_victim_is_lingering_first_then_the_oldest() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let w = [
            (Phase::Idle, t0, 1),
            (Phase::Linger, t1, 2),
            (Phase::Head, t0, 3),
        ];
        assert_eq!(Policy::victim(w.into_iter()), Some(1));
        let w = [
            (Phase::Head, t1, 1),
            (Phase::Flush, t0, 9),
            (Phase::Idle, t0, 4),
        ];
        assert_eq!(Policy::victim(w.into_iter()), Some(2));
        assert_eq!(Policy::victim(std::iter::empty()), None);
    }

    #[test]
    fn a_burst_logs_its_budget_then_reports_what_it_dropped() {
        let mut b = LogBudget::new(3, Duration::from_secs(1));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(b.check(t0), Verdict::Log { suppressed: 0 });
        }
        for _ in 0..1000 {
            assert_eq!(b.check(t0 + Duration::from_millis(500)), Verdict::Drop);
        }
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.check(t1), Verdict::Log { suppressed: 1000 });
        assert_eq!(b.check(t1), Verdict::Log { suppressed: 0 });
    }
}
