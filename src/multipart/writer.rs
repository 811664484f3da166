//! The writer: parts one after the other to any `Write`, each part's body
//! streamed, never buffered. The layout matches Go's `mime/multipart`.

use std::io::{self, Write};

use super::params::{form_data_content_type, is_valid_boundary, quote_param};
use super::PartInfo;

/// Writes parts one after the other to `W`, streaming each part's body.
pub struct MultipartWriter<W: Write> {
    inner: W,
    boundary: String,
    parts: usize,
    in_part: bool,
}

impl<W: Write> MultipartWriter<W> {
    /// `boundary` is checked (RFC 2046) on the first write.
    pub fn new(inner: W, boundary: &str) -> Self {
        MultipartWriter {
            inner,
            boundary: boundary.to_string(),
            parts: 0,
            in_part: false,
        }
    }

    /// The Content-Type header value announcing this body.
    pub fn content_type(&self) -> String {
        form_data_content_type(&self.boundary)
    }

    fn check_boundary(&self) -> io::Result<()> {
        if is_valid_boundary(&self.boundary) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "invalid multipart boundary",
            ))
        }
    }

    /// Starts a part; its body is what is written next.
    pub fn begin_part(&mut self, info: &PartInfo) -> io::Result<()> {
        self.check_boundary()?;
        let mut head = String::with_capacity(160);
        if self.parts > 0 {
            head.push_str("\r\n");
        }
        head.push_str("--");
        head.push_str(&self.boundary);
        head.push_str("\r\nContent-Disposition: form-data; name=\"");
        head.push_str(&quote_param(&info.name)?);
        head.push('"');
        if let Some(filename) = &info.filename {
            head.push_str("; filename=\"");
            head.push_str(&quote_param(filename)?);
            head.push('"');
        }
        head.push_str("\r\n");
        if let Some(ct) = &info.content_type {
            if ct.contains(['\r', '\n', '\0']) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "multipart part Content-Type contains CR, LF or NUL",
                ));
            }
            head.push_str("Content-Type: ");
            head.push_str(ct);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        self.inner.write_all(head.as_bytes())?;
        self.parts += 1;
        self.in_part = true;
        Ok(())
    }

    /// Writes the closing boundary and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.check_boundary()?;
        let close = if self.parts > 0 {
            format!("\r\n--{}--\r\n", self.boundary)
        } else {
            format!("--{}--\r\n", self.boundary)
        };
        self.inner.write_all(close.as_bytes())?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for MultipartWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.in_part {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "multipart body written before begin_part",
            ));
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
