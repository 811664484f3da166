//! A source that restarts during a segmented transfer takes it up again
//! (SPEC §10, docs/transport.md "source restart"): at start-up, before
//! recovery would end it, each outgoing transfer whose segmented session
//! was persisted is taken up with its id and phase and runs the ordinary
//! source thread (`source::spawn`) with `OutgoingPlan::resume`: no probe,
//! no open, where the destination stands (`point`), the body packed again
//! and its held prefix checked, not sent. However it ends, the ordinary
//! finish (`finish::source::settle`) decides, as for any transfer.
//!
//! What is persisted while sending (`persist`, `note_acks`) is here too.

use std::sync::Arc;

use super::OutgoingPlan;
use crate::node::Node;
use crate::server::TransferMark;
use crate::transfer::finish::{Phase, SourceEnd};
use crate::transfer::persist::{OutgoingSession, Saved};
use crate::transfer::segmented::sender::resume::{parse_noted, NotedAcks, ResumePoint};
use crate::transfer::segmented::sender::{Announce, Ferry, Sender};
use crate::transfer::{Direction, Status, Transfer};

/// A transfer taken up at start-up, with its server's mark and its plan.
pub struct TakenUp {
    transfer: Arc<Transfer>,
    mark: TransferMark,
    plan: OutgoingPlan,
}

/// Before recovery (which would end them): the outgoing transfers this
/// node can resume. Only one that was processing (a cancel accepted
/// before the kill is recovery's to end), whose session was persisted,
/// whose server this node still has (a server the panel no longer lists
/// here may have moved: recovery asks the panel) and can mark.
pub fn hold_back(node: &Arc<Node>) -> Vec<TakenUp> {
    let mut out = Vec::new();
    for saved in node.transfers.orphans() {
        let Some(session) = resumable(&saved) else {
            continue;
        };
        let Some(server) = node.registry.get(&saved.server) else {
            continue;
        };
        let Some(mark) = server.try_mark_transferring() else {
            continue;
        };
        log::warn!(
            "recovery: outgoing transfer {} of {} over session {} ({}): it resumes",
            saved.id,
            saved.server,
            session.sid,
            saved.phase.as_str()
        );
        let transfer = node.transfers.take_up(&saved);
        let plan = OutgoingPlan {
            url: session.url.clone(),
            // Not needed: the session's secret authorizes from here on.
            token: String::new(),
            start_on_completion: session.start_on_completion,
            backups: session.backups.clone(),
            live: false,
            resume: Some(session.clone()),
        };
        out.push(TakenUp {
            transfer,
            mark,
            plan,
        });
    }
    out
}

fn resumable(saved: &Saved) -> Option<&OutgoingSession> {
    let phase_ok = matches!(saved.phase, Phase::Streaming | Phase::SentLastByte);
    (saved.direction == Direction::Outgoing && saved.status == Status::Processing && phase_ok)
        .then_some(saved.session.as_ref())
        .flatten()
}

/// After recovery: each held-back transfer goes on in its own thread.
pub fn take_up(node: &Arc<Node>, held_back: Vec<TakenUp>) {
    for t in held_back {
        super::spawn(Arc::clone(node), t.transfer, t.mark, t.plan);
    }
}

/// Where the taken-up session stands, the destination's word checked
/// against the ack lines noted before the restart; Err is how the
/// transfer ends (the ordinary finish takes it from there).
pub(super) fn point(
    node: &Node,
    transfer: &Transfer,
    agent: &ureq::Agent,
    session: &OutgoingSession,
) -> Result<ResumePoint, SourceEnd> {
    let noted = match std::fs::read(node.transfers.acks_file(&transfer.id)) {
        Ok(text) => parse_noted(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(SourceEnd::Local(format!(
                "cannot read the noted ack lines: {e}"
            )))
        }
    };
    let sender = Sender::reopen(node, transfer, agent, session);
    let point = sender.resume_point(&noted)?;
    // The segments learnt from the destination (the one in flight at the
    // kill) are noted too, so the lines go on from `held` if this node
    // restarts again (a body that differs ends the transfer, and the
    // lines with it).
    let noted_end = noted.last().map_or(0, |a| a.offset + a.length);
    let learnt: Vec<_> = point
        .acks
        .iter()
        .filter(|a| a.offset >= noted_end)
        .collect();
    if !learnt.is_empty() {
        let appended = NotedAcks::open(&node.transfers.acks_file(&transfer.id))
            .and_then(|n| learnt.iter().try_for_each(|a| n.append(a)));
        if let Err(e) = appended {
            log::warn!(
                "transfer {}: cannot note the held segments: {e}",
                transfer.id
            );
        }
    }
    log::info!(
        "transfer {}: session {}: the destination holds {} bytes ({} segments, {} noted here); \
         packing the body again from its start",
        transfer.id,
        session.sid,
        point.held,
        point.acks.len(),
        noted.len()
    );
    node.transfer_log(
        transfer,
        &format!(
            "The destination holds {}; checking it against the data and sending the rest...",
            crate::transfer::progress::human_bytes(point.held)
        ),
    );
    Ok(point)
}

/// Keeps what a restart of this node needs to resume the session just
/// opened with the transfer's state (before any segment is noted).
#[allow(clippy::too_many_arguments)]
pub(super) fn persist(
    node: &Node,
    transfer: &Transfer,
    plan: &OutgoingPlan,
    sender: &Sender<'_>,
    announce: &Announce<'_>,
    segment_size: u64,
    ferry: Ferry,
) {
    let (sid, secret) = sender.credentials();
    node.transfers.set_outgoing_session(
        transfer,
        OutgoingSession {
            url: plan.url.clone(),
            sid: sid.to_string(),
            secret: secret.to_string(),
            boundary: announce.boundary.to_string(),
            segment_size,
            resume_window: ferry.resume_window,
            backups: plan.backups.clone(),
            start_on_completion: plan.start_on_completion,
            codec: announce.codec,
        },
    );
}

/// Notes the ack lines of held segments beside the transfer's state.
pub(super) fn note_acks(node: &Node, transfer: &Transfer, sender: &mut Sender<'_>) {
    match NotedAcks::open(&node.transfers.acks_file(&transfer.id)) {
        Ok(noting) => sender.note_acks(noting),
        Err(e) => log::warn!(
            "transfer {}: cannot note held segments (a restart of this node will check only \
             the destination's): {e}",
            transfer.id
        ),
    }
}
