//! The tar format as plain functions over bytes: encoding POSIX (ustar +
//! PAX) headers for packing, and decoding ustar, GNU and PAX headers for
//! extraction, with every length bounded. No I/O here.
//!
//! Sparse files are decoded in every form GNU tar writes them: the old GNU
//! type `S` header (map in the header and its extension blocks) and the
//! three PAX forms (0.0: `GNU.sparse.offset`/`numbytes` records; 0.1:
//! `GNU.sparse.map`; 1.0: the map at the start of the entry's data). The
//! result is one `Sparse` map of data regions plus the real file size.
//!
//! - this file: the format's constants, padding and path components;
//! - `encode.rs`: headers for packing; `decode.rs`: one header block;
//! - `pax.rs`: PAX records; `sparse.rs`: sparse maps in every form.

pub const BLOCK: usize = 512;
/// GNU tar and Python pad archives to a 10 KiB record; so do we.
pub const RECORD: usize = 20 * BLOCK;
/// Longest entry path or link target accepted (Linux PATH_MAX).
pub const MAX_NAME: usize = 4096;
/// Largest PAX extended header accepted; real ones are a few hundred bytes.
pub const MAX_PAX: u64 = 1 << 20;

pub const REGULAR: u8 = b'0';
pub const DIRECTORY: u8 = b'5';
pub const SYMLINK: u8 = b'2';
pub const HARDLINK: u8 = b'1';
/// Most data regions one sparse file may list (GNU tar writes one per
/// run of data; a real file with more is pathological).
pub const MAX_SPARSE_REGIONS: usize = 1 << 18;

mod decode;
mod encode;
mod pax;
mod sparse;

pub use decode::{decode, is_zero_block, GnuSparse};
pub use encode::{encode, EntryHeader};
pub use pax::{parse_pax, Overrides, SparseRecords};
pub use sparse::{decode_gnu_sparse_ext, parse_sparse_map_1_0, Sparse};

/// Zero bytes needed after `size` content bytes to reach a block boundary.
pub fn padding(size: u64) -> usize {
    ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as usize
}

/// Splits an entry path into the components to create beneath the root.
/// `Ok(empty)` is the root itself (`.` or `./`). Refuses absolute paths,
/// `..`, NUL bytes and over-long names.
pub fn components(path: &[u8]) -> Result<Vec<&[u8]>, ()> {
    if path.is_empty() || path.len() > MAX_NAME || path[0] == b'/' || path.contains(&0) {
        return Err(());
    }
    let mut out = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(()),
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
