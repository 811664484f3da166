//! Transfer collection routes: list all records and bulk cancel (SPEC §5).

use std::sync::Arc;

use serde_json::json;

use super::read_json;
use crate::http::reply::{self, ApiError, FieldError};
use crate::http::router::Params;
use crate::http::{Request, Response};
use crate::node::Node;
use crate::transfer::{CancelFilter, Direction};

pub fn list(
    node: &Arc<Node>,
    _request: &mut Request,
    _params: &Params,
) -> Result<Response, ApiError> {
    Ok(reply::json(200, &node.transfers.records()))
}

/// Validates the bulk-cancel body into a filter and a reason.
pub fn parse_bulk(body: &serde_json::Value) -> Result<(CancelFilter, String), ApiError> {
    let mut errors = Vec::new();
    let reason = match body.get("reason").and_then(|r| r.as_str()).map(str::trim) {
        Some(r) if !r.is_empty() => r.to_string(),
        _ => {
            errors.push(FieldError::new("reason", "is required"));
            String::new()
        }
    };
    let direction = match body.get("direction") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => match v.as_str() {
            Some("outgoing") => Some(Direction::Outgoing),
            Some("incoming") => Some(Direction::Incoming),
            _ => {
                errors.push(FieldError::new("direction", "must be outgoing or incoming"));
                None
            }
        },
    };
    let destination = match body.get("destination") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(_) => {
            errors.push(FieldError::new(
                "destination",
                "must be a non-empty URL prefix",
            ));
            None
        }
    };
    let servers = match body.get("servers") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Array(items)) => {
            let list: Option<Vec<String>> = items
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect();
            if list.is_none() {
                errors.push(FieldError::new(
                    "servers",
                    "must be an array of server uuids",
                ));
            }
            list
        }
        Some(_) => {
            errors.push(FieldError::new(
                "servers",
                "must be an array of server uuids",
            ));
            None
        }
    };
    let everything = match body.get("everything") {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(_) => {
            errors.push(FieldError::new("everything", "must be true or false"));
            false
        }
    };
    if errors.is_empty()
        && direction.is_none()
        && destination.is_none()
        && servers.is_none()
        && !everything
    {
        errors.push(FieldError::new(
            "everything",
            "must be true to cancel every transfer when no selector is given",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    Ok((
        CancelFilter {
            direction,
            destination,
            servers,
        },
        reason,
    ))
}

pub fn bulk_cancel(
    node: &Arc<Node>,
    request: &mut Request,
    _params: &Params,
) -> Result<Response, ApiError> {
    let (filter, reason) = parse_bulk(&read_json(request, 256 * 1024)?)?;
    let cancelled = node.transfers.cancel_matching(&filter, &reason);
    for id in &cancelled {
        if let Some(t) = node.transfers.by_id(id) {
            node.transfer_log(&t, &format!("Cancel requested: {reason}"));
        }
    }
    log::info!("bulk cancel ({reason}): {} transfer(s)", cancelled.len());
    Ok(reply::json(202, &json!({ "cancelled": cancelled })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_body_rules() {
        let e = parse_bulk(&json!({"everything": true})).unwrap_err();
        assert_eq!(e.validation_errors[0].field, "reason");
        let e = parse_bulk(&json!({"reason": "x"})).unwrap_err();
        assert_eq!(e.validation_errors[0].field, "everything");
        let (f, r) =
            parse_bulk(&json!({"reason": "node maintenance", "everything": true})).unwrap();
        assert_eq!(r, "node maintenance");
        assert!(f.direction.is_none() && f.servers.is_none());
        let (f, _) =
            parse_bulk(&json!({"reason": "r", "direction": "incoming", "servers": ["a"]})).unwrap();
        assert_eq!(f.direction, Some(Direction::Incoming));
        assert_eq!(f.servers, Some(vec!["a".to_string()]));
        assert_eq!(
            parse_bulk(&json!({"reason": "r", "direction": "sideways"}))
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            parse_bulk(&json!({"reason": "r", "servers": [1]}))
                .unwrap_err()
                .status,
            400
        );
    }
}
