//! A segmented session taken up by a restarted SOURCE (docs/transport.md,
//! "source restart"): what the sender notes while it sends (the ack
//! lines of the segments it was told are held, appended and fsynced in
//! the transfer's state, `NotedAcks`), and, after a restart, where it
//! stands: the destination's `held` and its ack lines (`resume_point`),
//! checked against the noted ones, and the body packed again from its
//! start, its first `held` bytes compared segment by segment with those
//! ack lines and not sent (`VerifiedPrefix`). Any difference ends the
//! transfer per SPEC §5.1: the packer's output is the same bytes only for
//! the same stopped tree, and nothing here guesses.
//!
//! The pure parts (`parse_noted`, `check_noted`, `VerifiedPrefix`) have
//! the unit tests; the requests are `Sender::resume_point`'s.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::claim::HeldSegments;
use super::requests::{error_of, reply, Reply, Status};
use super::{session_url, Sender};
use crate::node::Node;
use crate::transfer::finish::SourceEnd;
use crate::transfer::persist::OutgoingSession;
use crate::transfer::segmented::acks::{self, Ack};
use crate::transfer::segmented::secret::SCHEME;
use crate::transfer::Transfer;

/// The most ack-line text a destination may answer (a line is about 85
/// bytes: 16 MiB is 200 000 segments, 200 GB in the smallest segments).
const MAX_ACKS: u64 = 16 * 1024 * 1024;

/// Where a sender starts: 0 and nothing held for a new session; for a
/// session a restarted source takes up, what the destination holds.
#[derive(Default)]
pub(super) struct Start {
    pub(super) held: u64,
    pub(super) segments: HeldSegments,
    /// The ack lines are noted here as segments are held.
    noting: Option<NotedAcks>,
}

impl Start {
    /// `[offset, offset + length)` with `sha256` was sent and the
    /// destination holds `held`: note it when that segment is held. A
    /// line that cannot be written costs only the cross-check after a
    /// restart (the destination's own lines are checked against the
    /// bytes packed again either way).
    pub(super) fn noted(&self, offset: u64, length: u64, sha256: [u8; 32], held: u64) {
        if offset + length != held {
            return;
        }
        if let Some(noting) = &self.noting {
            if let Err(e) = noting.append(&Ack {
                offset,
                length,
                sha256,
            }) {
                log::warn!("cannot note a held segment for a resume after a restart: {e}");
            }
        }
    }
}

/// The source's ack lines of one session: appended and fdatasynced per
/// held segment (one small write per segment, not per byte), on a thread
/// of their own: on a journaling filesystem busy with the kept segment's
/// writes the sync takes milliseconds, which must not sit between two
/// segment requests (the link idles meanwhile). A line not yet synced at
/// a crash costs nothing: the destination holding more than was noted is
/// fine (`check_noted`). Dropping it waits for the lines sent so far.
pub struct NotedAcks {
    lines: Option<crossbeam_channel::Sender<Ack>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl NotedAcks {
    /// Opens `path` for appending (created if missing; a restarted source
    /// goes on appending to the lines it had).
    pub fn open(path: &Path) -> io::Result<NotedAcks> {
        let mut file = OpenOptions::new().create(true).append(true).open(path)?;
        let (lines, rx) = crossbeam_channel::unbounded::<Ack>();
        let writer = std::thread::Builder::new()
            .name("ack-lines".into())
            .spawn(move || {
                for ack in rx {
                    let written = file
                        .write_all(acks::line(&ack).as_bytes())
                        .and_then(|()| file.sync_data());
                    if let Err(e) = written {
                        log::warn!("cannot note a held segment for a resume after a restart: {e}");
                    }
                }
            })?;
        Ok(NotedAcks {
            lines: Some(lines),
            writer: Some(writer),
        })
    }

    pub fn append(&self, ack: &Ack) -> io::Result<()> {
        self.lines
            .as_ref()
            .and_then(|lines| lines.send(ack.clone()).ok())
            .ok_or_else(|| io::Error::other("the ack-line writer stopped"))
    }
}

impl Drop for NotedAcks {
    fn drop(&mut self) {
        drop(self.lines.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The noted ack lines in `text`: each complete line either continues the
/// held segments or, when the destination had lost bytes and they were
/// sent again, replaces those from its offset on (as `HeldSegments`
/// does). A torn last line (killed mid-append) and a line that fits
/// neither are left out: the noted lines are a cross-check only.
pub fn parse_noted(text: &[u8]) -> Vec<Ack> {
    let mut out: Vec<Ack> = Vec::new();
    let mut rest = text;
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        let line = acks::parse_line(&rest[..end]);
        rest = &rest[end + 1..];
        let Some(ack) = line.filter(|a| a.length > 0) else {
            continue;
        };
        out.retain(|a| a.offset + a.length <= ack.offset);
        if out.last().map_or(0, |a| a.offset + a.length) == ack.offset {
            out.push(ack);
        }
    }
    out
}

/// Why a restarted source cannot go on with the session it had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// The destination's ack lines do not end at its `held`.
    Held { lines_end: u64, held: u64 },
    /// A segment this source noted as held is not the destination's.
    Noted { offset: u64 },
    /// The body packed again differs from what the destination holds.
    Body { offset: u64, length: u64 },
    /// The body packed again ends before what the destination holds.
    Short { at: u64, held: u64 },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Held { lines_end, held } => write!(
                f,
                "the destination's ack lines end at {lines_end}, not at the {held} bytes it holds"
            ),
            Mismatch::Noted { offset } => write!(
                f,
                "the destination's segment at {offset} is not the one this source noted as held"
            ),
            Mismatch::Body { offset, length } => write!(
                f,
                "the body packed again after the restart differs from the segment the destination \
                 holds at {offset} ({length} bytes): the data changed while the source was down"
            ),
            Mismatch::Short { at, held } => write!(
                f,
                "the body packed again after the restart ends at {at}, before the {held} bytes \
                 the destination holds: the data changed while the source was down"
            ),
        }
    }
}

impl std::error::Error for Mismatch {}

/// The destination's ack lines (`dest`, held `held`) against the ones
/// this source noted: every noted segment the destination still holds
/// must be its own. The destination may hold more (the segment that was
/// in flight at the kill) or less (it lost acknowledged bytes): those are
/// checked against the body packed again, or sent again.
pub fn check_noted(noted: &[Ack], dest: &[Ack], held: u64) -> Result<(), Mismatch> {
    let lines_end = dest.last().map_or(0, |a| a.offset + a.length);
    if lines_end != held {
        return Err(Mismatch::Held { lines_end, held });
    }
    for ack in noted.iter().filter(|a| a.offset + a.length <= held) {
        if !dest.contains(ack) {
            return Err(Mismatch::Noted { offset: ack.offset });
        }
    }
    Ok(())
}

/// The body packed again, read through this: its first `held` bytes are
/// hashed segment by segment against the destination's ack lines and
/// never handed on (they are held); the rest passes unchanged. A
/// difference is an error of the body, which ends the transfer (the
/// sender cancels the session, SPEC §5.1).
pub struct VerifiedPrefix<R> {
    inner: R,
    acks: Vec<Ack>,
    /// Where a difference is told (the transfer's reason: the packing
    /// that then stops is only its consequence).
    found: Found,
    /// Index of the ack being hashed, its bytes so far.
    next: usize,
    at: u64,
    sha: Sha256,
    buf: Vec<u8>,
    keep_alive: Option<KeepAlive>,
}

/// While the held prefix is packed again and checked nothing is sent, so
/// the session is asked its status with `alive` every `every` (its
/// silence then starts again on the destination): a tree that takes
/// longer to pack than the resume window is not expired under its source.
pub struct KeepAlive {
    every: Duration,
    last: Instant,
    ask: Box<dyn FnMut() + Send>,
}

impl KeepAlive {
    /// Asks `session`'s status with `alive` every quarter of its resume
    /// window, between 1 s and a minute.
    pub fn asking(agent: &ureq::Agent, session: &OutgoingSession) -> KeepAlive {
        let url = format!("{}/{}?alive=1", session_url(&session.url), session.sid);
        let auth = format!("{SCHEME} {}", session.secret);
        let agent = agent.clone();
        let every = Duration::from_secs(session.resume_window / 4)
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        KeepAlive {
            every,
            last: Instant::now(),
            ask: Box::new(move || {
                let asked = agent
                    .get(&url)
                    .header("Authorization", &auth)
                    .config()
                    .timeout_global(Some(Duration::from_secs(10)))
                    .build()
                    .call();
                // One that fails is only the next one's to make.
                if let Err(e) = asked {
                    log::debug!("keeping the session alive while packing again: {e}");
                }
            }),
        }
    }

    fn tick(&mut self) {
        if self.last.elapsed() >= self.every {
            (self.ask)();
            self.last = Instant::now();
        }
    }
}

/// A difference `VerifiedPrefix` found, shared with whoever ends the
/// transfer.
pub type Found = std::sync::Arc<std::sync::OnceLock<Mismatch>>;

impl<R: Read> VerifiedPrefix<R> {
    pub fn new(inner: R, acks: Vec<Ack>, found: Found) -> VerifiedPrefix<R> {
        VerifiedPrefix {
            inner,
            acks,
            found,
            next: 0,
            at: 0,
            sha: Sha256::new(),
            buf: Vec::new(),
            keep_alive: None,
        }
    }

    /// The session is kept alive this way while the prefix is checked.
    pub fn keeping_alive(mut self, keep_alive: Option<KeepAlive>) -> VerifiedPrefix<R> {
        self.keep_alive = keep_alive;
        self
    }

    fn held(&self) -> u64 {
        self.acks.last().map_or(0, |a| a.offset + a.length)
    }

    /// Reads and checks the held prefix (once, at the first read).
    fn skip_held(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            self.buf = vec![0; 256 * 1024];
        }
        while self.next < self.acks.len() {
            let ack = &self.acks[self.next];
            let end = ack.offset + ack.length;
            let want = (end - self.at).min(self.buf.len() as u64) as usize;
            let n = match self.inner.read(&mut self.buf[..want]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The producer paused (pre-copy only: not resumed): wait.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                Err(e) => return Err(e),
            };
            if n == 0 {
                let short = Mismatch::Short {
                    at: self.at,
                    held: self.held(),
                };
                return Err(self.differs(short));
            }
            self.sha.update(&self.buf[..n]);
            self.at += n as u64;
            if let Some(keep_alive) = &mut self.keep_alive {
                keep_alive.tick();
            }
            if self.at == end {
                let digest: [u8; 32] = std::mem::take(&mut self.sha).finalize().into();
                if digest != ack.sha256 {
                    let body = Mismatch::Body {
                        offset: ack.offset,
                        length: ack.length,
                    };
                    return Err(self.differs(body));
                }
                self.next += 1;
                crate::transfer::finish::failpoint::point("segment-checked-again");
            }
        }
        self.buf = Vec::new();
        Ok(())
    }

    fn differs(&self, m: Mismatch) -> io::Error {
        let _ = self.found.set(m.clone());
        io::Error::other(m)
    }
}

impl<R: Read> Read for VerifiedPrefix<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.next < self.acks.len() {
            self.skip_held()?;
        }
        self.inner.read(buf)
    }
}

/// Where a taken-up session stands: what the destination holds, as its
/// ack lines.
pub struct ResumePoint {
    pub held: u64,
    pub acks: Vec<Ack>,
}

impl<'a> Sender<'a> {
    /// The sender of a session a previous run of this source opened.
    pub fn reopen(
        node: &'a Node,
        transfer: &'a Transfer,
        agent: &'a ureq::Agent,
        session: &OutgoingSession,
    ) -> Sender<'a> {
        Sender {
            node,
            transfer,
            agent,
            base: format!("{}/{}", session_url(&session.url), session.sid),
            sid: session.sid.clone(),
            secret: session.secret.clone(),
            window: Duration::from_secs(session.resume_window.max(1)),
            held_to: None,
            start: Start::default(),
        }
    }

    /// The session's id and secret (persisted for a resume).
    pub fn credentials(&self) -> (&str, &str) {
        (&self.sid, &self.secret)
    }

    /// Notes the ack lines of held segments to `noting` from now on.
    pub fn note_acks(&mut self, noting: NotedAcks) {
        self.start.noting = Some(noting);
    }

    /// Sends from `point` on (a taken-up session): the body given to `run`
    /// is then the rest after `point.held` (`VerifiedPrefix`).
    pub fn start_at(&mut self, point: &ResumePoint) {
        self.start.held = point.held;
        self.start.segments = HeldSegments::from_acks(point.acks.clone());
    }

    /// Asks the destination where the session stands. Ok while it
    /// receives, with its ack lines checked against `noted`; otherwise
    /// how the transfer ends: a finishing session's outcome (its finish
    /// was sent before the restart), a terminal one's, or, for a session
    /// the destination no longer has (404: expired, cancelled, a
    /// destination that did not take it up), no answer: the panel decides
    /// (SPEC §5.1), as for any source restart. A session that receives
    /// but cannot be resumed is cancelled rather than left to expire.
    pub fn resume_point(&self, noted: &[Ack]) -> Result<ResumePoint, SourceEnd> {
        match self.status_until_answered() {
            Ok(Status::Receiving(_)) => {}
            Ok(Status::Finishing) => {
                // Asking to finish again answers 409 and waits for the
                // outcome as the finish does; the claim is not read then.
                return Err(self.finish(0, &[0; 32]));
            }
            Ok(Status::Ended(end)) => return Err(end),
            Err(SourceEnd::Refused(404, why)) => {
                return Err(SourceEnd::NoAnswer(format!(
                    "the destination no longer has the transfer session after this node restarted: {why}"
                )))
            }
            Err(end) => return Err(end),
        };
        // `held` from the same answer as the lines: the status's may be
        // stale (a request of this node's previous life completing).
        let (acks, held) = match self.held_acks() {
            Ok(got) => got,
            Err(end) => {
                self.cancel_remote();
                return Err(end);
            }
        };
        if let Err(m) = check_noted(noted, &acks, held) {
            self.cancel_remote();
            return Err(SourceEnd::Local(format!(
                "cannot resume the transfer session after a restart: {m}"
            )));
        }
        Ok(ResumePoint { held, acks })
    }

    /// `GET …/acks`: the destination's ack lines of what it holds.
    fn held_acks(&self) -> Result<(Vec<Ack>, u64), SourceEnd> {
        let got = self
            .agent
            .get(&format!("{}/acks", self.base))
            .config()
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .header("Authorization", &self.auth())
            .call();
        let cannot = |why: String| {
            SourceEnd::NoAnswer(format!(
                "cannot read what the destination holds after this node restarted: {why}"
            ))
        };
        let mut response = match got {
            Ok(r) if r.status().as_u16() == 200 => r,
            other => {
                return Err(match reply(other) {
                    Reply::Answer(status, v) => cannot(format!("{status}: {}", error_of(&v))),
                    Reply::Transient(why) => cannot(why),
                })
            }
        };
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_ACKS)
            .read_to_string()
            .map_err(|e| cannot(e.to_string()))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| cannot(e.to_string()))?;
        let lines = v.get("acks").and_then(|a| a.as_str()).unwrap_or("");
        let (acks, lines_end) = acks::parse(lines.as_bytes()).map_err(|e| cannot(e.to_string()))?;
        let held = v.get("held").and_then(|h| h.as_u64()).unwrap_or(lines_end);
        Ok((acks, held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::segmented::acks::ack;

    fn real(body: &[u8], cuts: &[(u64, u64)]) -> Vec<Ack> {
        cuts.iter()
            .map(|&(o, l)| Ack {
                offset: o,
                length: l,
                sha256: Sha256::digest(&body[o as usize..(o + l) as usize]).into(),
            })
            .collect()
    }

    #[test]
    fn noted_lines_continue_or_replace_and_a_torn_line_is_left_out() {
        let mut text = acks::line(&ack(0, 4, 1)) + &acks::line(&ack(4, 4, 2));
        // The destination lost the second; it was sent again, then more.
        text += &acks::line(&ack(4, 4, 3));
        text += &acks::line(&ack(8, 2, 4));
        text += "10 5 ab";
        assert_eq!(
            parse_noted(text.as_bytes()),
            vec![ack(0, 4, 1), ack(4, 4, 3), ack(8, 2, 4)]
        );
        // A line that fits nowhere (a gap) is left out.
        let gap = acks::line(&ack(0, 4, 1)) + &acks::line(&ack(6, 4, 2));
        assert_eq!(parse_noted(gap.as_bytes()), vec![ack(0, 4, 1)]);
        assert_eq!(parse_noted(b"garbage\n"), vec![]);
    }

    #[test]
    fn the_destination_must_hold_the_noted_segments_as_noted() {
        let dest = [ack(0, 4, 1), ack(4, 4, 2), ack(8, 4, 3)];
        // It holds one more than was noted (in flight at the kill): fine.
        assert_eq!(check_noted(&dest[..2], &dest, 12), Ok(()));
        // It lost the last noted one: fine, sent again.
        assert_eq!(check_noted(&dest, &dest[..2], 8), Ok(()));
        let other = [ack(0, 4, 1), ack(4, 4, 9)];
        assert_eq!(
            check_noted(&other, &dest, 12),
            Err(Mismatch::Noted { offset: 4 })
        );
        assert_eq!(
            check_noted(&[], &dest, 13),
            Err(Mismatch::Held {
                lines_end: 12,
                held: 13
            })
        );
    }

    #[test]
    fn the_held_prefix_is_checked_and_skipped_and_the_rest_passes() {
        let body: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let acks = real(&body, &[(0, 300), (300, 400)]);
        let mut rest = Vec::new();
        VerifiedPrefix::new(&body[..], acks, Found::default())
            .read_to_end(&mut rest)
            .unwrap();
        assert_eq!(rest, &body[700..]);
        // Nothing held: the whole body passes.
        let mut all = Vec::new();
        VerifiedPrefix::new(&body[..], vec![], Found::default())
            .read_to_end(&mut all)
            .unwrap();
        assert_eq!(all, body);
    }

    #[test]
    fn a_changed_byte_in_the_held_prefix_or_a_short_body_is_an_error() {
        let body: Vec<u8> = (0..1000u32).map(|i| (i % 13) as u8).collect();
        let acks = real(&body, &[(0, 300), (300, 400)]);
        let mut changed = body.clone();
        changed[650] ^= 1;
        let found = Found::default();
        let err = VerifiedPrefix::new(&changed[..], acks.clone(), found.clone())
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(err.to_string().contains("at 300"), "{err}");
        assert_eq!(
            found.get(),
            Some(&Mismatch::Body {
                offset: 300,
                length: 400
            })
        );
        let err = VerifiedPrefix::new(&body[..500], acks, Found::default())
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(err.to_string().contains("ends at 500"), "{err}");
    }
}
