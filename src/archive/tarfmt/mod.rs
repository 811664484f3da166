//! The tar format as plain functions over bytes: encoding POSIX (ustar +
//! PAX) headers for packing, and decoding ustar, GNU and PAX headers for
//! extraction, with every length bounded. No I/O here.
//!
//! Sparse files are decoded in every form GNU tar writes them: the old GNU
//! type `S` header (map in the header and its extension blocks) and the
//! three PAX forms (0.0: `GNU.sparse.offset`/`numbytes` records; 0.1:
//! `GNU.sparse.map`; 1.0: the map at the start of the entry's data). The
//! result is one `Sparse` map of data regions plus the real file size.

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

/// One entry to encode. `path` is relative, without a trailing slash.
pub struct EntryHeader<'a> {
    pub path: &'a [u8],
    pub kind: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: i64,
    pub link: &'a [u8],
}

/// Writes `value` as zero-padded octal filling `field` but its last byte
/// (NUL). Returns false when it does not fit.
fn put_octal(field: &mut [u8], value: u64) -> bool {
    let digits = field.len() - 1;
    if digits < 22 && value >= 1u64 << (3 * digits) {
        return false;
    }
    let mut v = value;
    for i in (0..digits).rev() {
        field[i] = b'0' + (v & 7) as u8;
        v >>= 3;
    }
    field[digits] = 0;
    true
}

fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    // The length prefix counts itself, so find the fixed point.
    let body = 1 + key.len() + 1 + value.len() + 1;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn finish_header(h: &mut [u8; BLOCK]) {
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    put_octal(&mut h[148..155], sum as u64);
    h[155] = b' ';
}

fn ustar_header(
    name: &[u8],
    kind: u8,
    mode: u32,
    ids: (u64, u64),
    size: u64,
    mtime: u64,
    link: &[u8],
) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    put_octal(&mut h[100..108], (mode & 0o7777) as u64);
    put_octal(&mut h[108..116], ids.0);
    put_octal(&mut h[116..124], ids.1);
    put_octal(&mut h[124..136], size);
    put_octal(&mut h[136..148], mtime);
    h[156] = kind;
    let l = link.len().min(100);
    h[157..157 + l].copy_from_slice(&link[..l]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    put_octal(&mut h[329..337], 0);
    put_octal(&mut h[337..345], 0);
    h
}

/// Appends the header block(s) for `e` to `out`: a PAX extended header
/// first when a field does not fit ustar, then the ustar header. Directory
/// paths get their trailing slash here.
pub fn encode(e: &EntryHeader<'_>, out: &mut Vec<u8>) {
    let mut path = e.path.to_vec();
    if e.kind == DIRECTORY {
        path.push(b'/');
    }
    let mut pax = Vec::new();
    let fits = |v: u64, digits: u32| v < 1u64 << (3 * digits);
    if path.len() > 100 {
        pax_record(&mut pax, "path", &path);
    }
    if e.link.len() > 100 {
        pax_record(&mut pax, "linkpath", e.link);
    }
    if !fits(e.size, 11) {
        pax_record(&mut pax, "size", e.size.to_string().as_bytes());
    }
    if !fits(e.uid, 7) {
        pax_record(&mut pax, "uid", e.uid.to_string().as_bytes());
    }
    if !fits(e.gid, 7) {
        pax_record(&mut pax, "gid", e.gid.to_string().as_bytes());
    }
    let mtime_ok = e.mtime >= 0 && fits(e.mtime as u64, 11);
    if !mtime_ok {
        pax_record(&mut pax, "mtime", e.mtime.to_string().as_bytes());
    }
    let clamp = |v: u64, digits: u32| if fits(v, digits) { v } else { 0 };
    let mtime = if mtime_ok { e.mtime as u64 } else { 0 };
    if !pax.is_empty() {
        let mut h = ustar_header(
            b"././@PaxHeader",
            b'x',
            0o644,
            (0, 0),
            pax.len() as u64,
            mtime,
            b"",
        );
        finish_header(&mut h);
        out.extend_from_slice(&h);
        let padded = pax.len().div_ceil(BLOCK) * BLOCK;
        pax.resize(padded, 0);
        out.extend_from_slice(&pax);
    }
    let mut h = ustar_header(
        &path,
        e.kind,
        e.mode,
        (clamp(e.uid, 7), clamp(e.gid, 7)),
        clamp(e.size, 11),
        mtime,
        e.link,
    );
    finish_header(&mut h);
    out.extend_from_slice(&h);
}

/// Zero bytes needed after `size` content bytes to reach a block boundary.
pub fn padding(size: u64) -> usize {
    ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as usize
}

/// A decoded header block, before PAX/GNU overrides are applied.
#[derive(Debug, Clone)]
pub struct RawHeader {
    pub kind: u8,
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub mode: u32,
    pub size: u64,
    pub mtime: i64,
    /// Old GNU sparse (`S`): the regions in the header, whether extension
    /// blocks follow, and the real size.
    pub gnu_sparse: Option<GnuSparse>,
}

/// The sparse part of an old GNU `S` header.
#[derive(Debug, Clone)]
pub struct GnuSparse {
    pub regions: Vec<(u64, u64)>,
    pub extended: bool,
    pub real_size: u64,
}

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
fn gnu_sparse_slots(f: &[u8], out: &mut Vec<(u64, u64)>) -> Result<(), String> {
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

fn cstr_field(f: &[u8]) -> &[u8] {
    match f.iter().position(|&b| b == 0) {
        Some(i) => &f[..i],
        None => f,
    }
}

/// Octal (space/NUL padded) or GNU base-256 numbers.
pub fn parse_number(f: &[u8]) -> Result<u64, String> {
    if let Some(&first) = f.first() {
        if first & 0x80 != 0 {
            if first & 0x40 != 0 {
                return Err("negative base-256 number".into());
            }
            let mut v: u64 = (first & 0x3f) as u64;
            for &b in &f[1..] {
                if v >> 56 != 0 {
                    return Err("number too large".into());
                }
                v = (v << 8) | b as u64;
            }
            return Ok(v);
        }
    }
    let s = cstr_field(f);
    let s = trim(s);
    let mut v: u64 = 0;
    for &b in s {
        if !(b'0'..=b'7').contains(&b) {
            return Err("bad octal number".into());
        }
        v = v
            .checked_mul(8)
            .and_then(|v| v.checked_add((b - b'0') as u64))
            .ok_or("number too large")?;
    }
    Ok(v)
}

/// Like `parse_number`, but a negative GNU base-256 number (two's
/// complement, as GNU tar writes mtimes before 1970) is accepted.
pub fn parse_signed(f: &[u8]) -> Result<i64, String> {
    match f.first() {
        Some(&first) if first & 0xc0 == 0xc0 => {
            // Invert, read the magnitude as unsigned, invert back (the way
            // Go's archive/tar reads it); the top bit is the marker.
            let mut x: u64 = 0;
            for (i, &b) in f.iter().enumerate() {
                let c = if i == 0 { !b & 0x7f } else { !b };
                if x >> 56 != 0 {
                    return Err("number too large".into());
                }
                x = (x << 8) | c as u64;
            }
            if x >> 63 != 0 {
                return Err("number too large".into());
            }
            Ok(!(x as i64))
        }
        _ => Ok(parse_number(f)?.min(i64::MAX as u64) as i64),
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' '] = s {
        s = rest;
    }
    s
}

pub fn is_zero_block(b: &[u8; BLOCK]) -> bool {
    b.iter().all(|&x| x == 0)
}

/// Decodes one header block, verifying its checksum.
pub fn decode(h: &[u8; BLOCK]) -> Result<RawHeader, String> {
    let stored = parse_number(&h[148..156]).map_err(|e| format!("header checksum: {e}"))?;
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in h.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += b as u64;
        signed += b as i8 as i64;
    }
    if stored != unsigned && stored as i64 != signed {
        return Err("header checksum mismatch".into());
    }
    let num = |r: std::ops::Range<usize>, what: &str| {
        parse_number(&h[r]).map_err(|e| format!("{what}: {e}"))
    };
    let posix = &h[257..263] == b"ustar\0";
    let mut path = Vec::new();
    let prefix = cstr_field(&h[345..500]);
    if posix && !prefix.is_empty() {
        path.extend_from_slice(prefix);
        path.push(b'/');
    }
    path.extend_from_slice(cstr_field(&h[..100]));
    let gnu_sparse = if h[156] == b'S' {
        let mut regions = Vec::new();
        gnu_sparse_slots(&h[386..386 + 4 * 24], &mut regions)?;
        Some(GnuSparse {
            regions,
            extended: h[482] != 0,
            real_size: num(483..495, "sparse real size")?,
        })
    } else {
        None
    };
    Ok(RawHeader {
        kind: h[156],
        path,
        link: cstr_field(&h[157..257]).to_vec(),
        mode: num(100..108, "mode")? as u32,
        size: num(124..136, "size")?,
        mtime: parse_signed(&h[136..148]).map_err(|e| format!("mtime: {e}"))?,
        gnu_sparse,
    })
}

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

fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 20 {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// `seconds[.fraction]`, possibly negative.
fn parse_pax_time(v: &[u8]) -> Option<(i64, u32)> {
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
mod tests {
    use super::*;

    fn roundtrip(e: &EntryHeader<'_>) -> (RawHeader, Overrides, Vec<u8>) {
        let mut out = Vec::new();
        encode(e, &mut out);
        let all = out.clone();
        let first: &[u8; BLOCK] = out[..BLOCK].try_into().unwrap();
        let h = decode(first).unwrap();
        let mut o = Overrides::default();
        if h.kind == b'x' {
            parse_pax(&out[BLOCK..BLOCK + h.size as usize], &mut o).unwrap();
            let n = BLOCK + h.size.div_ceil(BLOCK as u64) as usize * BLOCK;
            let real: &[u8; BLOCK] = out[n..n + BLOCK].try_into().unwrap();
            assert_eq!(out.len(), n + BLOCK);
            return (decode(real).unwrap(), o, all);
        }
        assert_eq!(out.len(), BLOCK);
        (h, o, all)
    }

    #[test]
    fn short_entry_is_plain_ustar() {
        let (h, o, raw) = roundtrip(&EntryHeader {
            path: b"world/level.dat",
            kind: REGULAR,
            mode: 0o4755,
            uid: 1000,
            gid: 1000,
            size: 12345,
            mtime: 1_700_000_000,
            link: b"",
        });
        assert_eq!(h.path, b"world/level.dat");
        assert_eq!((h.mode, h.size, h.mtime), (0o4755, 12345, 1_700_000_000));
        assert_eq!(parse_number(&raw[108..116]).unwrap(), 1000);
        assert!(o.path.is_none() && o.size.is_none());
    }

    #[test]
    fn long_and_big_fields_use_pax() {
        let long = vec![b'a'; 300];
        let link = vec![b'b'; 200];
        let (h, o, raw) = roundtrip(&EntryHeader {
            path: &long,
            kind: SYMLINK,
            mode: 0o777,
            uid: 5_000_000,
            gid: 7,
            size: 9 << 30,
            mtime: -5,
            link: &link,
        });
        assert_eq!(h.kind, SYMLINK);
        assert_eq!(o.path.as_deref(), Some(&long[..]));
        assert_eq!(o.link.as_deref(), Some(&link[..]));
        assert_eq!(o.size, Some(9 << 30));
        assert!(String::from_utf8_lossy(&raw).contains(" uid=5000000\n"));
        assert_eq!(o.mtime, Some((-5, 0)));
    }

    #[test]
    fn directory_gets_slash() {
        let (h, _, _) = roundtrip(&EntryHeader {
            path: b"d",
            kind: DIRECTORY,
            mode: 0o755,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            link: b"",
        });
        assert_eq!(h.path, b"d/");
    }

    #[test]
    fn pax_record_length_counts_itself() {
        for n in [0usize, 1, 85, 86, 87, 95, 96, 994, 995, 996, 9990] {
            let mut out = Vec::new();
            pax_record(&mut out, "path", &vec![b'x'; n]);
            let sp = out.iter().position(|&b| b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&out[..sp]).unwrap().parse().unwrap();
            assert_eq!(len, out.len(), "value length {n}");
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number(b"0000644\0").unwrap(), 0o644);
        assert_eq!(parse_number(b"  644 \0").unwrap(), 0o644);
        assert_eq!(
            parse_number(&[0x80, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0]).unwrap(),
            1 << 33
        );
        assert!(parse_number(b"9\0").is_err());
        // GNU tar's base-256 for -1 and for 1901-12-13 (-2147483648).
        assert_eq!(parse_signed(&[0xff; 12]).unwrap(), -1);
        let mut f = [0xffu8; 12];
        f[8..].copy_from_slice(&(-2147483648i32).to_be_bytes());
        assert_eq!(parse_signed(&f).unwrap(), -2147483648);
        assert_eq!(parse_signed(b"00000000017\0").unwrap(), 15);
        assert_eq!(parse_pax_time(b"12.5"), Some((12, 500_000_000)));
        assert_eq!(parse_pax_time(b"-1.25"), Some((-2, 750_000_000)));
        assert_eq!(parse_pax_time(b"x"), None);
    }

    #[test]
    fn sparse_records_in_every_pax_form() {
        let mut o = Overrides::default();
        let mut pax = Vec::new();
        pax_record(&mut pax, "GNU.sparse.size", b"100");
        pax_record(&mut pax, "GNU.sparse.numblocks", b"2");
        pax_record(&mut pax, "GNU.sparse.offset", b"0");
        pax_record(&mut pax, "GNU.sparse.numbytes", b"10");
        pax_record(&mut pax, "GNU.sparse.offset", b"90");
        pax_record(&mut pax, "GNU.sparse.numbytes", b"10");
        parse_pax(&pax, &mut o).unwrap();
        assert_eq!(o.sparse.regions, vec![(0, 10), (90, 10)]);
        assert_eq!(o.sparse.real_size, Some(100));

        let mut o = Overrides::default();
        let mut pax = Vec::new();
        pax_record(&mut pax, "GNU.sparse.name", b"big.bin");
        pax_record(&mut pax, "GNU.sparse.size", b"100");
        pax_record(&mut pax, "GNU.sparse.map", b"0,10,90,10");
        parse_pax(&pax, &mut o).unwrap();
        assert_eq!(o.sparse.regions, vec![(0, 10), (90, 10)]);
        assert_eq!(o.sparse.name.as_deref(), Some(&b"big.bin"[..]));
        let s = Sparse {
            regions: o.sparse.regions.clone(),
            real_size: 100,
        };
        assert!(s.validate(20).is_ok());
        assert!(s.validate(21).is_err());
        let overlapping = Sparse {
            regions: vec![(0, 10), (5, 10)],
            real_size: 100,
        };
        assert!(overlapping.validate(20).is_err());
        let past_end = Sparse {
            regions: vec![(95, 10)],
            real_size: 100,
        };
        assert!(past_end.validate(10).is_err());

        assert_eq!(parse_sparse_map_1_0(b"2\n0\n10\n90").unwrap(), None);
        assert_eq!(
            parse_sparse_map_1_0(b"2\n0\n10\n90\n10\nrest").unwrap(),
            Some((vec![(0, 10), (90, 10)], 13))
        );
        assert!(parse_sparse_map_1_0(b"x\n").is_err());
        assert!(parse_sparse_map_1_0(b"999999999\n").is_err());
    }

    #[test]
    fn bad_pax_is_refused() {
        let mut o = Overrides::default();
        assert!(parse_pax(b"99 path=a\n", &mut o).is_err());
        assert!(parse_pax(b"5 a=b\n", &mut o).is_err());
        assert!(parse_pax(b"path=a\n", &mut o).is_err());
        assert!(parse_pax(b"7 a=bc\n", &mut o).is_ok());
    }

    #[test]
    fn checksum_is_verified() {
        let mut out = Vec::new();
        encode(
            &EntryHeader {
                path: b"f",
                kind: REGULAR,
                mode: 0o644,
                uid: 0,
                gid: 0,
                size: 1,
                mtime: 0,
                link: b"",
            },
            &mut out,
        );
        out[0] = b'g';
        let b: &[u8; BLOCK] = out[..BLOCK].try_into().unwrap();
        assert!(decode(b).is_err());
    }

    #[test]
    fn path_components() {
        assert_eq!(components(b"./a//b/").unwrap(), vec![&b"a"[..], b"b"]);
        assert!(components(b"./").unwrap().is_empty());
        assert!(components(b"/etc/passwd").is_err());
        assert!(components(b"a/../../b").is_err());
        assert!(components(b"..").is_err());
        assert!(components(b"a\0b").is_err());
        assert!(components(b"").is_err());
        assert!(components(&vec![b'a'; MAX_NAME + 1]).is_err());
    }
}
