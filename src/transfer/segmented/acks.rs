//! The ack log: one line `<offset> <length> <sha256 hex>\n` per segment
//! the destination acknowledged, appended and fsynced after the spool's
//! fsync and before the 200. After a restart the held length is the end
//! of the last complete line that continues the previous one; a torn last
//! line (the crash came mid-append) is ignored, and the spool is cut back
//! to that length, because unacknowledged bytes may not be what was sent.
//! The finish's claim is the digest of this log (`digest`).

use std::fmt;

use sha2::{Digest, Sha256};

/// One acknowledged segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub offset: u64,
    pub length: u64,
    pub sha256: [u8; 32],
}

/// The ack log is not ours to resume from: a complete line that does not
/// parse or does not continue the previous one. (A torn *last* line is
/// not an error.) The session cannot resume and is removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptAcks {
    pub line: usize,
}

impl fmt::Display for CorruptAcks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "transfer session ack log is corrupt at line {}",
            self.line
        )
    }
}

impl std::error::Error for CorruptAcks {}

/// The line to append for `ack`.
pub fn line(ack: &Ack) -> String {
    format!(
        "{} {} {}\n",
        ack.offset,
        ack.length,
        hex::encode(ack.sha256)
    )
}

/// The finish's claim over `acks` (docs/transport.md): SHA-256 of their
/// ack lines, in order. The source computes it over the segments it was
/// told are held (each digest taken from the body as it was packed), the
/// destination over its ack log: equal, the destination holds exactly the
/// source's body.
pub fn digest(acks: &[Ack]) -> [u8; 32] {
    let mut sha = Sha256::new();
    for ack in acks {
        sha.update(line(ack).as_bytes());
    }
    sha.finalize().into()
}

/// The acknowledged segments in `log`, in order, and the held length.
pub fn parse(log: &[u8]) -> Result<(Vec<Ack>, u64), CorruptAcks> {
    let mut acks = Vec::new();
    let mut held = 0u64;
    let mut rest = log;
    let mut number = 0;
    // Only lines ending in '\n' count: the tail after the last one is torn.
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        number += 1;
        let ack = parse_line(&rest[..end]).ok_or(CorruptAcks { line: number })?;
        if ack.offset != held || ack.length == 0 {
            return Err(CorruptAcks { line: number });
        }
        held = held
            .checked_add(ack.length)
            .ok_or(CorruptAcks { line: number })?;
        acks.push(ack);
        rest = &rest[end + 1..];
    }
    Ok((acks, held))
}

/// One line without its `\n`, unchecked against the lines before it.
pub(crate) fn parse_line(line: &[u8]) -> Option<Ack> {
    let text = std::str::from_utf8(line).ok()?;
    let mut fields = text.split(' ');
    let offset = fields.next()?.parse().ok()?;
    let length = fields.next()?.parse().ok()?;
    let digest = fields.next()?;
    if fields.next().is_some() || digest.len() != 64 {
        return None;
    }
    let mut sha256 = [0u8; 32];
    hex::decode_to_slice(digest, &mut sha256).ok()?;
    Some(Ack {
        offset,
        length,
        sha256,
    })
}

/// An ack line whose digest is `fill` repeated (tests of the ack logic).
#[cfg(test)]
pub(crate) fn ack(offset: u64, length: u64, fill: u8) -> Ack {
    Ack {
        offset,
        length,
        sha256: [fill; 32],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_held() {
        let mut log = line(&ack(0, 10, 1));
        log += &line(&ack(10, 5, 2));
        let (acks, held) = parse(log.as_bytes()).unwrap();
        assert_eq!(acks, vec![ack(0, 10, 1), ack(10, 5, 2)]);
        assert_eq!(held, 15);
    }

    #[test]
    fn the_claim_is_the_digest_of_the_log_text() {
        let acks = [ack(0, 10, 1), ack(10, 5, 2)];
        let text = line(&acks[0]) + &line(&acks[1]);
        assert_eq!(digest(&acks), <[u8; 32]>::from(Sha256::digest(text)));
        assert_ne!(digest(&acks), digest(&acks[..1]));
    }

    #[test]
    fn empty_log_holds_nothing() {
        assert_eq!(parse(b"").unwrap(), (vec![], 0));
    }

    #[test]
    fn torn_last_line_is_ignored() {
        let full = line(&ack(0, 10, 1)) + &line(&ack(10, 5, 2));
        // Every cut inside the second line leaves only the first acked.
        let first = line(&ack(0, 10, 1)).len();
        for cut in first..full.len() {
            let (acks, held) = parse(&full.as_bytes()[..cut]).unwrap();
            assert_eq!((acks.len(), held), (1, 10), "cut at {cut}");
        }
    }

    #[test]
    fn gaps_overlaps_and_garbage_are_corrupt() {
        let gap = line(&ack(0, 10, 1)) + &line(&ack(11, 5, 2));
        assert_eq!(parse(gap.as_bytes()), Err(CorruptAcks { line: 2 }));
        let overlap = line(&ack(0, 10, 1)) + &line(&ack(9, 5, 2));
        assert_eq!(parse(overlap.as_bytes()), Err(CorruptAcks { line: 2 }));
        assert_eq!(parse(b"0 10 zz\n"), Err(CorruptAcks { line: 1 }));
        assert_eq!(
            parse(line(&ack(0, 0, 1)).as_bytes()),
            Err(CorruptAcks { line: 1 })
        );
        let huge = format!(
            "0 {} {}\n1 1 {}\n",
            u64::MAX,
            "00".repeat(32),
            "00".repeat(32)
        );
        assert!(parse(huge.as_bytes()).is_err());
    }
}
