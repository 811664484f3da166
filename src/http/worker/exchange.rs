//! One request on a pooled worker: runs the handler (catching its panic),
//! settles the request body, decides whether the connection may stay open,
//! and chooses how the reply goes out: held in memory (`write`), streamed
//! (`stream`) or as an upgrade (`upgrade`).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use log::{debug, error};

use super::access::Access;
use super::stream::{pump, Streaming};
use super::upgrade::{hand_off, write_upgrade};
use super::write::{log_dropped, write_response};
use super::{panic_message, Next, WorkerCtx};
use crate::http::body::BodyReader;
use crate::http::conn::Conn;
use crate::http::head::Head;
use crate::http::response::{asks_close, encode_head, error_body, status_has_no_body, RespFraming};
use crate::http::{new_request_id, Body, ConnectionHandle, Request, Response};

/// `started`: when the head was complete (for the access log).
pub(super) fn handle_one(ctx: &WorkerCtx, conn: Conn, head: Head, started: Instant) -> Next {
    let request_id = new_request_id();
    let remote = conn.remote;
    let method = head.method.clone();
    let path = head.path.clone();
    let is_head = method == "HEAD";
    let minor = head.minor_version;
    let keep_alive = head.keep_alive;
    let handle = ConnectionHandle {
        sock: Arc::downgrade(conn.transport.sock()),
    };
    let body = BodyReader::new(conn, head.framing, head.expect_continue);
    let mut req = Request::from_conn(head, remote, request_id.clone(), body, handle);

    let result = catch_unwind(AssertUnwindSafe(|| ctx.handler.handle(&mut req)));
    let Some(mut body) = req.take_body_reader() else {
        error!("http: request {request_id}: the handler replaced the request body; closing");
        return Next::Done;
    };
    drop(req);
    let (response, panicked) = match result {
        Ok(r) => (r, false),
        Err(p) => {
            error!(
                "http: handler panicked on {method} {path} (request {request_id}): {}",
                panic_message(&*p)
            );
            let r = Response::new(500)
                .header("Content-Type", "application/json")
                .bytes(error_body("internal server error", &request_id));
            (r, true)
        }
    };
    body.finish_from_buffer();
    let complete = body.is_complete();
    let conn = body.into_conn();
    // An unread body is never drained (it may be endless): close instead.
    let mut close = !keep_alive || !complete || panicked || ctx.shared.is_stopping();
    let Response {
        status,
        headers,
        body,
    } = response;
    close |= asks_close(&headers);

    let access = Access {
        method,
        path,
        status,
        started,
        bytes: 0,
        request_id,
        remote,
    };
    if let Body::Upgrade(f) = body {
        let result = write_upgrade(&conn, status, &headers);
        access.log();
        let request_id = access.request_id;
        if let Err(e) = result {
            debug!("http: request {request_id}: writing the upgrade response failed: {e}");
            return Next::Done;
        }
        hand_off(conn, f, &request_id);
        return Next::Done;
    }

    let body = match body {
        Body::Stream(reader) if !is_head && !status_has_no_body(status) => {
            // No chunked coding for HTTP/1.0: the close ends the body.
            let chunked = minor != 0;
            close |= !chunked;
            let framing = if chunked {
                RespFraming::Chunked
            } else {
                RespFraming::UntilClose
            };
            let (out, dropped) = encode_head(status, &headers, framing, close, false);
            log_dropped(&dropped);
            let stream = Streaming::new(reader, chunked, close, access);
            return pump(conn, out, Box::new(stream));
        }
        other => other,
    };
    let mut bytes_out = 0u64;
    let result = write_response(
        &conn,
        status,
        &headers,
        body,
        is_head,
        minor,
        close,
        &mut bytes_out,
    );
    let access = Access {
        bytes: bytes_out,
        ..access
    };
    access.log();
    match result {
        Ok(Some(rest)) => Next::Park(conn, rest, close, None),
        Ok(None) if close => Next::Close(conn),
        Ok(None) => Next::KeepAlive(conn),
        Err(e) => {
            debug!(
                "http: request {}: sending the response failed: {e}",
                access.request_id
            );
            Next::Done
        }
    }
}
