//! The two pre-copy parts as bytes (docs/transport.md, "`ferry_delta`"):
//! delta ops and manifest lines, one JSON line each (paths and link
//! targets as hex, so any file name travels), a file op's blocks in
//! binary after its line. Pure: readers and writers in, values out.

use std::io::{self, BufRead, Read, Write};

use serde::{Deserialize, Serialize};

/// The part names.
pub const DELTA: &str = "ferry_delta";
pub const MANIFEST: &str = "ferry_manifest";

/// Longest JSON line either part may hold.
pub const MAX_LINE: usize = 64 * 1024;
/// Ends a file op's blocks (then its 32-byte content digest follows).
pub const END_OF_BLOCKS: u64 = u64::MAX;

/// A file op's content digest: the SHA-256 of the SHA-256s of its blocks
/// (`block` bytes each, the last shorter) in order. Not the whole
/// content's SHA-256, so the source hashes each changed byte once (the
/// same block hashes decide which blocks travel) while the destination,
/// re-reading the patched file, still checks every byte of it.
pub struct ContentDigest {
    block: u64,
    list: sha2::Sha256,
    current: sha2::Sha256,
    in_block: u64,
}

impl ContentDigest {
    pub fn new(block: u64) -> ContentDigest {
        use sha2::Digest;
        ContentDigest {
            block: block.max(1),
            list: sha2::Sha256::new(),
            current: sha2::Sha256::new(),
            in_block: 0,
        }
    }

    /// The next bytes of the content, in any pieces.
    pub fn update(&mut self, mut bytes: &[u8]) {
        use sha2::Digest;
        while !bytes.is_empty() {
            let n = ((self.block - self.in_block) as usize).min(bytes.len());
            self.current.update(&bytes[..n]);
            self.in_block += n as u64;
            bytes = &bytes[n..];
            if self.in_block == self.block {
                let done = std::mem::take(&mut self.current).finalize();
                self.list.update(done);
                self.in_block = 0;
            }
        }
    }

    /// A whole block's SHA-256, computed by the caller (the source, which
    /// needs it anyway); only at a block boundary.
    pub fn push_block(&mut self, sha256: &[u8; 32]) {
        use sha2::Digest;
        debug_assert_eq!(self.in_block, 0);
        self.list.update(sha256);
    }

    pub fn finish(mut self) -> [u8; 32] {
        use sha2::Digest;
        if self.in_block > 0 {
            let done = self.current.finalize();
            self.list.update(done);
        }
        self.list.finalize().into()
    }
}

/// One delta op's line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Op {
    /// Blocks follow (see `write_block`, `read_block_index`).
    File {
        path: String,
        mode: u32,
        mtime: i64,
        size: u64,
        block: u64,
        /// Create anew (removing what is there) rather than patch in place.
        fresh: bool,
    },
    Dir {
        path: String,
        mode: u32,
        mtime: i64,
    },
    Symlink {
        path: String,
        target: String,
        mtime: i64,
    },
    Hardlink {
        path: String,
        to: String,
    },
    Delete {
        path: String,
    },
    /// Last line; `ops` counts the ops before it.
    End {
        ops: u64,
    },
}

/// One manifest line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Line {
    Entry(ManifestEntry),
    End { end: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestEntry {
    pub path: String,
    pub kind: EntryType,
    pub mode: u32,
    pub mtime: i64,
    pub size: u64,
    /// Symlink text, or a hard link's first path (hex); empty otherwise.
    #[serde(default)]
    pub target: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryType {
    File,
    Dir,
    Symlink,
    Hardlink,
}

/// Hex of a path's bytes.
pub fn hex_path(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// A path back from hex; None when it is not hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    hex::decode(text).ok()
}

pub fn write_line<W: Write, T: Serialize>(out: &mut W, value: &T) -> io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line)
}

/// Why a part could not be read.
#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    /// The part is not what the format says (the message says where).
    Bad(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::Bad(m) => f.write_str(m),
        }
    }
}

/// The next JSON line of a part (None at its end), at most `MAX_LINE`.
pub fn read_line<R: BufRead, T: for<'de> Deserialize<'de>>(
    input: &mut R,
    what: &str,
) -> Result<Option<T>, ReadError> {
    let mut line = Vec::new();
    let n = input
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .map_err(ReadError::Io)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(ReadError::Bad(format!("the {what} ends inside a line")));
    }
    serde_json::from_slice(&line)
        .map(Some)
        .map_err(|e| ReadError::Bad(format!("a {what} line is malformed: {e}")))
}

/// A block of a file op: its index, then its bytes.
pub fn write_block<W: Write>(out: &mut W, index: u64, bytes: &[u8]) -> io::Result<()> {
    out.write_all(&index.to_be_bytes())?;
    out.write_all(bytes)
}

/// The end of a file op's blocks and the new content's digest
/// (`ContentDigest`).
pub fn write_blocks_end<W: Write>(out: &mut W, sha256: &[u8; 32]) -> io::Result<()> {
    out.write_all(&END_OF_BLOCKS.to_be_bytes())?;
    out.write_all(sha256)
}

pub fn read_u64<R: Read>(input: &mut R) -> Result<u64, ReadError> {
    let mut b = [0u8; 8];
    input.read_exact(&mut b).map_err(short)?;
    Ok(u64::from_be_bytes(b))
}

pub fn read_sha<R: Read>(input: &mut R) -> Result<[u8; 32], ReadError> {
    let mut b = [0u8; 32];
    input.read_exact(&mut b).map_err(short)?;
    Ok(b)
}

fn short(e: io::Error) -> ReadError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        ReadError::Bad("the delta ends inside a file's blocks".into())
    } else {
        ReadError::Io(e)
    }
}

/// The byte range of block `index` in a file of `size` bytes; None when
/// the block lies past the end (a delta naming it is refused).
pub fn block_range(index: u64, block: u64, size: u64) -> Option<(u64, u64)> {
    let start = index.checked_mul(block)?;
    (start < size).then(|| (start, (size - start).min(block)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_round_trip_and_unknown_fields_are_refused() {
        let ops = vec![
            Op::Dir {
                path: hex_path(b"world"),
                mode: 0o755,
                mtime: 5,
            },
            Op::File {
                path: hex_path(b"world/r.0.0.mca"),
                mode: 0o644,
                mtime: 7,
                size: 10,
                block: 4,
                fresh: false,
            },
            Op::Symlink {
                path: hex_path(b"l"),
                target: hex_path(b"\xff/x"),
                mtime: 1,
            },
            Op::Hardlink {
                path: hex_path(b"h"),
                to: hex_path(b"world/r.0.0.mca"),
            },
            Op::Delete {
                path: hex_path(b"gone"),
            },
            Op::End { ops: 5 },
        ];
        let mut bytes = Vec::new();
        for op in &ops {
            write_line(&mut bytes, op).unwrap();
            if let Op::File { .. } = op {
                write_block(&mut bytes, 2, b"ij").unwrap();
                write_blocks_end(&mut bytes, &[9; 32]).unwrap();
            }
        }
        let mut input = &bytes[..];
        let mut back = Vec::new();
        while let Some(op) = read_line::<_, Op>(&mut input, "delta").unwrap() {
            if let Op::File { .. } = op {
                assert_eq!(read_u64(&mut input).unwrap(), 2);
                let mut b = [0u8; 2];
                input.read_exact(&mut b).unwrap();
                assert_eq!(&b, b"ij");
                assert_eq!(read_u64(&mut input).unwrap(), END_OF_BLOCKS);
                assert_eq!(read_sha(&mut input).unwrap(), [9; 32]);
            }
            back.push(op);
        }
        assert_eq!(back, ops);
        assert_eq!(unhex(&hex_path(b"\xff/x")).unwrap(), b"\xff/x");
        let mut bad = &b"{\"op\":\"delete\",\"path\":\"61\",\"x\":1}\n"[..];
        assert!(matches!(
            read_line::<_, Op>(&mut bad, "delta"),
            Err(ReadError::Bad(_))
        ));
        let mut cut = &b"{\"op\":\"delete\""[..];
        assert!(read_line::<_, Op>(&mut cut, "delta")
            .unwrap_err()
            .to_string()
            .contains("ends inside a line"));
        let mut cut_blocks = &[0u8, 0, 0][..];
        assert!(read_u64(&mut cut_blocks)
            .unwrap_err()
            .to_string()
            .contains("ends inside"));
    }

    #[test]
    fn manifest_lines_round_trip() {
        let lines = vec![
            Line::Entry(ManifestEntry {
                path: hex_path(b"a"),
                kind: EntryType::Hardlink,
                mode: 0o600,
                mtime: -3,
                size: 0,
                target: hex_path(b"b"),
            }),
            Line::End { end: 1 },
        ];
        let mut bytes = Vec::new();
        for l in &lines {
            write_line(&mut bytes, l).unwrap();
        }
        let mut input = &bytes[..];
        let mut back = Vec::new();
        while let Some(l) = read_line::<_, Line>(&mut input, "manifest").unwrap() {
            back.push(l);
        }
        assert_eq!(back, lines);
    }

    #[test]
    fn block_ranges_stop_at_the_end() {
        assert_eq!(block_range(0, 4, 10), Some((0, 4)));
        assert_eq!(block_range(2, 4, 10), Some((8, 2)));
        assert_eq!(block_range(3, 4, 10), None);
        assert_eq!(block_range(u64::MAX / 2, 4, 10), None);
        assert_eq!(block_range(0, 4, 0), None);
    }

    #[test]
    fn the_content_digest_is_the_same_in_any_pieces_and_from_block_hashes() {
        use sha2::{Digest, Sha256};
        let content: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut whole = ContentDigest::new(4096);
        whole.update(&content);
        let mut pieces = ContentDigest::new(4096);
        for chunk in content.chunks(777) {
            pieces.update(chunk);
        }
        let mut blocks = ContentDigest::new(4096);
        for block in content.chunks(4096) {
            blocks.push_block(&Sha256::digest(block).into());
        }
        let want = whole.finish();
        assert_eq!(pieces.finish(), want);
        assert_eq!(blocks.finish(), want);
        let mut other = ContentDigest::new(4096);
        other.update(&content[1..]);
        assert_ne!(other.finish(), want, "a different content");
        assert_eq!(
            ContentDigest::new(4096).finish(),
            <[u8; 32]>::from(Sha256::digest(b"")),
            "an empty file: no blocks"
        );
    }
}
