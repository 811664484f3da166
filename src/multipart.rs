//! Streaming `multipart/form-data`: a writer for the source's transfer body
//! and a bounded, truncation-detecting reader for the destination.
//!
//! Neither side buffers a part whole; the reader bounds part headers and
//! fails when the body ends before the closing boundary.

use std::io::{self, Read, Write};

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

/// A fresh random boundary.
pub fn random_boundary() -> String {
    unimplemented!("multipart")
}

/// The boundary of a `multipart/form-data` Content-Type, None if the type
/// is not multipart/form-data or has no boundary.
pub fn boundary_from_content_type(_content_type: &str) -> Option<String> {
    unimplemented!("multipart")
}

/// Writes parts one after the other to `W`.
pub struct MultipartWriter<W: Write> {
    _inner: W,
}

impl<W: Write> MultipartWriter<W> {
    pub fn new(_inner: W, _boundary: &str) -> Self {
        unimplemented!("multipart")
    }

    /// Starts a part; its body is what is written next.
    pub fn begin_part(&mut self, _info: &PartInfo) -> io::Result<()> {
        unimplemented!("multipart")
    }

    /// Writes the closing boundary and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        unimplemented!("multipart")
    }
}

impl<W: Write> Write for MultipartWriter<W> {
    fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        unimplemented!("multipart")
    }
    fn flush(&mut self) -> io::Result<()> {
        unimplemented!("multipart")
    }
}

/// Reads parts one after the other from `R`.
pub struct MultipartReader<R: Read> {
    _inner: R,
}

impl<R: Read> MultipartReader<R> {
    pub fn new(_inner: R, _boundary: &str) -> Self {
        unimplemented!("multipart")
    }

    /// Advances to the next part (skipping what is left of the current one)
    /// and returns its headers; None after the closing boundary.
    pub fn next_part(&mut self) -> Result<Option<PartInfo>, MultipartError> {
        unimplemented!("multipart")
    }

    /// The current part's body: EOF at its closing delimiter. A body that
    /// ends before the delimiter is an `UnexpectedEof` error.
    pub fn part_body(&mut self) -> impl Read + '_ {
        io::empty()
    }
}
