//! The source's driver of the segmented transport (docs/transport.md): the
//! probe that decides between it and the classic POST, then open, the
//! segments (the pure `Plan` says which bytes; this file does the
//! requests), resume after a cut or a proxy error from what the
//! destination says it holds, the finish and its polling. It reads the
//! same multipart body the classic POST would send, front to back, once;
//! the segment being sent is kept in an unlinked file beside the node's
//! data for resend, never in memory (the RSS budget), while a filler
//! thread packs the next one into a second file (packing and sending
//! overlap; only the segment being sent is unacknowledged).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};

use super::plan::{Next, Plan};
use super::secret::SCHEME;
use crate::node::Node;
use crate::transfer::finish::SourceEnd;
use crate::transfer::Transfer;

/// While the destination finishes, how long it may stay silent before
/// the source lets the panel decide (a classic POST learns it at once).
const FINISH_PATIENCE: Duration = Duration::from_secs(10);

/// The header naming a segment's SHA-256 (docs/transport.md).
pub const SEGMENT_SHA256: &str = "X-Ferry-Segment-Sha256";

/// What the destination said to the probe.
#[derive(Debug, Clone, Copy)]
pub struct Ferry {
    pub segment_size: u64,
    pub resume_window: u64,
}

/// What the destination announces in the open request.
pub struct Announce<'a> {
    pub boundary: &'a str,
    pub bytes_total: u64,
    pub files_total: u64,
    pub disk_total: u64,
    pub start_on_completion: bool,
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
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    (v.get("ferry")?.as_u64()? == 1).then_some(Ferry {
        segment_size: v.get("segment_size")?.as_u64()?,
        resume_window: v.get("resume_window")?.as_u64().unwrap_or(900),
    })
}

/// One answer of the destination, or why there was none.
enum Reply {
    Answer(u16, serde_json::Value),
    /// No answer (connection cut, timeout) or a proxy's 5xx: worth asking
    /// status and trying again.
    Transient(String),
}

fn reply(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
    let mut response = match result {
        Ok(r) => r,
        Err(e) => return Reply::Transient(e.to_string()),
    };
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_string()
        .unwrap_or_default();
    if status >= 500 {
        return Reply::Transient(format!(
            "{status}: {}",
            text.chars().take(200).collect::<String>()
        ));
    }
    let value = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "error": text }));
    Reply::Answer(status, value)
}

fn error_of(v: &serde_json::Value) -> String {
    v.get("error")
        .and_then(|e| e.as_str())
        .unwrap_or("")
        .chars()
        .take(300)
        .collect()
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
            "start_on_completion": announce.start_on_completion,
        });
        let deadline = Instant::now() + window;
        let mut pause = Backoff::default();
        loop {
            if transfer.is_cancelled() {
                return Err(SourceEnd::NoAnswer("cancelled".into()));
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
                    };
                    return Ok((sender, size));
                }
                Reply::Answer(status, v) => {
                    return Err(SourceEnd::Refused(status, error_of(&v)));
                }
                Reply::Transient(why) if Instant::now() < deadline => {
                    log::warn!(
                        "transfer {}: opening the session: {why}; retrying",
                        transfer.id
                    );
                    pause.sleep(transfer);
                }
                Reply::Transient(why) => {
                    return Err(SourceEnd::NoAnswer(format!(
                        "could not open a transfer session: {why}"
                    )))
                }
            }
        }
    }

    fn auth(&self) -> String {
        format!("{SCHEME} {}", self.secret)
    }

    /// Sends the whole body: segments, resumes, the finish and its polling.
    /// `size` is the segment size both sides accept.
    pub fn run(&self, body: &mut (impl Read + Send), size: u64) -> SourceEnd {
        let end = self.send_all(body, size);
        if self.transfer.is_cancelled() {
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
        std::thread::scope(|scope| {
            let filler = scope.spawn(|| {
                let mut whole = Sha256::new();
                while let Ok(mut seg) = free_rx.recv() {
                    let filled = seg.fill(
                        &mut *body,
                        fill_size.load(Ordering::SeqCst),
                        &mut whole,
                        &stop,
                    );
                    let last = !matches!(filled, Ok(n) if n > 0);
                    if full_tx.send(filled.map(|n| (seg, n))).is_err() || last {
                        break;
                    }
                }
                hex::encode(whole.finalize())
            });
            let sent = self.send_filled(&full_rx, &free_tx, &fill_size, size);
            stop.store(true, Ordering::SeqCst);
            // Unblocks the filler wherever it waits.
            drop(full_rx);
            drop(free_tx);
            let whole = filler.join().unwrap_or_default();
            match sent {
                Ok(length) => self.finish(length, &whole),
                Err(end) => end,
            }
        })
    }

    /// Sends the filled segments in order until the body's end: its length,
    /// or how the transfer ended.
    fn send_filled(
        &self,
        full: &crossbeam_channel::Receiver<io::Result<(KeptSegment, u64)>>,
        free: &crossbeam_channel::Sender<KeptSegment>,
        fill_size: &AtomicU64,
        size: u64,
    ) -> Result<u64, SourceEnd> {
        let cancelled = || SourceEnd::NoAnswer("cancelled".into());
        let mut plan = Plan::new(size, 0);
        let mut current: Option<KeptSegment> = None;
        let mut length = 0u64;
        let mut kept_start = 0u64;
        let mut mismatches = 0;
        let mut segments = 0u64;
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
                    let (seg, n) = match full.recv() {
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
                    plan.sending(offset, n);
                    segments += 1;
                    let held = match self.put(kept, offset - kept_start, offset, n) {
                        Put::Held(h) => h,
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
                        Put::End(end) => return Err(end),
                    };
                    if let Err(e) = plan.held_is(held) {
                        return Err(SourceEnd::NoAnswer(e.to_string()));
                    }
                }
            }
        }
        log::info!(
            "transfer {}: {length} bytes in {segments} segment requests over session {}, {} bytes sent twice",
            self.transfer.id,
            self.sid,
            plan.resent
        );
        self.node.transfer_log(
            self.transfer,
            &format!(
                "Sent {} in segments ({} re-sent); waiting for the destination to finish...",
                crate::transfer::progress::human_bytes(length),
                crate::transfer::progress::human_bytes(plan.resent)
            ),
        );
        Ok(length)
    }

    /// One PUT of `[offset, offset + n)`, read from the kept segment at `at`.
    fn put(&self, kept: &mut KeptSegment, at: u64, offset: u64, n: u64) -> Put {
        let digest = match kept.digest(at, n) {
            Ok(d) => d,
            Err(e) => {
                return Put::End(SourceEnd::Local(format!(
                    "cannot read the kept segment: {e}"
                )))
            }
        };
        let mut reader = match kept.range(at, n) {
            Ok(r) => r,
            Err(e) => {
                return Put::End(SourceEnd::Local(format!(
                    "cannot read the kept segment: {e}"
                )))
            }
        };
        let sent = self
            .agent
            .put(&format!("{}/segment?offset={offset}", self.base))
            .config()
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .build()
            .header("Authorization", &self.auth())
            .header(SEGMENT_SHA256, &digest)
            .header("Content-Length", &n.to_string())
            .header("Content-Type", "application/octet-stream")
            .send(ureq::SendBody::from_reader(&mut reader));
        match reply(sent) {
            Reply::Answer(200, v) => match v.get("held").and_then(|h| h.as_u64()) {
                Some(h) => Put::Held(h),
                None => Put::Resync,
            },
            Reply::Answer(413, _) => Put::TooLarge,
            Reply::Answer(400, v) if error_of(&v) == "segment checksum mismatch" => Put::Digest,
            // Offset or busy: go on from what the destination holds; a
            // session no longer receiving is told by status.
            Reply::Answer(409 | 400, _) => Put::Resync,
            Reply::Answer(status, v) => Put::End(SourceEnd::Refused(status, error_of(&v))),
            Reply::Transient(why) => {
                if self.transfer.is_cancelled() {
                    return Put::End(SourceEnd::NoAnswer("cancelled".into()));
                }
                log::warn!(
                    "transfer {}: segment at {offset} ({n} bytes) not acknowledged: {why}; resuming",
                    self.transfer.id
                );
                self.node.transfer_log(
                    self.transfer,
                    &format!("The connection to the destination failed ({why}); resuming..."),
                );
                Put::Resync
            }
        }
    }

    /// Asks status until the destination answers: what it holds while it
    /// receives, or how the transfer ended.
    fn wait_held(&self) -> Result<u64, SourceEnd> {
        match self.status_until_answered()? {
            Status::Receiving(held) => Ok(held),
            Status::Finishing => Err(SourceEnd::NoAnswer(
                "the destination is finishing a body this source did not finish".into(),
            )),
            Status::Ended(end) => Err(end),
        }
    }

    fn status_until_answered(&self) -> Result<Status, SourceEnd> {
        self.status_within(self.window)
    }

    /// Status, asked until answered or `patience` passed without an answer.
    fn status_within(&self, patience: Duration) -> Result<Status, SourceEnd> {
        let deadline = Instant::now() + patience;
        let mut pause = Backoff::default();
        loop {
            if self.transfer.is_cancelled() {
                return Err(SourceEnd::NoAnswer("cancelled".into()));
            }
            let got = self
                .agent
                .get(&self.base)
                .config()
                .timeout_global(Some(Duration::from_secs(15)))
                .build()
                .header("Authorization", &self.auth())
                .call();
            match reply(got) {
                Reply::Answer(200, v) => return Ok(Status::of(&v)),
                Reply::Answer(status, v) => return Err(SourceEnd::Refused(status, error_of(&v))),
                Reply::Transient(why) if Instant::now() < deadline => {
                    log::debug!("transfer {}: status: {why}", self.transfer.id);
                    pause.sleep(self.transfer);
                }
                Reply::Transient(why) => {
                    return Err(SourceEnd::NoAnswer(format!(
                        "the destination did not answer within the resume window: {why}"
                    )))
                }
            }
        }
    }

    /// Names the body's end and digest, then polls until the destination's
    /// shared finish decided.
    fn finish(&self, length: u64, sha256: &str) -> SourceEnd {
        let body = json!({ "length": length, "sha256": sha256 }).to_string();
        let deadline = Instant::now() + self.window;
        let mut pause = Backoff::default();
        loop {
            if self.transfer.is_cancelled() {
                return SourceEnd::NoAnswer("cancelled".into());
            }
            let sent = self
                .agent
                .post(&format!("{}/finish", self.base))
                .config()
                .timeout_global(Some(Duration::from_secs(30)))
                .build()
                .header("Authorization", &self.auth())
                .header("Content-Type", "application/json")
                .send(body.as_str());
            match reply(sent) {
                Reply::Answer(202, _) => break,
                // Not receiving any more: the first finish got through (its
                // answer was lost), or the transfer ended; status says.
                Reply::Answer(409, _) => match self.status_until_answered() {
                    Ok(Status::Receiving(held)) => {
                        return SourceEnd::NoAnswer(format!(
                            "the destination holds {held} of {length} bytes at the finish"
                        ))
                    }
                    Ok(Status::Finishing) => break,
                    Ok(Status::Ended(end)) | Err(end) => return end,
                },
                Reply::Answer(status, v) => return SourceEnd::Refused(status, error_of(&v)),
                Reply::Transient(why) if Instant::now() < deadline => {
                    log::warn!("transfer {}: finish: {why}; retrying", self.transfer.id);
                    pause.sleep(self.transfer);
                }
                Reply::Transient(why) => return SourceEnd::NoAnswer(why),
            }
        }
        // Polled: from 100 ms doubling to a second for the first ten
        // seconds (a small install ends fast), then every five.
        let started = Instant::now();
        let mut quick = Duration::from_millis(100);
        loop {
            let wait = if started.elapsed() < Duration::from_secs(10) {
                let wait = quick;
                quick = (quick * 2).min(Duration::from_secs(1));
                wait
            } else {
                Duration::from_secs(5)
            };
            nap(self.transfer, wait);
            // The destination's shared finish decides; a destination that
            // stops answering (or lost the session in a restart, 404) is
            // what a cut classic POST is: the panel decides (SPEC §5.1).
            match self.status_within(FINISH_PATIENCE) {
                Ok(Status::Ended(end)) => return end,
                Err(SourceEnd::Refused(404, why)) => {
                    return SourceEnd::NoAnswer(format!("the destination lost the session: {why}"))
                }
                Err(end) => return end,
                Ok(Status::Finishing) => {}
                Ok(Status::Receiving(held)) => {
                    return SourceEnd::NoAnswer(format!(
                        "the destination went back to receiving ({held} bytes held)"
                    ))
                }
            }
        }
    }

    /// Best effort, on its own thread (the record ends without waiting for
    /// it): tell the destination to drop the session; it expires otherwise.
    /// A fresh agent: the transfer's was shut by the cancel.
    fn cancel_remote(&self) {
        let (base, auth, id, sid) = (
            self.base.clone(),
            self.auth(),
            self.transfer.id.clone(),
            self.sid.clone(),
        );
        let reason = self
            .transfer
            .cancel_reason()
            .unwrap_or_else(|| "cancelled on the source".into());
        let spawned = std::thread::Builder::new()
            .name(format!("segx-{}", &id[..8.min(id.len())]))
            .spawn(move || cancel_session(&base, &auth, &id, &sid, &reason));
        if let Err(e) = spawned {
            log::warn!(
                "transfer {}: cannot cancel the session: {e}",
                self.transfer.id
            );
        }
    }
}

fn cancel_session(base: &str, auth: &str, id: &str, sid: &str, reason: &str) {
    {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .tls_config(crate::trust::tls_config())
            .build()
            .into();
        let body = json!({ "reason": reason });
        match agent
            .delete(base)
            .header("Authorization", auth)
            .header("Content-Type", "application/json")
            .force_send_body()
            .send(body.to_string())
        {
            Ok(r) => log::info!(
                "transfer {id}: session {sid} cancel answered {}",
                r.status().as_u16()
            ),
            Err(e) => log::warn!(
                "transfer {id}: session {sid} cancel not delivered ({e}); it expires on the destination"
            ),
        }
    }
}

enum Put {
    Held(u64),
    TooLarge,
    Digest,
    Resync,
    End(SourceEnd),
}

/// The destination's status answer.
enum Status {
    Receiving(u64),
    Finishing,
    Ended(SourceEnd),
}

impl Status {
    fn of(v: &serde_json::Value) -> Status {
        let held = v.get("held").and_then(|h| h.as_u64()).unwrap_or(0);
        let code = v.get("code").and_then(|c| c.as_u64()).unwrap_or(500) as u16;
        match v.get("state").and_then(|s| s.as_str()).unwrap_or("") {
            "receiving" => Status::Receiving(held),
            "finishing" => Status::Finishing,
            "completed" => Status::Ended(SourceEnd::Accepted),
            _ => Status::Ended(SourceEnd::Refused(code, error_of(v))),
        }
    }
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

/// The segment kept for resend: an unlinked file on the data filesystem.
struct KeptSegment {
    file: File,
}

impl KeptSegment {
    fn create(data: &std::path::Path, transfer_id: &str) -> io::Result<KeptSegment> {
        let dir = super::session::sessions_root(data);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!(".out-{transfer_id}"));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        // Nothing to clean up after a crash: the name goes at once.
        std::fs::remove_file(&path)?;
        Ok(KeptSegment { file })
    }

    /// Replaces the kept segment with up to `size` next bytes of `body`
    /// (fewer only at its end), hashing them into `whole`.
    fn fill(
        &mut self,
        body: &mut impl Read,
        size: u64,
        whole: &mut Sha256,
        stop: &AtomicBool,
    ) -> io::Result<u64> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0u64;
        while got < size {
            if stop.load(Ordering::SeqCst) {
                return Err(io::Error::other("the sender stopped"));
            }
            let want = (size - got).min(buf.len() as u64) as usize;
            let n = match body.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                // Not retried: the upload pipe says "cancelled" this way.
                Err(e) => return Err(e),
            };
            whole.update(&buf[..n]);
            self.file.write_all(&buf[..n])?;
            got += n as u64;
        }
        Ok(got)
    }

    fn digest(&mut self, at: u64, n: u64) -> io::Result<String> {
        let mut sha = Sha256::new();
        io::copy(&mut self.range(at, n)?, &mut sha)?;
        Ok(hex::encode(sha.finalize()))
    }

    fn range(&mut self, at: u64, n: u64) -> io::Result<io::Take<&File>> {
        self.file.seek(SeekFrom::Start(at))?;
        Ok((&self.file).take(n))
    }
}
