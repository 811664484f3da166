//! The first stage of packing: the directory walk turned into tar bytes
//! packed into slots, each handed to the deflate workers with the previous
//! block's tail as its dictionary. Hard links travel once; sparse files
//! skip their holes (`SEEK_DATA`); every length is checked against the tar
//! format's limits before a header is written. An optional observer
//! (`PackObserver`, pre-copy's record) sees every entry and the content
//! bytes as sent; without one nothing extra is done.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender};

use super::{Fail, Job, Slot};
use crate::archive::gzip;
use crate::archive::pipe::{self, Halt};
use crate::archive::sys;
use crate::archive::tarfmt::{self, EntryHeader};
use crate::archive::walk::{self, Node, Visitor, WalkStop};
use crate::archive::{Counters, Stage};

/// What kind of entry the packer wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    /// A later path of a multiply-linked file; `link` names the first.
    HardLink,
}

/// Sees what the packer sends (pre-copy's record of pass 1). `entry` comes
/// before the entry's content, with the stat taken from the opened fd
/// before any byte was read; `data` and `zeros` are the content bytes as
/// they went into the archive (holes and a shrunk file's padding as zeros).
pub trait PackObserver: Send {
    fn entry(&mut self, path: &[u8], st: &libc::stat, kind: EntryKind, link: &[u8]);
    fn data(&mut self, bytes: &[u8]);
    fn zeros(&mut self, n: u64);
}

/// Turns the walk into tar bytes packed into slots.
struct Producer<'a> {
    slot: Option<Slot>,
    seq: u64,
    pool: Receiver<Slot>,
    jobs: Sender<Job>,
    /// Last `DICT` bytes of the stream so far, and whether they are zero.
    tail: Vec<u8>,
    tail_zero: bool,
    stream_len: u64,
    files: u64,
    bytes: u64,
    header: Vec<u8>,
    /// Files with more than one link seen so far, by (device, inode): a
    /// later path to the same file becomes a hard-link entry naming the
    /// first, so the content travels once and the link survives.
    links: HardLinks,
    cancel: &'a AtomicBool,
    counters: &'a Counters,
    observer: Option<&'a mut (dyn PackObserver + 'static)>,
}

/// The first archived path of every multiply-linked file, by (dev, ino).
#[derive(Default)]
pub(crate) struct HardLinks(std::collections::HashMap<(u64, u64), Vec<u8>>);

impl HardLinks {
    /// For a regular file: the path it was first archived under, if this
    /// is another link to it; otherwise remembers `path` (when the file
    /// has other links) and returns None.
    pub(crate) fn first_path(&mut self, path: &[u8], st: &libc::stat) -> Option<&[u8]> {
        if st.st_nlink < 2 {
            return None;
        }
        let key = (st.st_dev, st.st_ino);
        if self.0.contains_key(&key) {
            return self.0.get(&key).map(|p| &p[..]);
        }
        self.0.insert(key, path.to_vec());
        None
    }
}

/// Refuses a path (or link target) the destination would refuse, before
/// any byte of it is sent: both sides use `tarfmt::MAX_NAME`.
pub(crate) fn check_name_length(path: &[u8], is_dir: bool, link: &[u8]) -> Result<(), String> {
    let encoded = path.len() + usize::from(is_dir);
    if encoded > tarfmt::MAX_NAME {
        return Err(format!(
            "{}: path is {encoded} bytes long; archives are limited to {} bytes per path (the destination would refuse it)",
            String::from_utf8_lossy(path),
            tarfmt::MAX_NAME
        ));
    }
    if link.len() > tarfmt::MAX_NAME {
        return Err(format!(
            "{}: symlink target is {} bytes long; archives are limited to {} bytes (the destination would refuse it)",
            String::from_utf8_lossy(path),
            link.len(),
            tarfmt::MAX_NAME
        ));
    }
    Ok(())
}

impl Producer<'_> {
    /// The current slot, with room for at least one byte.
    fn room(&mut self) -> Result<&mut Slot, Fail> {
        if self.slot.as_ref().is_some_and(|s| s.len == s.raw.len()) {
            self.dispatch(false)?;
        }
        if self.slot.is_none() {
            let mut s = pipe::recv(&self.pool, self.cancel)?;
            s.len = 0;
            self.slot = Some(s);
        }
        self.slot
            .as_mut()
            .ok_or_else(|| Fail::Error("internal: no slot".into()))
    }

    fn dispatch(&mut self, last: bool) -> Result<(), Fail> {
        let Some(mut slot) = self.slot.take() else {
            return Ok(());
        };
        let data = &slot.raw[..slot.len];
        let block_zero = pipe::is_zero(data);
        slot.zero = block_zero && self.tail_zero && self.tail.len() == gzip::DICT;
        slot.dict.clear();
        slot.dict.extend_from_slice(&self.tail);
        // Update the carried dictionary with this block's end.
        if data.len() >= gzip::DICT {
            self.tail.clear();
            self.tail
                .extend_from_slice(&data[data.len() - gzip::DICT..]);
            self.tail_zero = pipe::is_zero(&self.tail);
        } else {
            self.tail.extend_from_slice(data);
            let excess = self.tail.len().saturating_sub(gzip::DICT);
            self.tail.drain(..excess);
            self.tail_zero = pipe::is_zero(&self.tail);
        }
        let seq = self.seq;
        self.seq += 1;
        pipe::send(&self.jobs, Job { seq, slot, last }, self.cancel)?;
        Ok(())
    }

    fn write(&mut self, mut data: &[u8]) -> Result<(), Fail> {
        self.stream_len += data.len() as u64;
        while !data.is_empty() {
            let slot = self.room()?;
            let n = data.len().min(slot.raw.len() - slot.len);
            slot.raw[slot.len..slot.len + n].copy_from_slice(&data[..n]);
            slot.len += n;
            data = &data[n..];
        }
        Ok(())
    }

    fn write_zeros(&mut self, mut n: u64) -> Result<(), Fail> {
        self.stream_len += n;
        while n > 0 {
            let slot = self.room()?;
            let k = (n as usize).min(slot.raw.len() - slot.len);
            slot.raw[slot.len..slot.len + k].fill(0);
            slot.len += k;
            n -= k as u64;
        }
        Ok(())
    }

    fn header(&mut self, e: &EntryHeader<'_>) -> Result<(), Fail> {
        let mut h = std::mem::take(&mut self.header);
        h.clear();
        tarfmt::encode(e, &mut h);
        let r = self.write(&h);
        self.header = h;
        r
    }

    /// Copies exactly `size` bytes of `file` into the stream, reading
    /// straight into the slot. A file that shrank is padded with zeros; one
    /// that grew is cut at `size`, so the header stays true. In a sparse
    /// file, holes found with `SEEK_DATA` are filled with zeros unread.
    fn content(
        &mut self,
        path: &[u8],
        file: std::fs::File,
        size: u64,
        sparse: bool,
    ) -> Result<(), Fail> {
        use std::os::unix::fs::FileExt;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        let mut pos: u64 = 0;
        // Offset of the next data past `pos` when `pos` is in a hole.
        let mut data_at: u64 = 0;
        while pos < size {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(Fail::Halt(Halt::Cancelled));
            }
            if sparse && data_at <= pos {
                // ENXIO: only a hole up to the end. Other errors: just read.
                data_at = match sys::seek_data(fd, pos) {
                    Ok(at) => at,
                    Err(e) if e.raw_os_error() == Some(libc::ENXIO) => size,
                    Err(_) => pos,
                };
            }
            let slot = self.room()?;
            let space = (slot.raw.len() - slot.len) as u64;
            if data_at > pos {
                let k = space.min(data_at.min(size) - pos) as usize;
                slot.raw[slot.len..slot.len + k].fill(0);
                slot.len += k;
                if let Some(o) = &mut self.observer {
                    o.zeros(k as u64);
                }
                self.advance(k as u64);
                pos += k as u64;
                continue;
            }
            let want = space.min(size - pos) as usize;
            let buf = &mut slot.raw[slot.len..slot.len + want];
            let n = loop {
                match file.read_at(buf, pos) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(Fail::Error(format!(
                            "reading {}: {e}",
                            String::from_utf8_lossy(path)
                        )))
                    }
                }
            };
            if n == 0 {
                log::warn!(
                    "archive: {} shrank while being archived; padded with zeros",
                    String::from_utf8_lossy(path)
                );
                let left = size - pos;
                self.write_zeros(left)?;
                if let Some(o) = self.observer.as_mut() {
                    o.zeros(left);
                }
                self.bytes += left;
                self.counters.bytes_done.fetch_add(left, Ordering::Relaxed);
                break;
            }
            let start = slot.len;
            slot.len += n;
            if let (Some(o), Some(s)) = (&mut self.observer, &self.slot) {
                o.data(&s.raw[start..start + n]);
            }
            self.advance(n as u64);
            pos += n as u64;
        }
        self.write_zeros(tarfmt::padding(size) as u64)
    }

    /// Accounts content bytes placed in the current slot.
    fn advance(&mut self, n: u64) {
        self.stream_len += n;
        self.bytes += n;
        self.counters.bytes_done.fetch_add(n, Ordering::Relaxed);
    }

    fn finish(&mut self) -> Result<(), Fail> {
        // End-of-archive: two zero blocks, then pad to a whole record.
        let end = self.stream_len + 2 * tarfmt::BLOCK as u64;
        let pad = (tarfmt::RECORD as u64 - end % tarfmt::RECORD as u64) % tarfmt::RECORD as u64;
        self.write_zeros(2 * tarfmt::BLOCK as u64 + pad)?;
        self.dispatch(true)
    }
}

impl Visitor for Producer<'_> {
    type Error = Fail;

    fn visit(&mut self, path: &[u8], node: Node) -> Result<(), Fail> {
        let (st, mut kind, mut size, link) = match &node {
            Node::Dir(st) => (st, tarfmt::DIRECTORY, 0, &[][..]),
            Node::File(st, _) => (st, tarfmt::REGULAR, st.st_size.max(0) as u64, &[][..]),
            Node::Symlink(st, target) => (st, tarfmt::SYMLINK, 0, &target[..]),
        };
        check_name_length(path, kind == tarfmt::DIRECTORY, link).map_err(Fail::Error)?;
        let mut link = link.to_vec();
        if kind == tarfmt::REGULAR {
            if let Some(first) = self.links.first_path(path, st) {
                kind = tarfmt::HARDLINK;
                size = 0;
                link = first.to_vec();
            }
        }
        if let Some(o) = self.observer.as_mut() {
            let seen = match kind {
                tarfmt::DIRECTORY => EntryKind::Dir,
                tarfmt::SYMLINK => EntryKind::Symlink,
                tarfmt::HARDLINK => EntryKind::HardLink,
                _ => EntryKind::File,
            };
            o.entry(path, st, seen, &link);
        }
        self.header(&EntryHeader {
            path,
            kind,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid as u64,
            gid: st.st_gid as u64,
            size,
            mtime: st.st_mtime,
            link: &link,
        })?;
        if let (Node::File(st, Some(file)), tarfmt::REGULAR) = (node, kind) {
            let sparse = (st.st_blocks.max(0) as u64).saturating_mul(512) < size;
            self.content(path, file, size, sparse)?;
        }
        self.files += 1;
        self.counters.files_done.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

pub(super) fn produce<'a>(
    root: &Path,
    (pool, jobs): (Receiver<Slot>, Sender<Job>),
    files_first: bool,
    cancel: &'a AtomicBool,
    counters: &'a Counters,
    observer: Option<&'a mut (dyn PackObserver + 'static)>,
) -> Result<(u64, u64), Fail> {
    let _clock = counters.stage_clock(Stage::Walk);
    let mut p = Producer {
        slot: None,
        seq: 0,
        pool,
        jobs,
        tail: Vec::with_capacity(gzip::DICT * 2),
        tail_zero: true,
        stream_len: 0,
        files: 0,
        bytes: 0,
        header: Vec::with_capacity(2048),
        links: HardLinks::default(),
        cancel,
        counters,
        observer,
    };
    walk::walk_ordered(root, true, files_first, &mut p).map_err(|e| match e {
        WalkStop::Cancelled => Fail::Halt(Halt::Cancelled),
        WalkStop::Io(m) => Fail::Error(m),
        WalkStop::Visitor(f) => f,
    })?;
    p.finish()?;
    Ok((p.files, p.bytes))
}
