//! Streaming `multipart/form-data`: a writer for the source's transfer body
//! and a bounded, truncation-detecting reader for the destination.
//!
//! Neither side buffers a part whole. The reader is split in two, like
//! `ureq-proto`: [`Parser`] is a sans-I/O state machine over byte slices
//! (it never reads, it only says how many bytes it consumed and what it
//! saw), and [`MultipartReader`] is the thin `Read` wrapper that feeds it
//! from a fixed 64 KiB window.
//!
//! Framing follows RFC 2046 §5.1.1 with CRLF line ends only (what Go's
//! `mime/multipart`, curl, browsers and Python all send):
//! - a delimiter is `CRLF--boundary` (or `--boundary` at the very start)
//!   followed by optional transport padding (spaces/tabs) and CRLF, or by
//!   `--` for the closing delimiter; boundary text followed by anything
//!   else is part data, as in Go's and Python's parsers;
//! - part headers are bounded to [`MAX_PART_HEADER_BYTES`] and
//!   [`MAX_PART_HEADERS`] lines; every part needs a `form-data`
//!   Content-Disposition with a `name`;
//! - a body that ends before the closing delimiter is an error, never a
//!   short part. The epilogue after the closing delimiter is not read.
//!
//! Duplicate or unexpected parts are returned in order: the caller enforces
//! which parts it wants and in what order.

use std::io::{self, Read, Write};

use memchr::memmem;

/// Longest boundary RFC 2046 allows.
pub const MAX_BOUNDARY_LEN: usize = 70;
/// Bound on one part's header block, including the blank line ending it.
pub const MAX_PART_HEADER_BYTES: usize = 8 * 1024;
/// Bound on the number of header lines of one part.
pub const MAX_PART_HEADERS: usize = 16;
/// Bound on the spaces/tabs tolerated after a boundary, so a peer cannot
/// make the parser hold back an unbounded tail.
const MAX_TRANSPORT_PADDING: usize = 256;
/// The reader's window: must hold a header block plus a delimiter.
const READ_WINDOW: usize = 64 * 1024;

/// Headers of one part.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartInfo {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
}

#[derive(Debug)]
pub enum MultipartError {
    /// The body ended before the closing boundary.
    Truncated,
    /// Part headers over the bound, or malformed framing; says which.
    Malformed(String),
    Io(io::Error),
}

impl std::fmt::Display for MultipartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MultipartError::Truncated => {
                f.write_str("multipart body ended before its closing boundary")
            }
            MultipartError::Malformed(why) => write!(f, "malformed multipart body: {why}"),
            MultipartError::Io(e) => write!(f, "reading multipart body: {e}"),
        }
    }
}

impl std::error::Error for MultipartError {}

impl From<io::Error> for MultipartError {
    fn from(e: io::Error) -> Self {
        MultipartError::Io(e)
    }
}

fn malformed(why: impl Into<String>) -> MultipartError {
    MultipartError::Malformed(why.into())
}

/// A fresh random boundary: 60 hex characters, like Go's `mime/multipart`.
pub fn random_boundary() -> String {
    let mut bytes = [0u8; 30];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: a boundary only has to be unlikely to occur in
        // the data, so time, pid and a counter through SHA-256 will do.
        use sha2::{Digest, Sha256};
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut h = Sha256::new();
        h.update(now.to_le_bytes());
        h.update(std::process::id().to_le_bytes());
        h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        bytes.copy_from_slice(&h.finalize()[..30]);
    }
    hex::encode(bytes)
}

/// Whether `boundary` is a legal RFC 2046 boundary: 1–70 `bchars`, not
/// ending in a space. The parser relies on it holding no CR or LF.
pub fn is_valid_boundary(boundary: &str) -> bool {
    let b = boundary.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_BOUNDARY_LEN
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&c))
        && b[b.len() - 1] != b' '
}

/// The boundary of a `multipart/form-data` Content-Type, None if the type
/// is not multipart/form-data or has no (valid) boundary.
pub fn boundary_from_content_type(content_type: &str) -> Option<String> {
    let (media_type, params) = parse_params(content_type)?;
    if !media_type
        .trim()
        .eq_ignore_ascii_case("multipart/form-data")
    {
        return None;
    }
    let boundary = params.into_iter().find(|(k, _)| k == "boundary")?.1;
    is_valid_boundary(&boundary).then_some(boundary)
}

/// The Content-Type header value for a body written with `boundary`.
pub fn form_data_content_type(boundary: &str) -> String {
    // Quote only when needed (tspecials or space), as Go does.
    if boundary.bytes().any(|c| b"()<>@,;:\\\"/[]?= ".contains(&c)) {
        format!("multipart/form-data; boundary=\"{boundary}\"")
    } else {
        format!("multipart/form-data; boundary={boundary}")
    }
}

/// Splits `value; a=b; c="d"` into the leading value and its parameters
/// (names lowercased, quoted strings unescaped). Parameters without `=` are
/// skipped; an unterminated quoted string makes the whole header invalid.
fn parse_params(header: &str) -> Option<(&str, Vec<(String, String)>)> {
    let (head, rest) = match header.find(';') {
        Some(i) => (&header[..i], &header[i..]),
        None => (header, ""),
    };
    let b = rest.as_bytes();
    let mut params = Vec::new();
    let mut i = 0;
    loop {
        while i < b.len() && matches!(b[i], b';' | b' ' | b'\t') {
            i += 1;
        }
        if i == b.len() {
            break;
        }
        let name_start = i;
        while i < b.len() && b[i] != b'=' && b[i] != b';' {
            i += 1;
        }
        let name = rest[name_start..i].trim().to_ascii_lowercase();
        if i == b.len() || b[i] == b';' {
            continue;
        }
        i += 1;
        while i < b.len() && matches!(b[i], b' ' | b'\t') {
            i += 1;
        }
        let value = if i < b.len() && b[i] == b'"' {
            i += 1;
            let mut v = Vec::new();
            let mut closed = false;
            while i < b.len() {
                match b[i] {
                    b'\\' if i + 1 < b.len() => {
                        v.push(b[i + 1]);
                        i += 2;
                    }
                    b'"' => {
                        closed = true;
                        i += 1;
                        break;
                    }
                    c => {
                        v.push(c);
                        i += 1;
                    }
                }
            }
            if !closed {
                return None;
            }
            while i < b.len() && b[i] != b';' {
                i += 1;
            }
            // Only ASCII bytes were dropped, so this stays UTF-8.
            String::from_utf8(v).ok()?
        } else {
            let start = i;
            while i < b.len() && b[i] != b';' {
                i += 1;
            }
            rest[start..i].trim().to_string()
        };
        params.push((name, value));
    }
    Some((head, params))
}

/// Parses one part's header block (without the blank line ending it).
fn parse_part_headers(block: &[u8]) -> Result<PartInfo, MultipartError> {
    let text = std::str::from_utf8(block).map_err(|_| malformed("part headers are not UTF-8"))?;
    let mut headers: Vec<(String, String)> = Vec::new();
    if !text.is_empty() {
        for line in text.split("\r\n") {
            if line.contains(['\r', '\n', '\0']) {
                return Err(malformed("bare CR, LF or NUL in part headers"));
            }
            if line.starts_with([' ', '\t']) {
                // An obsolete folded line continues the previous header.
                let last = headers
                    .last_mut()
                    .ok_or_else(|| malformed("part headers start with a continuation line"))?;
                last.1.push(' ');
                last.1.push_str(line.trim());
                continue;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| malformed("part header line without a colon"))?;
            if name.is_empty() || name.contains([' ', '\t']) {
                return Err(malformed("invalid part header name"));
            }
            headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
            if headers.len() > MAX_PART_HEADERS {
                return Err(malformed(format!(
                    "more than {MAX_PART_HEADERS} part headers"
                )));
            }
        }
    }

    let mut disposition = None;
    let mut content_type = None;
    for (name, value) in headers {
        let slot = match name.as_str() {
            "content-disposition" => &mut disposition,
            "content-type" => &mut content_type,
            _ => continue,
        };
        if slot.is_some() {
            return Err(malformed(format!("duplicate {name} part header")));
        }
        *slot = Some(value);
    }
    let disposition = disposition.ok_or_else(|| malformed("part without Content-Disposition"))?;
    let (kind, params) = parse_params(&disposition)
        .ok_or_else(|| malformed("unterminated quoted string in Content-Disposition"))?;
    if !kind.trim().eq_ignore_ascii_case("form-data") {
        return Err(malformed("part Content-Disposition is not form-data"));
    }
    let mut name = None;
    let mut filename = None;
    for (key, value) in params {
        match key.as_str() {
            "name" if name.is_none() => name = Some(value),
            "filename" if filename.is_none() => filename = Some(value),
            _ => {}
        }
    }
    Ok(PartInfo {
        name: name.ok_or_else(|| malformed("part Content-Disposition without a name"))?,
        filename,
        content_type,
    })
}

/// Writes parts one after the other to `W`, streaming each part's body.
pub struct MultipartWriter<W: Write> {
    inner: W,
    boundary: String,
    parts: usize,
    in_part: bool,
}

/// Quotes a Content-Disposition parameter value the way Go and Python
/// unquote it; CR/LF would let a value inject headers, so they are refused.
fn quote_param(value: &str) -> io::Result<String> {
    if value.contains(['\r', '\n', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "multipart part name or filename contains CR, LF or NUL",
        ));
    }
    Ok(value.replace('\\', "\\\\").replace('"', "\\\""))
}

impl<W: Write> MultipartWriter<W> {
    /// `boundary` is checked (RFC 2046) on the first write.
    pub fn new(inner: W, boundary: &str) -> Self {
        MultipartWriter {
            inner,
            boundary: boundary.to_string(),
            parts: 0,
            in_part: false,
        }
    }

    /// The Content-Type header value announcing this body.
    pub fn content_type(&self) -> String {
        form_data_content_type(&self.boundary)
    }

    fn check_boundary(&self) -> io::Result<()> {
        if is_valid_boundary(&self.boundary) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "invalid multipart boundary",
            ))
        }
    }

    /// Starts a part; its body is what is written next.
    pub fn begin_part(&mut self, info: &PartInfo) -> io::Result<()> {
        self.check_boundary()?;
        let mut head = String::with_capacity(160);
        if self.parts > 0 {
            head.push_str("\r\n");
        }
        head.push_str("--");
        head.push_str(&self.boundary);
        head.push_str("\r\nContent-Disposition: form-data; name=\"");
        head.push_str(&quote_param(&info.name)?);
        head.push('"');
        if let Some(filename) = &info.filename {
            head.push_str("; filename=\"");
            head.push_str(&quote_param(filename)?);
            head.push('"');
        }
        head.push_str("\r\n");
        if let Some(ct) = &info.content_type {
            if ct.contains(['\r', '\n', '\0']) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "multipart part Content-Type contains CR, LF or NUL",
                ));
            }
            head.push_str("Content-Type: ");
            head.push_str(ct);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        self.inner.write_all(head.as_bytes())?;
        self.parts += 1;
        self.in_part = true;
        Ok(())
    }

    /// Writes the closing boundary and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.check_boundary()?;
        let close = if self.parts > 0 {
            format!("\r\n--{}--\r\n", self.boundary)
        } else {
            format!("--{}--\r\n", self.boundary)
        };
        self.inner.write_all(close.as_bytes())?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for MultipartWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.in_part {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "multipart body written before begin_part",
            ));
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What the [`Parser`] saw in the bytes it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Give the same unconsumed bytes again with more appended (or `eof`).
    NeedMore,
    /// A part starts; its headers.
    Part(PartInfo),
    /// The last `n` of the consumed bytes are body data of the current part.
    Body(usize),
    /// The current part's body is complete.
    PartEnd,
    /// The closing delimiter was seen; nothing more will be parsed.
    End,
}

/// One parser step: drop `consumed` bytes from the front of the input,
/// then act on `event`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub consumed: usize,
    pub event: Event,
}

#[derive(Debug)]
enum State {
    /// Nothing consumed: the first boundary may come without a CRLF.
    Start,
    Preamble,
    Headers,
    /// `known`: bytes at the front of the input already known to be body
    /// data; `end`: the delimiter found right after them (length, last).
    Body {
        known: usize,
        end: Option<(usize, bool)>,
    },
    /// The last part ended; only `End` is left.
    Done,
    Failed(String),
}

/// What follows a `--boundary` candidate.
enum After {
    NeedMore,
    /// Not a delimiter: the boundary text is data.
    No,
    /// A delimiter of `len` more bytes; `last` for the closing one.
    Yes {
        len: usize,
        last: bool,
    },
}

fn after_boundary(rest: &[u8]) -> Result<After, MultipartError> {
    if rest.starts_with(b"--") {
        return Ok(After::Yes { len: 2, last: true });
    }
    if rest == b"-" {
        return Ok(After::NeedMore);
    }
    let pad = rest
        .iter()
        .take(MAX_TRANSPORT_PADDING + 1)
        .take_while(|&&c| c == b' ' || c == b'\t')
        .count();
    if pad > MAX_TRANSPORT_PADDING {
        return Err(malformed("too much transport padding after a boundary"));
    }
    match &rest[pad..] {
        [] | [b'\r'] => Ok(After::NeedMore),
        [b'\r', b'\n', ..] => Ok(After::Yes {
            len: pad + 2,
            last: false,
        }),
        _ => Ok(After::No),
    }
}

/// A sans-I/O `multipart/form-data` parser.
///
/// The caller keeps a window of unconsumed input, calls [`Parser::parse`],
/// drops `consumed` bytes from its front and acts on the event. The parser
/// only ever asks for more input while holding back less than a header
/// block or a delimiter, so a window of [`MAX_PART_HEADER_BYTES`] plus a
/// few hundred bytes always suffices.
#[derive(Debug)]
pub struct Parser {
    /// `CRLF--boundary`.
    delimiter: Vec<u8>,
    finder: memmem::Finder<'static>,
    state: State,
}

/// Where a body scan stopped.
enum Scan {
    /// Body data ends at `at`, then a delimiter of `len` bytes.
    Found { at: usize, len: usize, last: bool },
    /// The first `n` bytes are body data; the rest might start a delimiter.
    Safe(usize),
}

impl Parser {
    pub fn new(boundary: &str) -> Result<Parser, MultipartError> {
        if !is_valid_boundary(boundary) {
            return Err(malformed("invalid boundary (1-70 RFC 2046 characters)"));
        }
        let delimiter = format!("\r\n--{boundary}").into_bytes();
        let finder = memmem::Finder::new(&delimiter).into_owned();
        Ok(Parser {
            delimiter,
            finder,
            state: State::Start,
        })
    }

    /// Parses `input` (all unconsumed bytes; `eof` when no more will
    /// come). `max_body` caps the bytes of one `Body` event (at least 1).
    pub fn parse(
        &mut self,
        input: &[u8],
        eof: bool,
        max_body: usize,
    ) -> Result<Step, MultipartError> {
        let result = self.parse_inner(input, eof, max_body.max(1));
        if let Err(MultipartError::Malformed(why)) = &result {
            self.state = State::Failed(why.clone());
        }
        result
    }

    fn parse_inner(
        &mut self,
        input: &[u8],
        eof: bool,
        max_body: usize,
    ) -> Result<Step, MultipartError> {
        let dlen = self.delimiter.len();
        let mut pos = 0;
        loop {
            let data = &input[pos..];
            let need_more = |pos| {
                if eof {
                    Err(MultipartError::Truncated)
                } else {
                    Ok(Step {
                        consumed: pos,
                        event: Event::NeedMore,
                    })
                }
            };
            match self.state {
                State::Start => {
                    let dash_boundary = &self.delimiter[2..];
                    if data.len() < dash_boundary.len() && dash_boundary.starts_with(data) {
                        return need_more(pos);
                    }
                    if !data.starts_with(dash_boundary) {
                        self.state = State::Preamble;
                        continue;
                    }
                    match after_boundary(&data[dash_boundary.len()..])? {
                        After::NeedMore => return need_more(pos),
                        After::No => self.state = State::Preamble,
                        After::Yes { len, last } => {
                            pos += dash_boundary.len() + len;
                            self.state = if last { State::Done } else { State::Headers };
                        }
                    }
                }
                State::Preamble => match self.finder.find(data) {
                    Some(at) => match after_boundary(&data[at + dlen..])? {
                        After::NeedMore => return need_more(pos + at),
                        After::No => pos += at + 1,
                        After::Yes { len, last } => {
                            pos += at + dlen + len;
                            self.state = if last { State::Done } else { State::Headers };
                        }
                    },
                    None => return need_more(pos + data.len().saturating_sub(dlen - 1)),
                },
                State::Headers => {
                    if data.len() < 2 {
                        return need_more(pos);
                    }
                    // An empty header block: the blank line comes first.
                    let end = if data.starts_with(b"\r\n") {
                        Some(0)
                    } else {
                        let window = &data[..data.len().min(MAX_PART_HEADER_BYTES + 4)];
                        memmem::find(window, b"\r\n\r\n").map(|i| i + 2)
                    };
                    let Some(end) = end else {
                        if data.len() >= MAX_PART_HEADER_BYTES {
                            return Err(malformed(format!(
                                "part headers exceed {MAX_PART_HEADER_BYTES} bytes"
                            )));
                        }
                        return need_more(pos);
                    };
                    // `end` indexes the blank line; the block is before it.
                    if end + 2 > MAX_PART_HEADER_BYTES {
                        return Err(malformed(format!(
                            "part headers exceed {MAX_PART_HEADER_BYTES} bytes"
                        )));
                    }
                    let block = if end == 0 {
                        &data[..0]
                    } else {
                        &data[..end - 2]
                    };
                    let info = parse_part_headers(block)?;
                    self.state = State::Body {
                        known: 0,
                        end: None,
                    };
                    return Ok(Step {
                        consumed: pos + end + 2,
                        event: Event::Part(info),
                    });
                }
                State::Body { known, end } => {
                    if known > 0 {
                        let n = known.min(max_body).min(data.len());
                        self.state = State::Body {
                            known: known - n,
                            end,
                        };
                        return Ok(Step {
                            consumed: pos + n,
                            event: Event::Body(n),
                        });
                    }
                    if let Some((len, last)) = end {
                        self.state = if last { State::Done } else { State::Headers };
                        return Ok(Step {
                            consumed: pos + len,
                            event: Event::PartEnd,
                        });
                    }
                    self.state = match self.scan_body(data)? {
                        Scan::Found { at, len, last } => State::Body {
                            known: at,
                            end: Some((len, last)),
                        },
                        Scan::Safe(0) => return need_more(pos),
                        Scan::Safe(n) => State::Body {
                            known: n,
                            end: None,
                        },
                    };
                }
                State::Done => {
                    return Ok(Step {
                        consumed: pos,
                        event: Event::End,
                    })
                }
                State::Failed(ref why) => return Err(malformed(why.clone())),
            }
        }
    }

    /// Finds the end of the current part's body in `data`.
    fn scan_body(&self, data: &[u8]) -> Result<Scan, MultipartError> {
        let dlen = self.delimiter.len();
        let mut from = 0;
        loop {
            match self.finder.find(&data[from..]) {
                Some(rel) => {
                    let at = from + rel;
                    match after_boundary(&data[at + dlen..])? {
                        After::Yes { len, last } => {
                            return Ok(Scan::Found {
                                at,
                                len: dlen + len,
                                last,
                            })
                        }
                        // Boundary text followed by other bytes is data. The
                        // boundary holds no CR, so no delimiter starts inside it.
                        After::No => from = at + 1,
                        After::NeedMore => return Ok(Scan::Safe(at)),
                    }
                }
                // Hold back only what could be the start of a delimiter.
                None => return Ok(Scan::Safe(from.max(data.len().saturating_sub(dlen - 1)))),
            }
        }
    }
}

/// What one reader step produced.
enum Advance {
    Part(PartInfo),
    Body(usize),
    PartEnd,
    End,
}

/// Reads parts one after the other from `R`.
pub struct MultipartReader<R: Read> {
    inner: R,
    parser: Result<Parser, String>,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    eof: bool,
    /// A part's headers were returned and its body is not finished.
    in_part: bool,
}

impl<R: Read> MultipartReader<R> {
    /// An invalid `boundary` makes the first `next_part` fail `Malformed`.
    pub fn new(inner: R, boundary: &str) -> Self {
        let parser = Parser::new(boundary).map_err(|e| e.to_string());
        MultipartReader {
            inner,
            parser,
            buf: vec![0u8; READ_WINDOW].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
            in_part: false,
        }
    }

    /// The inner reader; bytes already buffered are dropped.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn fill(&mut self) -> Result<(), MultipartError> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // Cannot happen with the parser's bounds; refuse rather than spin.
            return Err(malformed("multipart framing larger than the read window"));
        }
        loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(MultipartError::Io(e)),
            }
        }
    }

    /// One parser event, reading as needed; body bytes go to `out` (or are
    /// dropped when skipping).
    fn advance(&mut self, out: Option<&mut [u8]>) -> Result<Advance, MultipartError> {
        let max_body = out.as_ref().map_or(usize::MAX, |o| o.len());
        loop {
            let parser = self.parser.as_mut().map_err(|why| malformed(why.clone()))?;
            let step = parser.parse(&self.buf[self.start..self.end], self.eof, max_body)?;
            self.start += step.consumed;
            match step.event {
                Event::NeedMore => self.fill()?,
                Event::Part(info) => return Ok(Advance::Part(info)),
                Event::Body(n) => {
                    // The body bytes are the last `n` of those consumed.
                    if let Some(out) = out {
                        out[..n].copy_from_slice(&self.buf[self.start - n..self.start]);
                    }
                    return Ok(Advance::Body(n));
                }
                Event::PartEnd => return Ok(Advance::PartEnd),
                Event::End => return Ok(Advance::End),
            }
        }
    }

    /// Advances to the next part (skipping what is left of the current one)
    /// and returns its headers; None after the closing boundary.
    pub fn next_part(&mut self) -> Result<Option<PartInfo>, MultipartError> {
        loop {
            match self.advance(None)? {
                Advance::Body(_) => {}
                Advance::PartEnd => self.in_part = false,
                Advance::Part(info) => {
                    self.in_part = true;
                    return Ok(Some(info));
                }
                Advance::End => {
                    self.in_part = false;
                    return Ok(None);
                }
            }
        }
    }

    /// The current part's body: EOF at its closing delimiter. A body that
    /// ends before the delimiter is an `UnexpectedEof` error.
    pub fn part_body(&mut self) -> impl Read + '_ {
        PartBody { reader: self }
    }
}

/// The `Read` over one part's body.
struct PartBody<'a, R: Read> {
    reader: &'a mut MultipartReader<R>,
}

impl<R: Read> Read for PartBody<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if !self.reader.in_part || out.is_empty() {
            return Ok(0);
        }
        match self.reader.advance(Some(out)) {
            Ok(Advance::Body(n)) => Ok(n),
            Ok(Advance::PartEnd | Advance::End) => {
                self.reader.in_part = false;
                Ok(0)
            }
            Ok(Advance::Part(_)) => Err(io::Error::other(
                "multipart parser started a part inside a body",
            )),
            Err(MultipartError::Truncated) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "multipart body ended inside a part",
            )),
            Err(MultipartError::Malformed(why)) => {
                Err(io::Error::new(io::ErrorKind::InvalidData, why))
            }
            Err(MultipartError::Io(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: &str = "X-BOUNDARY-1234";

    fn part(name: &str, filename: Option<&str>, ct: Option<&str>) -> PartInfo {
        PartInfo {
            name: name.into(),
            filename: filename.map(Into::into),
            content_type: ct.map(Into::into),
        }
    }

    fn write_body(boundary: &str, parts: &[(PartInfo, Vec<u8>)]) -> Vec<u8> {
        let mut w = MultipartWriter::new(Vec::new(), boundary);
        for (info, data) in parts {
            w.begin_part(info).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap()
    }

    /// A reader handing out at most `sizes[i % len]` bytes per call.
    struct Dribble<'a> {
        data: &'a [u8],
        pos: usize,
        sizes: Vec<usize>,
        calls: usize,
    }

    impl<'a> Dribble<'a> {
        fn new(data: &'a [u8], sizes: Vec<usize>) -> Self {
            Dribble {
                data,
                pos: 0,
                sizes,
                calls: 0,
            }
        }
    }

    impl Read for Dribble<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let want = self.sizes[self.calls % self.sizes.len()].max(1);
            self.calls += 1;
            let n = want.min(out.len()).min(self.data.len() - self.pos);
            out[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    type Parts = Vec<(PartInfo, Vec<u8>)>;

    /// Reads every part, reading bodies with an `out_size` buffer.
    fn read_parts<R: Read>(r: R, boundary: &str, out_size: usize) -> Result<Parts, String> {
        let mut reader = MultipartReader::new(r, boundary);
        let mut parts = Vec::new();
        while let Some(info) = reader
            .next_part()
            .map_err(|e| format!("next_part: {e:?}"))?
        {
            let mut body = Vec::new();
            let mut chunk = vec![0u8; out_size];
            let mut pb = reader.part_body();
            loop {
                match pb.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => body.extend_from_slice(&chunk[..n]),
                    Err(e) => return Err(format!("body: {:?}: {e}", e.kind())),
                }
            }
            parts.push((info, body));
        }
        Ok(parts)
    }

    /// Drives the sans-I/O parser directly, growing the input one byte at
    /// a time whenever it asks for more.
    fn parse_bytewise(body: &[u8], boundary: &str) -> Result<Parts, MultipartError> {
        let mut p = Parser::new(boundary)?;
        let mut window: Vec<u8> = Vec::new();
        let mut fed = 0;
        let mut parts: Parts = Vec::new();
        loop {
            let eof = fed == body.len();
            let step = p.parse(&window, eof, 7)?;
            let consumed: Vec<u8> = window.drain(..step.consumed).collect();
            match step.event {
                Event::NeedMore => {
                    assert!(!eof, "NeedMore at eof must be Truncated");
                    window.push(body[fed]);
                    fed += 1;
                }
                Event::Part(info) => parts.push((info, Vec::new())),
                Event::Body(n) => {
                    assert!(n > 0 && n <= 7);
                    parts
                        .last_mut()
                        .unwrap()
                        .1
                        .extend_from_slice(&consumed[consumed.len() - n..]);
                }
                Event::PartEnd => {}
                Event::End => return Ok(parts),
            }
        }
    }

    fn sample_parts() -> Parts {
        let mut binary: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        // Things that look like framing but are not.
        binary.extend_from_slice(b"\r\n--X-BOUNDARY-123\r\n--X-BOUNDARY-1234x\r\n-\r\r\n\r\n");
        vec![
            (
                part("configuration", None, Some("application/json")),
                br#"{"uuid":"u"}"#.to_vec(),
            ),
            (
                part(
                    "archive",
                    Some("archive.tar.gz"),
                    Some("application/octet-stream"),
                ),
                binary,
            ),
            (part("checksum", None, None), b"ab".repeat(32)),
        ]
    }

    #[test]
    fn writer_layout_matches_go_mime_multipart() {
        let body = write_body(
            "abc",
            &[
                (
                    part(
                        "archive",
                        Some("archive.tar.gz"),
                        Some("application/octet-stream"),
                    ),
                    b"DATA".to_vec(),
                ),
                (part("checksum", None, None), b"00ff".to_vec()),
            ],
        );
        let expected = "--abc\r\nContent-Disposition: form-data; name=\"archive\"; filename=\"archive.tar.gz\"\r\n\
                        Content-Type: application/octet-stream\r\n\r\nDATA\r\n\
                        --abc\r\nContent-Disposition: form-data; name=\"checksum\"\r\n\r\n00ff\r\n--abc--\r\n";
        assert_eq!(String::from_utf8(body).unwrap(), expected);
    }

    #[test]
    fn writer_refuses_bad_input() {
        let mut w = MultipartWriter::new(Vec::new(), B);
        assert_eq!(
            w.write(b"x").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        let err = w
            .begin_part(&part("a\r\nX-Evil: 1", None, None))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let mut bad = MultipartWriter::new(Vec::new(), "bad\rboundary");
        assert!(bad.begin_part(&part("a", None, None)).is_err());
        assert!(MultipartWriter::new(Vec::new(), &"a".repeat(71))
            .finish()
            .is_err());
    }

    #[test]
    fn writer_escapes_quotes_and_reader_unescapes() {
        let info = part("we\"ird\\name", Some("a \"b\".tgz"), None);
        let body = write_body(B, &[(info.clone(), b"x".to_vec())]);
        assert!(String::from_utf8_lossy(&body)
            .contains(r#"name="we\"ird\\name"; filename="a \"b\".tgz""#));
        let parts = read_parts(&body[..], B, 64).unwrap();
        assert_eq!(parts, vec![(info, b"x".to_vec())]);
    }

    #[test]
    fn round_trip() {
        let parts = sample_parts();
        let body = write_body(B, &parts);
        assert_eq!(read_parts(&body[..], B, 8192).unwrap(), parts);
    }

    #[test]
    fn parser_fed_byte_by_byte() {
        let parts = sample_parts();
        let body = write_body(B, &parts);
        assert_eq!(parse_bytewise(&body, B).unwrap(), parts);
    }

    #[test]
    fn one_byte_reads_and_one_byte_buffers() {
        let parts = sample_parts();
        let body = write_body(B, &parts);
        assert_eq!(
            read_parts(Dribble::new(&body, vec![1]), B, 1).unwrap(),
            parts
        );
    }

    #[test]
    fn random_split_points() {
        let parts = sample_parts();
        let body = write_body(B, &parts);
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200 {
            let sizes: Vec<usize> = (0..16).map(|_| (next() % 97) as usize + 1).collect();
            let out_size = (next() % 300) as usize + 1;
            let got = read_parts(Dribble::new(&body, sizes.clone()), B, out_size).unwrap();
            assert_eq!(got, parts, "sizes {sizes:?} out {out_size}");
        }
    }

    #[test]
    fn boundary_lookalikes_stay_in_the_data() {
        let tricky: &[&[u8]] = &[
            b"--X-BOUNDARY-1234 in the middle, not after CRLF",
            b"\r\n--X-BOUNDARY-1234x",
            b"\r\n--X-BOUNDARY-123",
            b"\r\n--X-BOUNDARY-1234-x",
            b"\r\n--X-BOUNDARY-1234 \tx\r\n",
            b"\r\n--X-BOUNDARY-1234\rx",
            b"\n--X-BOUNDARY-1234\r\n",
            b"ends with CR\r",
            b"ends with CRLF\r\n",
            b"ends with CRLF-\r\n-",
            b"",
        ];
        for data in tricky {
            let parts = vec![
                (part("f", None, None), data.to_vec()),
                (part("g", None, None), data.to_vec()),
            ];
            let body = write_body(B, &parts);
            assert_eq!(
                read_parts(&body[..], B, 3).unwrap(),
                parts,
                "{:?}",
                String::from_utf8_lossy(data)
            );
            assert_eq!(parse_bytewise(&body, B).unwrap(), parts);
        }
    }

    #[test]
    fn truncation_at_every_offset_is_an_error() {
        let parts = vec![
            (
                part("archive", Some("archive.tar.gz"), None),
                b"0123456789\r\n--X".to_vec(),
            ),
            (part("checksum", None, None), b"abcdef".to_vec()),
        ];
        let body = write_body(B, &parts);
        // The closing delimiter is complete once `--B--` is there; the final
        // CRLF belongs to the epilogue.
        let complete = body.len() - 2;
        for cut in 0..body.len() {
            let got = read_parts(&body[..cut], B, 4);
            if cut >= complete {
                assert_eq!(got.unwrap(), parts, "cut {cut}");
            } else {
                assert!(got.is_err(), "cut {cut} parsed: {got:?}");
                assert!(parse_bytewise(&body[..cut], B).is_err(), "cut {cut}");
            }
        }
    }

    #[test]
    fn truncation_errors_have_the_documented_kinds() {
        let body = write_body(B, &[(part("archive", None, None), vec![7u8; 100])]);
        let cut = &body[..body.len() - 30];
        let mut r = MultipartReader::new(cut, B);
        assert!(r.next_part().unwrap().is_some());
        let mut sink = Vec::new();
        let err = r.part_body().read_to_end(&mut sink).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);

        // The part is complete but the closing delimiter is missing.
        let cut = &body[..body.len() - 4];
        let mut r = MultipartReader::new(cut, B);
        assert!(r.next_part().unwrap().is_some());
        assert!(matches!(r.next_part(), Err(MultipartError::Truncated)));

        assert!(matches!(
            MultipartReader::new(&b""[..], B).next_part(),
            Err(MultipartError::Truncated)
        ));
    }

    #[test]
    fn skipping_unread_parts_and_duplicates_in_order() {
        let parts = vec![
            (part("checksum", None, None), b"first".to_vec()),
            (part("archive", None, None), vec![1u8; 200_000]),
            (part("checksum", None, None), b"second".to_vec()),
        ];
        let body = write_body(B, &parts);
        let mut r = MultipartReader::new(Dribble::new(&body, vec![4096]), B);
        let names: Vec<String> =
            std::iter::from_fn(|| r.next_part().unwrap().map(|p| p.name)).collect();
        assert_eq!(names, ["checksum", "archive", "checksum"]);
        // After the end: stays at the end, bodies are empty.
        assert!(r.next_part().unwrap().is_none());
        let mut sink = Vec::new();
        assert_eq!(r.part_body().read_to_end(&mut sink).unwrap(), 0);
    }

    #[test]
    fn partly_read_body_then_next_part() {
        let parts = sample_parts();
        let body = write_body(B, &parts);
        let mut r = MultipartReader::new(&body[..], B);
        r.next_part().unwrap();
        r.next_part().unwrap();
        let mut first = [0u8; 10];
        r.part_body().read_exact(&mut first).unwrap();
        assert_eq!(&first, &parts[1].1[..10]);
        let info = r.next_part().unwrap().unwrap();
        let mut rest = Vec::new();
        r.part_body().read_to_end(&mut rest).unwrap();
        assert_eq!((info, rest), parts[2].clone());
    }

    #[test]
    fn preamble_padding_and_epilogue() {
        let body = b"this is a preamble\r\n--X-BOUNDARY-1234 \t \r\n\
                     Content-Disposition: form-data; name=a\r\n\r\nA\r\n\
                     --X-BOUNDARY-1234\t\r\ncontent-disposition: FORM-DATA; name=\"b\"; filename=f.txt\r\n\
                     CONTENT-TYPE: text/plain\r\n\r\nB\r\n--X-BOUNDARY-1234--  epilogue \r\n--X-BOUNDARY-1234\r\n";
        let parts = read_parts(&body[..], B, 16).unwrap();
        assert_eq!(
            parts,
            vec![
                (part("a", None, None), b"A".to_vec()),
                (part("b", Some("f.txt"), Some("text/plain")), b"B".to_vec()),
            ]
        );
        assert_eq!(parse_bytewise(body, B).unwrap(), parts);
        // Folded header lines are joined.
        let folded = b"--X-BOUNDARY-1234\r\nContent-Disposition: form-data;\r\n name=\"c\"\r\n\r\nC\r\n--X-BOUNDARY-1234--";
        assert_eq!(
            read_parts(&folded[..], B, 16).unwrap(),
            vec![(part("c", None, None), b"C".to_vec())]
        );
    }

    #[test]
    fn no_parts_and_lf_only_framing() {
        assert_eq!(
            read_parts(&b"--X-BOUNDARY-1234--\r\n"[..], B, 8).unwrap(),
            vec![]
        );
        let lf = b"--X-BOUNDARY-1234\nContent-Disposition: form-data; name=a\n\nA\n--X-BOUNDARY-1234--\n";
        assert!(read_parts(&lf[..], B, 8).is_err());
    }

    #[test]
    fn malformed_part_headers() {
        let cases: &[(&str, &str)] = &[
            ("Content-Type: text/plain", "without Content-Disposition"),
            ("", "without Content-Disposition"),
            ("Content-Disposition: attachment; name=a", "not form-data"),
            (
                "Content-Disposition: form-data; filename=a",
                "without a name",
            ),
            ("Content-Disposition: form-data; name=\"a", "unterminated"),
            (
                "Content-Disposition: form-data; name=a\r\nContent-Disposition: form-data; name=b",
                "duplicate",
            ),
            ("Content-Disposition form-data", "without a colon"),
            (" folded: first", "continuation"),
        ];
        for (headers, why) in cases {
            let body = format!("--{B}\r\n{headers}\r\n\r\nbody\r\n--{B}--\r\n");
            match MultipartReader::new(body.as_bytes(), B).next_part() {
                Err(MultipartError::Malformed(m)) => assert!(m.contains(why), "{headers:?}: {m}"),
                other => panic!("{headers:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn header_bombs_are_bounded() {
        let extra = |n: usize| -> String { (0..n).map(|i| format!("X-H{i}: v\r\n")).collect() };
        // Content-Disposition plus 15 more is the limit.
        let ok = format!(
            "--{B}\r\nContent-Disposition: form-data; name=a\r\n{}\r\nA\r\n--{B}--",
            extra(MAX_PART_HEADERS - 1)
        );
        assert!(MultipartReader::new(ok.as_bytes(), B)
            .next_part()
            .unwrap()
            .is_some());
        let too_many = format!(
            "--{B}\r\nContent-Disposition: form-data; name=a\r\n{}\r\nA\r\n--{B}--",
            extra(MAX_PART_HEADERS)
        );
        assert!(matches!(
            MultipartReader::new(too_many.as_bytes(), B).next_part(),
            Err(MultipartError::Malformed(m)) if m.contains("part headers")
        ));

        let long = format!(
            "--{B}\r\nContent-Disposition: form-data; name=a\r\nX-Long: {}\r\n\r\nA\r\n--{B}--",
            "v".repeat(MAX_PART_HEADER_BYTES)
        );
        assert!(matches!(
            MultipartReader::new(long.as_bytes(), B).next_part(),
            Err(MultipartError::Malformed(m)) if m.contains("exceed")
        ));

        // Endless headers: refused after reading a bounded amount.
        struct Endless(usize);
        impl Read for Endless {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                let prefix = format!("--{B}\r\nX: ");
                let n = out.len();
                for (i, b) in out.iter_mut().enumerate() {
                    *b = prefix.as_bytes().get(self.0 + i).copied().unwrap_or(b'a');
                }
                self.0 += n;
                Ok(n)
            }
        }
        let mut r = MultipartReader::new(Endless(0), B);
        assert!(matches!(r.next_part(), Err(MultipartError::Malformed(_))));
        assert!(r.into_inner().0 <= READ_WINDOW);
    }

    #[test]
    fn malformed_is_sticky_and_padding_is_bounded() {
        let body = format!(
            "--{B}{}\r\nContent-Disposition: form-data; name=a\r\n\r\nA\r\n--{B}--",
            " ".repeat(300)
        );
        let mut r = MultipartReader::new(body.as_bytes(), B);
        assert!(
            matches!(r.next_part(), Err(MultipartError::Malformed(m)) if m.contains("padding"))
        );
        assert!(matches!(r.next_part(), Err(MultipartError::Malformed(_))));
    }

    #[test]
    fn invalid_boundary_is_malformed() {
        for b in ["", "has\r\ncrlf", "ends with space ", &"x".repeat(71)] {
            assert!(matches!(
                MultipartReader::new(&b"--x--"[..], b).next_part(),
                Err(MultipartError::Malformed(_))
            ));
        }
        assert!(Parser::new(&"x".repeat(70)).is_ok());
    }

    #[test]
    fn boundary_from_content_type_cases() {
        let ok: &[(&str, &str)] = &[
            ("multipart/form-data; boundary=abc", "abc"),
            ("Multipart/Form-Data;boundary=abc", "abc"),
            (
                "multipart/form-data; charset=utf-8; BOUNDARY=\"a b:c\"",
                "a b:c",
            ),
            ("multipart/form-data; boundary=\"q\\=x\"; other=1", "q=x"),
            ("  multipart/form-data ;  boundary = abc ; x=y", "abc"),
            (
                "multipart/form-data; flag; boundary=------------------------d74496d66958873e",
                "------------------------d74496d66958873e",
            ),
        ];
        for (ct, want) in ok {
            assert_eq!(
                boundary_from_content_type(ct).as_deref(),
                Some(*want),
                "{ct}"
            );
        }
        let none = [
            "multipart/mixed; boundary=abc",
            "application/json",
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "multipart/form-data; boundary=\"unterminated",
            "multipart/form-data; boundary=\"q\\\"x\"",
            "multipart/form-data; boundary=bad<char>",
            &format!("multipart/form-data; boundary={}", "a".repeat(71)),
        ];
        for ct in none {
            assert_eq!(boundary_from_content_type(ct), None, "{ct}");
        }
        let b = random_boundary();
        assert_eq!(b.len(), 60);
        assert_ne!(b, random_boundary());
        assert_eq!(
            boundary_from_content_type(&form_data_content_type(&b)),
            Some(b)
        );
        assert_eq!(
            boundary_from_content_type(&form_data_content_type("a b")).as_deref(),
            Some("a b")
        );
    }
}
