//! The destination's session ledger: the one place that says what a
//! segmented session holds and which requests it accepts in which state.
//!
//! ```text
//!  open ──► Receiving ──finish(L == held)──► Finishing ──► (the shared finish:
//!            │  ▲                               │          verify → install →
//!            │  └─ begin(O == held) → ack ──┘   │          report → settle)
//!            │     (one segment in flight)      │
//!            ├── cancel / expiry ──► Cancelled   │ cancel: asked of the
//!            └── failure ──────────► Failed ◄────┘ shared finish, not here
//! ```
//!
//! Invariants: `held` only grows, and only by a segment that began at
//! `held`, whose digest matched, and that the driver made durable (spool
//! and ack log fsynced) before calling `acknowledge`. At most one segment
//! is in flight; a request whose connection died must be `abandon`ed by
//! the driver so the source's retry is accepted. Time is given in seconds
//! by the caller (no clock here).

use std::fmt;

use super::acks::Ack;
use super::segment::SegmentHeader;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Receiving,
    Finishing,
    Completed,
    Failed,
    Cancelled,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Receiving => "receiving",
            State::Finishing => "finishing",
            State::Completed => "completed",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, State::Completed | State::Failed | State::Cancelled)
    }
}

/// How a 409 Busy refusal begins (the sender tells it from an offset
/// mismatch by it, to pause before trying again).
pub const BUSY: &str = "another segment is in flight";

/// Why the ledger refuses a request; the driver answers the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The segment does not start at what is held: 409 with `held`, and
    /// the source continues from there.
    Offset { held: u64 },
    /// Another segment is being written: 409 with `held`.
    Busy { held: u64 },
    /// The body's digest is not the header's: 400, nothing appended.
    Digest,
    /// `finish` with a length that is not what is held: 409 with `held`.
    Length { held: u64 },
    /// The session is past receiving: 409 naming the state.
    NotReceiving(State),
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Digest => 400,
            _ => 409,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Offset { held } => write!(f, "segment offset is not the {held} bytes held"),
            Refusal::Busy { held } => write!(f, "{BUSY} ({held} bytes held)"),
            Refusal::Digest => f.write_str("segment checksum mismatch"),
            Refusal::Length { held } => write!(f, "finish length is not the {held} bytes held"),
            Refusal::NotReceiving(s) => write!(f, "transfer session is {}", s.as_str()),
        }
    }
}

impl std::error::Error for Refusal {}

/// What a cancel of a session means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelStep {
    /// Receiving: the session is now `Cancelled`; remove it, report failure.
    Remove,
    /// Finishing: the shared finish decides (202 before the success report
    /// was sent, 409 after; SPEC §5.1).
    AskFinish,
    /// Already over: 409 `Server is not currently being transferred.`
    Over(State),
}

/// What the sweeper should do with a session at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sweep {
    Keep,
    /// Silent past the window while receiving: now `Cancelled`; remove
    /// spool and staging, report failure, guard the JWT against replay.
    Expire,
    /// Terminal for a whole window: forget the record (status now 404).
    Forget,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ledger {
    state: State,
    held: u64,
    in_flight: Option<SegmentHeader>,
    window: u64,
    last_activity: u64,
}

impl Ledger {
    /// A new session at `now`, or one reloaded after a restart with what
    /// its ack log holds (`acks::parse`).
    pub fn new(held: u64, window: u64, now: u64) -> Ledger {
        Ledger {
            state: State::Receiving,
            held,
            in_flight: None,
            window,
            last_activity: now,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn held(&self) -> u64 {
        self.held
    }

    /// A segment request's header arrived: may its body be appended?
    pub fn begin(&mut self, header: SegmentHeader, now: u64) -> Result<(), Refusal> {
        self.receiving()?;
        self.last_activity = now;
        if self.in_flight.is_some() {
            return Err(Refusal::Busy { held: self.held });
        }
        if header.offset != self.held {
            return Err(Refusal::Offset { held: self.held });
        }
        self.in_flight = Some(header);
        Ok(())
    }

    /// The body was read and appended (not yet acknowledged) and hashed to
    /// `digest`: the ack to make durable, or `Digest` (the driver cuts the
    /// spool back to `held`; the segment is free again).
    pub fn check(&mut self, digest: [u8; 32]) -> Result<Ack, Refusal> {
        let header = self.in_flight.ok_or(Refusal::NotReceiving(self.state))?;
        if header.sha256 != digest {
            self.in_flight = None;
            return Err(Refusal::Digest);
        }
        Ok(Ack {
            offset: header.offset,
            length: header.length,
            sha256: digest,
        })
    }

    /// The spool and the ack line are fsynced: the segment is held.
    pub fn acknowledge(&mut self, ack: &Ack, now: u64) -> u64 {
        debug_assert_eq!(self.in_flight.map(|h| h.offset), Some(ack.offset));
        self.in_flight = None;
        self.held += ack.length;
        self.last_activity = now;
        self.held
    }

    /// The source said it is alive while it sends nothing (a restarted
    /// source packing the held bytes again to check them): the session's
    /// silence starts again. False for a session no longer receiving.
    pub fn heard(&mut self, now: u64) -> bool {
        let receiving = self.state == State::Receiving;
        if receiving {
            self.last_activity = now;
        }
        receiving
    }

    /// The request died (cut, short body, disk error): the driver cut the
    /// spool back to `held`; the next request may try again.
    pub fn abandon(&mut self) {
        self.in_flight = None;
    }

    /// The source says the body is `length` bytes long.
    pub fn finish(&mut self, length: u64, now: u64) -> Result<(), Refusal> {
        self.receiving()?;
        self.last_activity = now;
        if self.in_flight.is_some() {
            return Err(Refusal::Busy { held: self.held });
        }
        if length != self.held {
            return Err(Refusal::Length { held: self.held });
        }
        self.state = State::Finishing;
        Ok(())
    }

    /// The shared finish ended (it alone decides completed or failed), or
    /// the extractor failed while receiving.
    pub fn ended(&mut self, completed: bool, now: u64) {
        if !self.state.is_terminal() {
            self.state = if completed {
                State::Completed
            } else {
                State::Failed
            };
            self.last_activity = now;
        }
    }

    pub fn cancel(&mut self, now: u64) -> CancelStep {
        match self.state {
            State::Receiving => {
                self.state = State::Cancelled;
                self.in_flight = None;
                self.last_activity = now;
                CancelStep::Remove
            }
            State::Finishing => CancelStep::AskFinish,
            over => CancelStep::Over(over),
        }
    }

    pub fn sweep(&mut self, now: u64) -> Sweep {
        let silent = now.saturating_sub(self.last_activity);
        match self.state {
            // A segment in flight is activity: its request is still open.
            State::Receiving if silent > self.window && self.in_flight.is_none() => {
                self.state = State::Cancelled;
                self.last_activity = now;
                Sweep::Expire
            }
            s if s.is_terminal() && silent > self.window => Sweep::Forget,
            _ => Sweep::Keep,
        }
    }

    fn receiving(&self) -> Result<(), Refusal> {
        match self.state {
            State::Receiving => Ok(()),
            other => Err(Refusal::NotReceiving(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(offset: u64, length: u64, fill: u8) -> SegmentHeader {
        SegmentHeader {
            offset,
            length,
            sha256: [fill; 32],
        }
    }

    fn put(l: &mut Ledger, offset: u64, length: u64, fill: u8) -> Result<u64, Refusal> {
        l.begin(header(offset, length, fill), 0)?;
        let ack = l.check([fill; 32])?;
        Ok(l.acknowledge(&ack, 0))
    }

    #[test]
    fn segments_in_order_then_finish() {
        let mut l = Ledger::new(0, 900, 0);
        assert_eq!(put(&mut l, 0, 10, 1), Ok(10));
        assert_eq!(put(&mut l, 10, 4, 2), Ok(14));
        assert_eq!(l.finish(13, 0), Err(Refusal::Length { held: 14 }));
        assert_eq!(l.finish(14, 0), Ok(()));
        assert_eq!(l.state(), State::Finishing);
        assert_eq!(
            put(&mut l, 14, 1, 3),
            Err(Refusal::NotReceiving(State::Finishing))
        );
        l.ended(true, 0);
        assert_eq!(l.state(), State::Completed);
    }

    #[test]
    fn a_resent_segment_is_refused_with_what_is_held() {
        // The source lost the 200 and sends the same segment again: 409
        // with held tells it to go on from there; nothing is appended twice.
        let mut l = Ledger::new(0, 900, 0);
        put(&mut l, 0, 10, 1).unwrap();
        assert_eq!(put(&mut l, 0, 10, 1), Err(Refusal::Offset { held: 10 }));
        assert_eq!(put(&mut l, 20, 10, 1), Err(Refusal::Offset { held: 10 }));
        assert_eq!(l.held(), 10);
    }

    #[test]
    fn one_segment_in_flight_and_abandon_frees_it() {
        let mut l = Ledger::new(0, 900, 0);
        l.begin(header(0, 10, 1), 0).unwrap();
        assert_eq!(l.begin(header(0, 10, 1), 0), Err(Refusal::Busy { held: 0 }));
        assert_eq!(l.finish(0, 0), Err(Refusal::Busy { held: 0 }));
        l.abandon();
        assert_eq!(put(&mut l, 0, 10, 1), Ok(10));
    }

    #[test]
    fn a_bad_digest_appends_nothing() {
        let mut l = Ledger::new(0, 900, 0);
        l.begin(header(0, 10, 1), 0).unwrap();
        assert_eq!(l.check([2; 32]), Err(Refusal::Digest));
        assert_eq!(l.held(), 0);
        assert_eq!(put(&mut l, 0, 10, 1), Ok(10));
    }

    #[test]
    fn a_reloaded_session_continues_from_its_acks() {
        let mut l = Ledger::new(64, 900, 5);
        assert_eq!(put(&mut l, 0, 10, 1), Err(Refusal::Offset { held: 64 }));
        assert_eq!(put(&mut l, 64, 10, 1), Ok(74));
    }

    #[test]
    fn cancel_in_each_state() {
        let mut l = Ledger::new(0, 900, 0);
        assert_eq!(l.cancel(1), CancelStep::Remove);
        assert_eq!(l.state(), State::Cancelled);
        assert_eq!(l.cancel(1), CancelStep::Over(State::Cancelled));
        let mut l = Ledger::new(0, 900, 0);
        l.finish(0, 0).unwrap();
        assert_eq!(l.cancel(1), CancelStep::AskFinish);
        assert_eq!(l.state(), State::Finishing);
        l.ended(false, 2);
        assert_eq!(l.cancel(3), CancelStep::Over(State::Failed));
        // The shared finish's verdict is final.
        l.ended(true, 4);
        assert_eq!(l.state(), State::Failed);
    }

    #[test]
    fn expiry_after_the_window_then_forget() {
        let mut l = Ledger::new(0, 900, 100);
        assert_eq!(l.sweep(1000), Sweep::Keep);
        l.begin(header(0, 10, 1), 1000).unwrap();
        // An open segment request is never expired under it.
        assert_eq!(l.sweep(5000), Sweep::Keep);
        let ack = l.check([1; 32]).unwrap();
        l.acknowledge(&ack, 5000);
        assert_eq!(l.sweep(5900), Sweep::Keep);
        assert_eq!(l.sweep(5901), Sweep::Expire);
        assert_eq!(l.state(), State::Cancelled);
        assert_eq!(l.sweep(6000), Sweep::Keep);
        assert_eq!(l.sweep(6802), Sweep::Forget);
        // Finishing belongs to the shared finish: never expired here.
        let mut l = Ledger::new(0, 900, 0);
        l.finish(0, 0).unwrap();
        assert_eq!(l.sweep(100_000), Sweep::Keep);
    }

    #[test]
    fn a_source_heard_from_keeps_a_silent_session_and_an_ended_one_stays_ended() {
        let mut l = Ledger::new(0, 900, 100);
        // A restarted source packing the held bytes again sends nothing,
        // but asks status: its silence starts again each time.
        assert!(l.heard(900));
        assert!(l.heard(1700));
        assert_eq!(l.sweep(2500), Sweep::Keep);
        assert_eq!(l.sweep(2601), Sweep::Expire);
        // Heard after its end, an ended session is not revived nor kept.
        assert!(!l.heard(2700));
        assert_eq!(l.state(), State::Cancelled);
        assert_eq!(l.sweep(3502), Sweep::Forget);
    }
}
