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
            let outcome = ask_panel(node, &transfer.server, error);
            if outcome.is_ok() && transfer.is_cancelled() {
                node.transfer_log(transfer, TOO_LATE);
                log::warn!("transfer {}: {TOO_LATE}", transfer.id);
            }
            let moved = outcome.is_ok();
            end_record(node, transfer, &server, outcome);
            drop(mark);
            if moved && !server.delete_requested() {
                // The panel no longer lists it here: what its DELETE does
                // (it may have been lost while this node was busy).
                remove_moved(node, &server);
            }
        }
    }
    transfer.finalize();
}

/// Reports the failure after the last byte and reads the answer: Ok when
/// the panel says the destination won (the server moved), else the error
/// the record ends with.
pub fn ask_panel(node: &Node, uuid: &str, error: String) -> Result<(), String> {
    let Some(panel) = &node.panel else {
        return Err(error);
    };
    let answer = match panel.send_transfer_report(uuid, false) {
        Ok(()) => Answer::Accepted,
        Err(PanelError::Refused(status, why)) => Answer::Refused(status, why),
        Err(e) => Answer::NoAnswer(e.to_string()),
    };
    failpoint::point("reported");
    match super::source_answer(&answer) {
        SourceVerdict::Stays => Err(error),
        SourceVerdict::Unconfirmed(why) => Err(format!(
            "{error}; the panel did not answer the failure report: {why}"
        )),
        SourceVerdict::AskList => match super::destination::on_this_node(node, uuid) {
            Ok(false) => Ok(()),
            Ok(true) => Err(error),
            // The panel refused the failure: the transfer is over there.
            // Without its list, SPEC §5.1's rule: the destination won.
            Err(e) => {
                log::warn!("{uuid}: cannot read the panel's list ({e}); the 4xx to the failure report means the destination won");
                Ok(())
            }
        },
    }
}

/// Ends the record and, if the panel's DELETE came meanwhile, removes the
/// server, under its life-cycle lock so a concurrent DELETE sees either an
/// active transfer (and defers) or an ended one (and removes at once).
fn end_record(node: &Node, transfer: &Transfer, server: &Server, outcome: Result<(), String>) {
    let status = {
        let _life = server.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
        let status = node.transfers.finish(transfer, outcome.clone());
        if server.delete_requested() {
            node.remove_server(server);
        }
        status
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

fn remove_moved(node: &Node, server: &Server) {
    let _life = server.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
    if node.registry.get(&server.uuid).is_some() {
        log::info!(
            "{}: the panel moved the server to the destination; removing this copy",
            server.uuid
        );
        node.remove_server(server);
    }
}
