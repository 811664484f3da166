//! Chunked transfer coding, sans-I/O: a decoder state machine for request
//! bodies (and the Docker client's answers) and the chunk-header encoder
//! for streamed responses.
//!
//! The decoder never buffers: it walks framing bytes one at a time and
//! points at runs of body data inside the caller's buffer. Size lines and
//! the trailer section are bounded so a client cannot make it spin or grow.

/// Longest chunk-size line accepted (size, extensions and CRLF).
pub(crate) const MAX_SIZE_LINE: usize = 4096;
/// Most trailer-section bytes skipped after the last chunk.
pub(crate) const MAX_TRAILER: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkError(pub &'static str);

impl std::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed chunked body: {}", self.0)
    }
}

impl std::error::Error for ChunkError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size {
        value: u64,
        digits: u8,
    },
    /// Whitespace after the size, before `;` or CR.
    SizeSpace {
        value: u64,
    },
    /// Inside chunk extensions, skipped.
    Ext {
        value: u64,
    },
    /// Saw CR ending the size line.
    SizeLf {
        value: u64,
    },
    /// This many data bytes of the current chunk are still to come.
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    TrailerLine,
    TrailerLineLf,
    EndLf,
    Done,
}

#[derive(Debug)]
pub(crate) struct ChunkedDecoder {
    state: State,
    line_len: usize,
    trailer_len: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size {
                value: 0,
                digits: 0,
            },
            line_len: 0,
            trailer_len: 0,
        }
    }

    /// The terminating chunk and trailer section have been consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes framing bytes from the start of `input`. Returns
    /// `(framing, data)`: skip `framing` bytes, then the next `data` bytes
    /// are body data (report what was used with [`consume_data`]). `(n, 0)`
    /// with `n == input.len()` and not done means more input is needed.
    ///
    /// [`consume_data`]: ChunkedDecoder::consume_data
    pub fn next(&mut self, input: &[u8]) -> Result<(usize, usize), ChunkError> {
        let mut i = 0;
        loop {
            match self.state {
                State::Data(remaining) => {
                    let available = (input.len() - i) as u64;
                    return Ok((i, remaining.min(available) as usize));
                }
                State::Done => return Ok((i, 0)),
                _ => {}
            }
            let Some(&byte) = input.get(i) else {
                return Ok((i, 0));
            };
            self.step(byte)?;
            i += 1;
        }
    }

    /// Records that `n` data bytes (at most what `next` offered) were used.
    pub fn consume_data(&mut self, n: usize) {
        if let State::Data(remaining) = self.state {
            let left = remaining.saturating_sub(n as u64);
            self.state = if left == 0 {
                State::DataCr
            } else {
                State::Data(left)
            };
        }
    }

    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        if matches!(
            self.state,
            State::Size { .. } | State::SizeSpace { .. } | State::Ext { .. } | State::SizeLf { .. }
        ) {
            self.line_len += 1;
            if self.line_len > MAX_SIZE_LINE {
                return Err(ChunkError("chunk size line too long"));
            }
        }
        if matches!(
            self.state,
            State::TrailerStart | State::TrailerLine | State::TrailerLineLf | State::EndLf
        ) {
            self.trailer_len += 1;
            if self.trailer_len > MAX_TRAILER {
                return Err(ChunkError("chunked trailer section too large"));
            }
        }
        self.state = match (self.state, b) {
            (State::Size { value, digits }, _) if b.is_ascii_hexdigit() => {
                // 16 hex digits would overflow u64 only with a leading
                // non-zero; refusing >15 significant digits keeps it simple.
                if value >> 60 != 0 {
                    return Err(ChunkError("chunk size too large"));
                }
                let digit = (b as char).to_digit(16).unwrap_or(0) as u64;
                State::Size {
                    value: value << 4 | digit,
                    digits: digits.saturating_add(1),
                }
            }
            (State::Size { digits: 0, .. }, _) => {
                return Err(ChunkError("invalid chunk size"));
            }
            (State::Size { value, .. } | State::SizeSpace { value }, b' ' | b'\t') => {
                State::SizeSpace { value }
            }
            (State::Size { value, .. } | State::SizeSpace { value }, b';') => State::Ext { value },
            (
                State::Size { value, .. } | State::SizeSpace { value } | State::Ext { value },
                b'\r',
            ) => State::SizeLf { value },
            (State::Ext { .. }, b'\n') => return Err(ChunkError("bare LF in chunk extension")),
            (State::Ext { value }, _) => State::Ext { value },
            (State::SizeLf { value }, b'\n') => {
                self.line_len = 0;
                if value == 0 {
                    State::TrailerStart
                } else {
                    State::Data(value)
                }
            }
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => State::Size {
                value: 0,
                digits: 0,
            },
            (State::DataCr | State::DataLf, _) => {
                return Err(ChunkError("missing CRLF after chunk data"));
            }
            (State::TrailerStart, b'\r') => State::EndLf,
            (State::TrailerStart | State::TrailerLine, b'\n') => {
                return Err(ChunkError("bare LF in trailer"));
            }
            (State::TrailerLine, b'\r') => State::TrailerLineLf,
            (State::TrailerStart | State::TrailerLine, _) => State::TrailerLine,
            (State::TrailerLineLf, b'\n') => State::TrailerStart,
            (State::EndLf, b'\n') => State::Done,
            _ => return Err(ChunkError("invalid chunked framing")),
        };
        Ok(())
    }
}

/// Writes the size line for a chunk of `len` bytes into `out`, returning how
/// many bytes it used (at most 18: 16 hex digits and CRLF).
pub(crate) fn encode_chunk_header(len: usize, out: &mut [u8; 18]) -> usize {
    let hex = format!("{len:x}\r\n");
    let n = hex.len().min(out.len());
    out[..n].copy_from_slice(&hex.as_bytes()[..n]);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes and collects the body.
    fn decode(input: &[u8], step: usize) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut dec = ChunkedDecoder::new();
        let mut body = Vec::new();
        let mut pos = 0;
        let mut end = step.min(input.len());
        while !dec.is_done() {
            let (framing, data) = dec.next(&input[pos..end])?;
            pos += framing;
            if data > 0 {
                body.extend_from_slice(&input[pos..pos + data]);
                dec.consume_data(data);
                pos += data;
            } else if pos == end && !dec.is_done() {
                if end == input.len() {
                    return Err(ChunkError("truncated"));
                }
                end = (end + step).min(input.len());
            }
        }
        Ok((body, pos))
    }

    #[test]
    fn decodes_in_any_split() {
        let raw = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: yes\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, raw.len()] {
            let (body, used) = decode(raw, step).unwrap();
            assert_eq!(body, b"hello, world", "step {step}");
            assert_eq!(&raw[used..], b"NEXT");
        }
    }

    #[test]
    fn uppercase_hex_and_whitespace_before_ext() {
        let raw = b"A \t;x\r\n0123456789\r\n0\r\n\r\n";
        assert_eq!(decode(raw, 4).unwrap().0, b"0123456789");
    }

    #[test]
    fn truncated_is_not_done() {
        assert!(decode(b"5\r\nhel", 2).is_err());
        assert!(decode(b"5\r\nhello\r\n0\r\n", 3).is_err());
    }

    #[test]
    fn refuses_bad_framing() {
        for raw in [
            &b"\r\n"[..],
            b"g\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"-1\r\n",
            b"10000000000000000\r\n",
            b"0\r\nbad\ntrailer\r\n\r\n",
        ] {
            assert!(decode(raw, 1).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn size_line_and_trailer_are_bounded() {
        let mut long_ext = b"1;".to_vec();
        long_ext.extend(std::iter::repeat_n(b'a', MAX_SIZE_LINE));
        assert_eq!(
            decode(&long_ext, 512).unwrap_err(),
            ChunkError("chunk size line too long")
        );
        let mut trailer = b"0\r\n".to_vec();
        for _ in 0..MAX_TRAILER / 8 + 1 {
            trailer.extend_from_slice(b"X: abc\r\n");
        }
        assert_eq!(
            decode(&trailer, 4096).unwrap_err(),
            ChunkError("chunked trailer section too large")
        );
    }

    #[test]
    fn large_sizes_fit() {
        let mut dec = ChunkedDecoder::new();
        assert_eq!(dec.next(b"fffffffffffffff\r\n").unwrap(), (17, 0));
        assert_eq!(dec.state, State::Data(0xfff_ffff_ffff_ffff));
    }

    #[test]
    fn header_encoding() {
        let mut buf = [0u8; 18];
        let n = encode_chunk_header(0x1a2b, &mut buf);
        assert_eq!(&buf[..n], b"1a2b\r\n");
        let n = encode_chunk_header(usize::MAX, &mut buf);
        assert_eq!(n, 18);
    }
}
