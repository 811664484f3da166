//! Incoming transfer routes: receive (SPEC §4) and cancel (SPEC §5).

use std::sync::Arc;

use super::read_reason;
use super::transfer_out::cancel_active;
use crate::http::reply::ApiError;
use crate::http::router::Params;
use crate::http::{Request, Response};
use crate::node::Node;
use crate::transfer::{destination, Direction};

pub fn receive(
    node: &Arc<Node>,
    request: &mut Request,
    _params: &Params,
) -> Result<Response, ApiError> {
    destination::receive(node, request)
}

pub fn cancel(
    node: &Arc<Node>,
    request: &mut Request,
    params: &Params,
) -> Result<Response, ApiError> {
    let reason = read_reason(request)?;
    cancel_active(node, params.get("server"), Direction::Incoming, reason)
}
