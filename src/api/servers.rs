//! Server routes: list, view, delete and power (SPEC §2.2).

use std::sync::Arc;

use serde_json::json;

use super::{read_json, server_param};
use crate::environment::{EnvError, PowerState, ServerSpec};
use crate::http::reply::{self, ApiError, FieldError};
use crate::http::router::Params;
use crate::http::{Request, Response};
use crate::node::Node;
use crate::server::Server;

pub const POWER_WHILE_TRANSFERRING: &str =
    "The server cannot be powered while it is being transferred.";

/// The server view: `{"uuid","state","is_suspended","is_transferring","transfer","configuration"}`.
pub fn view(node: &Node, server: &Server) -> serde_json::Value {
    let config = server.config();
    let state = match node
        .environment
        .state(&server.spec(&node.config.system.data))
    {
        Ok(state) => state,
        Err(e) => {
            log::warn!("{}: cannot read its state: {e}", server.uuid);
            PowerState::Offline
        }
    };
    let transfer = node.transfers.latest(&server.uuid).map(|t| t.record());
    json!({
        "uuid": server.uuid,
        "state": state.as_str(),
        "is_suspended": config.is_suspended(),
        "is_transferring": server.is_transferring(),
        "transfer": transfer,
        "configuration": {
            "settings": config.settings,
            "process_configuration": config.process_configuration,
        },
    })
}

pub fn list(
    node: &Arc<Node>,
    _request: &mut Request,
    _params: &Params,
) -> Result<Response, ApiError> {
    let views: Vec<_> = node.registry.list().iter().map(|s| view(node, s)).collect();
    Ok(reply::json(200, &views))
}

pub fn get(
    node: &Arc<Node>,
    _request: &mut Request,
    params: &Params,
) -> Result<Response, ApiError> {
    let server = server_param(node, params)?;
    Ok(reply::json(200, &view(node, &server)))
}

pub fn delete(
    node: &Arc<Node>,
    _request: &mut Request,
    params: &Params,
) -> Result<Response, ApiError> {
    let server = server_param(node, params)?;
    node.delete_server(&server);
    Ok(reply::no_content())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    Start,
    Stop,
    Restart,
    Kill,
}

/// Validates `{"action": …}`.
pub fn parse_power(body: &serde_json::Value) -> Result<PowerAction, ApiError> {
    let invalid = |m: &str| ApiError::validation(vec![FieldError::new("action", m)]);
    match body.get("action").and_then(|a| a.as_str()) {
        Some("start") => Ok(PowerAction::Start),
        Some("stop") => Ok(PowerAction::Stop),
        Some("restart") => Ok(PowerAction::Restart),
        Some("kill") => Ok(PowerAction::Kill),
        Some(_) => Err(invalid("must be one of start, stop, restart, kill")),
        None => Err(invalid("is required")),
    }
}

pub fn power(
    node: &Arc<Node>,
    request: &mut Request,
    params: &Params,
) -> Result<Response, ApiError> {
    let server = server_param(node, params)?;
    let action = parse_power(&read_json(request, 16 * 1024)?)?;
    let spec = server.spec(&node.config.system.data);
    let env = &node.environment;
    let failed = |e: EnvError| ApiError::new(500, format!("power action failed: {e}"));
    // The check and the action happen under the life-cycle lock, which an
    // outgoing transfer also takes to set its mark: a start either finishes
    // before the transfer's stop step looks at the server, or is refused.
    // Otherwise a start racing the mark could run the server while it is
    // archived. (A start that pulls an image holds the lock for the pull;
    // a transfer or delete of that server waits for it.)
    let life = server.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
    if server.is_transferring() {
        return Err(ApiError::new(409, POWER_WHILE_TRANSFERRING));
    }
    match action {
        PowerAction::Start => env.start(&spec).map_err(failed)?,
        PowerAction::Stop => env.stop(&spec).map_err(failed)?,
        PowerAction::Kill => env.kill(&spec).map_err(failed)?,
        PowerAction::Restart => {
            // The stop is asked for now; waiting for it (up to stop_timeout)
            // and starting again happen on their own thread.
            env.stop(&spec).map_err(failed)?;
            drop(life);
            let (node, server) = (Arc::clone(node), Arc::clone(&server));
            std::thread::Builder::new()
                .name("restart".into())
                .spawn(move || finish_restart(&node, &server, spec))
                .map_err(|e| {
                    ApiError::new(
                        500,
                        format!("power action failed: cannot start a thread: {e}"),
                    )
                })?;
        }
    }
    log::info!("{}: power {action:?}", server.uuid);
    Ok(Response::new(202))
}

/// The second half of a restart: waits for the stop, then starts the server
/// again unless, meanwhile, it was deleted (a start would recreate its
/// container) or a transfer took it (a start would run it while archived).
fn finish_restart(node: &Node, server: &Arc<Server>, spec: ServerSpec) {
    let env = &node.environment;
    let timeout = node.config.system.transfers.stop_timeout;
    match env.wait_for_stop(&spec, timeout) {
        Ok(true) => {}
        Ok(false) => {
            log::warn!(
                "{}: restart: did not stop within {timeout:?}; not started again",
                spec.uuid
            );
            return;
        }
        Err(e) => {
            log::error!("{}: restart failed: {e}", spec.uuid);
            return;
        }
    }
    let _life = server.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
    let registered = node
        .registry
        .get(&server.uuid)
        .is_some_and(|s| Arc::ptr_eq(&s, server));
    if !registered {
        log::info!(
            "{}: restart: the server was deleted; not started again",
            spec.uuid
        );
    } else if server.is_transferring() {
        log::info!(
            "{}: restart: the server is being transferred; not started again",
            spec.uuid
        );
    } else if let Err(e) = env.start(&spec) {
        log::error!("{}: restart failed: {e}", spec.uuid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_body_validation() {
        assert_eq!(
            parse_power(&json!({"action":"start"})).unwrap(),
            PowerAction::Start
        );
        assert_eq!(
            parse_power(&json!({"action":"kill"})).unwrap(),
            PowerAction::Kill
        );
        let e = parse_power(&json!({})).unwrap_err();
        assert_eq!(
            (e.status, e.validation_errors[0].field.as_str()),
            (400, "action")
        );
        assert_eq!(
            parse_power(&json!({"action":"explode"}))
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            parse_power(&serde_json::Value::Null).unwrap_err().status,
            400
        );
    }
}
