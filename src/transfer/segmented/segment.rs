//! The header of one `PUT …/segment?offset=O` request: its offset, its
//! length (the `Content-Length`, required: a segment is never chunked, so
//! the limit is checked before a byte is read) and its SHA-256.

use std::fmt;

/// A validated segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub offset: u64,
    pub length: u64,
    pub sha256: [u8; 32],
}

/// Why a segment request is refused before its body is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentError {
    /// No `offset=` or not a number.
    Offset,
    /// No `Content-Length` (a chunked body), or zero.
    Length,
    /// Over `system.transfers.segment_size`.
    TooLarge { length: u64, limit: u64 },
    /// No `X-Ferry-Segment-Sha256`, or not 64 hex characters.
    Digest,
}

impl SegmentError {
    /// The HTTP status this refusal answers with.
    pub fn status(&self) -> u16 {
        match self {
            SegmentError::TooLarge { .. } => 413,
            SegmentError::Length => 411,
            _ => 400,
        }
    }
}

impl fmt::Display for SegmentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SegmentError::Offset => f.write_str("segment offset missing or invalid"),
            SegmentError::Length => f.write_str("segment needs a non-zero Content-Length"),
            SegmentError::TooLarge { length, limit } => {
                write!(f, "segment of {length} bytes is over the limit of {limit}")
            }
            SegmentError::Digest => f.write_str("segment SHA-256 header missing or invalid"),
        }
    }
}

impl std::error::Error for SegmentError {}

/// Validate a segment request's query, `Content-Length` and digest header.
pub fn parse(
    query: &str,
    content_length: Option<u64>,
    digest: Option<&str>,
    limit: u64,
) -> Result<SegmentHeader, SegmentError> {
    let offset = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("offset="))
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or(SegmentError::Offset)?;
    let length = match content_length {
        Some(0) | None => return Err(SegmentError::Length),
        Some(n) if n > limit => return Err(SegmentError::TooLarge { length: n, limit }),
        Some(n) => n,
    };
    let digest = digest.map(str::trim).ok_or(SegmentError::Digest)?;
    let mut sha256 = [0u8; 32];
    if digest.len() != 64 || hex::decode_to_slice(digest, &mut sha256).is_err() {
        return Err(SegmentError::Digest);
    }
    Ok(SegmentHeader {
        offset,
        length,
        sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "ab00000000000000000000000000000000000000000000000000000000000001";

    #[test]
    fn a_good_header() {
        let h = parse("x=1&offset=128", Some(64), Some(D), 64).unwrap();
        assert_eq!(
            (h.offset, h.length, h.sha256[0], h.sha256[31]),
            (128, 64, 0xab, 1)
        );
    }

    #[test]
    fn refusals_and_their_statuses() {
        let cases = [
            (parse("", Some(1), Some(D), 64), SegmentError::Offset, 400),
            (
                parse("offset=-1", Some(1), Some(D), 64),
                SegmentError::Offset,
                400,
            ),
            (
                parse("offset=0", None, Some(D), 64),
                SegmentError::Length,
                411,
            ),
            (
                parse("offset=0", Some(0), Some(D), 64),
                SegmentError::Length,
                411,
            ),
            (
                parse("offset=0", Some(65), Some(D), 64),
                SegmentError::TooLarge {
                    length: 65,
                    limit: 64,
                },
                413,
            ),
            (
                parse("offset=0", Some(1), None, 64),
                SegmentError::Digest,
                400,
            ),
            (
                parse("offset=0", Some(1), Some("abc"), 64),
                SegmentError::Digest,
                400,
            ),
            (
                parse("offset=0", Some(1), Some(&D.replace('a', "g")), 64),
                SegmentError::Digest,
                400,
            ),
        ];
        for (got, want, status) in cases {
            assert_eq!(got, Err(want.clone()));
            assert_eq!(want.status(), status);
        }
    }
}
