//! What the source sends (SPEC §3): the multipart body, written in the
//! order of `wire` by the packing thread: configuration, archive, its
//! checksum under both names, each backup with its checksum, the
//! installation log; with pre-copy (SPEC §10) the archive is the live
//! pass, and after the log the server is stopped and the final pass's
//! delta and manifest follow.

use std::io::Write;
use std::time::Instant;

use crate::archive::{self, PackError, PackOptions};
use crate::multipart::{MultipartWriter, PartInfo};
use crate::node::Node;
use crate::transfer::manager::CopyPhase;
use crate::transfer::precopy::delta;
use crate::transfer::precopy::record::Record;
use crate::transfer::precopy::wire as precopy_wire;
use crate::transfer::wire;
use crate::transfer::Transfer;
use sha2::{Digest, Sha256};

/// Pre-copy: the server still runs while the archive is packed.
pub(super) struct Live {
    pub server: std::sync::Arc<crate::server::Server>,
    /// Block size of the record's hashes (`precopy::record::block_size`).
    pub block: u64,
    /// The upload pipe's pause point: the live pass's end.
    pub pause: crate::transfer::pipe::Pause,
    /// What the destination acknowledged holding (the segmented sender's
    /// `held`, a body offset).
    pub held: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// What travels besides the data: backups and the installation log.
pub(super) struct Extras {
    pub keep: crate::config::KeepConfig,
    pub server: String,
    pub backups: Vec<String>,
}

/// Writes the multipart body in the order of `wire` (SPEC §3): configuration,
/// archive, its checksum under both names, each backup and its checksum,
/// the installation log.
#[allow(clippy::too_many_arguments)]
pub(super) fn produce(
    writer: impl Write,
    boundary: &str,
    configuration: &serde_json::Value,
    root: &std::path::Path,
    options: &PackOptions,
    transfer: &Transfer,
    extras: &Extras,
    node: &Node,
    live: Option<Live>,
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("the upload stopped: {e}");
    let mut record = live.as_ref().map(|l| Box::new(Record::new(l.block)));
    if record.is_some() {
        transfer.set_copy_phase(CopyPhase::Precopy);
        node.transfer_log(
            transfer,
            "Pre-copy: sending the data while the server keeps running...",
        );
    }
    let mut mp = MultipartWriter::new(writer, boundary);
    mp.begin_part(&PartInfo {
        name: wire::CONFIGURATION.into(),
        filename: None,
        content_type: Some("application/json".into()),
    })
    .map_err(io)?;
    serde_json::to_writer(&mut mp, configuration)
        .map_err(|e| format!("cannot write the configuration part: {e}"))?;
    mp.begin_part(&PartInfo {
        name: wire::ARCHIVE.into(),
        filename: Some(wire::archive_filename(options.codec).into()),
        content_type: Some("application/octet-stream".into()),
    })
    .map_err(io)?;
    let observer = record
        .as_deref_mut()
        .map(|r| r as &mut (dyn archive::PackObserver + 'static));
    let summary = archive::pack_observed(
        root,
        &mut mp,
        options,
        transfer.cancel_flag(),
        &transfer.counters,
        observer,
    )
    .map_err(|e| match e {
        PackError::Cancelled => "cancelled".to_string(),
        PackError::Io(m) => m,
    })?;
    // Both names: Pterodactyl Wings and calagopus read the first, Pelican
    // Wings the second, and each skips the other's.
    for name in [wire::CHECKSUM, wire::CHECKSUM_ARCHIVE] {
        write_field(&mut mp, name, &summary.sha256_hex).map_err(io)?;
    }
    send_backups(&mut mp, extras, transfer, node)?;
    send_install_log(&mut mp, extras, transfer).map_err(io)?;
    if let (Some(live), Some(mut record)) = (live, record) {
        final_pass(&mut mp, root, &live, &mut record, transfer, node)?;
    }
    let mut inner = mp.finish().map_err(io)?;
    inner.flush().map_err(io)?;
    log::info!(
        "transfer {}: archive of {} entries, {} bytes, {} on the wire, sha256 {}",
        transfer.id,
        summary.files,
        summary.bytes,
        summary.wire_bytes,
        summary.sha256_hex
    );
    Ok(())
}

/// Pre-copy's end of the body: stop the server, then the delta against
/// the live pass's record and the stopped tree's manifest.
fn final_pass<W: Write>(
    mp: &mut MultipartWriter<W>,
    root: &std::path::Path,
    live: &Live,
    record: &mut Record,
    transfer: &Transfer,
    node: &Node,
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("the upload stopped: {e}");
    if transfer.is_cancelled() {
        return Err("cancelled".into());
    }
    wait_held(mp, live, transfer)?;
    crate::transfer::finish::failpoint::point("precopy-before-stop");
    node.transfer_log(
        transfer,
        "Pre-copy: stopping the server for the final pass...",
    );
    crate::transfer::precopy::stop::stop_for_transfer(node, &live.server)
        .map_err(str::to_string)?;
    let stopped = Instant::now();
    transfer.set_copy_phase(CopyPhase::Final);
    crate::transfer::finish::failpoint::point("precopy-stopped");
    record.seal();
    mp.begin_part(&PartInfo {
        name: precopy_wire::DELTA.into(),
        filename: None,
        content_type: Some("application/octet-stream".into()),
    })
    .map_err(io)?;
    let delta = delta::write_delta(root, record, mp, transfer.cancel_flag())?;
    mp.begin_part(&PartInfo {
        name: precopy_wire::MANIFEST.into(),
        filename: None,
        content_type: Some("application/x-ndjson".into()),
    })
    .map_err(io)?;
    let entries = delta::write_manifest(root, mp, transfer.cancel_flag())?;
    let line = format!(
        "pre-copy: final pass sent {} changed files and {} other ops, {} bytes of data (live pass {} bytes), {} deletions, manifest of {entries} entries in {:.3} s",
        delta.files,
        delta.ops - delta.files,
        delta.bytes,
        record.bytes,
        delta.deleted,
        stopped.elapsed().as_secs_f64()
    );
    log::info!("transfer {}: {line}", transfer.id);
    node.transfer_log(transfer, &line);
    Ok(())
}

/// Waits until the destination holds every byte written so far (the
/// live pass): the server is stopped only then, so the downtime does not
/// include sending what was packed before the stop but still in the
/// sender's hands (SPEC §10). The pipe's pause point makes the sender end
/// its segment here rather than wait to fill it.
fn wait_held<W: Write>(
    mp: &mut MultipartWriter<W>,
    live: &Live,
    transfer: &Transfer,
) -> Result<(), String> {
    use std::sync::atomic::Ordering;
    mp.flush().map_err(|e| format!("the upload stopped: {e}"))?;
    let at = live.pause.here();
    let started = Instant::now();
    while live.held.load(Ordering::SeqCst) < at {
        if transfer.is_cancelled() {
            return Err("cancelled".into());
        }
        if live.pause.reader_gone() {
            return Err("the upload stopped before the live pass was held".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    log::info!(
        "transfer {}: pre-copy: the destination holds the live pass ({at} bytes of the body; waited {:.3} s)",
        transfer.id,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn write_field<W: Write>(
    mp: &mut MultipartWriter<W>,
    name: &str,
    value: &str,
) -> std::io::Result<()> {
    mp.begin_part(&PartInfo {
        name: name.into(),
        filename: None,
        content_type: None,
    })?;
    mp.write_all(value.as_bytes())
}

/// Each listed backup as stored, then its SHA-256 (Pelican's names and
/// order). The files are only read: the panel deletes them after success.
fn send_backups<W: Write>(
    mp: &mut MultipartWriter<W>,
    extras: &Extras,
    transfer: &Transfer,
    node: &Node,
) -> Result<(), String> {
    let started = Instant::now();
    let mut bytes: u64 = 0;
    for backup in &extras.backups {
        let path = extras.keep.backup_file(&extras.server, backup);
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // As Pelican: a listed backup this node does not hold
                // (kept remotely, or already gone) is not sent.
                node.transfer_log(
                    transfer,
                    &format!("Backup {backup} is not stored on this node; not sent."),
                );
                continue;
            }
            Err(e) => {
                return Err(format!(
                    "cannot read backup {backup} at {}: {e}",
                    path.display()
                ))
            }
        };
        let name = format!("{backup}.tar.gz");
        mp.begin_part(&PartInfo {
            name: wire::backup_part(backup),
            filename: Some(name),
            content_type: Some("application/octet-stream".into()),
        })
        .map_err(|e| format!("the upload stopped: {e}"))?;
        let mut tee = HashingWriter {
            inner: &mut *mp,
            sha: Sha256::new(),
            cancel: transfer.cancel_flag(),
        };
        let n = std::io::copy(
            &mut std::io::BufReader::with_capacity(256 * 1024, file),
            &mut tee,
        )
        .map_err(|e| format!("sending backup {backup} stopped: {e}"))?;
        let digest = hex::encode(tee.sha.finalize());
        write_field(mp, &wire::backup_checksum_part(backup), &digest)
            .map_err(|e| format!("the upload stopped: {e}"))?;
        bytes += n;
    }
    if bytes > 0 {
        let secs = started.elapsed().as_secs_f64().max(1e-6);
        log::info!(
            "transfer {}: sent {} backups, {bytes} bytes in {secs:.3} s ({:.1} MB/s)",
            transfer.id,
            extras.backups.len(),
            bytes as f64 / secs / 1e6
        );
    }
    Ok(())
}

/// The server's installation log, when this node has one (as Wings: a
/// log that cannot be read is skipped, not fatal).
fn send_install_log<W: Write>(
    mp: &mut MultipartWriter<W>,
    extras: &Extras,
    transfer: &Transfer,
) -> std::io::Result<()> {
    let path = extras.keep.install_log(&extras.server);
    let Ok(mut file) = std::fs::File::open(&path) else {
        return Ok(());
    };
    mp.begin_part(&PartInfo {
        name: wire::INSTALL_LOGS.into(),
        filename: Some(wire::INSTALL_LOG_FILENAME.into()),
        content_type: Some("text/plain".into()),
    })?;
    let mut tee = HashingWriter {
        inner: &mut *mp,
        sha: Sha256::new(),
        cancel: transfer.cancel_flag(),
    };
    std::io::copy(&mut file, &mut tee)?;
    Ok(())
}

/// Hashes what passes to the multipart writer; stops on cancel.
struct HashingWriter<'a, W: Write> {
    inner: &'a mut W,
    sha: Sha256,
    cancel: &'a std::sync::atomic::AtomicBool,
}

impl<W: Write> Write for HashingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(std::io::Error::other("cancelled"));
        }
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
