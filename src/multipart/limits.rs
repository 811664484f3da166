//! The bounds of the multipart code: boundary length, one part's header
//! block, transport padding and the reader's window. They are inputs the
//! parser and reader check against, gathered so the promise "a peer cannot
//! make ferry hold more than this" is read in one place.

/// Longest boundary RFC 2046 allows.
pub const MAX_BOUNDARY_LEN: usize = 70;
/// Bound on one part's header block, including the blank line ending it.
pub const MAX_PART_HEADER_BYTES: usize = 8 * 1024;
/// Bound on the number of header lines of one part.
pub const MAX_PART_HEADERS: usize = 16;
/// Bound on the spaces/tabs tolerated after a boundary, so a peer cannot
/// make the parser hold back an unbounded tail.
pub(super) const MAX_TRANSPORT_PADDING: usize = 256;
/// The reader's window: must hold a header block plus a delimiter.
pub(super) const READ_WINDOW: usize = 64 * 1024;
