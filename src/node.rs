//! The node: everything a request handler or a transfer thread needs
//! (config, registry, transfers, environment, panel, events, caps), and the
//! server life-cycle steps shared by routes and pipelines.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::Config;
use crate::environment::Environment;
use crate::events::{Event, EventBus};
use crate::panel::PanelClient;
use crate::server::{Registry, Server};
use crate::timefmt;
use crate::transfer::finish::{self, DeleteAnswer};
use crate::transfer::throttle::Throttle;
use crate::transfer::{Direction, Manager, Transfer};

pub struct Node {
    pub config: Config,
    pub registry: Registry,
    pub transfers: Manager,
    pub events: Arc<EventBus>,
    pub environment: Box<dyn Environment>,
    /// None in standalone mode.
    pub panel: Option<PanelClient>,
    pub upload: Throttle,
    pub download: Throttle,
    pub http_requests: Mutex<std::collections::BTreeMap<(&'static str, u16), u64>>,
    /// Shared with the HTTP server, which keeps it.
    pub open_connections: Arc<AtomicUsize>,
    pub started: Instant,
    /// The segmented transport's sessions (SPEC §10) this node receives.
    pub sessions: crate::transfer::segmented::store::Sessions,
}

impl Node {
    /// Sends a `transfer logs` line in Wings' format.
    pub fn transfer_log(&self, transfer: &Transfer, message: &str) {
        let side = match transfer.direction {
            Direction::Outgoing => "Source Node",
            Direction::Incoming => "Destination Node",
        };
        let line = format!(
            "{} [Transfer System] [{side}]: {message}",
            timefmt::rfc1123(std::time::SystemTime::now())
        );
        self.events
            .publish(&transfer.server, Event::new("transfer logs", line));
    }

    /// Reports a transfer's end to the panel (no-op standalone); failures
    /// to reach it are logged, never fatal.
    pub fn report_to_panel(&self, server: &str, success: bool) -> Result<(), String> {
        let Some(panel) = &self.panel else {
            return Ok(());
        };
        panel.report_transfer(server, success).map_err(|e| {
            let word = if success { "success" } else { "failure" };
            let msg = format!("could not report transfer {word} for {server} to the panel: {e}");
            log::error!("{msg}");
            msg
        })
    }

    pub fn count_request(&self, route: &'static str, status: u16) {
        *self
            .http_requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((route, status))
            .or_insert(0) += 1;
    }

    /// Removes a server: container, data directory (never following links)
    /// and registry entry. Called with the server's life-cycle lock held.
    pub fn remove_server(&self, server: &Server) {
        if let Some(moved) = self.forget_server(server) {
            remove_moved(&server.uuid, &moved);
        }
    }

    /// What goes by the server's name: the container, the directory moved
    /// out of place (a crash from here on leaves no half-removed, or,
    /// standalone, re-adopted server in <data>; one that cannot be moved
    /// is removed in place now), the registry entry. Returns where the
    /// directory went, for `remove_moved`. Called with the server's
    /// life-cycle lock held.
    fn forget_server(&self, server: &Server) -> Option<PathBuf> {
        let spec = server.spec(&self.config.system.data);
        if let Err(e) = self.environment.destroy(&spec) {
            log::error!("delete {}: cannot remove the container: {e}", server.uuid);
        }
        let moved = match crate::archive::move_out_of_place(&self.config.system.data, &server.uuid)
        {
            Ok(moved) => moved,
            Err(e) => {
                log::error!(
                    "delete {}: cannot move {} out of place ({e}); removing it in place",
                    server.uuid,
                    spec.data_dir.display()
                );
                remove_moved(&server.uuid, &spec.data_dir);
                None
            }
        };
        self.registry.remove(&server.uuid);
        moved
    }

    /// `DELETE /api/servers/:server`: forgets the server now; removes its
    /// files now, or when its outgoing transfer ends (cancelling it first
    /// if it is still streaming).
    pub fn delete_server(self: &Arc<Self>, server: &Arc<Server>) {
        let _life = server.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
        for direction in [Direction::Outgoing, Direction::Incoming] {
            let Some(transfer) = self.transfers.active(&server.uuid, direction) else {
                continue;
            };
            // The finish machine says whether the transfer can still be
            // stopped or has to end first (SPEC §2.2, §5.1).
            match finish::delete(direction, transfer.phase()) {
                DeleteAnswer::RemoveWhenEnded => {
                    server.request_delete();
                    log::info!(
                        "delete {}: removing when transfer {} ends (phase {})",
                        server.uuid,
                        transfer.id,
                        transfer.phase().as_str()
                    );
                    return;
                }
                DeleteAnswer::CancelThenRemove => {
                    log::info!(
                        "delete {}: cancelling transfer {} first",
                        server.uuid,
                        transfer.id
                    );
                    if direction == Direction::Outgoing {
                        // Its end removes the server (under this lock).
                        server.request_delete();
                        let _ = self
                            .transfers
                            .cancel(&transfer, Some("the server was deleted".to_string()));
                        return;
                    }
                    let _ = self
                        .transfers
                        .cancel(&transfer, Some("the server was deleted".to_string()));
                }
            }
        }
        // Everything that goes by the server's name goes now, before the
        // answer. Once forgotten, the uuid may come back at once (the
        // server moved away and straight back here), and its new container
        // and directory must not be touched by this delete; so the
        // background thread only removes the tree from where it was moved,
        // which keeps the answer immediate for a large directory.
        let Some(moved) = self.forget_server(server) else {
            return;
        };
        let uuid = server.uuid.clone();
        let spawned = std::thread::Builder::new()
            .name("delete".into())
            .spawn(move || {
                crate::transfer::finish::failpoint::point("delete-removing");
                remove_moved(&uuid, &moved);
            });
        if let Err(e) = spawned {
            log::error!("delete: cannot start a thread: {e}");
        }
    }

    pub fn open_connections(&self) -> usize {
        self.open_connections.load(Ordering::Relaxed)
    }
}

/// Removes a server's directory where `Node::forget_server` left it.
fn remove_moved(uuid: &str, moved: &Path) {
    match crate::archive::remove_tree(moved) {
        Ok(()) => log::info!("delete {uuid}: data directory removed"),
        Err(e) => log::error!("delete {uuid}: cannot remove {}: {e}", moved.display()),
    }
}
