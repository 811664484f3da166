//! The requests a sender makes once the session is open: a segment's PUT,
//! the status, the finish and the cancel, and what each answer means
//! (`Reply`, `Put`, `Status`).

use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::json;

use super::kept::KeptSegment;
use super::{nap, stall_bound, Backoff, Sender, FINISH_PATIENCE, SEGMENT_SHA256};
use crate::transfer::segmented::ledger::BUSY;

/// How long one status request asks the destination to wait for the
/// finish (its cap, `api::transfer_session::MAX_STATUS_WAIT`, is 20 s).
const STATUS_WAIT: Duration = Duration::from_secs(20);
use crate::transfer::finish::SourceEnd;
use crate::transfer::Transfer;

/// One answer of the destination, or why there was none.
pub(super) enum Reply {
    Answer(u16, serde_json::Value),
    /// No answer (connection cut, timeout) or a proxy's 5xx: worth asking
    /// status and trying again.
    Transient(String),
}

pub(super) fn reply(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
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

pub(super) fn error_of(v: &serde_json::Value) -> String {
    v.get("error")
        .and_then(|e| e.as_str())
        .unwrap_or("")
        .chars()
        .take(300)
        .collect()
}

pub(super) enum Put {
    Held(u64),
    TooLarge,
    Digest,
    Resync,
    /// Another request of the session is still in progress there, or no
    /// answer came: pause, then as `Resync`.
    Again,
    End(SourceEnd),
}

/// The destination's status answer.
pub(super) enum Status {
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

impl Sender<'_> {
    /// One PUT of `[offset, offset + n)` whose SHA-256 is `digest`, read
    /// from the kept segment at `at`; with how many of its bytes were
    /// handed to the connection (a cut attempt sent only part of them).
    pub(super) fn put(
        &self,
        kept: &mut KeptSegment,
        at: u64,
        offset: u64,
        n: u64,
        digest: &[u8; 32],
    ) -> (Put, u64) {
        let digest = hex::encode(digest);
        let reader = match kept.range(at, n) {
            Ok(r) => r,
            Err(e) => {
                return (
                    Put::End(SourceEnd::Local(format!(
                        "cannot read the kept segment: {e}"
                    ))),
                    0,
                )
            }
        };
        let mut reader = Counted {
            inner: reader,
            read: 0,
        };
        let put = self.put_from(&mut reader, offset, n, &digest);
        (put, reader.read)
    }

    fn put_from(&self, reader: &mut impl Read, offset: u64, n: u64, digest: &str) -> Put {
        let sent = self
            .agent
            .put(&format!("{}/segment?offset={offset}", self.base))
            .config()
            // A destination that takes no bytes (stopped, its disk hung)
            // or stays silent after the body is asked status instead: the
            // segment is resent (at most once) rather than the transfer
            // held for as long as TCP keeps a zero window open.
            .timeout_per_write(Some(stall_bound(self.window)))
            .timeout_recv_response(Some(stall_bound(self.window)))
            .build()
            .header("Authorization", &self.auth())
            .header(SEGMENT_SHA256, digest)
            .header("Content-Length", &n.to_string())
            .header("Content-Type", "application/octet-stream")
            .send(ureq::SendBody::from_reader(reader));
        match reply(sent) {
            Reply::Answer(200, v) => match v.get("held").and_then(|h| h.as_u64()) {
                Some(h) => Put::Held(h),
                None => Put::Resync,
            },
            Reply::Answer(413, _) => Put::TooLarge,
            Reply::Answer(400, v) if error_of(&v) == "segment checksum mismatch" => Put::Digest,
            Reply::Answer(409, v) if error_of(&v).starts_with(BUSY) => Put::Again,
            // Offset: go on from what the destination holds; a session no
            // longer receiving is told by status.
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
                // Also how a busy session's refusal usually arrives: it
                // answers before reading the body and closes, so the body's
                // write fails before the answer is read.
                Put::Again
            }
        }
    }

    /// Asks status until the destination answers: what it holds while it
    /// receives, or how the transfer ended.
    pub(super) fn wait_held(&self) -> Result<u64, SourceEnd> {
        match self.status_until_answered()? {
            Status::Receiving(held) => Ok(held),
            Status::Finishing => Err(SourceEnd::NoAnswer(
                "the destination is finishing a body this source did not finish".into(),
            )),
            Status::Ended(end) => Err(end),
        }
    }

    pub(super) fn status_until_answered(&self) -> Result<Status, SourceEnd> {
        self.status_within(self.window)
    }

    /// Status, asked until answered or `patience` passed without an answer.
    pub(super) fn status_within(&self, patience: Duration) -> Result<Status, SourceEnd> {
        let mut no_wait = Duration::ZERO;
        self.status_waiting(patience, &mut no_wait)
    }

    /// Status as `status_within`; a finishing session answers when its
    /// finish decided or after `wait` (`?wait=`, docs/transport.md). An
    /// attempt that gets no answer halves `wait` (a proxy may cut a silent
    /// read sooner than the destination answers) and does not count
    /// against `patience` while it waited.
    pub(super) fn status_waiting(
        &self,
        patience: Duration,
        wait: &mut Duration,
    ) -> Result<Status, SourceEnd> {
        let mut deadline = Instant::now() + patience;
        let mut pause = Backoff::default();
        loop {
            if self.transfer.is_cancelled() {
                return Err(SourceEnd::NoAnswer("cancelled".into()));
            }
            let url = if wait.is_zero() {
                self.base.clone()
            } else {
                format!("{}?wait={}", self.base, wait.as_secs())
            };
            let asked = Instant::now();
            let got = self
                .agent
                .get(&url)
                .config()
                .timeout_global(Some(Duration::from_secs(15) + *wait))
                .build()
                .header("Authorization", &self.auth())
                .call();
            match reply(got) {
                Reply::Answer(200, v) => return Ok(Status::of(&v)),
                Reply::Answer(status, v) => return Err(SourceEnd::Refused(status, error_of(&v))),
                Reply::Transient(why) if Instant::now() < deadline => {
                    log::debug!("transfer {}: status: {why}", self.transfer.id);
                    if !wait.is_zero() {
                        deadline += asked.elapsed().min(*wait);
                        *wait = Duration::from_secs(wait.as_secs() / 2);
                    }
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

    /// Names the body's end and the digest of the ack log the destination
    /// should hold (`claim`), then asks until its shared finish decided.
    pub(super) fn finish(&self, length: u64, claim: &[u8; 32]) -> SourceEnd {
        let body = json!({ "length": length, "acks_sha256": hex::encode(claim) }).to_string();
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
        // A status that waits: the destination answers as soon as its
        // finish decided, or after STATUS_WAIT still finishing (no request
        // is silent for long: proxies cut idle reads at ~100 s). A
        // destination that answers at once anyway is asked again after a
        // pause, from 100 ms doubling to 5 s.
        let mut pause = Duration::from_millis(100);
        let mut wait = STATUS_WAIT;
        loop {
            let asked = Instant::now();
            // The destination's shared finish decides; a destination that
            // stops answering (or lost the session in a restart, 404) is
            // what a cut classic POST is: the panel decides (SPEC §5.1).
            let status = self.status_waiting(FINISH_PATIENCE, &mut wait);
            let answered_at_once = wait.is_zero() || asked.elapsed() < wait / 2;
            if matches!(status, Ok(Status::Finishing)) && answered_at_once {
                nap(self.transfer, pause);
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            match status {
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
    pub(super) fn cancel_remote(&self) {
        spawn_cancel(
            self.base.clone(),
            self.auth(),
            self.transfer,
            format!("session {}", self.sid),
        );
    }
}

/// Sends the source's cancel to `url` (`DELETE`, `auth` its credential:
/// the session's secret, or the panel JWT for a session whose open got no
/// answer) on its own thread, so the record ends without waiting for it.
pub(super) fn spawn_cancel(url: String, auth: String, transfer: &Transfer, what: String) {
    let id = transfer.id.clone();
    let reason = transfer
        .cancel_reason()
        .unwrap_or_else(|| "cancelled on the source".into());
    let name = format!("segx-{}", &id[..8.min(id.len())]);
    if let Err(e) = std::thread::Builder::new()
        .name(name)
        .spawn(move || cancel_session(&url, &auth, &id, &what, &reason))
    {
        log::warn!(
            "transfer {}: cannot send the session's cancel: {e}",
            transfer.id
        );
    }
}

/// How often the cancel is tried when no answer comes: a connection cut
/// or a proxy's 5xx should not leave the session for its whole window.
const CANCEL_ATTEMPTS: u32 = 3;

/// A fresh agent: the transfer's was shut by the cancel itself.
fn cancel_session(url: &str, auth: &str, id: &str, what: &str, reason: &str) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .max_redirects(0)
        .tls_config(crate::trust::tls_config_for(url))
        .build()
        .into();
    let body = json!({ "reason": reason }).to_string();
    let mut pause = Duration::from_millis(500);
    for attempt in 1..=CANCEL_ATTEMPTS {
        let sent = agent
            .delete(url)
            .header("Authorization", auth)
            .header("Content-Type", "application/json")
            .force_send_body()
            .send(body.as_str());
        let why = match sent {
            Ok(r) if r.status().as_u16() < 500 => {
                log::info!(
                    "transfer {id}: {what}: cancel answered {}",
                    r.status().as_u16()
                );
                return;
            }
            Ok(r) => format!("answered {}", r.status().as_u16()),
            Err(e) => e.to_string(),
        };
        if attempt == CANCEL_ATTEMPTS {
            log::warn!(
                "transfer {id}: {what}: cancel not delivered ({why}); it expires on the destination"
            );
            return;
        }
        log::debug!("transfer {id}: {what}: cancel: {why}; retrying");
        std::thread::sleep(pause);
        pause *= 2;
    }
}

/// Counts the bytes of a segment the HTTP client read to send.
struct Counted<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}
