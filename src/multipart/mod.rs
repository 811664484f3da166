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
//! Where each idea lives: `params` (the header-parameter grammar and the
//! boundary a Content-Type carries), `headers` (one part's header block),
//! `writer`, `parser` (the sans-I/O state machine, a method per state),
//! `reader` (its `Read` driver) and `limits` (every bound in one place).
//!
//! Duplicate or unexpected parts are returned in order: the caller enforces
//! which parts it wants and in what order.

mod headers;
mod limits;
mod params;
mod parser;
mod reader;
mod writer;

use std::io;

pub use self::limits::{MAX_BOUNDARY_LEN, MAX_PART_HEADERS, MAX_PART_HEADER_BYTES};
pub use self::params::{
    boundary_from_content_type, form_data_content_type, is_valid_boundary, random_boundary,
};
pub use self::parser::{Event, Parser, Step};
pub use self::reader::MultipartReader;
pub use self::writer::MultipartWriter;

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

#[cfg(test)]
mod tests;
