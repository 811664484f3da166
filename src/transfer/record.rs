//! The transfer record (SPEC §2.3) and its status machine, enforced here
//! and nowhere else: `pending → processing → completed | failed |
//! cancelling`, `cancelling → cancelled | failed | completed`; terminal
//! states are final. `cancelling → completed` is a cancel that came too
//! late: the panel had already confirmed the destination (SPEC §5.1).
//! Which terminal status a transfer's end gives (`Status::end`) sits
//! beside the transitions so the two tables are read together.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Outgoing,
    Incoming,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outgoing => "outgoing",
            Direction::Incoming => "incoming",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Processing,
    Cancelling,
    Cancelled,
    Failed,
    Completed,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Pending,
        Status::Processing,
        Status::Cancelling,
        Status::Cancelled,
        Status::Failed,
        Status::Completed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Processing => "processing",
            Status::Cancelling => "cancelling",
            Status::Cancelled => "cancelled",
            Status::Failed => "failed",
            Status::Completed => "completed",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Cancelled | Status::Failed | Status::Completed)
    }

    /// Active transfers can be cancelled (not those already cancelling).
    pub fn is_cancellable(self) -> bool {
        matches!(self, Status::Pending | Status::Processing)
    }

    /// The one place that says which transitions exist.
    pub fn can_become(self, next: Status) -> bool {
        use Status::*;
        matches!(
            (self, next),
            (Pending, Processing)
                | (Pending, Cancelling)
                | (Pending, Failed)
                | (Processing, Completed)
                | (Processing, Failed)
                | (Processing, Cancelling)
                | (Cancelling, Cancelled)
                | (Cancelling, Failed)
                | (Cancelling, Completed)
        )
    }

    /// The outcome table: the terminal status (and error) a transfer in
    /// status `self` reaches when its pipeline ends with `outcome`. None
    /// when it already is terminal (nothing leaves a terminal state).
    /// A success while cancelling completes: the transfer's end was
    /// decided before the cancel could take effect (the panel confirmed
    /// it), and the cancel reason is kept on the record.
    pub fn end(self, outcome: Result<(), String>) -> Option<(Status, Option<String>)> {
        use Status::*;
        Some(match (self, outcome) {
            (s, _) if s.is_terminal() => return None,
            (Cancelling, Ok(())) => (Completed, None),
            (Cancelling, Err(_)) => (Cancelled, None),
            // Nothing ran: an empty success is still a failure to transfer.
            (Pending, Ok(())) => (Failed, Some("the transfer ended before it started".into())),
            (_, Ok(())) => (Completed, None),
            (_, Err(e)) => (Failed, Some(e)),
        })
    }
}

/// Live progress, as serialized in records and `transfer progress` events.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Progress {
    pub files_total: u64,
    pub files_done: u64,
    pub bytes_total: u64,
    pub bytes_done: u64,
    pub wire_bytes: u64,
    pub rate_bytes_per_sec: u64,
    pub eta_seconds: Option<u64>,
    /// Pre-copy's phase (`precopy`, `final`, `verify`), when it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<&'static str>,
}

/// A transfer as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    pub id: String,
    pub server: String,
    pub direction: Direction,
    pub status: Status,
    pub peer: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub progress: Progress,
    pub error: Option<String>,
    pub cancel_reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transition_table() {
        use Status::*;
        let allowed = [
            (Pending, Processing),
            (Pending, Cancelling),
            (Pending, Failed),
            (Processing, Completed),
            (Processing, Failed),
            (Processing, Cancelling),
            (Cancelling, Cancelled),
            (Cancelling, Failed),
            (Cancelling, Completed),
        ];
        for from in Status::ALL {
            for to in Status::ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from:?} -> {to:?}"
                );
            }
        }
        for terminal in [Cancelled, Failed, Completed] {
            assert!(terminal.is_terminal());
            assert!(Status::ALL.iter().all(|s| !terminal.can_become(*s)));
        }
    }

    #[test]
    fn the_outcome_table() {
        use Status::*;
        let err = || Err("x".to_string());
        assert_eq!(Processing.end(Ok(())), Some((Completed, None)));
        assert_eq!(Processing.end(err()), Some((Failed, Some("x".into()))));
        assert_eq!(Cancelling.end(err()), Some((Cancelled, None)));
        assert_eq!(Cancelling.end(Ok(())), Some((Completed, None)));
        assert_eq!(Pending.end(Ok(())).map(|e| e.0), Some(Failed));
        for terminal in [Cancelled, Failed, Completed] {
            assert_eq!(terminal.end(Ok(())), None);
        }
        for from in Status::ALL {
            if let Some((to, _)) = from.end(Ok(())) {
                assert!(from.can_become(to), "{from:?} -> {to:?}");
            }
            if let Some((to, _)) = from.end(err()) {
                assert!(from.can_become(to), "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn serializes_lowercase() {
        assert_eq!(
            serde_json::to_string(&Status::Cancelling).unwrap(),
            "\"cancelling\""
        );
        assert_eq!(
            serde_json::to_string(&Direction::Incoming).unwrap(),
            "\"incoming\""
        );
    }
}
