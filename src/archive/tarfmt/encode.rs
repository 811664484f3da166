//! Encoding an entry's header for packing: POSIX ustar, preceded by a PAX
//! extended header when a field (path, link, size, mtime) does not fit.

use super::{BLOCK, DIRECTORY};

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

pub(super) fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
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
