//! `GET /api/servers/:server/ws`: the server event stream (SPEC §6).
//!
//! Not built yet: answers 501 until the websocket lands (issue 6).

use std::sync::Arc;

use crate::http::reply::ApiError;
use crate::http::router::Params;
use crate::http::{Request, Response};
use crate::node::Node;

pub fn upgrade(_node: &Arc<Node>, _request: &mut Request, _params: &Params) -> Result<Response, ApiError> {
    Err(ApiError::new(501, "The websocket is not available on this node yet."))
}
