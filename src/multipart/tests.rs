//! The multipart tests that cross files: what the writer writes, the
//! reader and the byte-fed parser read back, under every split of the
//! input; truncation, lookalike boundaries, header bombs and malformed
//! framing. Boundary and Content-Type cases sit in `params.rs`.

use std::io::{self, Read, Write};

use super::limits::READ_WINDOW;
use super::*;

const B: &str = "X-BOUNDARY-1234";

fn part(name: &str, filename: Option<&str>, ct: Option<&str>) -> PartInfo {
    PartInfo {
        name: name.into(),
        filename: filename.map(Into::into),
        content_type: ct.map(Into::into),
    }
}

fn write_body(boundary: &str, parts: &[(PartInfo, Vec<u8>)]) -> Vec<u8> {
    let mut w = MultipartWriter::new(Vec::new(), boundary);
    for (info, data) in parts {
        w.begin_part(info).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap()
}

/// A reader handing out at most `sizes[i % len]` bytes per call.
struct Dribble<'a> {
    data: &'a [u8],
    pos: usize,
    sizes: Vec<usize>,
    calls: usize,
}

impl<'a> Dribble<'a> {
    fn new(data: &'a [u8], sizes: Vec<usize>) -> Self {
        Dribble {
            data,
            pos: 0,
            sizes,
            calls: 0,
        }
    }
}

impl Read for Dribble<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let want = self.sizes[self.calls % self.sizes.len()].max(1);
        self.calls += 1;
        let n = want.min(out.len()).min(self.data.len() - self.pos);
        out[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

type Parts = Vec<(PartInfo, Vec<u8>)>;

/// Reads every part, reading bodies with an `out_size` buffer.
fn read_parts<R: Read>(r: R, boundary: &str, out_size: usize) -> Result<Parts, String> {
    let mut reader = MultipartReader::new(r, boundary);
    let mut parts = Vec::new();
    while let Some(info) = reader
        .next_part()
        .map_err(|e| format!("next_part: {e:?}"))?
    {
        let mut body = Vec::new();
        let mut chunk = vec![0u8; out_size];
        let mut pb = reader.part_body();
        loop {
            match pb.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("body: {:?}: {e}", e.kind())),
            }
        }
        parts.push((info, body));
    }
    Ok(parts)
}

/// Drives the sans-I/O parser directly, growing the input one byte at
/// a time whenever it asks for more.
fn parse_bytewise(body: &[u8], boundary: &str) -> Result<Parts, MultipartError> {
    let mut p = Parser::new(boundary)?;
    let mut window: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut parts: Parts = Vec::new();
    loop {
        let eof = fed == body.len();
        let step = p.parse(&window, eof, 7)?;
        let consumed: Vec<u8> = window.drain(..step.consumed).collect();
        match step.event {
            Event::NeedMore => {
                assert!(!eof, "NeedMore at eof must be Truncated");
                window.push(body[fed]);
                fed += 1;
            }
            Event::Part(info) => parts.push((info, Vec::new())),
            Event::Body(n) => {
                assert!(n > 0 && n <= 7);
                parts
                    .last_mut()
                    .unwrap()
                    .1
                    .extend_from_slice(&consumed[consumed.len() - n..]);
            }
            Event::PartEnd => {}
            Event::End => return Ok(parts),
        }
    }
}

fn sample_parts() -> Parts {
    let mut binary: Vec<u8> = (0..5000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    // Things that look like framing but are not.
    binary.extend_from_slice(b"\r\n--X-BOUNDARY-123\r\n--X-BOUNDARY-1234x\r\n-\r\r\n\r\n");
    vec![
        (
            part("configuration", None, Some("application/json")),
            br#"{"uuid":"u"}"#.to_vec(),
        ),
        (
            part(
                "archive",
                Some("archive.tar.gz"),
                Some("application/octet-stream"),
            ),
            binary,
        ),
        (part("checksum", None, None), b"ab".repeat(32)),
    ]
}

#[test]
fn writer_layout_matches_go_mime_multipart() {
    let body = write_body(
        "abc",
        &[
            (
                part(
                    "archive",
                    Some("archive.tar.gz"),
                    Some("application/octet-stream"),
                ),
                b"DATA".to_vec(),
            ),
            (part("checksum", None, None), b"00ff".to_vec()),
        ],
    );
    let expected = "--abc\r\nContent-Disposition: form-data; name=\"archive\"; filename=\"archive.tar.gz\"\r\n\
                    Content-Type: application/octet-stream\r\n\r\nDATA\r\n\
                    --abc\r\nContent-Disposition: form-data; name=\"checksum\"\r\n\r\n00ff\r\n--abc--\r\n";
    assert_eq!(String::from_utf8(body).unwrap(), expected);
}

#[test]
fn writer_refuses_bad_input() {
    let mut w = MultipartWriter::new(Vec::new(), B);
    assert_eq!(
        w.write(b"x").unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    let err = w
        .begin_part(&part("a\r\nX-Evil: 1", None, None))
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    let mut bad = MultipartWriter::new(Vec::new(), "bad\rboundary");
    assert!(bad.begin_part(&part("a", None, None)).is_err());
    assert!(MultipartWriter::new(Vec::new(), &"a".repeat(71))
        .finish()
        .is_err());
}

#[test]
fn writer_escapes_quotes_and_reader_unescapes() {
    let info = part("we\"ird\\name", Some("a \"b\".tgz"), None);
    let body = write_body(B, &[(info.clone(), b"x".to_vec())]);
    assert!(
        String::from_utf8_lossy(&body).contains(r#"name="we\"ird\\name"; filename="a \"b\".tgz""#)
    );
    let parts = read_parts(&body[..], B, 64).unwrap();
    assert_eq!(parts, vec![(info, b"x".to_vec())]);
}

#[test]
fn round_trip() {
    let parts = sample_parts();
    let body = write_body(B, &parts);
    assert_eq!(read_parts(&body[..], B, 8192).unwrap(), parts);
}

#[test]
fn parser_fed_byte_by_byte() {
    let parts = sample_parts();
    let body = write_body(B, &parts);
    assert_eq!(parse_bytewise(&body, B).unwrap(), parts);
}

#[test]
fn one_byte_reads_and_one_byte_buffers() {
    let parts = sample_parts();
    let body = write_body(B, &parts);
    assert_eq!(
        read_parts(Dribble::new(&body, vec![1]), B, 1).unwrap(),
        parts
    );
}

#[test]
fn random_split_points() {
    let parts = sample_parts();
    let body = write_body(B, &parts);
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..200 {
        let sizes: Vec<usize> = (0..16).map(|_| (next() % 97) as usize + 1).collect();
        let out_size = (next() % 300) as usize + 1;
        let got = read_parts(Dribble::new(&body, sizes.clone()), B, out_size).unwrap();
        assert_eq!(got, parts, "sizes {sizes:?} out {out_size}");
    }
}

#[test]
fn boundary_lookalikes_stay_in_the_data() {
    let tricky: &[&[u8]] = &[
        b"--X-BOUNDARY-1234 in the middle, not after CRLF",
        b"\r\n--X-BOUNDARY-1234x",
        b"\r\n--X-BOUNDARY-123",
        b"\r\n--X-BOUNDARY-1234-x",
        b"\r\n--X-BOUNDARY-1234 \tx\r\n",
        b"\r\n--X-BOUNDARY-1234\rx",
        b"\n--X-BOUNDARY-1234\r\n",
        b"ends with CR\r",
        b"ends with CRLF\r\n",
        b"ends with CRLF-\r\n-",
        b"",
    ];
    for data in tricky {
        let parts = vec![
            (part("f", None, None), data.to_vec()),
            (part("g", None, None), data.to_vec()),
        ];
        let body = write_body(B, &parts);
        assert_eq!(
            read_parts(&body[..], B, 3).unwrap(),
            parts,
            "{:?}",
            String::from_utf8_lossy(data)
        );
        assert_eq!(parse_bytewise(&body, B).unwrap(), parts);
    }
}

#[test]
fn truncation_at_every_offset_is_an_error() {
    let parts = vec![
        (
            part("archive", Some("archive.tar.gz"), None),
            b"0123456789\r\n--X".to_vec(),
        ),
        (part("checksum", None, None), b"abcdef".to_vec()),
    ];
    let body = write_body(B, &parts);
    // The closing delimiter is complete once `--B--` is there; the final
    // CRLF belongs to the epilogue.
    let complete = body.len() - 2;
    for cut in 0..body.len() {
        let got = read_parts(&body[..cut], B, 4);
        if cut >= complete {
            assert_eq!(got.unwrap(), parts, "cut {cut}");
        } else {
            assert!(got.is_err(), "cut {cut} parsed: {got:?}");
            assert!(parse_bytewise(&body[..cut], B).is_err(), "cut {cut}");
        }
    }
}

#[test]
fn truncation_errors_have_the_documented_kinds() {
    let body = write_body(B, &[(part("archive", None, None), vec![7u8; 100])]);
    let cut = &body[..body.len() - 30];
    let mut r = MultipartReader::new(cut, B);
    assert!(r.next_part().unwrap().is_some());
    let mut sink = Vec::new();
    let err = r.part_body().read_to_end(&mut sink).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);

    // The part is complete but the closing delimiter is missing.
    let cut = &body[..body.len() - 4];
    let mut r = MultipartReader::new(cut, B);
    assert!(r.next_part().unwrap().is_some());
    assert!(matches!(r.next_part(), Err(MultipartError::Truncated)));

    assert!(matches!(
        MultipartReader::new(&b""[..], B).next_part(),
        Err(MultipartError::Truncated)
    ));
}

#[test]
fn skipping_unread_parts_and_duplicates_in_order() {
    let parts = vec![
        (part("checksum", None, None), b"first".to_vec()),
        (part("archive", None, None), vec![1u8; 200_000]),
        (part("checksum", None, None), b"second".to_vec()),
    ];
    let body = write_body(B, &parts);
    let mut r = MultipartReader::new(Dribble::new(&body, vec![4096]), B);
    let names: Vec<String> =
        std::iter::from_fn(|| r.next_part().unwrap().map(|p| p.name)).collect();
    assert_eq!(names, ["checksum", "archive", "checksum"]);
    // After the end: stays at the end, bodies are empty.
    assert!(r.next_part().unwrap().is_none());
    let mut sink = Vec::new();
    assert_eq!(r.part_body().read_to_end(&mut sink).unwrap(), 0);
}

#[test]
fn partly_read_body_then_next_part() {
    let parts = sample_parts();
    let body = write_body(B, &parts);
    let mut r = MultipartReader::new(&body[..], B);
    r.next_part().unwrap();
    r.next_part().unwrap();
    let mut first = [0u8; 10];
    r.part_body().read_exact(&mut first).unwrap();
    assert_eq!(&first, &parts[1].1[..10]);
    let info = r.next_part().unwrap().unwrap();
    let mut rest = Vec::new();
    r.part_body().read_to_end(&mut rest).unwrap();
    assert_eq!((info, rest), parts[2].clone());
}

#[test]
fn preamble_padding_and_epilogue() {
    let body = b"this is a preamble\r\n--X-BOUNDARY-1234 \t \r\n\
                 Content-Disposition: form-data; name=a\r\n\r\nA\r\n\
                 --X-BOUNDARY-1234\t\r\ncontent-disposition: FORM-DATA; name=\"b\"; filename=f.txt\r\n\
                 CONTENT-TYPE: text/plain\r\n\r\nB\r\n--X-BOUNDARY-1234--  epilogue \r\n--X-BOUNDARY-1234\r\n";
    let parts = read_parts(&body[..], B, 16).unwrap();
    assert_eq!(
        parts,
        vec![
            (part("a", None, None), b"A".to_vec()),
            (part("b", Some("f.txt"), Some("text/plain")), b"B".to_vec()),
        ]
    );
    assert_eq!(parse_bytewise(body, B).unwrap(), parts);
    // Folded header lines are joined.
    let folded = b"--X-BOUNDARY-1234\r\nContent-Disposition: form-data;\r\n name=\"c\"\r\n\r\nC\r\n--X-BOUNDARY-1234--";
    assert_eq!(
        read_parts(&folded[..], B, 16).unwrap(),
        vec![(part("c", None, None), b"C".to_vec())]
    );
}

#[test]
fn no_parts_and_lf_only_framing() {
    assert_eq!(
        read_parts(&b"--X-BOUNDARY-1234--\r\n"[..], B, 8).unwrap(),
        vec![]
    );
    let lf =
        b"--X-BOUNDARY-1234\nContent-Disposition: form-data; name=a\n\nA\n--X-BOUNDARY-1234--\n";
    assert!(read_parts(&lf[..], B, 8).is_err());
}

#[test]
fn malformed_part_headers() {
    let cases: &[(&str, &str)] = &[
        ("Content-Type: text/plain", "without Content-Disposition"),
        ("", "without Content-Disposition"),
        ("Content-Disposition: attachment; name=a", "not form-data"),
        (
            "Content-Disposition: form-data; filename=a",
            "without a name",
        ),
        ("Content-Disposition: form-data; name=\"a", "unterminated"),
        (
            "Content-Disposition: form-data; name=a\r\nContent-Disposition: form-data; name=b",
            "duplicate",
        ),
        ("Content-Disposition form-data", "without a colon"),
        (" folded: first", "continuation"),
    ];
    for (headers, why) in cases {
        let body = format!("--{B}\r\n{headers}\r\n\r\nbody\r\n--{B}--\r\n");
        match MultipartReader::new(body.as_bytes(), B).next_part() {
            Err(MultipartError::Malformed(m)) => assert!(m.contains(why), "{headers:?}: {m}"),
            other => panic!("{headers:?}: {other:?}"),
        }
    }
}

#[test]
fn header_bombs_are_bounded() {
    let extra = |n: usize| -> String { (0..n).map(|i| format!("X-H{i}: v\r\n")).collect() };
    // Content-Disposition plus 15 more is the limit.
    let ok = format!(
        "--{B}\r\nContent-Disposition: form-data; name=a\r\n{}\r\nA\r\n--{B}--",
        extra(MAX_PART_HEADERS - 1)
    );
    assert!(MultipartReader::new(ok.as_bytes(), B)
        .next_part()
        .unwrap()
        .is_some());
    let too_many = format!(
        "--{B}\r\nContent-Disposition: form-data; name=a\r\n{}\r\nA\r\n--{B}--",
        extra(MAX_PART_HEADERS)
    );
    assert!(matches!(
        MultipartReader::new(too_many.as_bytes(), B).next_part(),
        Err(MultipartError::Malformed(m)) if m.contains("part headers")
    ));

    let long = format!(
        "--{B}\r\nContent-Disposition: form-data; name=a\r\nX-Long: {}\r\n\r\nA\r\n--{B}--",
        "v".repeat(MAX_PART_HEADER_BYTES)
    );
    assert!(matches!(
        MultipartReader::new(long.as_bytes(), B).next_part(),
        Err(MultipartError::Malformed(m)) if m.contains("exceed")
    ));

    // Endless headers: refused after reading a bounded amount.
    struct Endless(usize);
    impl Read for Endless {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let prefix = format!("--{B}\r\nX: ");
            let n = out.len();
            for (i, b) in out.iter_mut().enumerate() {
                *b = prefix.as_bytes().get(self.0 + i).copied().unwrap_or(b'a');
            }
            self.0 += n;
            Ok(n)
        }
    }
    let mut r = MultipartReader::new(Endless(0), B);
    assert!(matches!(r.next_part(), Err(MultipartError::Malformed(_))));
    assert!(r.into_inner().0 <= READ_WINDOW);
}

#[test]
fn malformed_is_sticky_and_padding_is_bounded() {
    let body = format!(
        "--{B}{}\r\nContent-Disposition: form-data; name=a\r\n\r\nA\r\n--{B}--",
        " ".repeat(300)
    );
    let mut r = MultipartReader::new(body.as_bytes(), B);
    assert!(matches!(r.next_part(), Err(MultipartError::Malformed(m)) if m.contains("padding")));
    assert!(matches!(r.next_part(), Err(MultipartError::Malformed(_))));
}

#[test]
fn invalid_boundary_is_malformed() {
    for b in ["", "has\r\ncrlf", "ends with space ", &"x".repeat(71)] {
        assert!(matches!(
            MultipartReader::new(&b"--x--"[..], b).next_part(),
            Err(MultipartError::Malformed(_))
        ));
    }
    assert!(Parser::new(&"x".repeat(70)).is_ok());
}
