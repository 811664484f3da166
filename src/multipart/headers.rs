//! One part's header block: the lines between a delimiter and the blank
//! line, bounded to [`MAX_PART_HEADERS`] lines, read into a [`PartInfo`].
//! Every part needs a `form-data` Content-Disposition with a `name`.

use super::limits::MAX_PART_HEADERS;
use super::params::parse_params;
use super::{malformed, MultipartError, PartInfo};

/// Parses one part's header block (without the blank line ending it).
pub(super) fn parse_part_headers(block: &[u8]) -> Result<PartInfo, MultipartError> {
    let text = std::str::from_utf8(block).map_err(|_| malformed("part headers are not UTF-8"))?;
    let mut headers: Vec<(String, String)> = Vec::new();
    if !text.is_empty() {
        for line in text.split("\r\n") {
            if line.contains(['\r', '\n', '\0']) {
                return Err(malformed("bare CR, LF or NUL in part headers"));
            }
            if line.starts_with([' ', '\t']) {
                // An obsolete folded line continues the previous header.
                let last = headers
                    .last_mut()
                    .ok_or_else(|| malformed("part headers start with a continuation line"))?;
                last.1.push(' ');
                last.1.push_str(line.trim());
                continue;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| malformed("part header line without a colon"))?;
            if name.is_empty() || name.contains([' ', '\t']) {
                return Err(malformed("invalid part header name"));
            }
            headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
            if headers.len() > MAX_PART_HEADERS {
                return Err(malformed(format!(
                    "more than {MAX_PART_HEADERS} part headers"
                )));
            }
        }
    }

    let mut disposition = None;
    let mut content_type = None;
    for (name, value) in headers {
        let slot = match name.as_str() {
            "content-disposition" => &mut disposition,
            "content-type" => &mut content_type,
            _ => continue,
        };
        if slot.is_some() {
            return Err(malformed(format!("duplicate {name} part header")));
        }
        *slot = Some(value);
    }
    let disposition = disposition.ok_or_else(|| malformed("part without Content-Disposition"))?;
    let (kind, params) = parse_params(&disposition)
        .ok_or_else(|| malformed("unterminated quoted string in Content-Disposition"))?;
    if !kind.trim().eq_ignore_ascii_case("form-data") {
        return Err(malformed("part Content-Disposition is not form-data"));
    }
    let mut name = None;
    let mut filename = None;
    for (key, value) in params {
        match key.as_str() {
            "name" if name.is_none() => name = Some(value),
            "filename" if filename.is_none() => filename = Some(value),
            _ => {}
        }
    }
    Ok(PartInfo {
        name: name.ok_or_else(|| malformed("part Content-Disposition without a name"))?,
        filename,
        content_type,
    })
}
