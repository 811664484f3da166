//! The source's finish (the driver of the machine in `finish/mod.rs`):
//! given how the request to the destination ended, end the record, report
//! the failure once, release the mark when the record is terminal, and
//! remove the server when the panel asked (its DELETE) or says it is no
//! longer this node's.

use std::sync::Arc;

use super::{failpoint, Answer, Phase, SourceEnd, SourceStep, SourceVerdict, TOO_LATE};
use crate::node::Node;
use crate::panel::PanelError;
use crate::server::{Server, TransferMark};
use crate::transfer::{Status, Transfer};

/// Ends an outgoing transfer (SPEC §3, §5, §5.1) and finalizes it.
pub fn settle(node: &Arc<Node>, transfer: &Arc<Transfer>, mark: TransferMark, end: SourceEnd) {
    let server = Arc::clone(mark.server());
    let step = super::source_end(&end, transfer.archive_sent(), node.panel.is_none());
    log::debug!("transfer {}: source end {end:?} -> {step:?}", transfer.id);
    match step {
        SourceStep::Complete => {
            // The panel calls DELETE here before it answers the destination,
            // so by now it came, or it was lost (Pterodactyl only logs a
            // failed one): ask the list, and remove with the record's end.
            if node.panel.is_some()
                && !server.delete_requested()
                && matches!(
                    super::destination::on_this_node(node, &server.uuid),
                    Ok(false)
                )
            {
                remove_with_the_record(&server, "its DELETE did not arrive");
            }
            end_record(node, transfer, &server, Ok(()));
            drop(mark);
        }
        SourceStep::End(error) => {
            end_record(node, transfer, &server, Err(error));
            drop(mark);
        }
        SourceStep::EndThenReport(error) => {
            end_record(node, transfer, &server, Err(error));
            drop(mark);
            // The source never reports success; failure exactly once.
            let _ = node.report_to_panel(&transfer.server, false);
        }
        SourceStep::ReportThenEnd(error) => {
            let _ = node
                .transfers
                .enter_phase(transfer, Phase::ReportingFailure);
            let outcome = ask_panel(node, &transfer.server, error).into_result();
            if outcome.is_ok() && transfer.is_cancelled() {
                node.transfer_log(transfer, TOO_LATE);
                log::warn!("transfer {}: {TOO_LATE}", transfer.id);
            }
            if outcome.is_ok() && !server.delete_requested() {
                // The panel no longer lists it here: what its DELETE does
                // (it may have been lost while this node was busy).
                remove_with_the_record(&server, "it no longer lists it here");
            }
            end_record(node, transfer, &server, outcome);
            drop(mark);
        }
    }
    transfer.finalize();
}

/// The panel moved the server: `end_record` removes this copy before the
/// record (and its state on disk) ends.
fn remove_with_the_record(server: &Server, why: &str) {
    log::info!(
        "{}: the panel moved the server and {why}; removing this copy",
        server.uuid
    );
    server.request_delete();
}

/// What the panel's answers say about a source's copy after the last byte.
#[derive(Debug)]
pub enum PanelWord {
    /// The destination won: the server moved.
    Moved,
    /// The server stays here; the record ends with this error.
    Stays(String),
    /// Nobody knows yet (no answer, or the list could not be read): the
    /// copy is kept; if the panel committed the destination, its DELETE
    /// removes it.
    Unconfirmed(String),
}

impl PanelWord {
    /// Ok when moved, else the error the record ends with.
    pub fn into_result(self) -> Result<(), String> {
        match self {
            PanelWord::Moved => Ok(()),
            PanelWord::Stays(e) | PanelWord::Unconfirmed(e) => Err(e),
        }
    }
}

/// Reports the failure after the last byte and reads the answer. The copy
/// is only called moved when the panel's list no longer names this node
/// (a server leaves a node's list only by a committed success).
pub fn ask_panel(node: &Node, uuid: &str, error: String) -> PanelWord {
    let Some(panel) = &node.panel else {
        return PanelWord::Stays(error);
    };
    let answer = match panel.send_transfer_report(uuid, false) {
        Ok(()) => Answer::Accepted,
        Err(PanelError::Refused(status, why)) => Answer::Refused(status, why),
        Err(e) => Answer::NoAnswer(e.to_string()),
    };
    failpoint::point("reported");
    match super::source_answer(&answer) {
        SourceVerdict::Stays => PanelWord::Stays(error),
        SourceVerdict::Unconfirmed(why) => PanelWord::Unconfirmed(format!(
            "{error}; the panel did not answer the failure report: {why}"
        )),
        SourceVerdict::AskList => match super::destination::on_this_node(node, uuid) {
            Ok(false) => PanelWord::Moved,
            Ok(true) => PanelWord::Stays(error),
            Err(e) => PanelWord::Unconfirmed(format!(
                "{error}; the panel refused the failure report and its list could not be read \
                 ({e}): the copy is kept until the panel says"
            )),
        },
    }
}

/// Ends the record and, if the panel's DELETE came meanwhile, removes the
/// server, under its life-cycle lock so a concurrent DELETE sees either an
/// active transfer (and defers) or an ended one (and removes at once).
fn end_record(node: &Node, transfer: &Transfer, server: &Server, outcome: Result<(), String>) {
    let status = {
        let _life = server.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
        // Removed before the record (and its state on disk) ends: killed
        // in between, start-up recovery still finds the transfer.
        if server.delete_requested() {
            node.remove_server(server);
        }
        node.transfers.finish(transfer, outcome.clone())
    };
    match status {
        Status::Completed => {}
        Status::Cancelled => {
            let msg = match transfer.cancel_reason() {
                Some(reason) => format!("Canceled. ({reason})"),
                None => "Canceled.".to_string(),
            };
            node.transfer_log(transfer, &msg);
        }
        _ => {
            let error = outcome.err().unwrap_or_default();
            node.transfer_log(transfer, &format!("Transfer failed: {error}"));
        }
    }
}
