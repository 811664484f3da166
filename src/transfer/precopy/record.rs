//! Pass 1's record (source): what the destination holds after the live
//! pass, entry by entry, and the rule that says whether an entry of the
//! stopped tree differs from it (docs/transport.md, "Pre-copy").
//!
//! Pure apart from the wall clock read when an entry is seen: the packer
//! feeds it through `archive::PackObserver`, the final pass asks it.

use std::cmp::Ordering;

use sha2::{Digest, Sha256};

use crate::archive::{EntryKind, PackObserver};

/// Smallest block the record hashes: game servers rewrite small pieces
/// (a region file's 4 KiB sectors, a database's pages; the bench's writer
/// 16 KiB), and a changed piece travels as the blocks it falls in, so a
/// 64 KiB block made a 16 KiB write cost 64 KiB of downtime. 16 KiB costs
/// 16 bytes of hash per 16 KiB of data (1/1024: 0.5 MiB for a 500 MB
/// tree) until the tree passes `MAX_BLOCKS` blocks (4 GiB), and the block
/// grows from there.
pub const MIN_BLOCK: u64 = 16 * 1024;
/// Smallest block a destination accepts in a delta (below what a source
/// sends, so a source with a smaller `MIN_BLOCK` still gets through).
pub const MIN_ACCEPTED_BLOCK: u64 = 4 * 1024;
/// Most blocks a record holds (16 bytes each: 4 MiB of hashes).
pub const MAX_BLOCKS: u64 = 1 << 18;
/// Largest block a delta may name.
pub const MAX_BLOCK: u64 = 1 << 30;
/// A pass-1 ctime this close to (or after) the stat's wall time cannot
/// prove that no write followed in the same clock tick.
pub const RACY_NS: i64 = 2_000_000_000;

/// Most entries a tree may have for pre-copy: the record keeps each in
/// memory (about 170 bytes with its path), so past this the source stops
/// the server first instead (17 MiB of the 48 MiB RSS budget).
pub const MAX_ENTRIES: u64 = 100_000;

/// A block's hash as kept: the first 16 bytes of its SHA-256.
pub type BlockHash = [u8; 16];

pub fn block_hash(bytes: &[u8]) -> BlockHash {
    let full = Sha256::digest(bytes);
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// The block size for a tree of `total` content bytes: 16 KiB, doubled
/// until the tree has at most `MAX_BLOCKS` blocks.
pub fn block_size(total: u64) -> u64 {
    let mut block = MIN_BLOCK;
    while total.div_ceil(block) > MAX_BLOCKS && block < MAX_BLOCK {
        block *= 2;
    }
    block
}

/// What change detection compares: the stat fields no write can leave
/// all unchanged (together with the racy rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

/// An entry's type as the tree has it (a hard link is a `File` here; the
/// record says separately which path the packer sent as a link).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

impl Meta {
    pub fn of(st: &libc::stat) -> Option<Meta> {
        let kind = match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            _ => return None,
        };
        let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
        Some(Meta {
            kind,
            dev: st.st_dev,
            ino: st.st_ino,
            nlink: st.st_nlink,
            mode: st.st_mode & 0o7777,
            size: st.st_size.max(0) as u64,
            mtime_ns: ns(st.st_mtime, st.st_mtime_nsec),
            ctime_ns: ns(st.st_ctime, st.st_ctime_nsec),
        })
    }
}

/// One entry as pass 1 sent it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: Box<[u8]>,
    pub meta: Meta,
    /// How it was sent: `HardLink` when the packer wrote a link entry.
    pub sent: EntryKind,
    /// Symlink target, or a hard link's first path.
    pub link: Box<[u8]>,
    /// Wall time (ns since the epoch) when the entry was seen.
    pub seen_ns: i64,
    /// Its block hashes: `hashes[first..first + count]` of the record.
    first: usize,
    count: usize,
}

/// Whether an entry of the stopped tree (its `now` stat and link target)
/// differs from what pass 1 recorded. Sound: any write changes ctime,
/// which no process can set back; a write within the clock tick of the
/// pass-1 stat may leave it equal, so an entry whose recorded ctime is not
/// `RACY_NS` older than the moment it was seen is always changed.
pub fn changed(was: &Entry, now: &Meta, link_now: &[u8]) -> bool {
    let m = &was.meta;
    m.ctime_ns >= was.seen_ns.saturating_sub(RACY_NS)
        || m.kind != now.kind
        || m.ino != now.ino
        || m.dev != now.dev
        || m.nlink != now.nlink
        || m.mode != now.mode
        || m.size != now.size
        || m.mtime_ns != now.mtime_ns
        || m.ctime_ns != now.ctime_ns
        || (m.kind == Kind::Symlink && *was.link != *link_now)
}

/// The order of the walk (depth first, names sorted bytewise in each
/// directory): paths compare component by component.
pub fn walk_order(a: &[u8], b: &[u8]) -> Ordering {
    a.split(|&c| c == b'/').cmp(b.split(|&c| c == b'/'))
}

/// Pass 1's record: built by the packer's observer, then read.
pub struct Record {
    pub block: u64,
    entries: Vec<Entry>,
    hashes: Vec<BlockHash>,
    /// The file being sent: bytes of its current block not yet hashed.
    pending: Vec<u8>,
    open: bool,
    /// Content bytes the record covers (what pass 1 sent).
    pub bytes: u64,
}

impl Record {
    pub fn new(block: u64) -> Record {
        Record {
            block,
            entries: Vec::new(),
            hashes: Vec::new(),
            pending: Vec::new(),
            open: false,
            bytes: 0,
        }
    }

    /// Ends the entry being fed (its last, short block) and sorts the
    /// record for lookups. Call once pass 1 is over.
    pub fn seal(&mut self) {
        self.close_file();
        self.entries.sort_by(|a, b| walk_order(&a.path, &b.path));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The index of `path`'s entry.
    pub fn find(&self, path: &[u8]) -> Option<usize> {
        self.entries
            .binary_search_by(|e| walk_order(&e.path, path))
            .ok()
    }

    pub fn at(&self, index: usize) -> &Entry {
        &self.entries[index]
    }

    pub fn hashes(&self, entry: &Entry) -> &[BlockHash] {
        &self.hashes[entry.first..entry.first + entry.count]
    }

    fn close_file(&mut self) {
        if self.open && !self.pending.is_empty() {
            let h = block_hash(&self.pending);
            self.hashes.push(h);
            if let Some(e) = self.entries.last_mut() {
                e.count += 1;
            }
        }
        self.pending.clear();
        self.open = false;
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        if !self.open {
            return;
        }
        self.bytes += bytes.len() as u64;
        let block = self.block as usize;
        while !bytes.is_empty() {
            let take = (block - self.pending.len()).min(bytes.len());
            if self.pending.is_empty() && take == block {
                // A whole block: hashed in place, not copied.
                self.push_hash(block_hash(&bytes[..block]));
            } else {
                self.pending.extend_from_slice(&bytes[..take]);
                if self.pending.len() == block {
                    let h = block_hash(&self.pending);
                    self.pending.clear();
                    self.push_hash(h);
                }
            }
            bytes = &bytes[take..];
        }
    }

    fn push_hash(&mut self, h: BlockHash) {
        self.hashes.push(h);
        if let Some(e) = self.entries.last_mut() {
            e.count += 1;
        }
    }
}

/// Nanoseconds since the epoch, now.
pub fn wall_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64)
}

impl Record {
    /// Starts an entry (the content, for a file, follows through `data`).
    pub fn push(&mut self, path: &[u8], meta: Meta, kind: EntryKind, link: &[u8], seen_ns: i64) {
        self.close_file();
        self.entries.push(Entry {
            path: path.into(),
            meta,
            sent: kind,
            link: link.into(),
            seen_ns,
            first: self.hashes.len(),
            count: 0,
        });
        self.open = kind == EntryKind::File;
    }
}

impl PackObserver for Record {
    fn entry(&mut self, path: &[u8], st: &libc::stat, kind: EntryKind, link: &[u8]) {
        match Meta::of(st) {
            Some(meta) => self.push(path, meta, kind, link, wall_ns()),
            None => self.close_file(),
        }
    }

    fn data(&mut self, bytes: &[u8]) {
        self.feed(bytes);
    }

    fn zeros(&mut self, mut n: u64) {
        let zeros = [0u8; 8192];
        while n > 0 {
            let k = n.min(zeros.len() as u64) as usize;
            self.feed(&zeros[..k]);
            n -= k as u64;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn meta(kind: Kind, ino: u64, nlink: u64, size: u64, ctime: i64) -> Meta {
        Meta {
            kind,
            dev: 1,
            ino,
            nlink,
            mode: 0o644,
            size,
            mtime_ns: ctime * 1_000_000_000,
            ctime_ns: ctime * 1_000_000_000,
        }
    }

    fn stat(kind: Kind, ino: u64, size: u64, ctime: i64) -> Meta {
        meta(kind, ino, 1, size, ctime)
    }

    #[test]
    fn blocks_grow_so_the_hashes_stay_small() {
        assert_eq!(block_size(0), MIN_BLOCK);
        assert_eq!(block_size(MIN_BLOCK * MAX_BLOCKS), MIN_BLOCK);
        assert_eq!(block_size(MIN_BLOCK * MAX_BLOCKS + 1), 2 * MIN_BLOCK);
        let tb = 1u64 << 40;
        assert!(tb.div_ceil(block_size(tb)) <= MAX_BLOCKS);
        assert_eq!(block_size(u64::MAX), MAX_BLOCK);
    }

    #[test]
    fn the_record_hashes_the_bytes_sent_in_blocks_whatever_the_pieces() {
        let mut r = Record::new(4);
        r.push(b"d", stat(Kind::Dir, 1, 0, 0), EntryKind::Dir, b"", 0);
        r.push(b"d/f", stat(Kind::File, 2, 10, 0), EntryKind::File, b"", 0);
        r.data(b"abc");
        r.data(b"defgh");
        r.zeros(2);
        r.push(
            b"d/l",
            stat(Kind::Symlink, 3, 0, 0),
            EntryKind::Symlink,
            b"f",
            0,
        );
        r.push(b"a", stat(Kind::File, 4, 4, 0), EntryKind::File, b"", 0);
        r.data(b"wxyz");
        r.seal();
        let paths: Vec<&[u8]> = r.entries().iter().map(|e| &e.path[..]).collect();
        assert_eq!(paths, vec![&b"a"[..], b"d", b"d/f", b"d/l"]);
        let f = r.at(r.find(b"d/f").unwrap());
        assert_eq!(
            r.hashes(f),
            &[
                block_hash(b"abcd"),
                block_hash(b"efgh"),
                block_hash(&[0, 0])
            ]
        );
        assert_eq!(
            r.hashes(r.at(r.find(b"a").unwrap())),
            &[block_hash(b"wxyz")]
        );
        assert!(r.hashes(r.at(r.find(b"d").unwrap())).is_empty());
        assert_eq!(r.find(b"nope"), None);
        assert_eq!(r.bytes, 14);
    }

    #[test]
    fn walk_order_is_component_wise() {
        // Bytewise `a-c` < `a/b`, but the walk visits `a` (and `a/b`) first.
        assert_eq!(walk_order(b"a/b", b"a-c"), Ordering::Less);
        assert_eq!(walk_order(b"a", b"a/b"), Ordering::Less);
        assert_eq!(walk_order(b"a/b", b"a/b"), Ordering::Equal);
        assert_eq!(walk_order(b"b", b"a/z"), Ordering::Greater);
    }

    fn entry(meta: Meta, seen_ns: i64) -> Entry {
        Entry {
            path: b"f".to_vec().into(),
            meta,
            sent: EntryKind::File,
            link: Box::default(),
            seen_ns,
            first: 0,
            count: 0,
        }
    }

    #[test]
    fn any_stat_difference_is_a_change_and_a_racy_ctime_always_is() {
        let now = wall_ns();
        let old = now - 10 * RACY_NS;
        let m = stat(Kind::File, 7, 100, old / 1_000_000_000);
        let was = entry(m, now);
        assert!(!changed(&was, &m, b""), "same stat, old ctime: unchanged");
        for edit in [
            |m: &mut Meta| m.ino += 1,
            |m: &mut Meta| m.size += 1,
            |m: &mut Meta| m.mode ^= 0o100,
            |m: &mut Meta| m.mtime_ns += 1,
            |m: &mut Meta| m.ctime_ns += 1,
            |m: &mut Meta| m.nlink += 1,
            |m: &mut Meta| m.kind = Kind::Dir,
        ] {
            let mut n = m;
            edit(&mut n);
            assert!(changed(&was, &n, b""), "{n:?}");
        }
        // Same stat, but ctime within 2 s before it was seen: the write
        // that followed in the same tick cannot be ruled out.
        let mut racy = m;
        racy.ctime_ns = now - RACY_NS + 1;
        assert!(changed(&entry(racy, now), &racy, b""));
        racy.ctime_ns = now - RACY_NS;
        assert!(changed(&entry(racy, now), &racy, b""));
        racy.ctime_ns = now - RACY_NS - 1;
        assert!(!changed(&entry(racy, now), &racy, b""));
        // A symlink retargeted (same everything else) is a change.
        let mut l = m;
        l.kind = Kind::Symlink;
        let mut was = entry(l, now);
        was.link = b"old".to_vec().into();
        assert!(changed(&was, &l, b"new"));
        assert!(!changed(&was, &l, b"old"));
    }
}
