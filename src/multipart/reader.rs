//! The reader: the thin `Read` driver around [`Parser`]. It keeps a fixed
//! [`READ_WINDOW`] of unconsumed input, feeds it to the parser, refills it
//! when asked, and hands out parts and their bodies. A body that ends
//! before its delimiter reads as an `UnexpectedEof` error, never as a short
//! part.

use std::io::{self, Read};

use super::limits::READ_WINDOW;
use super::parser::{Event, Parser};
use super::{malformed, MultipartError, PartInfo};

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
            // Typed inside, so a caller can tell a body that ended without
            // its parts from a connection that went away (also EOF).
            Err(MultipartError::Truncated) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                MultipartError::Truncated,
            )),
            Err(MultipartError::Malformed(why)) => {
                Err(io::Error::new(io::ErrorKind::InvalidData, why))
            }
            Err(MultipartError::Io(e)) => Err(e),
        }
    }
}
