//! The finish of a transfer (SPEC §5.1): one state machine per side that
//! says, at each phase, what a cancel, a `DELETE /api/servers/<uuid>`, a
//! crash recovery and the panel's answers are allowed to do. Nothing else
//! decides; callers ask the functions here. The drivers that do the I/O
//! live beside it: `destination.rs` (install, report, settle), `source.rs`
//! (the source's end) and `recovery.rs` (start-up).
//!
//! The commit point is the panel's 2xx to the destination's success
//! report; the panel is the arbiter and a node never guesses. Standalone
//! (no panel), the destination's 200 to the source is the commit point.
//!
//! ```text
//! destination
//!   streaming ──▶ verifying ──▶ installing ─────────────▶ reporting ──2xx──▶ settled (completed, keep)
//!      │              │            │ (undoable: nothing       │  ╲
//!      │ cancel,      │            │  reported yet)           │   ╲─409/403/404 to the first
//!      │              │            │                          │     attempt─▶ remove ─▶ settled (failed)
//!      ▼              ▼            ▼                 no answer (timeout, 5xx, killed),
//!    failed / cancelled: staging removed,            or a 4xx to a re-sent attempt
//!    install undone, failure reported                and not listed here: unknown
//!                                                       │  kept, registered, marked transferring;
//!                                                       │  at start-up and every 30 s: re-send success
//!                                                       ├─2xx──▶ settled (completed, keep)
//!                                                       └─4xx──▶ in the panel's list of this node?
//!                                                                  listed ─▶ completed, keep
//!                                                                  not listed, no report of ours left
//!                                                                  unanswered for the grace (5 min)
//!                                                                  ─▶ remove, failed; else ask again
//!   a cancel from `reporting` on answers 409 "being finalized".
//!
//! source
//!   streaming ──last byte──▶ sent-last-byte ──200──▶ settled (completed)
//!      │                          │
//!      │ cancel, error            │ cancel (202), error, no answer
//!      ▼                          ▼
//!   settled (cancelled/failed)  reporting-failure: the panel's answer decides
//!   mark released, then            2xx ─▶ cancelled / failed, the server stays
//!   the failure report             409 ─▶ in the panel's list of this node?
//!                                           not listed ─▶ completed ("the cancel came too late")
//!                                           listed ─▶ cancelled / failed
//!                                  no answer ─▶ cancelled / failed (the panel's DELETE
//!                                               still removes the copy if it committed)
//!   standalone after the last byte: no 200 ─▶ failed "outcome unknown: check the destination";
//!   the source never removes its copy by itself.
//! ```
//!
//! The phase is persisted (atomically, `statefile`) before each step that
//! cannot be undone: `installing` before the server is moved into place,
//! `reporting` before the success report is sent, `sent-last-byte` when the
//! archive's last byte is handed to the network. Recovery after a SIGKILL
//! reads it and asks `recover` what to do.

pub mod destination;
pub mod failpoint;
pub mod recovery;
pub mod source;

pub use destination::install_and_report;

use serde::{Deserialize, Serialize};

use super::record::Direction;

/// Where a transfer stands in its finish. Persisted with the transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Both sides: the archive is on the wire.
    Streaming,
    /// Destination: the body ended; comparing the digest.
    Verifying,
    /// Destination: moving into place, registering, creating the
    /// container. Undoable: no success was reported yet.
    Installing,
    /// Destination: the success report is sent (or about to be). The
    /// panel decides; a cancel is refused from here on.
    Reporting,
    /// Destination: the panel did not answer the success report; the
    /// install is kept and settled by asking the panel again.
    Unknown,
    /// Source: the archive's last byte was handed to the network.
    SentLastByte,
    /// Source: after the last byte, the failure report is out; the
    /// panel's answer decides the record's end.
    ReportingFailure,
    /// Either side: nothing is left to decide.
    Settled,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Streaming => "streaming",
            Phase::Verifying => "verifying",
            Phase::Installing => "installing",
            Phase::Reporting => "reporting",
            Phase::Unknown => "unknown",
            Phase::SentLastByte => "sent-last-byte",
            Phase::ReportingFailure => "reporting-failure",
            Phase::Settled => "settled",
        }
    }

    /// The phases a side moves through, in order (the failpoint names).
    pub const ALL: [Phase; 8] = [
        Phase::Streaming,
        Phase::Verifying,
        Phase::Installing,
        Phase::Reporting,
        Phase::Unknown,
        Phase::SentLastByte,
        Phase::ReportingFailure,
        Phase::Settled,
    ];

    /// Whether a transfer of `direction` can be in this phase, and whether
    /// `self → next` is a step of its machine.
    pub fn can_become(self, direction: Direction, next: Phase) -> bool {
        use Phase::*;
        match direction {
            Direction::Incoming => matches!(
                (self, next),
                (Streaming, Verifying)
                    | (Verifying, Installing)
                    | (Installing, Reporting)
                    | (Reporting, Unknown)
                    | (
                        Streaming | Verifying | Installing | Reporting | Unknown,
                        Settled
                    )
            ),
            Direction::Outgoing => matches!(
                (self, next),
                (Streaming, SentLastByte)
                    | (SentLastByte, ReportingFailure)
                    | (Streaming | SentLastByte | ReportingFailure, Settled)
            ),
        }
    }
}

/// What a cancel (single, bulk, a DELETE's, shutdown's) may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelAnswer {
    /// Set the flag, tear the stream down, answer 202.
    Accept,
    /// 409 `The transfer is being finalized and can no longer be cancelled.`
    Finalizing,
}

pub const FINALIZING: &str = "The transfer is being finalized and can no longer be cancelled.";
pub const CANCELLED_HERE: &str = "The transfer was cancelled on the destination.";
pub const TOO_LATE: &str = "The cancel came too late: the destination had already been confirmed.";
pub const OUTCOME_UNKNOWN: &str = "outcome unknown: check the destination";

/// Asked by `Manager::cancel` for an active transfer.
pub fn cancel(direction: Direction, phase: Phase) -> CancelAnswer {
    match (direction, phase) {
        // From the success report on, the panel decides (SPEC §5.1).
        (Direction::Incoming, Phase::Reporting | Phase::Unknown) => CancelAnswer::Finalizing,
        // A source cancel after the last byte is accepted: its failure
        // report races the destination's success at the panel, which
        // decides; the record's end follows the panel's answer.
        _ => CancelAnswer::Accept,
    }
}

/// What `DELETE /api/servers/<uuid>` does to a server with a transfer in
/// `phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteAnswer {
    /// Cancel the transfer, then remove the server.
    CancelThenRemove,
    /// Remove the server when the transfer ends (the panel confirmed the
    /// destination while the source still waits for its answer, or a
    /// destination's install is being settled).
    RemoveWhenEnded,
}

pub fn delete(direction: Direction, phase: Phase) -> DeleteAnswer {
    match (direction, phase) {
        (Direction::Outgoing, Phase::Streaming) => DeleteAnswer::CancelThenRemove,
        (Direction::Outgoing, _) => DeleteAnswer::RemoveWhenEnded,
        (Direction::Incoming, Phase::Reporting | Phase::Unknown) => DeleteAnswer::RemoveWhenEnded,
        (Direction::Incoming, _) => DeleteAnswer::CancelThenRemove,
    }
}

/// The panel's answer to a report, as the machine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 2xx.
    Accepted,
    /// A 4xx to the first attempt: status and the panel's message.
    Refused(u16, String),
    /// A 4xx to a re-sent attempt, after an earlier one timed out or got
    /// a 5xx: that one may have been processed, so this 4xx may be the
    /// panel saying "already done".
    RefusedResent(u16, String),
    /// Timeouts, network errors, 5xx after the retries.
    NoAnswer(String),
}

/// What the destination does with the panel's answer to its success report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Committed: the record ends `completed`, the install stays.
    Keep,
    /// The panel does not expect this transfer here: remove the install,
    /// end `failed` with this reason.
    Remove(String),
    /// Ask whether the panel lists the server on this node.
    AskList,
    /// Nobody knows yet: keep, stay marked, ask again later.
    Unknown(String),
}

/// The first answer to the success report (SPEC §5.1).
pub fn first_report(answer: &Answer) -> Verdict {
    match answer {
        Answer::Accepted => Verdict::Keep,
        Answer::Refused(status @ (403 | 404 | 409), why) => Verdict::Remove(format!(
            "the panel refused the transfer (HTTP {status}): {why}"
        )),
        // Another 4xx says nothing about the transfer's state here, and a
        // 4xx to a re-sent report may answer our own earlier one: ask.
        Answer::Refused(..) | Answer::RefusedResent(..) => Verdict::AskList,
        Answer::NoAnswer(why) => Verdict::Unknown(why.clone()),
    }
}

/// An answer while settling an unknown outcome (start-up, every 30 s):
/// a re-sent success that gets a 4xx may have been accepted the first
/// time, so only the panel's list of this node's servers can tell.
pub fn settling_report(answer: &Answer) -> Verdict {
    match answer {
        Answer::Accepted => Verdict::Keep,
        Answer::Refused(..) | Answer::RefusedResent(..) => Verdict::AskList,
        Answer::NoAnswer(why) => Verdict::Unknown(why.clone()),
    }
}

/// The list's word: the server is this node's, or it is not. "Not listed"
/// is final only once no success report of ours can still be in the
/// panel's hands (`report_in_flight`: one went unanswered less than the
/// grace ago, e.g. sent by the process that was killed): the panel checks
/// "is it being transferred?" before its transaction, so a report that
/// passed the check commits later, even after a failure was accepted.
pub fn listed(on_this_node: bool, report_in_flight: bool) -> Verdict {
    match (on_this_node, report_in_flight) {
        (true, _) => Verdict::Keep,
        (false, true) => Verdict::Unknown(
            "the panel does not list the server here yet, and an earlier success report \
             may still be in its hands"
                .into(),
        ),
        (false, false) => Verdict::Remove("the panel does not list the server on this node".into()),
    }
}

/// How the source's HTTP request to the destination ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEnd {
    /// The destination answered 200.
    Accepted,
    /// The destination answered something else: status and its message.
    Refused(u16, String),
    /// No answer: the connection failed, or the cancel tore it down.
    NoAnswer(String),
    /// It failed here before the archive was whole (reading the data,
    /// packing, the cancel while streaming).
    Local(String),
}

/// What the source does at its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceStep {
    /// `completed`; the panel's DELETE removes the copy.
    Complete,
    /// End now (`cancelled` if cancelling, else `failed` with this error),
    /// release the mark, then report the failure.
    EndThenReport(String),
    /// Report the failure first; its answer decides (`source_answer`).
    ReportThenEnd(String),
    /// Standalone: end with this error; no report, the copy stays.
    End(String),
}

pub fn source_end(end: &SourceEnd, last_byte_sent: bool, standalone: bool) -> SourceStep {
    let error = match end {
        SourceEnd::Accepted => return SourceStep::Complete,
        SourceEnd::Refused(status, why) => format!("the destination answered {status}: {why}"),
        SourceEnd::NoAnswer(why) | SourceEnd::Local(why) => why.clone(),
    };
    // Before the last byte the destination cannot hold a whole archive,
    // so it cannot have reported success: nothing to wait for.
    if !last_byte_sent || matches!(end, SourceEnd::Local(_)) {
        return if standalone {
            SourceStep::End(error)
        } else {
            SourceStep::EndThenReport(error)
        };
    }
    match (standalone, end) {
        // The destination said no: it keeps nothing.
        (true, SourceEnd::Refused(..)) => SourceStep::End(error),
        (true, _) => SourceStep::End(format!("{OUTCOME_UNKNOWN} ({error})")),
        (false, _) => SourceStep::ReportThenEnd(error),
    }
}

/// What the panel's answer to the source's failure report (sent after the
/// last byte) means for the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceVerdict {
    /// The failure was accepted: the server stays here.
    Stays,
    /// Ask whether the panel still lists the server on this node.
    AskList,
    /// No answer: end as a failure; if the panel committed the
    /// destination, its DELETE removes the copy.
    Unconfirmed(String),
}

pub fn source_answer(answer: &Answer) -> SourceVerdict {
    match answer {
        Answer::Accepted => SourceVerdict::Stays,
        Answer::Refused(..) | Answer::RefusedResent(..) => SourceVerdict::AskList,
        Answer::NoAnswer(why) => SourceVerdict::Unconfirmed(why.clone()),
    }
}

/// What start-up does with a transfer a killed daemon left in `phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Remove staging (and an install, if any), end `failed`, report failure.
    Undo,
    /// Keep the install registered and marked transferring; settle it by
    /// asking the panel.
    Settle,
    /// Source: report the failure; the answer decides whether the copy
    /// stays (accepted, or listed) or goes (refused and not listed).
    AskAsSource,
    /// Standalone destination: the commit point is the 200 to the source,
    /// which was not sent; undo. Standalone source: end `failed`, keep.
    EndStandalone,
}

pub fn recover(direction: Direction, phase: Phase, standalone: bool) -> Recovery {
    match (direction, standalone, phase) {
        (Direction::Incoming, false, Phase::Reporting | Phase::Unknown) => Recovery::Settle,
        (Direction::Incoming, _, _) => Recovery::Undo,
        (Direction::Outgoing, true, _) => Recovery::EndStandalone,
        (Direction::Outgoing, false, _) => Recovery::AskAsSource,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_destination_refuses_a_cancel_from_the_report_on() {
        use Phase::*;
        for phase in [Streaming, Verifying, Installing] {
            assert_eq!(cancel(Direction::Incoming, phase), CancelAnswer::Accept);
        }
        for phase in [Reporting, Unknown] {
            assert_eq!(cancel(Direction::Incoming, phase), CancelAnswer::Finalizing);
        }
        for phase in [Streaming, SentLastByte] {
            assert_eq!(cancel(Direction::Outgoing, phase), CancelAnswer::Accept);
        }
    }

    #[test]
    fn the_panel_decides_the_destination() {
        assert_eq!(first_report(&Answer::Accepted), Verdict::Keep);
        for status in [403, 404, 409] {
            assert!(matches!(
                first_report(&Answer::Refused(
                    status,
                    "Server is not being transferred.".into()
                )),
                Verdict::Remove(_)
            ));
        }
        assert_eq!(
            first_report(&Answer::Refused(422, "x".into())),
            Verdict::AskList
        );
        assert!(matches!(
            first_report(&Answer::NoAnswer("timeout".into())),
            Verdict::Unknown(_)
        ));
        // Settling: a 4xx to a re-sent success never removes by itself.
        assert_eq!(
            settling_report(&Answer::Refused(409, "x".into())),
            Verdict::AskList
        );
        // A 409 to a re-sent first report (the first attempt timed out)
        // may be the panel saying "you already won".
        assert_eq!(
            first_report(&Answer::RefusedResent(409, "x".into())),
            Verdict::AskList
        );
        assert_eq!(listed(true, false), Verdict::Keep);
        assert_eq!(listed(true, true), Verdict::Keep);
        assert!(matches!(listed(false, false), Verdict::Remove(_)));
        // Not listed while an earlier report may still commit: wait.
        assert!(matches!(listed(false, true), Verdict::Unknown(_)));
    }

    #[test]
    fn the_source_waits_for_the_panel_only_after_the_last_byte() {
        let no = SourceEnd::NoAnswer("Broken pipe".into());
        assert_eq!(
            source_end(&SourceEnd::Accepted, true, false),
            SourceStep::Complete
        );
        assert!(matches!(
            source_end(&no, false, false),
            SourceStep::EndThenReport(_)
        ));
        assert!(matches!(
            source_end(&no, true, false),
            SourceStep::ReportThenEnd(_)
        ));
        assert_eq!(
            source_end(&no, true, true),
            SourceStep::End(format!("{OUTCOME_UNKNOWN} (Broken pipe)"))
        );
        let refused =
            SourceEnd::Refused(409, "A server with this identifier already exists".into());
        assert!(
            matches!(source_end(&refused, true, true), SourceStep::End(e) if !e.contains("unknown"))
        );
        assert!(matches!(
            source_end(&SourceEnd::Local("disk".into()), true, false),
            SourceStep::EndThenReport(_)
        ));
        assert_eq!(source_answer(&Answer::Accepted), SourceVerdict::Stays);
        assert_eq!(
            source_answer(&Answer::Refused(409, "x".into())),
            SourceVerdict::AskList
        );
    }

    #[test]
    fn recovery_keeps_what_the_panel_may_have_accepted() {
        use Phase::*;
        for phase in [Streaming, Verifying, Installing] {
            assert_eq!(recover(Direction::Incoming, phase, false), Recovery::Undo);
        }
        for phase in [Reporting, Unknown] {
            assert_eq!(recover(Direction::Incoming, phase, false), Recovery::Settle);
        }
        assert_eq!(
            recover(Direction::Incoming, Installing, true),
            Recovery::Undo
        );
        assert_eq!(
            recover(Direction::Outgoing, SentLastByte, false),
            Recovery::AskAsSource
        );
        assert_eq!(
            recover(Direction::Outgoing, SentLastByte, true),
            Recovery::EndStandalone
        );
    }

    #[test]
    fn phases_follow_the_diagram() {
        use Phase::*;
        let inc = Direction::Incoming;
        assert!(Streaming.can_become(inc, Verifying));
        assert!(Installing.can_become(inc, Reporting));
        assert!(!Reporting.can_become(inc, Installing));
        assert!(!Streaming.can_become(inc, SentLastByte));
        assert!(Streaming.can_become(Direction::Outgoing, SentLastByte));
        assert!(!Settled.can_become(inc, Streaming));
        for p in Phase::ALL {
            let name = serde_json::to_string(&p).unwrap();
            assert_eq!(name, format!("\"{}\"", p.as_str()));
        }
    }
}
