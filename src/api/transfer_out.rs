//! Outgoing transfer routes: start, cancel and read (SPEC §3, §5).

use std::sync::Arc;

use super::{read_json, read_reason, server_param};
use crate::http::reply::{self, ApiError, FieldError};
use crate::http::router::Params;
use crate::http::{Request, Response};
use crate::node::Node;
use crate::transfer::finish;
use crate::transfer::manager::CancelRefused;
use crate::transfer::source::{self, OutgoingPlan};
use crate::transfer::Direction;

pub const ALREADY: &str = "A transfer is already in progress for this server.";
pub use crate::transfer::precopy::stop::STOP_FAILED;
pub const NOT_TRANSFERRING: &str = "Server is not currently being transferred.";

/// Validates the panel's body: `url` (http/https) and `token` required.
pub fn parse_plan(body: &serde_json::Value) -> Result<OutgoingPlan, ApiError> {
    let mut errors = Vec::new();
    let text = |key: &str| {
        body.get(key)
            .and_then(|v| v.as_str())
            .map(str::trim)
            .unwrap_or("")
    };
    let url = text("url");
    if url.is_empty() {
        errors.push(FieldError::new("url", "is required"));
    } else if !(url.starts_with("http://") || url.starts_with("https://"))
        || url.parse::<ureq::http::Uri>().is_err()
    {
        errors.push(FieldError::new("url", "must be an http or https URL"));
    }
    let token = text("token");
    if token.is_empty() {
        errors.push(FieldError::new("token", "is required"));
    }
    if token.contains(['\r', '\n']) {
        errors.push(FieldError::new("token", "must be a single line"));
    }
    let start_on_completion = match body.pointer("/server/start_on_completion") {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(_) => {
            errors.push(FieldError::new(
                "server.start_on_completion",
                "must be true or false",
            ));
            false
        }
    };
    let backups = backups_of(body, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    Ok(OutgoingPlan {
        url: url.to_string(),
        token: token.to_string(),
        start_on_completion,
        backups,
        live: false,
        resume: None,
    })
}

pub fn start(
    node: &Arc<Node>,
    request: &mut Request,
    params: &Params,
) -> Result<Response, ApiError> {
    let server = server_param(node, params)?;
    let mut plan = parse_plan(&read_json(request, 64 * 1024)?)?;
    // Marked under the life-cycle lock that power actions hold while they
    // check the mark and act, so no start can slip in after the stop step
    // below has found the server offline (or stopped it).
    let mark = {
        let _life = server.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
        server.try_mark_transferring()
    }
    .ok_or_else(|| ApiError::new(409, ALREADY))?;
    let spec = server.spec(&node.config.system.data);
    let running = node
        .environment
        .state(&spec)
        .map(|state| state != crate::environment::PowerState::Offline)
        .map_err(|e| {
            log::error!(
                "{}: cannot read its state before the transfer: {e}",
                server.uuid
            );
            ApiError::new(500, STOP_FAILED)
        })?;
    if running && precopy_possible(node) {
        // Pre-copy (SPEC §10): answered at once; the source thread stops
        // the server after the live pass (or first, for a peer that is
        // not ferry).
        plan.live = true;
    } else if running {
        // Waiting for the stop can take minutes: not on a pool worker's time.
        request.leave_worker_pool();
        crate::transfer::precopy::stop::stop_for_transfer(node, &server)
            .map_err(|message| ApiError::new(500, message))?;
    }
    let transfer = node
        .transfers
        .begin(&server.uuid, Direction::Outgoing, &plan.url)
        .map_err(|_| ApiError::new(409, ALREADY))?;
    let record = transfer.record();
    log::info!(
        "{}: transfer {} to {} started",
        server.uuid,
        transfer.id,
        plan.url
    );
    source::spawn(Arc::clone(node), transfer, mark, plan);
    Ok(reply::json(202, &record).header(
        "Location",
        &format!("/api/servers/{}/transfer", server.uuid),
    ))
}

/// Whether a running server's transfer may start without stopping it:
/// pre-copy on (`precopy`, `FERRY_PRECOPY`) and the segmented transport
/// wanted (`transport`, `FERRY_TRANSPORT`), since pre-copy travels in it.
fn precopy_possible(node: &Node) -> bool {
    let transfers = &node.config.system.transfers;
    crate::transfer::precopy::enabled(transfers.segmented.precopy)
        && crate::transfer::source::segmented_wanted(node)
}

/// Cancels the active transfer of `server` in `direction` (SPEC §5).
pub fn cancel_active(
    node: &Node,
    server: &str,
    direction: Direction,
    reason: Option<String>,
) -> Result<Response, ApiError> {
    let transfer = node
        .transfers
        .active(server, direction)
        .ok_or_else(|| ApiError::new(409, NOT_TRANSFERRING))?;
    match node.transfers.cancel(&transfer, reason.clone()) {
        Ok(()) => {}
        Err(CancelRefused::NotActive) => return Err(ApiError::new(409, NOT_TRANSFERRING)),
        Err(CancelRefused::Finalizing) => return Err(ApiError::new(409, finish::FINALIZING)),
    }
    if let Some(reason) = &reason {
        node.transfer_log(&transfer, &format!("Cancel requested: {reason}"));
    }
    Ok(reply::json(202, &transfer.record()))
}

pub fn cancel(
    node: &Arc<Node>,
    request: &mut Request,
    params: &Params,
) -> Result<Response, ApiError> {
    let server = server_param(node, params)?;
    let reason = read_reason(request)?;
    cancel_active(node, &server.uuid, Direction::Outgoing, reason)
}

pub fn get(
    node: &Arc<Node>,
    _request: &mut Request,
    params: &Params,
) -> Result<Response, ApiError> {
    let uuid = params.get("server");
    // Records outlive a server that moved away, so this does not need the
    // server to be registered any more.
    let transfer = node
        .transfers
        .latest(uuid)
        .ok_or_else(ApiError::not_found)?;
    Ok(reply::json(200, &transfer.record()))
}

/// `backups` (Pelican panels): the local backups to send along. An id
/// that is not a UUID is skipped and logged, never used as a path.
fn backups_of(body: &serde_json::Value, errors: &mut Vec<FieldError>) -> Vec<String> {
    match body.get("backups") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Array(items)) => {
            let mut out: Vec<String> = Vec::new();
            for item in items {
                match item.as_str() {
                    Some(id) if crate::server::is_uuid(id) => {
                        let id = id.to_ascii_lowercase();
                        if !out.contains(&id) {
                            out.push(id);
                        }
                    }
                    _ => log::warn!("transfer request: skipping backup id {item} (not a uuid)"),
                }
            }
            out
        }
        Some(_) => {
            errors.push(FieldError::new(
                "backups",
                "must be an array of backup uuids",
            ));
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plan_validation() {
        let ok = parse_plan(&json!({"url":"http://d:8080/api/transfers","token":"Bearer x","server":{"uuid":"u","start_on_completion":true}})).unwrap();
        assert_eq!(ok.token, "Bearer x");
        assert!(ok.start_on_completion);
        assert!(ok.backups.is_empty());
        let b = "0b6f3a52-5c1e-4f8e-9a0d-2f4c6b8e1a3d";
        let with = parse_plan(&json!({"url":"http://d/api/transfers","token":"t",
            "backups":[b, "../x", b.to_uppercase(), 7]}))
        .unwrap();
        assert_eq!(with.backups, vec![b.to_string()]);
        assert_eq!(
            parse_plan(&json!({"url":"http://d/api/transfers","token":"t","backups":"x"}))
                .unwrap_err()
                .validation_errors[0]
                .field,
            "backups"
        );
        let e = parse_plan(&json!({})).unwrap_err();
        let fields: Vec<_> = e
            .validation_errors
            .iter()
            .map(|f| f.field.as_str())
            .collect();
        assert_eq!(fields, vec!["url", "token"]);
        assert_eq!(
            parse_plan(&json!({"url":"ftp://x","token":"t"}))
                .unwrap_err()
                .validation_errors[0]
                .field,
            "url"
        );
        assert_eq!(
            parse_plan(&json!({"url":"http://x","token":"a\r\nX: y"}))
                .unwrap_err()
                .validation_errors[0]
                .field,
            "token"
        );
        assert_eq!(
            parse_plan(
                &json!({"url":"http://x","token":"t","server":{"start_on_completion":"yes"}})
            )
            .unwrap_err()
            .status,
            400
        );
    }
}
