//! HTTP routes, one file per resource, and the dispatch that runs
//! authentication, the handler, the error envelope and request metrics.

pub mod metrics;
pub mod servers;
pub mod system;
pub mod transfer_in;
pub mod transfer_out;
pub mod transfer_session;
pub mod transfers;
pub mod ws;
pub mod ws_pending;

use std::io::Read;
use std::sync::Arc;

use crate::http::auth::check_node_token;
use crate::http::reply::{ApiError, FieldError};
use crate::http::router::{Match, Params, Router};
use crate::http::{Handler, Request, Response};
use crate::node::Node;
use crate::server::Server;

pub type HandlerFn = fn(&Arc<Node>, &mut Request, &Params) -> Result<Response, ApiError>;

/// How a route authenticates.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer <node token>`.
    NodeToken,
    /// The handler verifies its own credential (transfer JWT, websocket).
    Handler,
    /// The node token, or the read-only `metrics.token` when one is set.
    MetricsToken,
}

pub struct Endpoint {
    pub name: &'static str,
    pub auth: Auth,
    pub run: HandlerFn,
}

/// Every route of the node API (SPEC §2.2).
pub fn routes() -> Router<Endpoint> {
    let mut r = Router::default();
    let mut add = |method, pattern, name, auth, run: HandlerFn| {
        r.add(method, pattern, Endpoint { name, auth, run });
    };
    use Auth::*;
    add("GET", "/api/system", "system", NodeToken, system::get);
    add("GET", "/api/servers", "servers", NodeToken, servers::list);
    add(
        "GET",
        "/api/servers/:server",
        "server",
        NodeToken,
        servers::get,
    );
    add(
        "DELETE",
        "/api/servers/:server",
        "server_delete",
        NodeToken,
        servers::delete,
    );
    add(
        "POST",
        "/api/servers/:server/power",
        "power",
        NodeToken,
        servers::power,
    );
    add(
        "POST",
        "/api/servers/:server/transfer",
        "transfer_start",
        NodeToken,
        transfer_out::start,
    );
    add(
        "DELETE",
        "/api/servers/:server/transfer",
        "transfer_cancel",
        NodeToken,
        transfer_out::cancel,
    );
    add(
        "GET",
        "/api/servers/:server/transfer",
        "transfer_get",
        NodeToken,
        transfer_out::get,
    );
    add(
        "GET",
        "/api/servers/:server/ws",
        "websocket",
        Handler,
        ws::upgrade,
    );
    add(
        "POST",
        "/api/transfers/cancel",
        "transfers_cancel",
        NodeToken,
        transfers::bulk_cancel,
    );
    add(
        "POST",
        "/api/transfers",
        "transfer_receive",
        Handler,
        transfer_in::receive,
    );
    // The segmented transport (SPEC §10); each checks its own credential
    // (the panel JWT to probe and open, the session secret after).
    add(
        "GET",
        "/api/transfers/sessions",
        "transfer_sessions",
        NodeToken,
        transfer_session::list,
    );
    add(
        "GET",
        "/api/transfers/session",
        "transfer_session_probe",
        Handler,
        transfer_session::probe,
    );
    add(
        "POST",
        "/api/transfers/session",
        "transfer_session_open",
        Handler,
        transfer_session::open,
    );
    add(
        "DELETE",
        "/api/transfers/session",
        "transfer_session_cancel_opening",
        Handler,
        transfer_session::cancel_opening,
    );
    add(
        "GET",
        "/api/transfers/session/:sid",
        "transfer_session",
        Handler,
        transfer_session::status,
    );
    add(
        "DELETE",
        "/api/transfers/session/:sid",
        "transfer_session_cancel",
        Handler,
        transfer_session::cancel,
    );
    add(
        "GET",
        "/api/transfers/session/:sid/acks",
        "transfer_session_acks",
        Handler,
        transfer_session::acks,
    );
    add(
        "PUT",
        "/api/transfers/session/:sid/segment",
        "transfer_session_segment",
        Handler,
        transfer_session::segment,
    );
    add(
        "POST",
        "/api/transfers/session/:sid/finish",
        "transfer_session_finish",
        Handler,
        transfer_session::finish,
    );
    add(
        "DELETE",
        "/api/transfers/:server",
        "transfer_in_cancel",
        NodeToken,
        transfer_in::cancel,
    );
    add(
        "GET",
        "/api/transfers",
        "transfers",
        NodeToken,
        transfers::list,
    );
    add("GET", "/metrics", "metrics", MetricsToken, metrics::get);
    r
}

/// The node's request handler.
pub struct Api {
    node: Arc<Node>,
    routes: Router<Endpoint>,
}

impl Api {
    pub fn new(node: Arc<Node>) -> Self {
        Api {
            node,
            routes: routes(),
        }
    }
}

impl Handler for Api {
    fn handle(&self, request: &mut Request) -> Response {
        let mut found = self.routes.find(&request.method, &request.path);
        // RFC 9110 §9.3.2: HEAD is GET without the body (the worker drops
        // the body and keeps the headers).
        if request.method == "HEAD" && matches!(found, Match::MethodNotAllowed(_)) {
            if let Match::Found(route, params) = self.routes.find("GET", &request.path) {
                found = Match::Found(route, params);
            }
        }
        let (name, result) = match found {
            Match::Found(_, params) if !server_id_ok(&params) => {
                ("unknown", Err(ApiError::not_found()))
            }
            Match::Found(route, params) => {
                let endpoint = &route.handler;
                let result = match endpoint.auth {
                    Auth::NodeToken => {
                        check_node_token(request.header("authorization"), &self.node.config.token)
                            .and_then(|()| (endpoint.run)(&self.node, request, &params))
                    }
                    Auth::Handler => (endpoint.run)(&self.node, request, &params),
                    Auth::MetricsToken => {
                        let header = request.header("authorization");
                        let metrics = &self.node.config.metrics_token;
                        let node_ok = check_node_token(header, &self.node.config.token);
                        let allowed = if node_ok.is_ok() || metrics.is_empty() {
                            node_ok
                        } else {
                            check_node_token(header, metrics)
                        };
                        allowed.and_then(|()| (endpoint.run)(&self.node, request, &params))
                    }
                };
                (endpoint.name, result)
            }
            Match::MethodNotAllowed(allowed) => (
                "unknown",
                Err(ApiError::new(
                    405,
                    "The requested method is not allowed for this resource.",
                )
                .with_header("Allow", &allowed.join(", "))),
            ),
            Match::NotFound => ("unknown", Err(ApiError::not_found())),
        };
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                if error.status >= 500 {
                    log::error!(
                        "{} {} failed ({}): {error}",
                        request.method,
                        request.path,
                        request.request_id,
                    );
                }
                error.into_response(&request.request_id)
            }
        };
        self.node.count_request(name, response.status);
        response
    }
}

/// A `:server` path parameter must be a UUID (SPEC §2): anything else is
/// 404 before a handler can use it as a name or a path.
pub fn server_id_ok(params: &Params) -> bool {
    params.find("server").is_none_or(crate::server::is_uuid)
}

/// The registered server named by `:server`, or the 404 envelope.
pub fn server_param(node: &Node, params: &Params) -> Result<Arc<Server>, ApiError> {
    node.registry
        .get(params.get("server"))
        .ok_or_else(ApiError::not_found)
}

/// Reads a small JSON body (bounded); an empty body reads as `null`.
pub fn read_json(request: &mut Request, max: usize) -> Result<serde_json::Value, ApiError> {
    let mut body = Vec::new();
    request
        .body()
        .take(max as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| ApiError::new(400, format!("the request body could not be read: {e}")))?;
    if body.len() > max {
        return Err(ApiError::new(
            413,
            format!("The request body is larger than {max} bytes."),
        ));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_slice(&body).map_err(|e| {
        ApiError::validation(vec![FieldError::new(
            "body",
            &format!("is not valid JSON: {e}"),
        )])
    })
}

/// An optional `{"reason": "…"}` body.
pub fn read_reason(request: &mut Request) -> Result<Option<String>, ApiError> {
    let body = read_json(request, 16 * 1024)?;
    match body.get("reason") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::validation(vec![FieldError::new(
            "reason",
            "must be a string",
        )])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route with a `:server` parameter checks it is a server uuid
    /// (SPEC §2) before any handler can use it as a name or a path.
    #[test]
    fn server_ids_on_every_route_must_be_uuids() {
        let table = routes();
        let good = "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
        let bad = [
            "..",
            "%2e%2e",
            "x",
            "7A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D",
            "7a1b2c3d4e5f4a6b8c7d9e0f1a2b3c4d",
        ];
        let mut checked = 0;
        for route in routes().routes() {
            if !route.pattern.contains(":server") {
                continue;
            }
            let path = |id: &str| route.pattern.replace(":server", id);
            let ok = |id: &str| match table.find(route.method, &path(id)) {
                Match::Found(_, params) => server_id_ok(&params),
                _ => panic!("{} {}: no route", route.method, path(id)),
            };
            assert!(ok(good), "{} {}", route.method, route.pattern);
            for id in bad {
                assert!(
                    !ok(id),
                    "{} {} let {id:?} through",
                    route.method,
                    route.pattern
                );
            }
            checked += 1;
        }
        assert!(checked >= 7, "only {checked} routes with :server");
        // Routes without the parameter are not affected.
        match table.find("GET", "/api/system") {
            Match::Found(_, params) => assert!(server_id_ok(&params)),
            _ => panic!("no /api/system route"),
        }
    }
}
