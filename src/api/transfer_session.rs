//! The segmented transport's routes (SPEC §10, docs/transport.md
//! "Requests"): probe and open with the panel's JWT, then status, segment,
//! finish and cancel with the session's secret. The work is
//! `transfer::segmented`'s; this file maps requests and answers.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{read_json, read_reason};
use crate::api::transfer_out::NOT_TRANSFERRING;
use crate::http::reply::{self, ApiError};
use crate::http::router::Params;
use crate::http::{Request, Response};
use crate::node::Node;
use crate::transfer::destination::verify_token;
use crate::transfer::finish;
use crate::transfer::manager::CancelRefused;
use crate::transfer::segmented::ledger::State;
use crate::transfer::segmented::session::Session;
use crate::transfer::segmented::store::OpenRequest;
use crate::transfer::segmented::{secret, segment};

pub const NO_SESSION: &str = "No such transfer session.";
pub const BAD_SECRET: &str = "Invalid or expired transfer session.";
/// The header naming a segment's SHA-256.
pub const SEGMENT_SHA256: &str = "x-ferry-segment-sha256";

/// `GET /api/transfers/session`: "this node speaks the segmented
/// transport", to a caller holding a valid transfer JWT.
pub fn probe(node: &Arc<Node>, request: &mut Request, _: &Params) -> Result<Response, ApiError> {
    verify_token(node, request)?;
    let c = &node.config.system.transfers.segmented;
    Ok(reply::json(
        200,
        &json!({
            "ferry": 1,
            "segment_size": c.segment_size,
            "resume_window": crate::transfer::segmented::store::window(&node.config),
            // The archive codecs this node reads (`transfer::wire::codec_for`).
            "codecs": ["gzip", "zstd"],
        }),
    ))
}

/// `POST /api/transfers/session`.
pub fn open(node: &Arc<Node>, request: &mut Request, _: &Params) -> Result<Response, ApiError> {
    let claims = verify_token(node, request)?;
    let body = read_json(request, 16 * 1024)?;
    let wanted: OpenRequest = serde_json::from_value(body)
        .map_err(|e| ApiError::new(400, format!("invalid session request: {e}")))?;
    let peer = request.remote_addr.ip().to_string();
    let opened = node.sessions.open(node, &claims, &peer, wanted)?;
    Ok(reply::json(201, &opened))
}

/// The session named by `:sid`, when the request carries its secret.
fn session(node: &Node, request: &Request, params: &Params) -> Result<Arc<Session>, ApiError> {
    let sid = params.get("sid");
    let found = secret::is_session_id(sid)
        .then(|| node.sessions.get(sid))
        .flatten()
        .ok_or_else(|| ApiError::new(404, NO_SESSION))?;
    if !found.authorizes(request.header("authorization")) {
        log::warn!(
            "transfer session {sid}: refused a request from {} without its secret",
            request.remote_addr
        );
        return Err(ApiError::new(401, BAD_SECRET));
    }
    Ok(found)
}

/// The longest `?wait=` a status request may ask for: well under the ~100 s
/// after which proxies cut a silent read.
pub const MAX_STATUS_WAIT: Duration = Duration::from_secs(20);

/// `?wait=S`: how long a status request of a finishing session may wait
/// for its outcome (seconds, capped at `MAX_STATUS_WAIT`; none: answer now).
fn status_wait(query: &str) -> Duration {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("wait="))
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(Duration::ZERO, |s| {
            Duration::from_secs(s).min(MAX_STATUS_WAIT)
        })
}

/// `GET /api/transfers/session/:sid[?wait=S][&alive=1]`: what the session
/// holds and its state; with `wait`, a finishing session answers when the
/// shared finish decided (or after S seconds, still `finishing`); with
/// `alive`, a receiving session's silence starts again (its resume window
/// counts from now).
pub fn status(
    node: &Arc<Node>,
    request: &mut Request,
    params: &Params,
) -> Result<Response, ApiError> {
    let session = session(node, request, params)?;
    // `alive`: the source says it is busy without sending (packing its
    // held bytes again after a restart); only it holds the secret.
    // Asking status alone changes nothing, so whoever watches an expiry
    // does not prevent it.
    if request
        .query
        .split('&')
        .any(|p| p == "alive" || p.starts_with("alive="))
    {
        session.heard_from_source();
    }
    let wait = status_wait(&request.query);
    let view = session.view();
    let view = if wait.is_zero() || view.state != State::Finishing {
        view
    } else {
        // Waits for the install: keep the pool's seats for short requests.
        request.leave_worker_pool();
        session.view_when_settled(wait)
    };
    let mut body = json!({"held": view.held, "state": view.state.as_str()});
    if let Some((code, message)) = view.error {
        body["error"] = json!(message);
        body["code"] = json!(code);
    }
    Ok(reply::json(200, &body))
}

/// `GET /api/transfers/session/:sid/acks`: `{"acks": "<lines>"}`, the ack
/// lines of the segments held (`<offset> <length> <sha256>\n` each), for a restarted source that
/// packs its body again and must check every held byte against them
/// (docs/transport.md, "source restart").
pub fn acks(
    node: &Arc<Node>,
    request: &mut Request,
    params: &Params,
) -> Result<Response, ApiError> {
    let session = session(node, request, params)?;
    if session.view().state != State::Receiving {
        return Err(ApiError::new(409, "the session is not receiving"));
    }
    // Well under a proxy's idle timeout.
    match session.held_ack_lines(Duration::from_secs(20)) {
        Ok(Some((lines, held))) => Ok(reply::json(200, &json!({ "acks": lines, "held": held }))),
        Ok(None) => Err(ApiError::new(409, crate::transfer::segmented::ledger::BUSY)),
        Err(e) => Err(ApiError::new(500, e.to_string())),
    }
}

/// `PUT /api/transfers/session/:sid/segment?offset=O`.
pub fn segment(
    node: &Arc<Node>,
    request: &mut Request,
    params: &Params,
) -> Result<Response, ApiError> {
    let session = session(node, request, params)?;
    let limit = node.config.system.transfers.segmented.segment_size;
    let header = segment::parse(
        &request.query,
        request.content_length(),
        request.header(SEGMENT_SHA256),
        limit,
    )
    .map_err(|e| ApiError::new(e.status(), e.to_string()))?;
    // Writing and fsyncing a segment takes a while: keep the pool's seats
    // for short requests.
    request.leave_worker_pool();
    let connection = request.connection();
    let mut body = request.body();
    match session.receive(header, &mut body, connection) {
        Ok(held) => Ok(reply::json(200, &json!({"held": held}))),
        Err((status, message, held)) => Ok(reply::json(
            status,
            &json!({"error": message, "held": held}),
        )),
    }
}

/// `POST /api/transfers/session/:sid/finish` `{"length","acks_sha256"}`:
/// 202 at once; the outcome comes by asking status.
pub fn finish(
    node: &Arc<Node>,
    request: &mut Request,
    params: &Params,
) -> Result<Response, ApiError> {
    let session = session(node, request, params)?;
    let body = read_json(request, 4096)?;
    let length = body.get("length").and_then(|v| v.as_u64());
    let mut sha = [0u8; 32];
    let digest_ok = body
        .get("acks_sha256")
        .and_then(|v| v.as_str())
        .is_some_and(|h| h.len() == 64 && hex::decode_to_slice(h, &mut sha).is_ok());
    let (Some(length), true) = (length, digest_ok) else {
        return Err(ApiError::new(
            400,
            "finish needs `length` and `acks_sha256`",
        ));
    };
    match session.finish(length, sha) {
        Ok(()) => Ok(reply::json(
            202,
            &json!({"held": length, "state": "finishing"}),
        )),
        Err(refusal) => Ok(reply::json(
            refusal.status(),
            &json!({"error": refusal.to_string(), "held": session.view().held}),
        )),
    }
}

/// `DELETE /api/transfers/session/:sid`: the source cancels (SPEC §5).
pub fn cancel(
    node: &Arc<Node>,
    request: &mut Request,
    params: &Params,
) -> Result<Response, ApiError> {
    let session = session(node, request, params)?;
    let reason = read_reason(request)?;
    cancel_transfer(node, &session, reason)
}

/// `DELETE /api/transfers/session` with the panel JWT: the source cancels
/// the session its open may have created while the open's answer never
/// reached it (docs/transport.md "Requests"). 202 also when there is none.
pub fn cancel_opening(
    node: &Arc<Node>,
    request: &mut Request,
    _: &Params,
) -> Result<Response, ApiError> {
    let claims = verify_token(node, request)?;
    let reason = read_reason(request)?;
    match node.sessions.cancel_opening(node, &claims) {
        Some(session) => cancel_transfer(node, &session, reason),
        None => Ok(reply::json(202, &json!({"session": null}))),
    }
}

/// The source's cancel of `session`'s transfer, as a classic one's.
fn cancel_transfer(
    node: &Arc<Node>,
    session: &Session,
    reason: Option<String>,
) -> Result<Response, ApiError> {
    match node.transfers.cancel(&session.transfer, reason.clone()) {
        Ok(()) => {}
        Err(CancelRefused::NotActive) => return Err(ApiError::new(409, NOT_TRANSFERRING)),
        Err(CancelRefused::Finalizing) => return Err(ApiError::new(409, finish::FINALIZING)),
    }
    if let Some(reason) = &reason {
        node.transfer_log(
            &session.transfer,
            &format!("Cancel requested by the source: {reason}"),
        );
    }
    Ok(reply::json(202, &session.transfer.record()))
}

/// `GET /api/transfers/sessions` (node token): the sessions this node
/// receives, live or recently ended, with what each holds (`ferry status`).
pub fn list(node: &Arc<Node>, _: &mut Request, _: &Params) -> Result<Response, ApiError> {
    let mut out: Vec<serde_json::Value> = node
        .sessions
        .all()
        .iter()
        .map(|s| {
            let (record, view) = (s.record(), s.view());
            json!({
                "session": s.sid,
                "server": record.server,
                "transfer": record.transfer_id,
                "peer": record.peer,
                "state": view.state.as_str(),
                "held": view.held,
                "bytes_total": record.bytes_total,
                "created": record.created,
                "resumable": view.state.as_str() == "receiving",
            })
        })
        .collect();
    out.sort_by_key(|v| std::cmp::Reverse(v["created"].as_u64()));
    Ok(reply::json(200, &out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_wait_is_seconds_capped_well_under_a_proxy_timeout() {
        assert_eq!(status_wait(""), Duration::ZERO);
        assert_eq!(status_wait("wait=3"), Duration::from_secs(3));
        assert_eq!(status_wait("x=1&wait=7"), Duration::from_secs(7));
        assert_eq!(status_wait("wait=3600"), MAX_STATUS_WAIT);
        assert_eq!(status_wait("wait=-1"), Duration::ZERO);
        assert_eq!(status_wait("wait=soon"), Duration::ZERO);
    }
}
