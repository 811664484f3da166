//! The final pass (source, server stopped): the tree walked again, each
//! entry compared with pass 1's record, and only what differs written as
//! `ferry_delta` ops; then the stopped tree's manifest. The walk is of
//! metadata only: unchanged files are never opened, let alone read.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};

use super::record::{self, Entry, Kind, Meta, Record};
use super::wire::{self, EntryType, Line, ManifestEntry, Op};
use crate::archive::walk::{self, Node, Visitor, WalkStop};
use crate::archive::EntryKind;

/// What the final pass sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeltaSummary {
    /// Ops written (deletions included).
    pub ops: u64,
    /// Files sent (patched or fresh).
    pub files: u64,
    /// File content bytes in the delta.
    pub bytes: u64,
    pub deleted: u64,
}

/// What to send for one entry of the stopped tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Keep,
    /// Its blocks; `fresh`: a new file, else patched against the record.
    File {
        fresh: bool,
    },
    Dir,
    Symlink,
    /// A link to `to`, a path sent earlier in the walk.
    Hardlink {
        to: Vec<u8>,
    },
}

/// The first path of a multiply-linked file in this walk, and whether
/// its content was sent.
pub struct First {
    pub path: Vec<u8>,
    pub sent: bool,
}

/// Decides what an entry of the stopped tree needs (docs/transport.md,
/// "The final pass"). `first` is set when the entry is a later path of a
/// file already seen in this walk.
pub fn decide(was: Option<&Entry>, now: &Meta, link: &[u8], first: Option<&First>) -> Action {
    match now.kind {
        Kind::Dir => match was {
            Some(e) if e.meta.kind == Kind::Dir => Action::Keep,
            _ => Action::Dir,
        },
        Kind::Symlink => match was {
            Some(e) if e.meta.kind == Kind::Symlink && *e.link == *link => Action::Keep,
            _ => Action::Symlink,
        },
        Kind::File => {
            if let Some(first) = first {
                let same = was.is_some_and(|e| {
                    e.sent == EntryKind::HardLink && *e.link == *first.path && !first.sent
                });
                return if same {
                    Action::Keep
                } else {
                    Action::Hardlink {
                        to: first.path.clone(),
                    }
                };
            }
            match was {
                Some(e) if e.sent == EntryKind::File => {
                    if !record::changed(e, now, b"") {
                        Action::Keep
                    } else {
                        // In place only when neither side's copy is shared
                        // with another path (see "Hard links stay correct").
                        let fresh = !(e.meta.nlink == 1 && now.nlink == 1);
                        Action::File { fresh }
                    }
                }
                _ => Action::File { fresh: true },
            }
        }
    }
}

/// Writes `ferry_delta` for the stopped tree at `root` against `record`.
pub fn write_delta<W: Write>(
    root: &Path,
    record: &Record,
    out: &mut W,
    cancel: &AtomicBool,
) -> Result<DeltaSummary, String> {
    let mut pass = Final {
        root,
        record,
        out,
        cancel,
        visited: vec![false; record.len()],
        links: HashMap::new(),
        buf: vec![0u8; record.block as usize],
        summary: DeltaSummary::default(),
    };
    walk::walk(root, false, &mut pass).map_err(|e| match e {
        WalkStop::Cancelled => "cancelled".to_string(),
        WalkStop::Io(m) | WalkStop::Visitor(m) => m,
    })?;
    // Deletions last; a deleted directory once, not each of its entries
    // (the record is in walk order, so they follow it).
    let mut gone_dir: Option<&[u8]> = None;
    for (i, e) in record.entries().iter().enumerate() {
        if pass.visited[i] {
            continue;
        }
        if let Some(dir) = gone_dir {
            if e.path.len() > dir.len() && e.path.starts_with(dir) && e.path[dir.len()] == b'/' {
                continue;
            }
        }
        if e.meta.kind == Kind::Dir {
            gone_dir = Some(&e.path);
        }
        pass.op(&Op::Delete {
            path: wire::hex_path(&e.path),
        })?;
        pass.summary.deleted += 1;
    }
    let ops = pass.summary.ops;
    wire::write_line(pass.out, &Op::End { ops }).map_err(io)?;
    Ok(pass.summary)
}

fn io(e: std::io::Error) -> String {
    format!("the upload stopped: {e}")
}

struct Final<'a, W> {
    root: &'a Path,
    record: &'a Record,
    out: &'a mut W,
    cancel: &'a AtomicBool,
    visited: Vec<bool>,
    links: HashMap<(u64, u64), First>,
    buf: Vec<u8>,
    summary: DeltaSummary,
}

impl<W: Write> Final<'_, W> {
    fn op(&mut self, op: &Op) -> Result<(), String> {
        self.summary.ops += 1;
        wire::write_line(self.out, op).map_err(io)
    }

    /// A file op and its blocks: all non-zero ones when `fresh`, else
    /// those whose hash differs from the record's.
    fn file(
        &mut self,
        path: &[u8],
        st: &libc::stat,
        file: &std::fs::File,
        was: Option<&Entry>,
        fresh: bool,
    ) -> Result<(), String> {
        let size = st.st_size.max(0) as u64;
        let block = self.record.block;
        self.op(&Op::File {
            path: wire::hex_path(path),
            mode: st.st_mode & 0o7777,
            mtime: st.st_mtime,
            size,
            block,
            fresh,
        })?;
        let old = match (was, fresh) {
            (Some(e), false) => self.record.hashes(e),
            _ => &[],
        };
        // One SHA-256 per block decides what travels and feeds the
        // content digest: each byte is hashed once (the downtime).
        let mut digest = wire::ContentDigest::new(block);
        let mut index = 0u64;
        while let Some((start, len)) = wire::block_range(index, block, size) {
            if self.cancel.load(Ordering::Relaxed) {
                return Err("cancelled".into());
            }
            let data = &mut self.buf[..len as usize];
            file.read_exact_at(data, start).map_err(|e| {
                format!(
                    "pre-copy: reading {} after the stop: {e}",
                    String::from_utf8_lossy(path)
                )
            })?;
            let full: [u8; 32] = Sha256::digest(&*data).into();
            digest.push_block(&full);
            let same = match old.get(index as usize) {
                Some(h) => h[..] == full[..h.len()],
                None => fresh && data.iter().all(|b| *b == 0),
            };
            if !same {
                wire::write_block(self.out, index, data).map_err(io)?;
                self.summary.bytes += len;
            }
            index += 1;
        }
        wire::write_blocks_end(self.out, &digest.finish()).map_err(io)?;
        self.summary.files += 1;
        Ok(())
    }
}

impl<W: Write> Visitor for Final<'_, W> {
    type Error = String;

    fn visit(&mut self, path: &[u8], node: Node) -> Result<(), String> {
        let (st, link) = match &node {
            Node::Dir(st) | Node::File(st, _) => (*st, &[][..]),
            Node::Symlink(st, target) => (*st, &target[..]),
        };
        let Some(meta) = Meta::of(&st) else {
            return Ok(());
        };
        let index = self.record.find(path);
        if let Some(i) = index {
            self.visited[i] = true;
        }
        let record = self.record;
        let was = index.map(|i| record.at(i));
        let key = (meta.dev, meta.ino);
        let first = (meta.kind == Kind::File && meta.nlink > 1)
            .then(|| self.links.get(&key))
            .flatten()
            .map(|f| First {
                path: f.path.clone(),
                sent: f.sent,
            });
        let action = decide(was, &meta, link, first.as_ref());
        let sent = !matches!(action, Action::Keep);
        match action {
            Action::Keep => {}
            Action::Dir => self.op(&Op::Dir {
                path: wire::hex_path(path),
                mode: st.st_mode & 0o7777,
                mtime: st.st_mtime,
            })?,
            Action::Symlink => self.op(&Op::Symlink {
                path: wire::hex_path(path),
                target: wire::hex_path(link),
                mtime: st.st_mtime,
            })?,
            Action::Hardlink { to } => self.op(&Op::Hardlink {
                path: wire::hex_path(path),
                to: wire::hex_path(&to),
            })?,
            Action::File { fresh } => {
                let display = String::from_utf8_lossy(path).into_owned();
                let (file, now) = walk::open_regular_beneath(self.root, path)
                    .map_err(|e| format!("pre-copy: opening {display} after the stop: {e}"))?;
                // The server is stopped: what the walk saw is what is read.
                if (now.st_ino, now.st_size, now.st_ctime, now.st_ctime_nsec)
                    != (st.st_ino, st.st_size, st.st_ctime, st.st_ctime_nsec)
                {
                    return Err(format!(
                        "pre-copy: {display} changed after the server stopped"
                    ));
                }
                self.file(path, &st, &file, was, fresh)?;
            }
        }
        if meta.kind == Kind::File && meta.nlink > 1 && first.is_none() {
            self.links.insert(
                key,
                First {
                    path: path.to_vec(),
                    sent,
                },
            );
        }
        Ok(())
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// Writes `ferry_manifest` for the stopped tree at `root`: every entry in
/// walk order, then the count. Returns the count.
pub fn write_manifest<W: Write>(
    root: &Path,
    out: &mut W,
    cancel: &AtomicBool,
) -> Result<u64, String> {
    struct Manifest<'a, W> {
        out: &'a mut W,
        cancel: &'a AtomicBool,
        links: HashMap<(u64, u64), Vec<u8>>,
        count: u64,
    }
    impl<W: Write> Visitor for Manifest<'_, W> {
        type Error = String;
        fn visit(&mut self, path: &[u8], node: Node) -> Result<(), String> {
            let (st, kind, target) = match &node {
                Node::Dir(st) => (st, EntryType::Dir, Vec::new()),
                Node::Symlink(st, t) => (st, EntryType::Symlink, t.clone()),
                Node::File(st, _) => {
                    let key = (st.st_dev, st.st_ino);
                    match self.links.get(&key) {
                        Some(first) if st.st_nlink > 1 => (st, EntryType::Hardlink, first.clone()),
                        _ => {
                            if st.st_nlink > 1 {
                                self.links.insert(key, path.to_vec());
                            }
                            (st, EntryType::File, Vec::new())
                        }
                    }
                }
            };
            let entry = ManifestEntry {
                path: wire::hex_path(path),
                kind,
                mode: st.st_mode & 0o7777,
                mtime: st.st_mtime,
                size: if kind == EntryType::File {
                    st.st_size.max(0) as u64
                } else {
                    0
                },
                target: wire::hex_path(&target),
            };
            wire::write_line(self.out, &Line::Entry(entry)).map_err(io)?;
            self.count += 1;
            Ok(())
        }
        fn cancelled(&self) -> bool {
            self.cancel.load(Ordering::Relaxed)
        }
    }
    let mut m = Manifest {
        out,
        cancel,
        links: HashMap::new(),
        count: 0,
    };
    walk::walk(root, false, &mut m).map_err(|e| match e {
        WalkStop::Cancelled => "cancelled".to_string(),
        WalkStop::Io(s) | WalkStop::Visitor(s) => s,
    })?;
    let count = m.count;
    wire::write_line(m.out, &Line::End { end: count }).map_err(io)?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::precopy::record::tests::meta;

    /// A record of one entry seen long after its ctime (not racy).
    fn record_of(path: &[u8], m: Meta, kind: EntryKind, link: &[u8]) -> Record {
        let mut r = Record::new(4);
        r.push(path, m, kind, link, record::wall_ns());
        r.seal();
        r
    }

    #[test]
    fn what_each_entry_of_the_stopped_tree_sends() {
        let m = meta(Kind::File, 1, 1, 0, 1000);
        let r = record_of(b"f", m, EntryKind::File, b"");
        let was = Some(r.at(0));
        assert_eq!(decide(was, &m, b"", None), Action::Keep);
        assert_eq!(decide(None, &m, b"", None), Action::File { fresh: true });
        let mut written = m;
        written.ctime_ns += 1;
        assert_eq!(
            decide(was, &written, b"", None),
            Action::File { fresh: false }
        );
        // Now linked elsewhere too: its inode is shared, so sent fresh.
        let mut linked = written;
        linked.nlink = 2;
        assert_eq!(
            decide(was, &linked, b"", None),
            Action::File { fresh: true }
        );
        // A directory where a file was, and the reverse.
        let dir = meta(Kind::Dir, 1, 2, 0, 1000);
        assert_eq!(decide(was, &dir, b"", None), Action::Dir);
        let rd = record_of(b"d", dir, EntryKind::Dir, b"");
        assert_eq!(decide(Some(rd.at(0)), &dir, b"", None), Action::Keep);
        assert_eq!(
            decide(Some(rd.at(0)), &m, b"", None),
            Action::File { fresh: true }
        );
        // A symlink: only its text matters.
        let lm = meta(Kind::Symlink, 3, 1, 0, 1000);
        let rl = record_of(b"l", lm, EntryKind::Symlink, b"a");
        assert_eq!(decide(Some(rl.at(0)), &lm, b"a", None), Action::Keep);
        assert_eq!(decide(Some(rl.at(0)), &lm, b"b", None), Action::Symlink);
        // A hard link: kept while it and its first path are as sent.
        let hm = meta(Kind::File, 4, 2, 0, 1000);
        let rh = record_of(b"h", hm, EntryKind::HardLink, b"f");
        let first = |sent| First {
            path: b"f".to_vec(),
            sent,
        };
        assert_eq!(
            decide(Some(rh.at(0)), &hm, b"", Some(&first(false))),
            Action::Keep
        );
        assert_eq!(
            decide(Some(rh.at(0)), &hm, b"", Some(&first(true))),
            Action::Hardlink { to: b"f".to_vec() }
        );
        assert_eq!(
            decide(was, &hm, b"", Some(&first(false))),
            Action::Hardlink { to: b"f".to_vec() },
            "a file that became a link"
        );
    }
}
