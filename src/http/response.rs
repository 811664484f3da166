//! Response heads, sans-I/O: status line, the handler's headers (minus the
//! framing headers, which only the server decides), `Server`, framing and
//! `Connection`. Also the small JSON error body the core itself sends.

use std::fmt::Write as _;

/// How the response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RespFraming {
    Length(u64),
    Chunked,
    /// HTTP/1.0 client and a streamed body: the end is the close.
    UntilClose,
    /// No body and no length headers (1xx, 204, 304).
    NoBody,
}

/// Statuses that never carry a body (RFC 9110 §6.4.1).
pub(crate) fn status_has_no_body(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        507 => "Insufficient Storage",
        _ => "",
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn is_field_value(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// Encodes a response head. `keep_alive_10` adds `Connection: keep-alive`
/// for an HTTP/1.0 client that asked for it. The handler's `Connection`
/// header is replaced by ours (except on 101). Handler headers that would
/// corrupt framing (`Content-Length`, `Transfer-Encoding`) or that are not
/// valid (bad name, CR/LF in the value) are dropped and returned by name so
/// the caller can log them.
pub(crate) fn encode_head(
    status: u16,
    headers: &[(String, String)],
    framing: RespFraming,
    close: bool,
    keep_alive_10: bool,
) -> (Vec<u8>, Vec<String>) {
    let mut out = String::with_capacity(256);
    let _ = write!(out, "HTTP/1.1 {status} {}\r\n", reason(status));
    let mut dropped = Vec::new();
    let mut has_server = false;
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if lower == "connection" && status != 101 {
            // Replaced by ours; the caller honours a `close` in it.
            continue;
        }
        let framing_header = matches!(lower.as_str(), "content-length" | "transfer-encoding");
        if framing_header || !is_token(name) || !is_field_value(value) {
            dropped.push(name.clone());
            continue;
        }
        has_server |= lower == "server";
        let _ = write!(out, "{name}: {value}\r\n");
    }
    if !has_server {
        out.push_str("Server: ferry\r\n");
    }
    match framing {
        RespFraming::Length(n) => {
            let _ = write!(out, "Content-Length: {n}\r\n");
        }
        RespFraming::Chunked => out.push_str("Transfer-Encoding: chunked\r\n"),
        RespFraming::UntilClose | RespFraming::NoBody => {}
    }
    if status != 101 {
        if close {
            out.push_str("Connection: close\r\n");
        } else if keep_alive_10 {
            out.push_str("Connection: keep-alive\r\n");
        }
    }
    out.push_str("\r\n");
    (out.into_bytes(), dropped)
}

/// `{"error":"…","request_id":"…"}` for errors raised by the core itself.
pub(crate) fn error_body(message: &str, request_id: &str) -> Vec<u8> {
    serde_json::json!({ "error": message, "request_id": request_id })
        .to_string()
        .into_bytes()
}

/// A complete error response, closing the connection.
pub(crate) fn error_response(status: u16, message: &str, request_id: &str) -> Vec<u8> {
    let body = error_body(message, request_id);
    let headers = [("Content-Type".to_string(), "application/json".to_string())];
    let (mut out, _) = encode_head(
        status,
        &headers,
        RespFraming::Length(body.len() as u64),
        true,
        false,
    );
    out.extend_from_slice(&body);
    out
}

/// Whether a handler's headers ask to close the connection.
pub(crate) fn asks_close(headers: &[(String, String)]) -> bool {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("close"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: Vec<u8>) -> String {
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn head_with_length_and_keep_alive() {
        let headers = vec![("Content-Type".into(), "text/plain".into())];
        let (head, dropped) = encode_head(200, &headers, RespFraming::Length(5), false, false);
        assert_eq!(
            text(head),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nServer: ferry\r\nContent-Length: 5\r\n\r\n"
        );
        assert!(dropped.is_empty());
    }

    #[test]
    fn framing_headers_and_injection_are_dropped() {
        let headers = vec![
            ("Content-Length".into(), "999".into()),
            ("transfer-encoding".into(), "chunked".into()),
            ("Connection".into(), "keep-alive".into()),
            ("X-Evil".into(), "a\r\nSet-Cookie: x".into()),
            ("Bad Name".into(), "v".into()),
            ("Server".into(), "custom".into()),
        ];
        let (head, dropped) = encode_head(404, &headers, RespFraming::Chunked, true, false);
        assert_eq!(
            text(head),
            "HTTP/1.1 404 Not Found\r\nServer: custom\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(
            dropped,
            vec!["Content-Length", "transfer-encoding", "X-Evil", "Bad Name"]
        );
    }

    #[test]
    fn upgrade_keeps_connection_header() {
        let headers = vec![
            ("Connection".into(), "Upgrade".into()),
            ("Upgrade".into(), "websocket".into()),
        ];
        let (head, _) = encode_head(101, &headers, RespFraming::NoBody, false, false);
        assert_eq!(
            text(head),
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nServer: ferry\r\n\r\n"
        );
    }

    #[test]
    fn http10_keep_alive_and_unknown_status() {
        let (head, _) = encode_head(599, &[], RespFraming::Length(0), false, true);
        assert_eq!(
            text(head),
            "HTTP/1.1 599 \r\nServer: ferry\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"
        );
    }

    #[test]
    fn handler_close_request() {
        let h = |v: &str| vec![("Connection".to_string(), v.to_string())];
        assert!(asks_close(&h("keep-alive, Close")));
        assert!(!asks_close(&h("keep-alive")));
        assert!(!asks_close(&[]));
    }

    #[test]
    fn error_response_is_json_and_closes() {
        let raw = text(error_response(400, "bad \"thing\"", "abc123"));
        assert!(raw.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(raw.contains("Connection: close\r\n"));
        let body = raw.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "bad \"thing\"");
        assert_eq!(v["request_id"], "abc123");
        assert!(raw.contains(&format!("Content-Length: {}\r\n", body.len())));
        assert!(status_has_no_body(204) && status_has_no_body(101) && !status_has_no_body(200));
    }
}
