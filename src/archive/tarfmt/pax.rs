//! PAX extended headers: `"<len> key=value\n"` records into `Overrides`,
//! including the three PAX forms of GNU sparse files.

use super::MAX_SPARSE_REGIONS;

/// Overrides from a PAX extended header (or GNU long name/link records).
/// Owners are not kept: extraction applies the configured owner instead.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub path: Option<Vec<u8>>,
    pub link: Option<Vec<u8>>,
    pub size: Option<u64>,
    pub mtime: Option<(i64, u32)>,
    /// GNU sparse records (PAX 0.0, 0.1 and 1.0).
    pub sparse: SparseRecords,
}

/// What the `GNU.sparse.*` PAX records said.
#[derive(Debug, Default, Clone)]
pub struct SparseRecords {
    /// The real name (`GNU.sparse.name`, 0.1 and 1.0).
    pub name: Option<Vec<u8>>,
    /// The real size (`GNU.sparse.size` or `GNU.sparse.realsize`).
    pub real_size: Option<u64>,
    /// Regions from `GNU.sparse.map` or `offset`/`numbytes` pairs.
    pub regions: Vec<(u64, u64)>,
    /// A 0.0 `offset` still waiting for its `numbytes`.
    pending_offset: Option<u64>,
    /// `GNU.sparse.major` = 1: the map is in the data (format 1.0).
    pub map_in_data: bool,
}

impl SparseRecords {
    /// Whether the PAX header described a sparse file at all.
    pub fn present(&self) -> bool {
        self.real_size.is_some() || self.map_in_data
    }
}

fn parse_map(v: &[u8], out: &mut Vec<(u64, u64)>) -> Option<()> {
    if v.is_empty() {
        return Some(());
    }
    let nums: Vec<u64> = v
        .split(|&b| b == b',')
        .map(parse_decimal)
        .collect::<Option<_>>()?;
    if nums.len() % 2 != 0 || nums.len() / 2 > MAX_SPARSE_REGIONS {
        return None;
    }
    out.extend(nums.chunks_exact(2).map(|p| (p[0], p[1])));
    Some(())
}

pub(super) fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 20 {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// `seconds[.fraction]`, possibly negative.
pub(super) fn parse_pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = int.parse().ok()?;
    let mut nanos: u32 = 0;
    for (i, c) in frac.bytes().take(9).enumerate() {
        if !c.is_ascii_digit() {
            return None;
        }
        nanos += (c - b'0') as u32 * 10u32.pow(8 - i as u32);
    }
    if neg {
        // -1.5 means 1.5 s before the epoch.
        if nanos > 0 {
            Some((-secs - 1, 1_000_000_000 - nanos))
        } else {
            Some((-secs, 0))
        }
    } else {
        Some((secs, nanos))
    }
}

/// Parses PAX records (`"<len> key=value\n"`) into `o`.
pub fn parse_pax(mut data: &[u8], o: &mut Overrides) -> Result<(), String> {
    let bad = || "malformed PAX header".to_string();
    while !data.is_empty() {
        // Some writers pad the data with NULs.
        if data.iter().all(|&b| b == 0) {
            break;
        }
        let sp = data.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let len = parse_decimal(&data[..sp]).ok_or_else(bad)? as usize;
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(bad());
        }
        let rec = &data[sp + 1..len - 1];
        let eq = rec.iter().position(|&b| b == b'=').ok_or_else(bad)?;
        let (key, value) = (&rec[..eq], &rec[eq + 1..]);
        let owned = || (!value.is_empty()).then(|| value.to_vec());
        match key {
            b"path" => o.path = owned(),
            b"linkpath" => o.link = owned(),
            b"size" => o.size = Some(parse_decimal(value).ok_or_else(bad)?),
            b"mtime" => o.mtime = Some(parse_pax_time(value).ok_or_else(bad)?),
            b"uid" | b"gid" => {
                parse_decimal(value).ok_or_else(bad)?;
            }
            b"GNU.sparse.name" => o.sparse.name = owned(),
            b"GNU.sparse.size" | b"GNU.sparse.realsize" => {
                o.sparse.real_size = Some(parse_decimal(value).ok_or_else(bad)?)
            }
            b"GNU.sparse.major" => o.sparse.map_in_data = value == b"1",
            b"GNU.sparse.map" => parse_map(value, &mut o.sparse.regions).ok_or_else(bad)?,
            b"GNU.sparse.offset" => {
                o.sparse.pending_offset = Some(parse_decimal(value).ok_or_else(bad)?)
            }
            b"GNU.sparse.numbytes" => {
                let off = o.sparse.pending_offset.take().ok_or_else(bad)?;
                let len = parse_decimal(value).ok_or_else(bad)?;
                if o.sparse.regions.len() >= MAX_SPARSE_REGIONS {
                    return Err("sparse map has too many regions".into());
                }
                o.sparse.regions.push((off, len));
            }
            _ => {}
        }
        data = &data[len..];
    }
    Ok(())
}
