//! The destination's finish (the driver of the machine in `finish/mod.rs`):
//! from a staged, verified tree to a settled transfer. Install (move into
//! place, register marked transferring, create the container), report
//! success, and settle on the panel's answer; or fail (undo, report the
//! failure once, answer the source). The transports that receive a tree
//! (the classic multipart POST, ferry's segmented transport) all end here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{failpoint, Answer, Phase, Verdict};
use crate::archive::{self, Staging};
use crate::environment::{EnvError, PowerState, ServerSpec};
use crate::http::reply::{self, ApiError};
use crate::http::Response;
use crate::node::Node;
use crate::panel::{PanelError, ReportAnswer};
use crate::server::{ServerConfig, TransferMark};
use crate::transfer::extras::{Committed, Received};
use crate::transfer::manager::PhaseRefused;
use crate::transfer::Transfer;

/// Time between two attempts to settle an unknown outcome (SPEC §5.1);
/// `FERRY_SETTLE_INTERVAL_MS` shortens it for tests.
const SETTLE_INTERVAL: Duration = Duration::from_secs(30);

/// How long a success report that went unanswered may still be in the
/// panel's hands (and commit later): longer than the request limits web
/// servers and PHP usually set (30 s to 5 min). Until it has passed, "not
/// listed here" does not remove the install. `FERRY_SETTLE_GRACE_MS`
/// shortens it for tests.
const REPORT_GRACE: Duration = Duration::from_secs(300);

fn settle_interval() -> Duration {
    duration_from_env("FERRY_SETTLE_INTERVAL_MS").unwrap_or(SETTLE_INTERVAL)
}

fn report_grace() -> Duration {
    duration_from_env("FERRY_SETTLE_GRACE_MS").unwrap_or(REPORT_GRACE)
}

fn duration_from_env(name: &str) -> Option<Duration> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
}

/// When a success report of ours last went unanswered: until the grace has
/// passed since then, the panel may still commit it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unanswered(Option<Instant>);

impl Unanswered {
    /// A report may have been sent just now (by a process that was killed).
    pub fn now() -> Unanswered {
        Unanswered(Some(Instant::now()))
    }

    /// Takes note of an answer: no answer, or one to a re-sent attempt,
    /// leaves a report in the panel's hands.
    fn note(&mut self, answer: &Answer) {
        if matches!(answer, Answer::NoAnswer(_) | Answer::RefusedResent(..)) {
            *self = Unanswered::now();
        }
    }

    fn in_flight(&self) -> bool {
        self.0.is_some_and(|at| at.elapsed() < report_grace())
    }
}

/// Installs the verified tree in `staging` as the server `config`
/// describes, reports success to the panel and settles the transfer on
/// its answer (SPEC §5.1); standalone, the answer to the source is the
/// commit point. Always ends the transfer (or hands it to the settler when
/// the panel did not answer) and finalizes it; the result is what to
/// answer the source: Ok (200 with the record) only once committed.
pub fn install_and_report(
    node: &Arc<Node>,
    transfer: &Arc<Transfer>,
    staging: Staging,
    extras: Received,
    config: ServerConfig,
    start_on_completion: bool,
) -> Result<Response, ApiError> {
    // Backups and the install log travel with the server: put in place with
    // it and taken back whenever the install is.
    let (mark, mut kept) = match install(node, transfer, staging, extras, &config) {
        Ok(installed) => installed,
        Err(error) => return fail(node, transfer, error),
    };
    if let Err(refused) = node.transfers.enter_phase(transfer, Phase::Reporting) {
        uninstall(node, &config.uuid);
        kept.remove();
        drop(mark);
        let error = match refused {
            PhaseRefused::Cancelled => cancelled_error(transfer),
            PhaseRefused::NoSuchStep => ApiError::new(500, "the finish machine refused to report"),
        };
        return fail(node, transfer, error);
    }
    let Some(panel) = &node.panel else {
        // Standalone: the 200 that follows is the commit point.
        return complete(node, transfer, mark, start_on_completion);
    };
    node.transfer_log(transfer, "Reporting the transfer to the panel...");
    let answer = answer_of(panel.send_transfer_report_counted(&transfer.server, true));
    failpoint::point("reported");
    let mut unanswered = Unanswered::default();
    unanswered.note(&answer);
    let verdict = match super::first_report(&answer) {
        Verdict::AskList => ask_list(node, &transfer.server, unanswered),
        verdict => verdict,
    };
    match verdict {
        Verdict::Keep => complete(node, transfer, mark, start_on_completion),
        Verdict::Remove(reason) => {
            kept.remove();
            refused(node, transfer, mark, &reason)
        }
        Verdict::AskList | Verdict::Unknown(_) => {
            let why = match verdict {
                Verdict::Unknown(why) => why,
                _ => "the panel's list could not be read".to_string(),
            };
            if node
                .transfers
                .enter_phase(transfer, Phase::Unknown)
                .is_err()
            {
                log::error!("transfer {}: cannot enter the unknown phase", transfer.id);
            }
            let message = format!(
                "outcome unknown ({why}); the server is kept here until the panel settles it"
            );
            node.transfer_log(transfer, &message);
            log::warn!("transfer {} of {}: {message}", transfer.id, transfer.server);
            settle_later(node, transfer, Some(mark), start_on_completion, unanswered);
            Err(ApiError::new(500, message))
        }
    }
}

/// Ends a transfer that failed before it could commit: the record
/// (`cancelled` if it was cancelled here, else `failed`), one failure
/// report, and the answer to the source. Staging and any install must be
/// gone already (the caller's `Staging` drop and `uninstall`).
pub fn fail(
    node: &Arc<Node>,
    transfer: &Arc<Transfer>,
    error: ApiError,
) -> Result<Response, ApiError> {
    let error = if transfer.is_cancelled() {
        cancelled_error(transfer)
    } else {
        error
    };
    node.transfers.finish(transfer, Err(error.to_string()));
    node.transfer_log(transfer, &format!("Transfer failed: {error}"));
    let _ = node.report_to_panel(&transfer.server, false);
    transfer.finalize();
    Err(error)
}

/// The answer to a source whose transfer was cancelled here (SPEC §4).
pub fn cancelled_error(transfer: &Transfer) -> ApiError {
    match transfer.cancel_reason() {
        Some(reason) => ApiError::new(409, format!("{} ({reason})", super::CANCELLED_HERE)),
        None => ApiError::new(409, super::CANCELLED_HERE),
    }
}

/// Moves the tree into place and registers the server, marked
/// transferring; `installing` is persisted first so a crash from here on
/// is undone by recovery. On error nothing of it remains.
fn install(
    node: &Arc<Node>,
    transfer: &Arc<Transfer>,
    staging: Staging,
    extras: Received,
    config: &ServerConfig,
) -> Result<(TransferMark, Committed), ApiError> {
    let uuid = config.uuid.as_str();
    node.transfers.set_config(transfer, config);
    node.transfers
        .enter_phase(transfer, Phase::Installing)
        .map_err(|_| ApiError::new(500, "the finish machine refused to install"))?;
    node.transfer_log(transfer, "Archive verified, installing server...");
    // Again: a container may have been started while the archive arrived.
    refuse_running_container(node, uuid)?;
    let installed = staging
        .commit()
        .map_err(|e| ApiError::new(500, format!("failed to move the server into place: {e}")))?;
    let mut kept = match extras.commit() {
        Ok(kept) => kept,
        Err(e) => {
            let _ = archive::remove_server_dir(&node.config.system.data, uuid);
            return Err(crate::transfer::destination::extras_error(e));
        }
    };
    // Staging is private (0700); a server directory is not.
    if let Err(e) = std::fs::set_permissions(
        &installed,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    ) {
        log::warn!("{uuid}: cannot open up {}: {e}", installed.display());
    }
    let server = match node.registry.insert(config.clone()) {
        Ok(server) => server,
        Err(e) => {
            // Only possible if another path registered it meanwhile; the
            // directory we just moved in is ours to take back.
            let _ = archive::remove_server_dir(&node.config.system.data, uuid);
            kept.remove();
            return Err(ApiError::new(
                500,
                format!("failed to register the server: {e}"),
            ));
        }
    };
    let Some(mark) = server.try_mark_transferring() else {
        uninstall(node, uuid);
        kept.remove();
        return Err(ApiError::new(
            500,
            "the new server is already marked transferring",
        ));
    };
    failpoint::point("creating-container");
    let spec = server.spec(&node.config.system.data);
    if let Err(e) = create_container(node, &spec) {
        drop(mark);
        uninstall(node, uuid);
        kept.remove();
        return Err(environment_error(e.to_string()));
    }
    failpoint::point("container-created");
    if transfer.is_cancelled() {
        drop(mark);
        uninstall(node, uuid);
        kept.remove();
        return Err(cancelled_error(transfer));
    }
    Ok((mark, kept))
}

/// Committed: `completed`, the mark released, the server started if asked.
fn complete(
    node: &Arc<Node>,
    transfer: &Arc<Transfer>,
    mark: TransferMark,
    start_on_completion: bool,
) -> Result<Response, ApiError> {
    let server = Arc::clone(mark.server());
    {
        let _life = server.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
        node.transfers.finish(transfer, Ok(()));
        crate::transfer::extras::keep_received(&node.config.system, &transfer.server);
        drop(mark);
        if server.delete_requested() {
            node.remove_server(&server);
        }
    }
    node.transfer_log(transfer, "Transfer completed.");
    if start_on_completion && !server.delete_requested() {
        start_later(node, &transfer.server);
    }
    transfer.finalize();
    Ok(reply::json(200, &transfer.record()))
}

/// The panel does not expect this transfer here: remove the install, end
/// `failed` with its reason, answer the source 500 with it. No failure
/// report: the panel has already ended the transfer.
fn refused(
    node: &Arc<Node>,
    transfer: &Arc<Transfer>,
    mark: TransferMark,
    reason: &str,
) -> Result<Response, ApiError> {
    drop(mark);
    uninstall(node, &transfer.server);
    node.transfers.finish(transfer, Err(reason.to_string()));
    node.transfer_log(transfer, &format!("Transfer failed: {reason}"));
    transfer.finalize();
    Err(ApiError::new(500, reason))
}

/// Settles an unknown outcome on a thread of its own: at once, then every
/// 30 s, re-send the success report; 2xx commits; a 4xx asks the panel's
/// list, whose "not listed" removes only once no report of ours is left
/// unanswered within the grace. Holds the mark (power actions refused)
/// until it is settled.
pub fn settle_later(
    node: &Arc<Node>,
    transfer: &Arc<Transfer>,
    mark: Option<TransferMark>,
    start_on_completion: bool,
    mut unanswered: Unanswered,
) {
    let (node, transfer) = (Arc::clone(node), Arc::clone(transfer));
    let spawned = std::thread::Builder::new()
        .name(format!(
            "settle-{}",
            &transfer.id[..8.min(transfer.id.len())]
        ))
        .spawn(move || {
            let mut first = true;
            loop {
                if !first {
                    std::thread::sleep(settle_interval());
                }
                first = false;
                let Some(panel) = &node.panel else { return };
                let answer = answer_of(panel.send_transfer_report_counted(&transfer.server, true));
                unanswered.note(&answer);
                let verdict = match super::settling_report(&answer) {
                    Verdict::AskList => ask_list(&node, &transfer.server, unanswered),
                    verdict => verdict,
                };
                log::info!(
                    "transfer {} of {}: settling: {answer:?} -> {verdict:?}",
                    transfer.id,
                    transfer.server
                );
                let server = match &mark {
                    Some(m) => Some(Arc::clone(m.server())),
                    None => node.registry.get(&transfer.server),
                };
                match verdict {
                    Verdict::Keep => {
                        {
                            let _life = server
                                .as_ref()
                                .map(|s| s.lifecycle.lock().unwrap_or_else(|p| p.into_inner()));
                            node.transfers.finish(&transfer, Ok(()));
                            crate::transfer::extras::keep_received(
                                &node.config.system,
                                &transfer.server,
                            );
                            if let Some(s) = &server {
                                if s.delete_requested() {
                                    node.remove_server(s);
                                }
                            }
                        }
                        node.transfer_log(&transfer, "Transfer completed.");
                        if start_on_completion {
                            start_later(&node, &transfer.server);
                        }
                        break;
                    }
                    Verdict::Remove(reason) => {
                        uninstall(&node, &transfer.server);
                        node.transfers.finish(&transfer, Err(reason.clone()));
                        node.transfer_log(&transfer, &format!("Transfer failed: {reason}"));
                        break;
                    }
                    Verdict::AskList | Verdict::Unknown(_) => continue,
                }
            }
            drop(mark);
            transfer.finalize();
        });
    if let Err(e) = spawned {
        log::error!("cannot start the settle thread: {e}; the next start-up settles it");
    }
}

/// The panel's answer to a report, as the machine reads it.
fn answer_of(report: ReportAnswer) -> Answer {
    match report.result {
        Ok(()) => Answer::Accepted,
        Err(PanelError::Refused(status, why)) if report.resent => {
            Answer::RefusedResent(status, why)
        }
        Err(PanelError::Refused(status, why)) => Answer::Refused(status, why),
        Err(e) => Answer::NoAnswer(e.to_string()),
    }
}

/// Whether the panel lists `uuid` among this node's servers, read as the
/// machine says while a report of ours may be unanswered.
fn ask_list(node: &Node, uuid: &str, unanswered: Unanswered) -> Verdict {
    match on_this_node(node, uuid) {
        Ok(listed) => super::listed(listed, unanswered.in_flight()),
        Err(e) => Verdict::Unknown(e),
    }
}

pub(super) fn on_this_node(node: &Node, uuid: &str) -> Result<bool, String> {
    let Some(panel) = &node.panel else {
        return Err("no panel".into());
    };
    panel
        .list_servers()
        .map(|servers| servers.iter().any(|s| s.uuid == uuid))
        .map_err(|e| e.to_string())
}

fn environment_error(why: String) -> ApiError {
    ApiError::new(
        500,
        format!("failed to create the server environment: {why}"),
    )
}

/// Refuses the install while a container with the server's name runs on
/// this node's Engine. The server is new here, so such a container is not
/// ours: another node may be using the same Engine (container names are
/// server UUIDs, so two nodes need two Engines), and stopping it is not
/// this transfer's call. Checked before the archive is received, so a
/// doomed transfer fails at once, and again before anything is moved into
/// place.
pub fn refuse_running_container(node: &Node, uuid: &str) -> Result<(), ApiError> {
    let spec = ServerConfig::minimal(uuid).into_spec(&node.config.system.data);
    match node.environment.state(&spec) {
        Ok(PowerState::Offline) => Ok(()),
        Ok(state) => Err(environment_error(format!(
            "a container named {uuid} is already {} on this node's Docker Engine \
             (is another node using the same Engine?)",
            state.as_str()
        ))),
        Err(e) => Err(environment_error(e.to_string())),
    }
}

/// Refuses, before the archive is received, a configuration this node's
/// environment could not create a container from (no `container.image`,
/// say), instead of failing after the whole archive arrived.
pub fn check_environment(node: &Node, config: &ServerConfig) -> Result<(), ApiError> {
    let spec = config.clone().into_spec(&node.config.system.data);
    node.environment
        .check_settings(&spec)
        .map_err(|e| environment_error(e.to_string()))
}

/// Creates the server's container. One that exists already with its name
/// (stopped: `refuse_running_container` ran) was left by an earlier install
/// or delete and may carry stale settings, so it is replaced by one made
/// from the configuration just received rather than kept.
fn create_container(node: &Node, spec: &ServerSpec) -> Result<(), EnvError> {
    node.environment.destroy(spec)?;
    node.environment.create(spec)
}

/// Removes an install: container, files, registry entry, and the backups
/// and install log its transfer received.
pub fn uninstall(node: &Node, uuid: &str) {
    match node.registry.get(uuid) {
        Some(server) => {
            let _life = server.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
            node.remove_server(&server)
        }
        None => {
            let spec = ServerConfig::minimal(uuid).into_spec(&node.config.system.data);
            if let Err(e) = node.environment.destroy(&spec) {
                log::warn!("{uuid}: cannot remove the container: {e}");
            }
            let _ = archive::remove_server_dir(&node.config.system.data, uuid);
        }
    }
    crate::transfer::extras::remove_received(&node.config.system, uuid);
}

fn start_later(node: &Arc<Node>, uuid: &str) {
    let (node, uuid) = (Arc::clone(node), uuid.to_string());
    let _ = std::thread::Builder::new()
        .name("start".into())
        .spawn(move || {
            if let Some(server) = node.registry.get(&uuid) {
                match node
                    .environment
                    .start(&server.spec(&node.config.system.data))
                {
                    Ok(()) => log::info!("{uuid}: started after the transfer"),
                    Err(e) => log::error!("{uuid}: cannot start after the transfer: {e}"),
                }
            }
        });
}
