//! Decoding one header block: checksum, numbers (octal or GNU base-256),
//! the ustar prefix, and the old GNU sparse fields, into a `RawHeader`
//! that PAX or GNU records may still override.

use super::sparse::gnu_sparse_slots;
use super::BLOCK;

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
