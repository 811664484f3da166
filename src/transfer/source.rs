//! The source side of a transfer (SPEC §3): archive the data directory and
//! stream it as one chunked multipart POST to the destination, then wait
//! for its verdict. The source's data is only ever read.
//!
//! Threads: this one drives the HTTP request; a producer packs into a
//! bounded pipe through the multipart writer; a monitor publishes progress.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::archive::{self, Codec, PackOptions};
use crate::environment::ServerSpec;
use crate::multipart;
use crate::node::Node;
use crate::server::{Server, TransferMark};
use crate::transfer::early_answer;
use crate::transfer::finish::{self, SourceEnd};
use crate::transfer::pipe::{pipe, PipeReader, PipeWriter};
use crate::transfer::progress::upload_line_in;
use crate::transfer::segmented;
use crate::transfer::throttle::ThrottledReader;
use crate::transfer::wire;
use crate::transfer::{Status, Transfer};

mod body;
pub mod resume;

use body::{produce, Extras};

/// What the panel asked for.
#[derive(Debug, Clone)]
pub struct OutgoingPlan {
    pub url: String,
    /// Sent verbatim as `Authorization` (the panel includes `Bearer `).
    pub token: String,
    pub start_on_completion: bool,
    /// Local backups to send along (Pelican panels list them).
    pub backups: Vec<String>,
    /// The server is still running (pre-copy was possible at the start):
    /// it is stopped after the live pass, or first for a peer that is not
    /// ferry (SPEC §10).
    pub live: bool,
    /// The segmented session a previous run of this node opened for this
    /// transfer, taken up at start-up (`source/resume.rs`): no probe, no
    /// open, the same boundary, the body packed again from its start.
    pub resume: Option<crate::transfer::persist::OutgoingSession>,
}

/// Whether the segmented transport is wanted: `transport: auto`, or
/// `FERRY_TRANSPORT=classic|segmented` overriding the key (tests,
/// benches comparing the two).
pub fn segmented_wanted(node: &Node) -> bool {
    match std::env::var("FERRY_TRANSPORT").as_deref() {
        Ok("classic") => false,
        Ok("segmented") => true,
        _ => node.config.system.transfers.segmented.transport == crate::config::Transport::Auto,
    }
}

/// The archive's compression: zstd to a ferry node that reads it (about
/// a third less CPU on both nodes than gzip for fewer bytes, measured in
/// docs/performance.md), gzip to anyone else and at level 0.
/// `FERRY_CODEC=gzip|zstd` overrides (benches comparing the two; zstd
/// still only to a ferry node).
fn archive_codec(node: &Node, ferry: Option<&segmented::sender::Ferry>) -> Codec {
    let reads_zstd = ferry.is_some_and(|f| f.zstd);
    let level = node.config.system.transfers.compression_level;
    match std::env::var("FERRY_CODEC").as_deref() {
        Ok("gzip") => Codec::Gzip,
        _ if reads_zstd && level > 0 => Codec::Zstd,
        _ => Codec::Gzip,
    }
}

/// Blocks in flight between packing and the socket (256 KiB each).
const PIPE_DEPTH: usize = 16;

/// Runs the transfer on its own thread; the mark is released when it ends.
pub fn spawn(node: Arc<Node>, transfer: Arc<Transfer>, mark: TransferMark, plan: OutgoingPlan) {
    let name = format!("out-{}", &transfer.id[..8]);
    let t = Arc::clone(&transfer);
    let n = Arc::clone(&node);
    let spawned = thread::Builder::new()
        .name(name)
        .spawn(move || run(&n, &t, mark, &plan));
    if let Err(e) = spawned {
        let status = node.transfers.finish(
            &transfer,
            Err(format!("cannot start the transfer thread: {e}")),
        );
        log::error!("transfer {}: {status:?}", transfer.id);
        let _ = node.report_to_panel(&transfer.server, false);
        transfer.finalize();
    }
}

fn run(node: &Arc<Node>, transfer: &Arc<Transfer>, mark: TransferMark, plan: &OutgoingPlan) {
    // This thread and the packing threads it starts are bulk work.
    let _batch = crate::archive::sched::batch();
    let server = Arc::clone(mark.server());
    let end = stream(node, transfer, &server, plan);
    finish::source::settle(node, transfer, mark, end);
}

/// Streams the archive; how the request ended, for the finish machine.
fn stream(
    node: &Arc<Node>,
    transfer: &Arc<Transfer>,
    server: &Arc<Server>,
    plan: &OutgoingPlan,
) -> SourceEnd {
    match send(node, transfer, server, plan) {
        Ok(end) => end,
        Err(local) => SourceEnd::Local(local),
    }
}

/// The request itself; Err for a failure here before anything was sent.
fn send(
    node: &Arc<Node>,
    transfer: &Arc<Transfer>,
    server: &Arc<Server>,
    plan: &OutgoingPlan,
) -> Result<SourceEnd, String> {
    let resuming = plan.resume.as_ref();
    // A transfer taken up after a restart is processing already.
    if resuming.is_none()
        && !node
            .transfers
            .transition(transfer, Status::Processing, None)
    {
        return Err("the transfer was cancelled before it started".to_string());
    }
    node.transfer_log(
        transfer,
        match resuming {
            None => "Preparing to stream server data to destination...",
            Some(_) => "Resuming the transfer after this node restarted...",
        },
    );
    let spec = server.spec(&node.config.system.data);
    // A taken-up session's body must be the same bytes again.
    let boundary = resuming.map_or_else(multipart::random_boundary, |s| s.boundary.clone());
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_connect(Some(Duration::from_secs(15)))
        .user_agent(format!("ferry/{}", crate::VERSION))
        .tls_config(crate::trust::tls_config_for(&plan.url))
        .build();
    // Keeps what the destination answered if it answers before the end.
    let heard = early_answer::Heard::default();
    let agent = early_answer::agent(config, &heard);
    let killer = agent.clone();
    transfer.on_cancel(move || killer.clone().shutdown());
    // With `transport: auto`, another ferry node gets the segmented
    // transport (SPEC §10); anything else the classic POST below,
    // unchanged. `FERRY_TRANSPORT=classic|segmented` overrides the key
    // (tests, benches comparing the two). The probe comes first: its
    // answer decides the archive's codec.
    let ferry = if let Some(session) = resuming {
        Some(segmented::sender::Ferry {
            segment_size: session.segment_size,
            resume_window: session.resume_window,
            zstd: session.codec == Codec::Zstd,
        })
    } else if segmented_wanted(node) {
        segmented::sender::probe(&agent, &plan.url, &plan.token)
    } else {
        None
    };
    // A taken-up session's body is packed as it was the first time.
    let codec = resuming.map_or_else(|| archive_codec(node, ferry.as_ref()), |s| s.codec);
    // With nothing left to decide how to pack (no pre-copy, no session
    // taken up), packing starts now: the walk below and the session's
    // open overlap its start, whose many small files come out slower
    // than a fast link takes them. Returning early drops the pipe's
    // reader, which ends the packing thread.
    let early = if !plan.live && resuming.is_none() {
        let outgoing = outgoing_count(node);
        let (writer, reader) = body_pipe(transfer, outgoing);
        Some((
            start_packing(
                node,
                transfer,
                plan,
                &spec,
                &boundary,
                (writer, outgoing),
                (codec, None),
            )?,
            reader,
        ))
    } else {
        None
    };
    let totals = archive::scan(&spec.data_dir, transfer.cancel_flag()).map_err(|e| {
        if e.kind() == std::io::ErrorKind::Interrupted {
            return "the transfer was cancelled".to_string();
        }
        format!(
            "cannot archive the data directory {}: {e}",
            spec.data_dir.display()
        )
    })?;
    transfer.set_totals(totals.files, totals.bytes);

    // Where the taken-up session stands (before packing anything: a
    // session that ended needs no body).
    let point = match resuming {
        Some(session) => match resume::point(node, transfer, &agent, session) {
            Ok(point) => Some(point),
            Err(end) => return Ok(end),
        },
        None => None,
    };
    if let Some(f) = &ferry {
        log::info!(
            "transfer {}: the destination speaks the segmented transport (segments of {} bytes); \
             the archive goes as {}",
            transfer.id,
            f.segment_size,
            codec.name()
        );
    }

    // Pre-copy needs a ferry peer; any other peer gets the server stopped
    // first and the classic transfer (SPEC §10).
    let small = totals.files <= crate::transfer::precopy::record::MAX_ENTRIES;
    if plan.live && ferry.is_some() && !small {
        log::info!(
            "transfer {}: {} entries are more than pre-copy records ({}); stopping first",
            transfer.id,
            totals.files,
            crate::transfer::precopy::record::MAX_ENTRIES
        );
    }
    // What the destination acknowledged: pre-copy stops the server only
    // once it holds the whole live pass (SPEC §10).
    let held = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (packing, precopy) = match early {
        Some(packing) => (packing, false),
        None => {
            let outgoing = outgoing_count(node);
            let (writer, reader) = body_pipe(transfer, outgoing);
            let live = match (plan.live, ferry.is_some() && small) {
                (true, true) => Some(body::Live {
                    server: Arc::clone(server),
                    block: crate::transfer::precopy::record::block_size(totals.bytes),
                    pause: writer.pause(),
                    held: Arc::clone(&held),
                }),
                (true, false) => {
                    node.transfer_log(transfer, "Stopping the server before the transfer...");
                    crate::transfer::precopy::stop::stop_for_transfer(node, server)
                        .map_err(str::to_string)?;
                    None
                }
                _ => None,
            };
            let precopy = live.is_some();
            let packing = start_packing(
                node,
                transfer,
                plan,
                &spec,
                &boundary,
                (writer, outgoing),
                (codec, live),
            )?;
            ((packing, reader), precopy)
        }
    };
    let (Packing { producer, whole }, reader) = packing;
    let cancel = Arc::clone(transfer.cancel_flag());
    let monitor = spawn_monitor(node, transfer);

    node.transfer_log(transfer, "Streaming archive to destination...");
    // A taken-up session's body that is not what the destination holds.
    let differs = segmented::sender::resume::Found::default();
    let body = LastByte {
        inner: ThrottledReader {
            // The held prefix of a taken-up session is checked, not sent
            // (nor throttled).
            inner: segmented::sender::resume::VerifiedPrefix::new(
                reader,
                point.as_ref().map(|p| p.acks.clone()).unwrap_or_default(),
                std::sync::Arc::clone(&differs),
            )
            .keeping_alive(
                resuming.map(|s| segmented::sender::resume::KeepAlive::asking(&agent, s)),
            ),
            throttle: &node.upload,
            cancel: &cancel,
        },
        whole: &whole,
        node,
        transfer,
        // Taken up after the last byte was read once: not a step again.
        reached: transfer.archive_sent(),
        closing: ClosingWatch::new(&boundary),
    };
    let send_clock = transfer.counters.stage_clock(crate::archive::Stage::Send);
    if let Some(ferry) = ferry {
        let announce = segmented::sender::Announce {
            boundary: &boundary,
            bytes_total: totals.bytes,
            files_total: totals.files,
            disk_total: totals.disk_bytes,
            // What the listed backups this node holds weigh (the
            // destination's spool cap counts them).
            backups_total: plan
                .backups
                .iter()
                .filter_map(|b| {
                    let path = node.config.system.keep.backup_file(&transfer.server, b);
                    std::fs::metadata(path).ok().map(|m| m.len())
                })
                .sum(),
            start_on_completion: plan.start_on_completion,
            precopy,
            codec,
        };
        // A body cut short by a failed packing thread must not be
        // finished as if whole: its end is an error here.
        let body = WholeOrError {
            inner: body,
            whole: &whole,
        };
        let end = send_segmented(
            node,
            transfer,
            &agent,
            plan,
            ferry,
            &announce,
            body,
            precopy.then_some(held),
            point.as_ref(),
        );
        drop(send_clock);
        let produced = producer
            .join()
            .unwrap_or_else(|_| Err("the packing thread panicked".to_string()));
        drop(monitor);
        // The body packed again differs from the held bytes: that is why,
        // not the packing that stopped when the sender gave up on it.
        if let Some(m) = differs.get() {
            return Err(format!("cannot resume after this node restarted: {m}"));
        }
        match produced {
            // The body stopped here: packing's own error says why. A
            // destination's answer (a refusal at open) is its own reason,
            // except when the server would not stop for pre-copy's final
            // pass: that is why, whatever the destination made of it.
            Err(e)
                if matches!(end, SourceEnd::Local(_))
                    || e == crate::transfer::precopy::stop::STOP_FAILED =>
            {
                return Err(e)
            }
            _ => {}
        }
        return Ok(end);
    }
    let sent = agent
        .post(&plan.url)
        .header("Authorization", &plan.token)
        .header(
            "Content-Type",
            &format!("multipart/form-data; boundary={boundary}"),
        )
        .header(wire::HEADER_TRANSFER_ID, &transfer.id)
        .header(wire::HEADER_BYTES_TOTAL, &totals.bytes.to_string())
        .header(wire::HEADER_DISK_TOTAL, &totals.disk_bytes.to_string())
        .header(wire::HEADER_FILES_TOTAL, &totals.files.to_string())
        .header(
            wire::HEADER_START_ON_COMPLETION,
            if plan.start_on_completion {
                "true"
            } else {
                "false"
            },
        )
        .send(ureq::SendBody::from_reader(&mut { body }));
    drop(send_clock);
    // The producer ends on its own once the pipe's reader is gone.
    let produced = producer
        .join()
        .unwrap_or_else(|_| Err("the packing thread panicked".to_string()));
    drop(monitor);

    let mut response = match sent {
        Ok(response) => response,
        Err(_) if transfer.is_cancelled() => {
            return Ok(SourceEnd::NoAnswer("cancelled".to_string()))
        }
        Err(e) => {
            let heard = std::mem::take(&mut *heard.lock().unwrap_or_else(|p| p.into_inner()));
            return Ok(match early_answer::parse(&heard) {
                Some((status, message)) => SourceEnd::Refused(status, message),
                None => SourceEnd::NoAnswer(format!("could not stream to the destination: {e}")),
            });
        }
    };
    let status = response.status().as_u16();
    if status == 200 {
        // The destination committed; whatever happened here meanwhile.
        return Ok(SourceEnd::Accepted);
    }
    // Packing failed here: the body was cut short, whatever the answer.
    produced?;
    let text = response
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_string()
        .unwrap_or_default();
    let reason = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| text.chars().take(200).collect());
    Ok(SourceEnd::Refused(status, reason))
}

/// The packing thread writing the body into the pipe.
struct Packing {
    producer: thread::JoinHandle<Result<(), String>>,
    /// The whole body was written into the pipe (its end is then real).
    whole: Arc<AtomicBool>,
}

/// The pipe between packing and the sender, as deep as the number of
/// outgoing transfers allows.
fn body_pipe(transfer: &Transfer, outgoing: usize) -> (PipeWriter, PipeReader) {
    pipe(pipe_depth(outgoing), Arc::clone(transfer.cancel_flag()))
}

fn outgoing_count(node: &Node) -> usize {
    node.transfers
        .all_active()
        .iter()
        .filter(|t| t.direction == crate::transfer::Direction::Outgoing)
        .count()
}

/// Starts packing the server's body (the multipart form the classic POST
/// sends, which the segments carry too) into `writer`, its threads shared
/// with the other `outgoing` transfers.
fn start_packing(
    node: &Arc<Node>,
    transfer: &Arc<Transfer>,
    plan: &OutgoingPlan,
    spec: &ServerSpec,
    boundary: &str,
    (writer, outgoing): (PipeWriter, usize),
    (codec, live): (Codec, Option<body::Live>),
) -> Result<Packing, String> {
    let configuration = serde_json::json!({
        "settings": spec.settings,
        "process_configuration": spec.process_configuration,
    });
    let options = PackOptions {
        level: node.config.system.transfers.compression_level,
        threads: compression_threads(
            node.config.system.transfers.compression_threads,
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            outgoing,
        ),
        codec,
        // Pre-copy's live pass is recorded and compared in name order.
        files_first: live.is_none(),
    };
    let whole = Arc::new(AtomicBool::new(false));
    let producer = {
        let transfer = Arc::clone(transfer);
        let node = Arc::clone(node);
        let boundary = boundary.to_string();
        let root = spec.data_dir.clone();
        let whole = Arc::clone(&whole);
        let extras = Extras {
            keep: node.config.system.keep.clone(),
            server: transfer.server.clone(),
            backups: plan.backups.clone(),
        };
        thread::Builder::new()
            .name(format!("pack-{}", &transfer.id[..8]))
            .spawn(move || {
                let mut writer = writer;
                let result = produce(
                    &mut writer,
                    &boundary,
                    &configuration,
                    &root,
                    &options,
                    &transfer,
                    &extras,
                    &node,
                    live,
                );
                // Set before the writer is dropped, which ends the body.
                whole.store(result.is_ok(), Ordering::SeqCst);
                drop(writer);
                result
            })
            .map_err(|e| format!("cannot start the packing thread: {e}"))?
    };
    Ok(Packing { producer, whole })
}

/// The segmented transport's half of `send`: open, segments, finish. The
/// body is dropped on return, which ends the producer if it is still
/// writing. `held`: where the destination's acknowledged bytes are
/// published (pre-copy).
#[allow(clippy::too_many_arguments)]
fn send_segmented<R: Read + Send>(
    node: &Node,
    transfer: &Transfer,
    agent: &ureq::Agent,
    plan: &OutgoingPlan,
    ferry: segmented::sender::Ferry,
    announce: &segmented::sender::Announce<'_>,
    mut body: R,
    held: Option<Arc<std::sync::atomic::AtomicU64>>,
    point: Option<&segmented::sender::resume::ResumePoint>,
) -> SourceEnd {
    use segmented::sender::Sender;
    let (mut sender, size) = match (&plan.resume, point) {
        (Some(session), Some(point)) => {
            let mut sender = Sender::reopen(node, transfer, agent, session);
            sender.start_at(point);
            (sender, session.segment_size)
        }
        _ => {
            let opened = Sender::open(
                node,
                transfer,
                agent,
                &plan.url,
                &plan.token,
                ferry,
                announce,
            );
            let (sender, offered) = match opened {
                Ok(opened) => opened,
                Err(end) => return end,
            };
            let size = offered
                .min(ferry.segment_size)
                .min(node.config.system.transfers.segmented.segment_size);
            // Pre-copy's live pass cannot be packed again: not resumable
            // after a restart of this node (docs/transport.md).
            if !announce.precopy {
                resume::persist(node, transfer, plan, &sender, announce, size, ferry);
            }
            (sender, size)
        }
    };
    if plan.resume.is_some() || !announce.precopy {
        resume::note_acks(node, transfer, &mut sender);
    }
    if let Some(held) = held {
        sender.report_held(held);
    }
    node.transfer_log(
        transfer,
        &format!(
            "Sending in segments of {} (resumable)...",
            crate::transfer::progress::human_bytes(size)
        ),
    );
    sender.run(&mut body, size)
}

/// The body as ureq reads it; when the closing delimiter is read (or the
/// end, after the whole body was produced), the last byte is handed to the
/// network: the finish enters `sent-last-byte` (from then on the
/// destination may hold it all). The delimiter, not the pipe's end: on a
/// loaded machine the packing thread may close the pipe long after the
/// destination read the delimiter, committed, and the panel's DELETE came.
struct LastByte<'a, R> {
    inner: R,
    whole: &'a AtomicBool,
    node: &'a Node,
    transfer: &'a Transfer,
    reached: bool,
    closing: ClosingWatch,
}

/// The segmented body: its end is an error unless the packing thread
/// wrote the whole body (the sender would otherwise finish a short one).
struct WholeOrError<'a, R> {
    inner: R,
    whole: &'a AtomicBool,
}

impl<R: Read> Read for WholeOrError<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() && !self.whole.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("the packing stopped"));
        }
        Ok(n)
    }
}

/// Watches a multipart body go by for its closing delimiter.
struct ClosingWatch {
    /// `--<boundary>--\r\n`, what ends the body.
    closing: Vec<u8>,
    /// The last bytes seen, at most `closing.len()`.
    tail: Vec<u8>,
}

impl ClosingWatch {
    fn new(boundary: &str) -> ClosingWatch {
        ClosingWatch {
            closing: format!("--{boundary}--\r\n").into_bytes(),
            tail: Vec::new(),
        }
    }

    /// Whether the bytes seen so far, `read` the latest, end with it.
    fn saw(&mut self, read: &[u8]) -> bool {
        self.tail.extend_from_slice(read);
        let excess = self.tail.len().saturating_sub(self.closing.len());
        self.tail.drain(..excess);
        self.tail == self.closing
    }
}

impl<R: Read> Read for LastByte<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let at_end = n == 0 && !buf.is_empty() && self.whole.load(Ordering::SeqCst);
        if !self.reached && (at_end || (n > 0 && self.closing.saw(&buf[..n]))) {
            self.reached = true;
            let _ = self
                .node
                .transfers
                .enter_phase(self.transfer, finish::Phase::SentLastByte);
            self.node
                .transfer_log(self.transfer, "Finished streaming archive to destination.");
        }
        Ok(n)
    }
}

/// Upload pipe blocks for a transfer: the full depth for one, shared
/// among the outgoing transfers running now (at least 4). Concurrent
/// transfers are CPU-bound, so their pipes never fill, but each full pipe
/// is 4 MiB of a node's memory.
fn pipe_depth(outgoing: usize) -> usize {
    (PIPE_DEPTH / outgoing.max(1)).max(4)
}

/// Compression workers for a transfer: the configured number, or for 0
/// ("one per core") the cores divided among the outgoing transfers
/// running now, at least one. Eight transfers on two cores each with two
/// workers and six 2 MiB slots only add threads and cache misses.
fn compression_threads(configured: usize, cores: usize, outgoing: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    (cores / outgoing.max(1)).max(1)
}

/// Publishes `transfer progress` every second and the Wings upload line
/// every 5 seconds until dropped. Dropping it wakes the thread at once
/// (it waits on a channel, not in a sleep), so ending a transfer is not
/// delayed by up to a tick.
pub struct Monitor {
    stop: Option<crossbeam_channel::Sender<()>>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        // Disconnecting the channel is the stop signal.
        self.stop.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

pub fn spawn_monitor(node: &Arc<Node>, transfer: &Arc<Transfer>) -> Monitor {
    let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
    let (node, transfer) = (Arc::clone(node), Arc::clone(transfer));
    let handle = thread::Builder::new()
        .name(format!("mon-{}", &transfer.id[..8]))
        .spawn(move || {
            let mut last_line = Instant::now();
            let mut last_progress = Instant::now();
            while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(Duration::from_millis(100))
            {
                if last_progress.elapsed() >= Duration::from_secs(1) {
                    last_progress = Instant::now();
                    let progress = transfer.progress();
                    if let Ok(text) = serde_json::to_string(&progress) {
                        node.events.publish(
                            &transfer.server,
                            crate::events::Event::new("transfer progress", text),
                        );
                    }
                    if transfer.direction == crate::transfer::Direction::Outgoing
                        && last_line.elapsed() >= Duration::from_secs(5)
                    {
                        last_line = Instant::now();
                        node.transfer_log(
                            &transfer,
                            &upload_line_in(
                                progress.bytes_done,
                                progress.bytes_total,
                                progress.phase,
                            ),
                        );
                    }
                }
            }
        })
        .ok();
    Monitor {
        stop: Some(stop),
        handle,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_closing_delimiter_is_seen_across_reads_and_only_at_the_end() {
        let mut w = super::ClosingWatch::new("b0undary");
        assert!(!w.saw(b"--b0undary\r\ncontent\r\n--b0und"));
        assert!(w.saw(b"ary--\r\n"));
        let mut w = super::ClosingWatch::new("b0undary");
        // In pieces of a byte, and not when more follows.
        let body = b"\r\n--b0undary--\r\n";
        let seen: Vec<bool> = body.iter().map(|b| w.saw(&[*b])).collect();
        assert_eq!(seen.iter().filter(|s| **s).count(), 1);
        assert!(seen[body.len() - 1]);
        assert!(!w.saw(b"x"));
    }

    use super::{compression_threads, pipe_depth, PIPE_DEPTH};

    #[test]
    fn automatic_threads_share_the_cores_among_transfers() {
        assert_eq!(compression_threads(0, 2, 1), 2);
        assert_eq!(compression_threads(0, 2, 0), 2);
        assert_eq!(compression_threads(0, 2, 8), 1);
        assert_eq!(compression_threads(0, 16, 3), 5);
        assert_eq!(compression_threads(3, 2, 8), 3, "an explicit setting wins");
    }

    #[test]
    fn the_upload_pipe_is_shared_among_transfers_down_to_four_blocks() {
        assert_eq!(pipe_depth(0), PIPE_DEPTH);
        assert_eq!(pipe_depth(1), PIPE_DEPTH);
        assert_eq!(pipe_depth(2), PIPE_DEPTH / 2);
        assert_eq!(pipe_depth(8), 4);
        assert_eq!(pipe_depth(100), 4);
    }
}
