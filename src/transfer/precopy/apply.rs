//! The destination's half of pre-copy: `ferry_delta` applied into the
//! staging tree (each file op's result re-hashed against the SHA-256 the
//! source sent), then every `ferry_manifest` entry checked against it
//! (docs/transport.md, "The destination").

use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::{AtomicBool, Ordering};

use super::record::walk_order;
use super::wire::{self, EntryType, Line, Op, ReadError};
use crate::archive::{self, Counters, Expected, ExtractError, ExtractLimits, Patcher, Staging};

/// The prefix of every pre-copy verification failure.
pub const FAILED: &str = "pre-copy verification failed";

/// Why applying or checking stopped.
#[derive(Debug)]
pub enum ApplyError {
    /// The delta or manifest does not match the tree (400).
    Mismatch(String),
    /// An unsafe path (400, as the extractor's).
    Unsafe(String),
    NoSpace,
    /// Reading the body failed (the connection, a cancel).
    Input(std::io::Error),
    /// A local failure (500).
    Io(String),
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApplyError::Mismatch(m) => write!(f, "{FAILED}: {m}"),
            ApplyError::Unsafe(p) => write!(f, "unsafe path in archive: {p}"),
            ApplyError::NoSpace => f.write_str("not enough disk space"),
            ApplyError::Input(e) => write!(f, "{e}"),
            ApplyError::Io(m) => f.write_str(m),
        }
    }
}

impl From<ExtractError> for ApplyError {
    fn from(e: ExtractError) -> ApplyError {
        match e {
            ExtractError::Unsafe(p) => ApplyError::Unsafe(p),
            ExtractError::NoSpace => ApplyError::NoSpace,
            ExtractError::Corrupt(m) => ApplyError::Mismatch(m),
            ExtractError::Io(m) => ApplyError::Io(m),
            ExtractError::Cancelled => ApplyError::Input(std::io::Error::other("cancelled")),
            ExtractError::Input(e) => ApplyError::Input(e),
        }
    }
}

impl From<ReadError> for ApplyError {
    fn from(e: ReadError) -> ApplyError {
        match e {
            ReadError::Io(e) => ApplyError::Input(e),
            ReadError::Bad(m) => ApplyError::Mismatch(m),
        }
    }
}

fn path_of(hex: &str) -> Result<Vec<u8>, ApplyError> {
    wire::unhex(hex).ok_or_else(|| ApplyError::Mismatch(format!("a path is not hex: {hex:.40}")))
}

fn cancelled(cancel: &AtomicBool) -> Result<(), ApplyError> {
    if cancel.load(Ordering::Relaxed) {
        return Err(ApplyError::Input(std::io::Error::other("cancelled")));
    }
    Ok(())
}

/// Applies the `ferry_delta` part read from `body`; the number of ops.
pub fn apply_delta(
    body: impl Read,
    staging: &Staging,
    limits: &ExtractLimits,
    cancel: &AtomicBool,
    counters: &Counters,
) -> Result<u64, ApplyError> {
    let mut input = BufReader::with_capacity(256 * 1024, body);
    let mut patcher = Patcher::new(staging, limits, counters)?;
    let mut ops: u64 = 0;
    loop {
        cancelled(cancel)?;
        let Some(op) = wire::read_line::<_, Op>(&mut input, "delta")? else {
            return Err(ApplyError::Mismatch("the delta has no end".into()));
        };
        match op {
            Op::End { ops: n } => {
                if n != ops {
                    return Err(ApplyError::Mismatch(format!(
                        "the delta names {n} ops but holds {ops}"
                    )));
                }
                let mut rest = [0u8; 1];
                if input.read(&mut rest).map_err(ApplyError::Input)? != 0 {
                    return Err(ApplyError::Mismatch("bytes after the delta's end".into()));
                }
                return Ok(ops);
            }
            Op::Delete { path } => patcher.remove(&path_of(&path)?)?,
            Op::Dir { path, mode, mtime } => patcher.dir(&path_of(&path)?, mode, mtime)?,
            Op::Symlink {
                path,
                target,
                mtime,
            } => patcher.symlink(&path_of(&path)?, &path_of(&target)?, mtime)?,
            Op::Hardlink { path, to } => patcher.hard_link(&path_of(&path)?, &path_of(&to)?)?,
            Op::File {
                path,
                mode,
                mtime,
                size,
                block,
                fresh,
            } => {
                let path = path_of(&path)?;
                file_op(
                    &mut input,
                    &mut patcher,
                    &path,
                    (mode, mtime, size, block, fresh),
                    cancel,
                    counters,
                )?
            }
        }
        ops += 1;
    }
}

/// One file op: its blocks written where they belong, then the file's
/// whole content compared with the SHA-256 that follows them.
fn file_op<R: BufRead>(
    input: &mut R,
    patcher: &mut Patcher<'_>,
    path: &[u8],
    (mode, mtime, size, block, fresh): (u32, i64, u64, u64, bool),
    cancel: &AtomicBool,
    counters: &Counters,
) -> Result<(), ApplyError> {
    let display = String::from_utf8_lossy(path).into_owned();
    if !(super::record::MIN_ACCEPTED_BLOCK..=super::record::MAX_BLOCK).contains(&block)
        || !block.is_power_of_two()
    {
        return Err(ApplyError::Mismatch(format!(
            "{display}: block size {block} is not allowed"
        )));
    }
    let file = patcher.open_file(path, fresh)?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut last: Option<u64> = None;
    loop {
        cancelled(cancel)?;
        let index = wire::read_u64(input)?;
        if index == wire::END_OF_BLOCKS {
            break;
        }
        if last.is_some_and(|l| index <= l) {
            return Err(ApplyError::Mismatch(format!(
                "{display}: blocks out of order"
            )));
        }
        last = Some(index);
        let Some((mut offset, len)) = wire::block_range(index, block, size) else {
            return Err(ApplyError::Mismatch(format!(
                "{display}: block {index} lies past the file's end"
            )));
        };
        let end = offset + len;
        while offset < end {
            let k = (end - offset).min(buf.len() as u64) as usize;
            input.read_exact(&mut buf[..k]).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    ApplyError::Mismatch("the delta ends inside a file's blocks".into())
                } else {
                    ApplyError::Input(e)
                }
            })?;
            patcher.write_at(&file, &buf[..k], offset)?;
            counters.bytes_done.fetch_add(k as u64, Ordering::Relaxed);
            offset += k as u64;
        }
    }
    let sent = wire::read_sha(input)?;
    let mut digest = wire::ContentDigest::new(block);
    patcher.close_file(file, size, mode, mtime, &mut |b| digest.update(b))?;
    let have = digest.finish();
    if have != sent {
        return Err(ApplyError::Mismatch(format!(
            "{display}: checksums don't match"
        )));
    }
    Ok(())
}

/// Checks the staged tree against the `ferry_manifest` part read from
/// `body`: every entry as named, in strictly increasing walk order, and
/// nothing else; modes and mtimes set from it. The number of entries.
pub fn check_manifest(
    body: impl Read,
    staging: &Staging,
    limits: &ExtractLimits,
    cancel: &AtomicBool,
    counters: &Counters,
) -> Result<u64, ApplyError> {
    let mut input = BufReader::with_capacity(256 * 1024, body);
    let mut patcher = Patcher::new(staging, limits, counters)?;
    let mut previous: Option<Vec<u8>> = None;
    let mut count: u64 = 0;
    loop {
        cancelled(cancel)?;
        let line = wire::read_line::<_, Line>(&mut input, "manifest")?;
        let entry = match line {
            None => return Err(ApplyError::Mismatch("the manifest has no end".into())),
            Some(Line::End { end }) => {
                if end != count {
                    return Err(ApplyError::Mismatch(format!(
                        "the manifest names {end} entries but holds {count}"
                    )));
                }
                let mut rest = [0u8; 1];
                if input.read(&mut rest).map_err(ApplyError::Input)? != 0 {
                    return Err(ApplyError::Mismatch(
                        "bytes after the manifest's end".into(),
                    ));
                }
                break;
            }
            Some(Line::Entry(e)) => e,
        };
        let path = path_of(&entry.path)?;
        if previous
            .as_ref()
            .is_some_and(|p| walk_order(p, &path) != std::cmp::Ordering::Less)
        {
            return Err(ApplyError::Mismatch(format!(
                "{}: the manifest is out of order",
                String::from_utf8_lossy(&path)
            )));
        }
        let target = path_of(&entry.target)?;
        let expected = match entry.kind {
            EntryType::File => Expected::File { size: entry.size },
            EntryType::Dir => Expected::Dir,
            EntryType::Symlink => Expected::Symlink { target: &target },
            EntryType::Hardlink => Expected::HardLink { to: &target },
        };
        patcher.check(&path, expected, entry.mode, entry.mtime)?;
        count += 1;
        previous = Some(path);
    }
    patcher.finish()?;
    let held = archive::count_entries(staging, cancel)?;
    if held != count {
        return Err(ApplyError::Mismatch(format!(
            "the staged tree holds {held} entries, the source's {count}"
        )));
    }
    Ok(count)
}
