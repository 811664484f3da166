//! The tar format's tests: what `encode` writes decodes back, every sparse
//! form, PAX records, numbers and path components.

use super::decode::{parse_number, parse_signed, RawHeader};
use super::encode::pax_record;
use super::pax::parse_pax_time;
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
