//! Header parameters: the `value; a=b; c="d"` grammar shared by the body's
//! Content-Type and each part's Content-Disposition, the boundary that the
//! Content-Type carries (valid, random, read back and announced), and the
//! quoting the writer uses for a parameter value.

use std::io;

use super::limits::MAX_BOUNDARY_LEN;

/// A fresh random boundary: 60 hex characters, like Go's `mime/multipart`.
pub fn random_boundary() -> String {
    let mut bytes = [0u8; 30];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: a boundary only has to be unlikely to occur in
        // the data, so time, pid and a counter through SHA-256 will do.
        use sha2::{Digest, Sha256};
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut h = Sha256::new();
        h.update(now.to_le_bytes());
        h.update(std::process::id().to_le_bytes());
        h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        bytes.copy_from_slice(&h.finalize()[..30]);
    }
    hex::encode(bytes)
}

/// Whether `boundary` is a legal RFC 2046 boundary: 1–70 `bchars`, not
/// ending in a space. The parser relies on it holding no CR or LF.
pub fn is_valid_boundary(boundary: &str) -> bool {
    let b = boundary.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_BOUNDARY_LEN
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&c))
        && b[b.len() - 1] != b' '
}

/// The boundary of a `multipart/form-data` Content-Type, None if the type
/// is not multipart/form-data or has no (valid) boundary.
pub fn boundary_from_content_type(content_type: &str) -> Option<String> {
    let (media_type, params) = parse_params(content_type)?;
    if !media_type
        .trim()
        .eq_ignore_ascii_case("multipart/form-data")
    {
        return None;
    }
    let boundary = params.into_iter().find(|(k, _)| k == "boundary")?.1;
    is_valid_boundary(&boundary).then_some(boundary)
}

/// The Content-Type header value for a body written with `boundary`.
pub fn form_data_content_type(boundary: &str) -> String {
    // Quote only when needed (tspecials or space), as Go does.
    if boundary.bytes().any(|c| b"()<>@,;:\\\"/[]?= ".contains(&c)) {
        format!("multipart/form-data; boundary=\"{boundary}\"")
    } else {
        format!("multipart/form-data; boundary={boundary}")
    }
}

/// Splits `value; a=b; c="d"` into the leading value and its parameters
/// (names lowercased, quoted strings unescaped). Parameters without `=` are
/// skipped; an unterminated quoted string makes the whole header invalid.
pub(super) fn parse_params(header: &str) -> Option<(&str, Vec<(String, String)>)> {
    let (head, rest) = match header.find(';') {
        Some(i) => (&header[..i], &header[i..]),
        None => (header, ""),
    };
    let b = rest.as_bytes();
    let mut params = Vec::new();
    let mut i = 0;
    loop {
        while i < b.len() && matches!(b[i], b';' | b' ' | b'\t') {
            i += 1;
        }
        if i == b.len() {
            break;
        }
        let name_start = i;
        while i < b.len() && b[i] != b'=' && b[i] != b';' {
            i += 1;
        }
        let name = rest[name_start..i].trim().to_ascii_lowercase();
        if i == b.len() || b[i] == b';' {
            continue;
        }
        i += 1;
        while i < b.len() && matches!(b[i], b' ' | b'\t') {
            i += 1;
        }
        let value = if i < b.len() && b[i] == b'"' {
            i += 1;
            let mut v = Vec::new();
            let mut closed = false;
            while i < b.len() {
                match b[i] {
                    b'\\' if i + 1 < b.len() => {
                        v.push(b[i + 1]);
                        i += 2;
                    }
                    b'"' => {
                        closed = true;
                        i += 1;
                        break;
                    }
                    c => {
                        v.push(c);
                        i += 1;
                    }
                }
            }
            if !closed {
                return None;
            }
            while i < b.len() && b[i] != b';' {
                i += 1;
            }
            // Only ASCII bytes were dropped, so this stays UTF-8.
            String::from_utf8(v).ok()?
        } else {
            let start = i;
            while i < b.len() && b[i] != b';' {
                i += 1;
            }
            rest[start..i].trim().to_string()
        };
        params.push((name, value));
    }
    Some((head, params))
}

/// Quotes a Content-Disposition parameter value the way Go and Python
/// unquote it; CR/LF would let a value inject headers, so they are refused.
pub(super) fn quote_param(value: &str) -> io::Result<String> {
    if value.contains(['\r', '\n', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "multipart part name or filename contains CR, LF or NUL",
        ));
    }
    Ok(value.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_from_content_type_cases() {
        let ok: &[(&str, &str)] = &[
            ("multipart/form-data; boundary=abc", "abc"),
            ("Multipart/Form-Data;boundary=abc", "abc"),
            (
                "multipart/form-data; charset=utf-8; BOUNDARY=\"a b:c\"",
                "a b:c",
            ),
            ("multipart/form-data; boundary=\"q\\=x\"; other=1", "q=x"),
            ("  multipart/form-data ;  boundary = abc ; x=y", "abc"),
            (
                "multipart/form-data; flag; boundary=------------------------d74496d66958873e",
                "------------------------d74496d66958873e",
            ),
        ];
        for (ct, want) in ok {
            assert_eq!(
                boundary_from_content_type(ct).as_deref(),
                Some(*want),
                "{ct}"
            );
        }
        let none = [
            "multipart/mixed; boundary=abc",
            "application/json",
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "multipart/form-data; boundary=\"unterminated",
            "multipart/form-data; boundary=\"q\\\"x\"",
            "multipart/form-data; boundary=bad<char>",
            &format!("multipart/form-data; boundary={}", "a".repeat(71)),
        ];
        for ct in none {
            assert_eq!(boundary_from_content_type(ct), None, "{ct}");
        }
        let b = random_boundary();
        assert_eq!(b.len(), 60);
        assert_ne!(b, random_boundary());
        assert_eq!(
            boundary_from_content_type(&form_data_content_type(&b)),
            Some(b)
        );
        assert_eq!(
            boundary_from_content_type(&form_data_content_type("a b")).as_deref(),
            Some("a b")
        );
    }
}
