//! The sans-I/O parser: a state machine over byte slices that never reads,
//! only says how many bytes it consumed and what it saw ([`Step`]).
//!
//! ```text
//!   Start ──(--boundary CRLF)──▶ Headers ──(blank line)──▶ Body
//!     │                           ▲                         │
//!     └─(other bytes)─▶ Preamble ─┘◀──(CRLF--boundary CRLF)─┘
//!                          │                                │
//!                          └──────(--boundary--)──▶ Done ◀──┘
//!   any state ──(malformed)──▶ Failed (sticky)
//! ```
//!
//! Each state has its own method; [`Parser::parse`] loops over them until
//! one returns an event. Framing rules are in the module doc of
//! `multipart`; the bounds in `limits`.

use memchr::memmem;

use super::headers::parse_part_headers;
use super::limits::{MAX_PART_HEADER_BYTES, MAX_TRANSPORT_PADDING};
use super::params::is_valid_boundary;
use super::{malformed, MultipartError, PartInfo};

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

/// What one state's method decided.
enum Next {
    /// The state moved on after consuming this many bytes: go on parsing.
    Go(usize),
    /// Return this step (its `consumed` counted from where the state began).
    Stop(Step),
}

/// Asks for more input after `consumed` bytes, or fails at end of input:
/// a body that ends inside the framing is truncated, never short.
fn need_more(consumed: usize, eof: bool) -> Result<Next, MultipartError> {
    if eof {
        Err(MultipartError::Truncated)
    } else {
        Ok(Next::Stop(Step {
            consumed,
            event: Event::NeedMore,
        }))
    }
}

/// Stops with `event` after `consumed` bytes.
fn stop(consumed: usize, event: Event) -> Result<Next, MultipartError> {
    Ok(Next::Stop(Step { consumed, event }))
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

    /// Runs state after state over `input` until one has an event.
    fn parse_inner(
        &mut self,
        input: &[u8],
        eof: bool,
        max_body: usize,
    ) -> Result<Step, MultipartError> {
        let mut pos = 0;
        loop {
            let data = &input[pos..];
            let next = match self.state {
                State::Start => self.start(data, eof)?,
                State::Preamble => self.preamble(data, eof)?,
                State::Headers => self.headers(data, eof)?,
                State::Body { known, end } => self.body(data, eof, max_body, known, end)?,
                State::Done => stop(0, Event::End)?,
                State::Failed(ref why) => return Err(malformed(why.clone())),
            };
            match next {
                Next::Go(n) => pos += n,
                Next::Stop(step) => {
                    return Ok(Step {
                        consumed: pos + step.consumed,
                        event: step.event,
                    })
                }
            }
        }
    }

    /// After a delimiter: the next part's headers, or the end.
    fn after_delimiter(&mut self, last: bool) {
        self.state = if last { State::Done } else { State::Headers };
    }

    /// Nothing consumed yet: the first boundary may come without its CRLF.
    fn start(&mut self, data: &[u8], eof: bool) -> Result<Next, MultipartError> {
        let dash_boundary = &self.delimiter[2..];
        if data.len() < dash_boundary.len() && dash_boundary.starts_with(data) {
            return need_more(0, eof);
        }
        if !data.starts_with(dash_boundary) {
            self.state = State::Preamble;
            return Ok(Next::Go(0));
        }
        match after_boundary(&data[dash_boundary.len()..])? {
            After::NeedMore => need_more(0, eof),
            After::No => {
                self.state = State::Preamble;
                Ok(Next::Go(0))
            }
            After::Yes { len, last } => {
                let consumed = dash_boundary.len() + len;
                self.after_delimiter(last);
                Ok(Next::Go(consumed))
            }
        }
    }

    /// Skips the preamble up to the first delimiter.
    fn preamble(&mut self, data: &[u8], eof: bool) -> Result<Next, MultipartError> {
        let dlen = self.delimiter.len();
        let Some(at) = self.finder.find(data) else {
            return need_more(data.len().saturating_sub(dlen - 1), eof);
        };
        match after_boundary(&data[at + dlen..])? {
            After::NeedMore => need_more(at, eof),
            After::No => Ok(Next::Go(at + 1)),
            After::Yes { len, last } => {
                self.after_delimiter(last);
                Ok(Next::Go(at + dlen + len))
            }
        }
    }

    /// Reads one part's header block, bounded to [`MAX_PART_HEADER_BYTES`].
    fn headers(&mut self, data: &[u8], eof: bool) -> Result<Next, MultipartError> {
        if data.len() < 2 {
            return need_more(0, eof);
        }
        // An empty header block: the blank line comes first.
        let end = if data.starts_with(b"\r\n") {
            Some(0)
        } else {
            let window = &data[..data.len().min(MAX_PART_HEADER_BYTES + 4)];
            memmem::find(window, b"\r\n\r\n").map(|i| i + 2)
        };
        let too_large = || malformed(format!("part headers exceed {MAX_PART_HEADER_BYTES} bytes"));
        let Some(end) = end else {
            if data.len() >= MAX_PART_HEADER_BYTES {
                return Err(too_large());
            }
            return need_more(0, eof);
        };
        // `end` indexes the blank line; the block is before it.
        if end + 2 > MAX_PART_HEADER_BYTES {
            return Err(too_large());
        }
        let block = if end == 0 {
            &data[..0]
        } else {
            &data[..end - 2]
        };
        let info: PartInfo = parse_part_headers(block)?;
        self.state = State::Body {
            known: 0,
            end: None,
        };
        stop(end + 2, Event::Part(info))
    }

    /// Hands out body data already known to be data, then the part's end;
    /// when neither is known, scans for the delimiter.
    fn body(
        &mut self,
        data: &[u8],
        eof: bool,
        max_body: usize,
        known: usize,
        end: Option<(usize, bool)>,
    ) -> Result<Next, MultipartError> {
        if known > 0 {
            let n = known.min(max_body).min(data.len());
            self.state = State::Body {
                known: known - n,
                end,
            };
            return stop(n, Event::Body(n));
        }
        if let Some((len, last)) = end {
            self.after_delimiter(last);
            return stop(len, Event::PartEnd);
        }
        self.state = match self.scan_body(data)? {
            Scan::Found { at, len, last } => State::Body {
                known: at,
                end: Some((len, last)),
            },
            Scan::Safe(0) => return need_more(0, eof),
            Scan::Safe(n) => State::Body {
                known: n,
                end: None,
            },
        };
        Ok(Next::Go(0))
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
