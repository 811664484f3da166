//! Sparse files: the one `Sparse` map every form decodes to, the old GNU
//! `S` header's slots and extension blocks, and the PAX 1.0 map at the
//! start of an entry's data.

use super::decode::parse_number;
use super::pax::parse_decimal;
use super::{BLOCK, MAX_SPARSE_REGIONS};

/// Data regions of a sparse file: (offset, length), in order.
pub type Regions = Vec<(u64, u64)>;

/// A sparse file: data regions (offset, length) in order, and the size of
/// the file they belong to. The entry's data is the regions' bytes back to
/// back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sparse {
    pub regions: Vec<(u64, u64)>,
    pub real_size: u64,
}

impl Sparse {
    /// Checks that regions are ordered, do not overlap, lie within the
    /// file, and that their lengths add up to `data` stored bytes.
    pub fn validate(&self, data: u64) -> Result<(), String> {
        if self.regions.len() > MAX_SPARSE_REGIONS {
            return Err("sparse map has too many regions".into());
        }
        let mut end: u64 = 0;
        let mut sum: u64 = 0;
        for &(off, len) in &self.regions {
            let stop = off.checked_add(len).ok_or("sparse region out of range")?;
            if off < end || stop > self.real_size {
                return Err("sparse map is out of order or past the file's end".into());
            }
            end = stop;
            sum = sum.checked_add(len).ok_or("sparse region out of range")?;
        }
        if sum != data {
            return Err("sparse map does not match the entry's data size".into());
        }
        Ok(())
    }
}

/// Reads `count` (offset, length) pairs of 12-byte numbers from `f`,
/// stopping at the first empty slot.
pub(super) fn gnu_sparse_slots(f: &[u8], out: &mut Vec<(u64, u64)>) -> Result<(), String> {
    for slot in f.chunks_exact(24) {
        if slot[0] == 0 {
            break;
        }
        let off = parse_number(&slot[..12]).map_err(|e| format!("sparse offset: {e}"))?;
        let len = parse_number(&slot[12..]).map_err(|e| format!("sparse length: {e}"))?;
        out.push((off, len));
    }
    Ok(())
}

/// Decodes one old GNU sparse extension block: 21 more regions and
/// whether another block follows.
pub fn decode_gnu_sparse_ext(b: &[u8; BLOCK], out: &mut Vec<(u64, u64)>) -> Result<bool, String> {
    gnu_sparse_slots(&b[..21 * 24], out)?;
    Ok(b[504] != 0)
}

/// Parses the PAX 1.0 sparse map at the start of an entry's data: decimal
/// numbers each ended by a newline (the count, then offset/length pairs).
/// Returns `None` while `data` does not yet hold the whole map, else the
/// regions and the map's length in bytes (before block padding).
pub fn parse_sparse_map_1_0(data: &[u8]) -> Result<Option<(Regions, usize)>, String> {
    let bad = || "malformed sparse map".to_string();
    let mut pos = 0;
    let next = |pos: &mut usize| -> Result<Option<u64>, String> {
        let Some(nl) = data[*pos..].iter().position(|&b| b == b'\n') else {
            if data.len() - *pos > 20 {
                return Err(bad());
            }
            return Ok(None);
        };
        let v = parse_decimal(&data[*pos..*pos + nl]).ok_or_else(bad)?;
        *pos += nl + 1;
        Ok(Some(v))
    };
    let Some(count) = next(&mut pos)? else {
        return Ok(None);
    };
    if count > MAX_SPARSE_REGIONS as u64 {
        return Err("sparse map has too many regions".into());
    }
    let mut regions = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let Some(off) = next(&mut pos)? else {
            return Ok(None);
        };
        let Some(len) = next(&mut pos)? else {
            return Ok(None);
        };
        regions.push((off, len));
    }
    Ok(Some((regions, pos)))
}
