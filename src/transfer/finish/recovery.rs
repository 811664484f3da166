//! Start-up recovery (SPEC §5.1, §7): each transfer a killed daemon left in
//! flight is finished as the finish machine's `recover` says for the phase
//! it had persisted. `daemon.rs` only calls `recover`.
//!
//! - destination before its success report: undo (staging, any install),
//!   end `failed`, report the failure;
//! - destination from its success report on: the panel may have accepted
//!   it, so the install is kept, registered and marked transferring, and
//!   settled by asking the panel (`destination::settle_later`);
//! - source with a panel: report the failure; the panel's answer (and its
//!   list) says whether the copy here stays or moved;
//! - standalone source: end `failed`; the copy stays.

use std::sync::Arc;
use std::time::Duration;

use super::{destination, Phase, Recovery};
use crate::node::Node;
use crate::server::{Server, ServerConfig};
use crate::transfer::persist::Saved;
use crate::transfer::{Direction, Status};

const RESTARTED: &str = "the node restarted during the transfer";

pub fn recover(node: &Arc<Node>) {
    let orphans = node.transfers.orphans();
    match crate::archive::remove_stale_staging(&node.config.system.data) {
        Ok(removed) if !removed.is_empty() => log::warn!(
            "recovery: removed {} staging director(ies): {}",
            removed.len(),
            removed.join(", ")
        ),
        Ok(_) => {}
        Err(e) => log::error!("recovery: cannot clean the staging area: {e}"),
    }
    let standalone = node.panel.is_none();
    for orphan in orphans {
        let action = super::recover(orphan.direction, orphan.phase, standalone);
        log::warn!(
            "recovery: {} transfer {} of {} was {} in phase {}: {action:?}",
            orphan.direction.as_str(),
            orphan.id,
            orphan.server,
            orphan.status.as_str(),
            orphan.phase.as_str()
        );
        match action {
            Recovery::Undo => undo(node, &orphan),
            Recovery::Settle => settle(node, &orphan),
            Recovery::AskAsSource => ask_as_source(node, orphan),
            Recovery::EndStandalone => {
                let error = if orphan.phase == Phase::Streaming {
                    RESTARTED.to_string()
                } else {
                    format!("{} ({RESTARTED})", super::OUTCOME_UNKNOWN)
                };
                node.transfers
                    .audit_orphan(&orphan, Status::Failed, Some(&error));
                node.transfers.forget_orphan(&orphan.id);
            }
        }
    }
}

/// Nothing was reported as a success: remove what the transfer put in
/// place, end `failed`, report the failure (retried in the background).
fn undo(node: &Arc<Node>, orphan: &Saved) {
    if orphan.direction == Direction::Incoming {
        // The panel lists the server here only after it accepted a success
        // report, which was never sent from this phase; standalone, the
        // entry is the install's own.
        if node.panel.is_some() && node.registry.contains(&orphan.server) {
            log::warn!(
                "recovery: {} is on the panel's list of this node; keeping it",
                orphan.server
            );
            crate::transfer::extras::keep_received(&node.config.system, &orphan.server);
        } else if crate::server::is_uuid(&orphan.server)
            && (orphan.phase != Phase::Streaming || !node.registry.contains(&orphan.server))
        {
            destination::uninstall(node, &orphan.server);
            log::warn!(
                "recovery: removed the unclaimed install of {}",
                orphan.server
            );
        }
    }
    node.transfers
        .audit_orphan(orphan, Status::Failed, Some(RESTARTED));
    node.transfers.forget_orphan(&orphan.id);
    report_failure_until_answered(node, &orphan.server);
}

/// The success report may have been accepted: keep the install, marked
/// transferring, and let the panel settle it.
fn settle(node: &Arc<Node>, orphan: &Saved) {
    let config = orphan
        .config
        .clone()
        .unwrap_or_else(|| ServerConfig::minimal(&orphan.server));
    let server = match node.registry.get(&orphan.server) {
        Some(server) => server,
        None => match node.registry.upsert(config) {
            Ok(server) => server,
            Err(e) => {
                log::error!(
                    "recovery: cannot register {} again: {e}; settling it anyway",
                    orphan.server
                );
                Arc::new(Server::new(ServerConfig::minimal(&orphan.server)))
            }
        },
    };
    let mark = server.try_mark_transferring();
    let transfer = node.transfers.resume(orphan);
    if transfer.phase() == Phase::Reporting {
        let _ = node.transfers.enter_phase(&transfer, Phase::Unknown);
    }
    // Start-on-completion was the source's request; after a crash the
    // operator starts it.
    // The killed process may have sent the report a moment ago: the panel
    // may still commit it, so "not listed" waits for the grace.
    destination::settle_later(node, &transfer, mark, false, destination::Unanswered::now());
}

/// A source that died after (or while) streaming: the failure report's
/// answer says whether the server stays here or moved.
fn ask_as_source(node: &Arc<Node>, orphan: Saved) {
    let node = Arc::clone(node);
    let spawned = std::thread::Builder::new()
        .name("recover".into())
        .spawn(move || {
            let mark = node
                .registry
                .get(&orphan.server)
                .and_then(|s| s.try_mark_transferring());
            let mut wait = Duration::from_secs(1);
            let outcome = loop {
                match super::source::ask_panel(&node, &orphan.server, RESTARTED.to_string()) {
                    super::source::PanelWord::Unconfirmed(why) => {
                        log::warn!(
                            "recovery: {}: {why}; asking again in {wait:?}",
                            orphan.server
                        );
                        std::thread::sleep(wait);
                        wait = (wait * 2).min(Duration::from_secs(300));
                    }
                    word => break word.into_result(),
                }
            };
            drop(mark);
            match outcome {
                Ok(()) => {
                    if let Some(server) = node.registry.get(&orphan.server) {
                        let _life = server.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
                        node.remove_server(&server);
                    } else {
                        // Forgotten by the start-up sync; the files may remain.
                        let spec = ServerConfig::minimal(&orphan.server)
                            .into_spec(&node.config.system.data);
                        let _ = node.environment.destroy(&spec);
                        let _ = crate::archive::remove_server_dir(
                            &node.config.system.data,
                            &orphan.server,
                        );
                    }
                    log::warn!(
                        "recovery: {} moved to the destination; removed this copy",
                        orphan.server
                    );
                    node.transfers
                        .audit_orphan(&orphan, Status::Completed, None);
                }
                Err(e) => node
                    .transfers
                    .audit_orphan(&orphan, Status::Failed, Some(&e)),
            }
            node.transfers.forget_orphan(&orphan.id);
        });
    if let Err(e) = spawned {
        log::error!("recovery: cannot start a thread: {e}");
    }
}

fn report_failure_until_answered(node: &Arc<Node>, server: &str) {
    if node.panel.is_none() {
        return;
    }
    let (node, server) = (Arc::clone(node), server.to_string());
    let _ = std::thread::Builder::new()
        .name("recover".into())
        .spawn(move || {
            let mut wait = Duration::from_secs(1);
            while node.report_to_panel(&server, false).is_err() {
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(300));
            }
        });
}
