//! Request-head parsing, sans-I/O: bytes in, a validated [`Head`] out.
//!
//! Owns everything decided from the head alone: the request target split,
//! body framing (Content-Length / chunked, and the smuggling-relevant
//! refusals), keep-alive per HTTP version and `Connection`, and
//! `Expect: 100-continue`. The connection code only moves bytes.

/// Limits applied while parsing a head.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
}

/// How the request body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Exactly this many bytes (0 when the request declares no body).
    Length(u64),
    Chunked,
}

/// A complete, validated request head.
#[derive(Debug)]
pub(crate) struct Head {
    pub method: String,
    pub path: String,
    pub query: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Lower-cased names, in arrival order.
    pub headers: Vec<(String, String)>,
    pub framing: Framing,
    /// The declared Content-Length, when there was one.
    pub content_length: Option<u64>,
    /// Whether the client allows the connection to stay open afterwards.
    pub keep_alive: bool,
    pub expect_continue: bool,
}

/// Why a head was refused, with the status to answer before closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeadError {
    pub status: u16,
    pub message: &'static str,
}

const TOO_LARGE: HeadError = HeadError {
    status: 431,
    message: "request header fields too large",
};

/// The message; the status is the reply's.
impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message)
    }
}

fn bad(message: &'static str) -> HeadError {
    HeadError {
        status: 400,
        message,
    }
}

#[derive(Debug)]
pub(crate) enum Parsed {
    /// More bytes are needed.
    Partial,
    /// The head and how many bytes of the buffer it used.
    Complete(Head, usize),
}

/// Number of empty lines (CRLF or LF) at the start of `buf`. RFC 9112 lets a
/// server ignore them before a request line; some clients send a stray CRLF
/// after a body.
pub(crate) fn leading_empty_lines(buf: &[u8]) -> usize {
    let mut i = 0;
    loop {
        match buf.get(i..) {
            Some([b'\r', b'\n', ..]) => i += 2,
            Some([b'\n', ..]) => i += 1,
            _ => return i,
        }
    }
}

/// Whether an empty line (end of head) may appear in `buf`, looking only at
/// bytes from `from` on (minus the overlap a terminator can straddle). Lets
/// a reader avoid re-parsing a growing partial head on every byte.
pub(crate) fn may_be_complete(buf: &[u8], from: usize) -> bool {
    let start = from.saturating_sub(2);
    let region = &buf[start.min(buf.len())..];
    memchr::memchr_iter(b'\n', region).any(|i| {
        matches!(region.get(i + 1), Some(b'\n')) || region.get(i + 1..i + 3) == Some(b"\r\n")
    })
}

/// What a head reader should do after new bytes arrived.
#[derive(Debug)]
pub(crate) enum Scan {
    /// No complete head yet: read more (or refuse with 431 when full).
    NeedMore,
    /// A head and how many bytes it used, after dropping the skipped blank
    /// lines.
    Complete(Head, usize),
    Reject(HeadError),
}

/// The head reader's decision over the bytes it holds: how many leading
/// blank lines to drop first (the caller consumes them), then whether a
/// head is complete. `scanned` is how many of the (post-skip) bytes were
/// already searched for an end of head, so a slowly growing head is not
/// re-parsed on every byte; it is updated for the next call.
///
/// The first bytes of a head are always parsed, even without an end of
/// head in sight: a request line that is already invalid (binary junk, a
/// TLS handshake sent to a plain listener) is refused at once instead of
/// holding the connection until the header timeout. After that, parsing
/// waits for a possible end of head; an error later in a partial head is
/// found then, or when the buffer is full.
pub(crate) fn scan_buffered(pending: &[u8], scanned: &mut usize, limits: &Limits) -> (usize, Scan) {
    let skip = leading_empty_lines(pending);
    if skip > 0 {
        *scanned = 0;
    }
    let pending = &pending[skip..];
    if *scanned < pending.len() && (*scanned == 0 || may_be_complete(pending, *scanned)) {
        match parse_head(pending, limits) {
            Ok(Parsed::Complete(head, n)) => return (skip, Scan::Complete(head, n)),
            Ok(Parsed::Partial) => {}
            Err(e) => return (skip, Scan::Reject(e)),
        }
    }
    *scanned = pending.len();
    (skip, Scan::NeedMore)
}

/// The verdict once the buffer holds `max_header_bytes` without a head
/// having been found: a head that just fits, or 431.
pub(crate) fn scan_full(pending: &[u8], limits: &Limits) -> Result<(Head, usize), HeadError> {
    match parse_head(pending, limits)? {
        Parsed::Complete(head, n) => Ok((head, n)),
        Parsed::Partial => Err(TOO_LARGE),
    }
}

/// Parses a request head at the start of `buf` (leading empty lines must have
/// been skipped by the caller).
pub(crate) fn parse_head(buf: &[u8], limits: &Limits) -> Result<Parsed, HeadError> {
    let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers.max(1)];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= limits.max_header_bytes {
                Err(TOO_LARGE)
            } else {
                Ok(Parsed::Partial)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(TOO_LARGE),
        Err(e) => return Err(bad(httparse_message(e))),
    };
    if len > limits.max_header_bytes {
        return Err(TOO_LARGE);
    }
    let method = req.method.unwrap_or_default().to_string();
    let target = req.path.unwrap_or_default();
    let minor_version = req.version.unwrap_or(1);
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).trim().to_string(),
            )
        })
        .collect();
    let (path, query) = split_target(target)?;
    let (framing, content_length) = framing(&headers)?;

    let mut close = false;
    let mut keep_alive_token = false;
    for token in values(&headers, "connection").flat_map(|v| v.split(',')) {
        let token = token.trim();
        if token.eq_ignore_ascii_case("close") {
            close = true;
        } else if token.eq_ignore_ascii_case("keep-alive") {
            keep_alive_token = true;
        }
    }
    let mut keep_alive = !close && (minor_version >= 1 || keep_alive_token);
    // RFC 9112 §6.1: Transfer-Encoding in a 1.0 message means faulty framing;
    // serve it, then close.
    if minor_version == 0 && framing == Framing::Chunked {
        keep_alive = false;
    }
    let expect_continue = minor_version >= 1
        && values(&headers, "expect").any(|v| v.eq_ignore_ascii_case("100-continue"));

    Ok(Parsed::Complete(
        Head {
            method,
            path,
            query,
            minor_version,
            headers,
            framing,
            content_length,
            keep_alive,
            expect_continue,
        },
        len,
    ))
}

fn values<'a>(headers: &'a [(String, String)], name: &'a str) -> impl Iterator<Item = &'a str> {
    headers
        .iter()
        .filter(move |(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Body framing per RFC 9112 §6, refusing every ambiguous combination (the
/// request-smuggling cases) instead of guessing.
fn framing(headers: &[(String, String)]) -> Result<(Framing, Option<u64>), HeadError> {
    let has_te = headers.iter().any(|(k, _)| k == "transfer-encoding");
    let lengths: Vec<&str> = values(headers, "content-length")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if has_te && !lengths.is_empty() {
        return Err(bad("both Content-Length and Transfer-Encoding"));
    }
    if has_te {
        let codings: Vec<&str> = values(headers, "transfer-encoding")
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        return match codings.as_slice() {
            [only] if only.eq_ignore_ascii_case("chunked") => Ok((Framing::Chunked, None)),
            _ => Err(bad(
                "unsupported Transfer-Encoding (only chunked is accepted)",
            )),
        };
    }
    match lengths.as_slice() {
        [] => Ok((Framing::Length(0), None)),
        [one] => {
            let n = parse_length(one).ok_or(bad("invalid Content-Length"))?;
            Ok((Framing::Length(n), Some(n)))
        }
        _ => Err(bad("duplicate Content-Length")),
    }
}

/// `1*DIGIT` that fits in a u64; no signs, spaces or hex.
fn parse_length(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.bytes().try_fold(0u64, |acc, b| {
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// Splits a request target into path and query. Accepts origin-form, `*`,
/// and absolute-form (proxies may send it); refuses anything else.
fn split_target(target: &str) -> Result<(String, String), HeadError> {
    let rest = if target.starts_with('/') || target == "*" {
        target
    } else {
        let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
        let after = if lower.starts_with("http://") {
            &target[7..]
        } else if lower.starts_with("https://") {
            &target[8..]
        } else {
            return Err(bad("invalid request target"));
        };
        match after.find(['/', '?']) {
            Some(i) if after.as_bytes()[i] == b'/' => &after[i..],
            Some(i) => return Ok(("/".to_string(), after[i + 1..].to_string())),
            None => "/",
        }
    };
    Ok(match rest.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (rest.to_string(), String::new()),
    })
}

fn httparse_message(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending in request head",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token in request line",
        httparse::Error::Version => "invalid HTTP version",
        httparse::Error::TooManyHeaders => "too many headers",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_header_bytes: 1024,
        max_headers: 8,
    };

    fn complete(raw: &str) -> (Head, usize) {
        match parse_head(raw.as_bytes(), &LIMITS) {
            Ok(Parsed::Complete(h, n)) => (h, n),
            other => panic!("expected a complete head, got {other:?}"),
        }
    }

    fn error(raw: &str) -> HeadError {
        match parse_head(raw.as_bytes(), &LIMITS) {
            Err(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn simple_get_with_query_and_pipelined_rest() {
        let raw = "GET /api/servers?page=2 HTTP/1.1\r\nHost: x\r\nX-A: b \r\n\r\nGET /next";
        let (h, n) = complete(raw);
        assert_eq!(h.method, "GET");
        assert_eq!(h.path, "/api/servers");
        assert_eq!(h.query, "page=2");
        assert_eq!(h.minor_version, 1);
        assert_eq!(&raw[n..], "GET /next");
        assert_eq!(
            h.headers,
            vec![
                ("host".to_string(), "x".to_string()),
                ("x-a".to_string(), "b".to_string())
            ]
        );
        assert_eq!(h.framing, Framing::Length(0));
        assert!(h.keep_alive);
        assert!(!h.expect_continue);
    }

    #[test]
    fn partial_until_blank_line_and_431_when_full() {
        assert!(matches!(
            parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n", &LIMITS),
            Ok(Parsed::Partial)
        ));
        let long = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(2000));
        assert_eq!(error(&long).status, 431);
    }

    #[test]
    fn too_many_headers_is_431() {
        let mut raw = String::from("GET / HTTP/1.1\r\n");
        for i in 0..9 {
            raw.push_str(&format!("H{i}: v\r\n"));
        }
        raw.push_str("\r\n");
        assert_eq!(error(&raw).status, 431);
    }

    #[test]
    fn keep_alive_per_version() {
        assert!(
            !complete("GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
                .0
                .keep_alive
        );
        assert!(!complete("GET / HTTP/1.0\r\n\r\n").0.keep_alive);
        assert!(
            complete("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
                .0
                .keep_alive
        );
        assert!(
            !complete("GET / HTTP/1.1\r\nConnection: upgrade, close\r\n\r\n")
                .0
                .keep_alive
        );
    }

    #[test]
    fn content_length_and_chunked() {
        let (h, _) = complete("POST / HTTP/1.1\r\nContent-Length: 42\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(42));
        assert_eq!(h.content_length, Some(42));
        let (h, _) = complete("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked);
        assert_eq!(h.content_length, None);
        let (h, _) = complete("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked);
        assert!(!h.keep_alive);
        let (h, _) = complete("PUT / HTTP/1.1\r\nContent-Length: 99999999999999\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(99_999_999_999_999));
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        for raw in [
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n",
        ] {
            assert_eq!(error(raw).status, 400, "{raw:?}");
        }
    }

    #[test]
    fn malformed_heads_are_400() {
        for raw in [
            "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "GET\r\n\r\n",
            "GET relative HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(error(raw).status, 400, "{raw:?}");
        }
    }

    #[test]
    fn expect_continue_only_on_1_1() {
        assert!(
            complete("PUT / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n")
                .0
                .expect_continue
        );
        assert!(
            !complete("PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
                .0
                .expect_continue
        );
    }

    #[test]
    fn absolute_form_target() {
        let (h, _) = complete("GET http://host:8080/a/b?c=d HTTP/1.1\r\n\r\n");
        assert_eq!((h.path.as_str(), h.query.as_str()), ("/a/b", "c=d"));
        let (h, _) = complete("GET https://host?q HTTP/1.1\r\n\r\n");
        assert_eq!((h.path.as_str(), h.query.as_str()), ("/", "q"));
    }

    #[test]
    fn buffered_scan_refuses_junk_at_once_and_then_waits_for_an_end() {
        // A TLS ClientHello on a plain listener: refused on the first read.
        let mut scanned = 0;
        let (_, scan) = scan_buffered(b"\x16\x03\x01\x02\x00\x01", &mut scanned, &LIMITS);
        assert!(matches!(scan, Scan::Reject(HeadError { status: 400, .. })));
        // A valid start waits; bytes arriving later are searched only for
        // an end of head, and the head completes once it is there.
        let mut scanned = 0;
        let (skip, scan) = scan_buffered(b"\r\nGET / HTTP/1.1\r\nA:", &mut scanned, &LIMITS);
        assert_eq!(skip, 2);
        assert!(matches!(scan, Scan::NeedMore));
        assert_eq!(scanned, 18, "counted after the skipped blank line");
        let (_, scan) = scan_buffered(b"GET / HTTP/1.1\r\nA: b\r\n", &mut scanned, &LIMITS);
        assert!(matches!(scan, Scan::NeedMore));
        let whole = b"GET / HTTP/1.1\r\nA: b\r\n\r\n";
        let (_, scan) = scan_buffered(whole, &mut scanned, &LIMITS);
        assert!(matches!(scan, Scan::Complete(_, n) if n == whole.len()));
        // Full without an end of head: 431; a head ending exactly there fits.
        let full = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(1024 - 19));
        assert_eq!(scan_full(full.as_bytes(), &LIMITS).unwrap_err().status, 431);
        let exact = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(1024 - 23));
        assert_eq!(scan_full(exact.as_bytes(), &LIMITS).unwrap().1, 1024);
    }

    #[test]
    fn blank_line_scan() {
        assert_eq!(leading_empty_lines(b"\r\n\nGET"), 3);
        assert_eq!(leading_empty_lines(b"GET"), 0);
        let head = b"GET / HTTP/1.1\r\nA: b\r\n\r\n";
        assert!(may_be_complete(head, 0));
        assert!(may_be_complete(head, head.len() - 1));
        assert!(!may_be_complete(b"GET / HTTP/1.1\r\nA: b\r\n", 0));
        assert!(may_be_complete(b"GET / HTTP/1.0\n\n", 15));
    }
}
