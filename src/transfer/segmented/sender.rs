//! The source's driver of the segmented transport (docs/transport.md): the
//! probe that decides between it and the classic POST, then open, the
//! segments (the pure `Plan` says which bytes; this file does the
//! requests), resume after a cut or a proxy error from what the
//! destination says it holds, the finish and its polling. It reads the
//! same multipart body the classic POST would send, front to back, once;
//! the segment being sent is kept in an unlinked file beside the node's
//! data for resend, never in memory (the RSS budget), while a filler
//! thread packs the next one into a second file (packing and sending
//! overlap; only the segment being sent is unacknowledged). The requests
//! after open and what their answers mean are in `sender/requests.rs`,
//! the kept segment in `sender/kept.rs`, a session taken up by a
//! restarted source in `sender/resume.rs`.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use super::plan::{Next, Plan};
use super::secret::SCHEME;
use crate::node::Node;
use crate::transfer::finish::SourceEnd;
use crate::transfer::Transfer;

mod claim;
mod kept;
mod requests;
pub mod resume;

use claim::HeldSegments;
use kept::{FillEnds, KeptSegment};
use requests::{error_of, reply, Put, Reply};

/// While the destination finishes, how long it may stay silent before
/// the source lets the panel decide (a classic POST learns it at once).
const FINISH_PATIENCE: Duration = Duration::from_secs(10);

/// The size of the first segment, and the least a segment the sender
/// waits for holds before it goes (`FillEnds`): the first bytes go out
/// once 1 MiB is packed (a few ms at 1 Gbit/s), and no request carries
/// less than a round trip is worth. The others fill up to the segment
/// size, or end when the sender asks for them.
const FIRST_SEGMENT: u64 = super::MIN_SEGMENT_SIZE;

/// The header naming a segment's SHA-256 (docs/transport.md).
pub const SEGMENT_SHA256: &str = "X-Ferry-Segment-Sha256";

/// What the destination said to the probe.
#[derive(Debug, Clone, Copy)]
pub struct Ferry {
    pub segment_size: u64,
    pub resume_window: u64,
    /// The destination reads a zstd archive (it lists `zstd` in
    /// `codecs`; a ferry that does not list it gets gzip).
    pub zstd: bool,
}

/// What the destination announces in the open request.
pub struct Announce<'a> {
    pub boundary: &'a str,
    pub bytes_total: u64,
    pub files_total: u64,
    pub disk_total: u64,
    /// Bytes of the backups the body carries (the destination's spool cap).
    pub backups_total: u64,
    pub start_on_completion: bool,
    /// The body ends with pre-copy's parts (SPEC §10).
    pub precopy: bool,
    /// The archive's compression (not announced: the archive part's
    /// filename names it; kept for a restart of this node).
    pub codec: crate::archive::Codec,
}

/// The session URL under the destination's transfer URL.
fn session_url(url: &str) -> String {
    format!("{}/session", url.trim_end_matches('/'))
}

/// Does the destination speak the segmented transport? Anything but a
/// ferry answer (Wings' 404, a proxy's HTML, an error) means "no": the
/// classic POST, unchanged.
pub fn probe(agent: &ureq::Agent, url: &str, token: &str) -> Option<Ferry> {
    let mut response = agent
        .get(&session_url(url))
        .config()
        .timeout_global(Some(Duration::from_secs(15)))
        .build()
        .header("Authorization", token)
        .call()
        .ok()?;
    if response.status().as_u16() != 200 {
        return None;
    }
    let text = response
        .body_mut()
        .with_config()
        .limit(4096)
        .read_to_string()
        .ok()?;
    probe_answer(&text)
}

/// Reads a probe's answer (None: not a ferry node).
fn probe_answer(text: &str) -> Option<Ferry> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let codecs = v.get("codecs").and_then(|c| c.as_array());
    (v.get("ferry")?.as_u64()? == 1).then_some(Ferry {
        segment_size: v.get("segment_size")?.as_u64()?,
        resume_window: v
            .get("resume_window")
            .and_then(|w| w.as_u64())
            .unwrap_or(900),
        zstd: codecs.is_some_and(|c| c.iter().any(|c| c == "zstd")),
    })
}

/// A transfer over the segmented transport.
pub struct Sender<'a> {
    node: &'a Node,
    transfer: &'a Transfer,
    agent: &'a ureq::Agent,
    base: String,
    sid: String,
    secret: String,
    /// How long the destination keeps a silent session: how long to keep
    /// trying after a cut.
    window: Duration,
    /// Where the destination's acknowledged `held` is published (pre-copy
    /// stops the server once the live pass is held, SPEC §10).
    held_to: Option<std::sync::Arc<AtomicU64>>,
    /// Where sending starts, and where held segments are noted (a resume
    /// after a restart of this source: `sender/resume.rs`).
    start: resume::Start,
}

impl<'a> Sender<'a> {
    /// Opens the session (retrying a cut or a proxy's 5xx); Err is how the
    /// transfer ends when the destination refused it.
    pub fn open(
        node: &'a Node,
        transfer: &'a Transfer,
        agent: &'a ureq::Agent,
        url: &str,
        token: &str,
        ferry: Ferry,
        announce: &Announce<'_>,
    ) -> Result<(Sender<'a>, u64), SourceEnd> {
        let base = session_url(url);
        let window = Duration::from_secs(ferry.resume_window.max(1));
        let body = json!({
            "boundary": announce.boundary,
            "transfer_id": transfer.id,
            "bytes_total": announce.bytes_total,
            "files_total": announce.files_total,
            "disk_total": announce.disk_total,
            "backups_total": announce.backups_total,
            "start_on_completion": announce.start_on_completion,
            "precopy": announce.precopy,
        });
        let deadline = Instant::now() + window;
        let mut pause = Backoff::default();
        // An open that got no answer may have opened the session anyway
        // (a cancel shuts the agent while the open is in flight): giving
        // up then cancels it by the JWT, as the session's id is unknown.
        let give_up = |end: SourceEnd, unanswered: bool| {
            if unanswered {
                requests::spawn_cancel(
                    base.clone(),
                    token.to_string(),
                    transfer,
                    "the session being opened".into(),
                );
            }
            Err(end)
        };
        let mut unanswered = false;
        loop {
            if transfer.is_cancelled() {
                return give_up(SourceEnd::NoAnswer("cancelled".into()), unanswered);
            }
            let sent = agent
                .post(&base)
                .config()
                .timeout_global(Some(Duration::from_secs(60)))
                .build()
                .header("Authorization", token)
                .header("Content-Type", "application/json")
                .send(body.to_string());
            match reply(sent) {
                Reply::Answer(201, v) => {
                    let (Some(sid), Some(secret)) = (
                        v.get("session").and_then(|s| s.as_str()),
                        v.get("secret").and_then(|s| s.as_str()),
                    ) else {
                        return Err(SourceEnd::Refused(201, "malformed session answer".into()));
                    };
                    let size = v
                        .get("segment_size")
                        .and_then(|s| s.as_u64())
                        .unwrap_or(ferry.segment_size);
                    let sender = Sender {
                        node,
                        transfer,
                        agent,
                        base: format!("{base}/{sid}"),
                        sid: sid.to_string(),
                        secret: secret.to_string(),
                        window,
                        held_to: None,
                        start: resume::Start::default(),
                    };
                    return Ok((sender, size));
                }
                Reply::Answer(status, v) => {
                    return Err(SourceEnd::Refused(status, error_of(&v)));
                }
                Reply::Transient(why) if Instant::now() < deadline => {
                    unanswered = true;
                    log::warn!(
                        "transfer {}: opening the session: {why}; retrying",
                        transfer.id
                    );
                    pause.sleep(transfer);
                }
                Reply::Transient(why) => {
                    return give_up(
                        SourceEnd::NoAnswer(format!("could not open a transfer session: {why}")),
                        true,
                    )
                }
            }
        }
    }

    /// Publishes every `held` the destination acknowledges to `to`.
    pub fn report_held(&mut self, to: std::sync::Arc<AtomicU64>) {
        self.held_to = Some(to);
    }

    fn auth(&self) -> String {
        format!("{SCHEME} {}", self.secret)
    }

    /// Sends the whole body: segments, resumes, the finish and its polling.
    /// `size` is the segment size both sides accept.
    pub fn run(&self, body: &mut (impl Read + Send), size: u64) -> SourceEnd {
        let end = self.send_all(body, size);
        // A failure here (the body stopped: packing failed, the server
        // would not stop for pre-copy's final pass) ends the transfer:
        // the destination need not keep the session for its window.
        if self.transfer.is_cancelled() || matches!(end, SourceEnd::Local(_)) {
            self.cancel_remote();
        }
        end
    }

    fn send_all(&self, body: &mut (impl Read + Send), size: u64) -> SourceEnd {
        let data = &self.node.config.system.data;
        let id = &self.transfer.id;
        let (a, b) = match (
            KeptSegment::create(data, &format!("{id}.a")),
            KeptSegment::create(data, &format!("{id}.b")),
        ) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                return SourceEnd::Local(format!("cannot keep a segment for resend: {e}"))
            }
        };
        // Two kept segments: the filler packs the next while this thread
        // sends the current one, so packing and sending overlap. Only the
        // one being sent is ever unacknowledged.
        let (free_tx, free_rx) = crossbeam_channel::bounded::<KeptSegment>(2);
        let (full_tx, full_rx) = crossbeam_channel::bounded::<io::Result<(KeptSegment, u64)>>(1);
        let _ = free_tx.send(a);
        let _ = free_tx.send(b);
        let fill_size = AtomicU64::new(size);
        let stop = AtomicBool::new(false);
        // The sender waits for the segment being filled.
        let asked = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let filler = scope.spawn(|| {
                let ends = FillEnds {
                    stop: &stop,
                    asked: &asked,
                    min: FIRST_SEGMENT,
                    patience: fill_patience(self.window),
                };
                // The first segment is small: the destination starts
                // receiving (and extracting) after 1 MiB is packed, not
                // 64; the next ones grow with what is packed meanwhile.
                let mut first = true;
                while let Ok(mut seg) = free_rx.recv() {
                    let size = fill_size.load(Ordering::SeqCst);
                    let want = if first { FIRST_SEGMENT.min(size) } else { size };
                    first = false;
                    let filled = seg.fill(&mut *body, want, &ends);
                    let last = !matches!(filled, Ok(n) if n > 0);
                    if full_tx.send(filled.map(|n| (seg, n))).is_err() || last {
                        break;
                    }
                }
            });
            let sent = self.send_filled(&full_rx, &free_tx, (&fill_size, &asked), size);
            stop.store(true, Ordering::SeqCst);
            // Unblocks the filler wherever it waits.
            drop(full_rx);
            drop(free_tx);
            let _ = filler.join();
            match sent {
                Ok((length, claim)) => {
                    let began = Instant::now();
                    let end = self.finish(length, &claim);
                    log::info!(
                        "transfer {}: the finish took {:.2} s",
                        self.transfer.id,
                        began.elapsed().as_secs_f64()
                    );
                    end
                }
                Err(end) => end,
            }
        })
    }

    /// Sends the filled segments in order until the body's end: its length
    /// and the finish's claim, or how the transfer ended.
    fn send_filled(
        &self,
        full: &crossbeam_channel::Receiver<io::Result<(KeptSegment, u64)>>,
        free: &crossbeam_channel::Sender<KeptSegment>,
        (fill_size, asked): (&AtomicU64, &AtomicBool),
        size: u64,
    ) -> Result<(u64, [u8; 32]), SourceEnd> {
        let cancelled = || SourceEnd::NoAnswer("cancelled".into());
        // From 0, or where a session taken up after a restart stands.
        let mut plan = Plan::new(size, self.start.held);
        let mut held_segments: HeldSegments = self.start.segments.clone();
        let mut current: Option<KeptSegment> = None;
        let mut length = self.start.held;
        let mut kept_start = 0u64;
        let mut mismatches = 0;
        // Segment requests in a row that were busy or got no answer (the
        // pause before the next grows).
        let mut failed = 0;
        let mut segments = 0u64;
        // Where the time went (the summary line; scripts/bench-transport.py).
        let (mut packing, mut putting) = (Duration::ZERO, Duration::ZERO);
        // Per segment (debug): the wait for its bytes and its request, and
        // the link's idle time between two requests.
        let (mut waited_for_it, mut last_put_end) = (Duration::ZERO, None::<Instant>);
        loop {
            if self.transfer.is_cancelled() {
                return Err(cancelled());
            }
            match plan.next() {
                Next::Fill => {
                    // The current segment is held: its file takes the next.
                    if let Some(done) = current.take() {
                        let _ = free.send(done);
                    }
                    let waited = Instant::now();
                    // A segment already full is taken as it is; one
                    // being filled ends once it holds the minimum.
                    let received = match full.try_recv() {
                        Err(crossbeam_channel::TryRecvError::Empty) => {
                            asked.store(true, Ordering::SeqCst);
                            let received = full.recv();
                            asked.store(false, Ordering::SeqCst);
                            received
                        }
                        ready => ready.map_err(|_| crossbeam_channel::RecvError),
                    };
                    waited_for_it = waited.elapsed();
                    packing += waited_for_it;
                    let (seg, n) = match received {
                        Ok(Ok(filled)) => filled,
                        Ok(Err(_)) | Err(_) if self.transfer.is_cancelled() => {
                            return Err(cancelled())
                        }
                        Ok(Err(e)) => {
                            return Err(SourceEnd::Local(format!("the upload stopped: {e}")))
                        }
                        Err(_) => return Err(SourceEnd::Local("the packing stopped".into())),
                    };
                    if n == 0 {
                        break;
                    }
                    current = Some(seg);
                    kept_start = plan.held();
                    length += n;
                    plan.filled(n);
                }
                Next::Send { offset, length: n } => {
                    let Some(kept) = current.as_mut() else {
                        return Err(SourceEnd::Local("no segment kept to send".into()));
                    };
                    let digest = match kept.digest(offset - kept_start, n) {
                        Ok(d) => d,
                        Err(e) => {
                            return Err(SourceEnd::Local(format!(
                                "cannot read the kept segment: {e}"
                            )))
                        }
                    };
                    segments += 1;
                    let began = Instant::now();
                    let (put, handed) = self.put(kept, offset - kept_start, offset, n, &digest);
                    let took = began.elapsed();
                    putting += took;
                    log::debug!(
                        "transfer {}: segment at {offset}: {n} bytes in {:.1} ms ({:.0} Mbit/s); \
                         {:.1} ms waiting for its bytes, {:.1} ms since the last request",
                        self.transfer.id,
                        took.as_secs_f64() * 1e3,
                        n as f64 * 8.0 / took.as_secs_f64().max(1e-9) / 1e6,
                        std::mem::take(&mut waited_for_it).as_secs_f64() * 1e3,
                        last_put_end.map_or(0.0, |t: Instant| (began - t).as_secs_f64() * 1e3),
                    );
                    last_put_end = Some(Instant::now());
                    // Counted by what went out: an attempt cut at once
                    // (a dead pooled connection) re-sent nothing.
                    plan.sending(offset, handed);
                    let held = match put {
                        Put::Held(h) => {
                            failed = 0;
                            h
                        }
                        Put::TooLarge => {
                            if let Err(e) = plan.too_large() {
                                return Err(SourceEnd::Refused(413, e.to_string()));
                            }
                            fill_size.store(plan.segment_size(), Ordering::SeqCst);
                            log::warn!(
                                "transfer {}: a segment of {n} bytes was refused as too large; \
                                 sending {} from now on",
                                self.transfer.id,
                                plan.segment_size()
                            );
                            continue;
                        }
                        Put::Digest => {
                            mismatches += 1;
                            if mismatches > 1 {
                                return Err(SourceEnd::Refused(
                                    400,
                                    "segment checksum mismatch".into(),
                                ));
                            }
                            continue;
                        }
                        Put::Resync => self.wait_held()?,
                        Put::Again => {
                            nap(self.transfer, retry_pause(failed));
                            failed += 1;
                            self.wait_held()?
                        }
                        Put::End(end) => return Err(end),
                    };
                    if let Err(e) = plan.held_is(held) {
                        return Err(SourceEnd::NoAnswer(e.to_string()));
                    }
                    if let Err(e) = held_segments.noted(offset, n, digest, held) {
                        return Err(SourceEnd::NoAnswer(e.to_string()));
                    }
                    self.start.noted(offset, n, digest, held);
                    if let Some(to) = &self.held_to {
                        to.store(held, Ordering::SeqCst);
                    }
                }
            }
        }
        log::info!(
            "transfer {}: {length} bytes in {segments} segment requests over session {}, {} bytes sent twice; \
             {:.2} s waiting for packed bytes, {:.2} s in segment requests",
            self.transfer.id,
            self.sid,
            plan.resent,
            packing.as_secs_f64(),
            putting.as_secs_f64(),
        );
        self.node.transfer_log(
            self.transfer,
            &format!(
                "Sent {} in segments ({} re-sent); waiting for the destination to finish...",
                crate::transfer::progress::human_bytes(length),
                crate::transfer::progress::human_bytes(plan.resent)
            ),
        );
        Ok((length, held_segments.claim()))
    }
}

/// How long filling one segment may take before it is sent as it is:
/// while the next segment fills, the destination hears nothing, and its
/// session expires after `window` of silence. A quarter of the window
/// leaves room for the send and a resume.
fn fill_patience(window: Duration) -> Duration {
    (window / 4).max(Duration::from_secs(1))
}

/// How long a segment request may make no progress (no byte of its body
/// taken, or no answer after it) before the sender asks status instead:
/// a quarter of the window, so a resume fits in it, within 5 to 30 s (the
/// destination answers right after its fsync, which write-back during the
/// body keeps short).
fn stall_bound(window: Duration) -> Duration {
    (window / 4).clamp(Duration::from_secs(5), Duration::from_secs(30))
}

/// The pause before the next segment request after `attempt` in a row
/// were refused as busy (409: another request of the session, a cut one
/// the destination has not noticed yet, is still in progress) or got no
/// answer: 100 ms doubling to 2 s, so the sender neither hammers the
/// destination nor waits long once it is free.
fn retry_pause(attempt: u32) -> Duration {
    Duration::from_millis(100u64 << attempt.min(5)).min(Duration::from_secs(2))
}

/// Waits between retries: 0.5 s doubling to 5 s.
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(Duration::from_millis(500))
    }
}

impl Backoff {
    fn sleep(&mut self, transfer: &Transfer) {
        nap(transfer, self.0);
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
    }
}

/// Sleeps up to `d`, waking early on a cancel (SPEC §5: within a second).
fn nap(transfer: &Transfer, d: Duration) {
    let until = Instant::now() + d;
    while !transfer.is_cancelled() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_answer_says_ferry_and_whether_it_reads_zstd() {
        let f = probe_answer(
            r#"{"ferry":1,"segment_size":64,"resume_window":60,"codecs":["gzip","zstd"]}"#,
        )
        .unwrap();
        assert_eq!((f.segment_size, f.resume_window, f.zstd), (64, 60, true));
        // A ferry from before the codecs: gzip, and the default window.
        let f = probe_answer(r#"{"ferry":1,"segment_size":64}"#).unwrap();
        assert_eq!((f.resume_window, f.zstd), (900, false));
        let f = probe_answer(r#"{"ferry":1,"segment_size":64,"codecs":["gzip"]}"#).unwrap();
        assert!(!f.zstd);
        for not_ferry in [r#"{"ferry":2,"segment_size":64}"#, "<html>", "{}"] {
            assert!(probe_answer(not_ferry).is_none(), "{not_ferry}");
        }
    }

    #[test]
    fn a_busy_session_is_asked_again_after_100_ms_doubling_to_2_s() {
        let pauses: Vec<u64> = (0..8).map(|a| retry_pause(a).as_millis() as u64).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        assert_eq!(retry_pause(u32::MAX), Duration::from_secs(2));
    }

    #[test]
    fn a_stalled_segment_request_is_given_up_within_a_quarter_of_the_window() {
        let bound = |s| stall_bound(Duration::from_secs(s)).as_secs();
        assert_eq!((bound(900), bound(60), bound(3)), (30, 15, 5));
    }

    #[test]
    fn a_segment_fills_for_at_most_a_quarter_of_the_window() {
        assert_eq!(
            fill_patience(Duration::from_secs(900)),
            Duration::from_secs(225)
        );
        assert_eq!(
            fill_patience(Duration::from_secs(60)),
            Duration::from_secs(15)
        );
        assert_eq!(
            fill_patience(Duration::from_secs(2)),
            Duration::from_secs(1)
        );
    }
}
