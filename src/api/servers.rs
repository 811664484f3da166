//! Server routes: list, view, delete and power (SPEC §2.2).

use std::sync::Arc;

use serde_json::json;

use super::{read_json, server_param};
use crate::environment::PowerState;
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
    if server.is_transferring() {
        return Err(ApiError::new(409, POWER_WHILE_TRANSFERRING));
    }
    let spec = server.spec(&node.config.system.data);
    let env = &node.environment;
    // Start/stop/kill are quick requests to the runtime; a restart waits for
    // the stop, so it runs on its own thread.
    match action {
        PowerAction::Start => env.start(&spec),
        PowerAction::Stop => env.stop(&spec),
        PowerAction::Kill => env.kill(&spec),
        PowerAction::Restart => {
            let node = Arc::clone(node);
            let timeout = node.config.system.transfers.stop_timeout;
            let _ = std::thread::Builder::new().name("restart".into()).spawn(move || {
                let env = &node.environment;
                let result = env
                    .stop(&spec)
                    .and_then(|()| env.wait_for_stop(&spec, timeout))
                    .and_then(|stopped| {
                        if stopped {
                            env.start(&spec)
                        } else {
                            log::warn!("{}: restart: did not stop within {timeout:?}; not started again", spec.uuid);
                            Ok(())
                        }
                    });
                if let Err(e) = result {
                    log::error!("{}: restart failed: {e}", spec.uuid);
                }
            });
            Ok(())
        }
    }
    .map_err(|e| ApiError::new(500, format!("power action failed: {e}")))?;
    log::info!("{}: power {action:?}", server.uuid);
    Ok(Response::new(202))
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
