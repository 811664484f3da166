//! The destination side of a transfer (SPEC §4): verify the token, stream
//! the multipart body through SHA-256 and gunzip into staging, compare the
//! digest, install (rename, register, container), report, answer.
//!
//! Every failure after the transfer begins removes staging, forgets the
//! server, reports failure to the panel once and answers the error, so no
//! partial server is ever visible.

use std::io::Read;
use std::sync::Arc;

use crate::archive::{self, ExtractError, ExtractLimits, Staging};
use crate::http::auth;
use crate::http::reply::ApiError;
use crate::http::{Request, Response};
use crate::jwt::{self, TokenError};
use crate::multipart::{self, MultipartError, MultipartReader};
use crate::node::Node;
use crate::server::{is_uuid, ServerConfig};
use crate::transfer::extras::{ExtrasError, Received};
use crate::transfer::finish::destination::{check_environment, refuse_running_container};
use crate::transfer::finish::{self, Phase};
use crate::transfer::precopy;
use crate::transfer::source::spawn_monitor;
use crate::transfer::throttle::ThrottledReader;
use crate::transfer::wire::{self, Part};
use crate::transfer::{Direction, Status, Transfer};

pub const INVALID_TOKEN: &str = "Invalid or expired transfer token.";
pub const EXISTS: &str = "A server with this identifier already exists on this instance.";
pub const IN_PROGRESS: &str = "A transfer is already in progress for this server.";
pub const NO_SPACE: &str = "There is not enough disk space available to perform that action.";
pub const ABORTED: &str = "Request aborted by client.";

/// A classic POST (or a session opened without pre-copy) carrying one of
/// pre-copy's parts.
pub const PRECOPY_REFUSED: &str = "pre-copy parts are only accepted in a pre-copy session";
/// A pre-copy session whose body ended without its delta and manifest.
pub const PRECOPY_MISSING: &str = "the pre-copy delta or manifest is missing";

pub const CHECKSUMS_DIFFER: &str = "checksum and checksum_archive differ";
pub const NO_MULTIPLEX: &str = "multiplexed transfers are not supported by this node: \
     set multiplex_streams to 0 on the source";

/// A part this node does not know is drained up to this many bytes.
const MAX_SKIPPED: u64 = 256 << 20;
/// The checksum part is a hex SHA-256; anything longer is refused.
const MAX_CHECKSUM: usize = 128;
/// The configuration part is a JSON object of modest size.
const MAX_CONFIGURATION: usize = 1024 * 1024;

/// `POST /api/transfers`.
pub fn receive(node: &Arc<Node>, request: &mut Request) -> Result<Response, ApiError> {
    let claims = verify_token(node, request)?;
    let uuid = claims.server.clone();
    if node.registry.contains(&uuid) {
        return Err(ApiError::new(409, EXISTS));
    }
    // An extra stream of a calagopus multiplexed transfer: refused before
    // it could be taken for a transfer of its own (docs/decisions.md).
    if request.header(wire::HEADER_MULTIPLEX_STREAM).is_some() {
        return Err(ApiError::new(400, NO_MULTIPLEX));
    }
    let boundary = request
        .header("content-type")
        .and_then(multipart::boundary_from_content_type)
        .ok_or_else(|| ApiError::new(400, "invalid content type"))?;
    let transfer = node
        .transfers
        .begin(
            &uuid,
            Direction::Incoming,
            &request.remote_addr.ip().to_string(),
        )
        .map_err(|_| ApiError::new(409, IN_PROGRESS))?;
    node.transfers
        .transition(&transfer, Status::Processing, None);
    // The source announces its totals so the destination's progress (and
    // its websocket) can show a percentage.
    let announced = |name: &str| {
        request
            .header(name)
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    if let (Some(files), Some(bytes)) = (
        announced("x-ferry-files-total"),
        announced("x-ferry-bytes-total"),
    ) {
        transfer.set_totals(files, bytes);
    }
    // A cancel stops the body's reads but keeps the way back open, so the
    // source still gets the answer (409, cancelled on the destination).
    let connection = request.connection();
    transfer.on_cancel(move || connection.shutdown_read());
    // From here the request lasts as long as the transfer: this thread
    // becomes the transfer's and a new one takes its seat in the pool.
    request.leave_worker_pool();
    // Receiving, hashing and unpacking are bulk work, and so is the
    // progress monitor (spawned threads inherit the class); this thread
    // goes back to the API's class when they end.
    let batch = crate::archive::sched::batch();
    let monitor = spawn_monitor(node, &transfer);
    let result = receive_tree(node, request, &transfer, &uuid, &boundary);
    drop(batch);
    drop(monitor);
    node.transfers
        .remember_token(&claims.replay_key, claims.expires_at);
    let start_on_completion = request
        .header("x-ferry-start-on-completion")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    match result {
        Ok((staging, config, extras)) => finish::install_and_report(
            node,
            &transfer,
            staging,
            extras,
            config,
            start_on_completion,
        ),
        Err(error) => finish::destination::fail(node, &transfer, error),
    }
}

/// The transfer JWT's checks before any body is read (SPEC §4's first
/// rows): signature, times, scope, a server uuid, not a replay. Shared by
/// the classic POST and the segmented transport's `open`.
pub(crate) fn verify_token(
    node: &Node,
    request: &Request,
) -> Result<jwt::TransferClaims, ApiError> {
    let claims = match jwt::verify_transfer_token(
        request.header("authorization"),
        node.config.token.as_bytes(),
    ) {
        Ok(claims) => claims,
        Err(TokenError::Missing) => {
            return Err(ApiError::new(401, auth::MISSING).with_header("WWW-Authenticate", "Bearer"))
        }
        Err(TokenError::Invalid(why)) => {
            log::warn!("transfer token refused from {}: {why}", request.remote_addr);
            return Err(ApiError::new(401, INVALID_TOKEN));
        }
        Err(TokenError::Forbidden) => {
            log::warn!(
                "transfer token from {} lacks the transfer scope",
                request.remote_addr
            );
            return Err(ApiError::new(403, "Forbidden."));
        }
    };
    if !is_uuid(&claims.server) {
        log::warn!(
            "transfer token refused: sub `{}` is not a server uuid",
            claims.server
        );
        return Err(ApiError::new(401, INVALID_TOKEN));
    }
    if node.transfers.token_used(&claims.replay_key) {
        log::warn!(
            "transfer token refused from {}: replay of a token already used for {}",
            request.remote_addr,
            claims.server
        );
        return Err(ApiError::new(401, INVALID_TOKEN));
    }
    Ok(claims)
}

/// Receives the body into staging and verifies it: the staged tree and
/// the server's configuration, ready for `finish::install_and_report`. On
/// error the staging directory is gone (dropped).
fn receive_tree(
    node: &Arc<Node>,
    request: &mut Request,
    transfer: &Arc<Transfer>,
    uuid: &str,
    boundary: &str,
) -> Result<ReceivedTree, ApiError> {
    refuse_multiplex(request)?;
    // What the files take on disk (holes cost nothing, as extraction
    // writes them); a source that does not say, the apparent size.
    let needed = |name: &str| {
        request
            .header(name)
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let announced = needed("x-ferry-disk-total").or_else(|| needed("x-ferry-bytes-total"));
    receive_body(
        node,
        request.body(),
        transfer,
        uuid,
        boundary,
        announced,
        false,
    )
}

/// The body half of `receive_tree`, from any reader of the multipart body:
/// the classic request's body, or the segmented transport's spool
/// (`segmented::session`). `announced` is the disk the source said the
/// tree needs, checked before a byte is written. `precopy`: the session
/// was opened for pre-copy, so the body ends with its delta and manifest
/// (refused otherwise).
/// What a received body leaves: the verified tree in staging, the server's
/// configuration and the extras (backups, install log) that travelled.
pub(crate) type ReceivedTree = (Staging, ServerConfig, Received);

pub(crate) fn receive_body(
    node: &Arc<Node>,
    body: impl Read,
    transfer: &Arc<Transfer>,
    uuid: &str,
    boundary: &str,
    announced: Option<u64>,
    precopy: bool,
) -> Result<ReceivedTree, ApiError> {
    let mut config = match &node.panel {
        Some(panel) => {
            let remote = panel.server(uuid).map_err(|e| {
                ApiError::new(
                    500,
                    format!("failed to get the server configuration from the panel: {e}"),
                )
            })?;
            Some(ServerConfig {
                uuid: uuid.to_string(),
                settings: remote.settings,
                process_configuration: remote.process_configuration,
            })
        }
        None => None,
    };
    let limit = config.as_ref().and_then(ServerConfig::disk_space_bytes);
    if let Some(total) = announced {
        preflight_space(node, limit, total)?;
    }
    refuse_running_container(node, uuid)?;
    let staging = Staging::create(&node.config.system.data, uuid, &transfer.id)
        .map_err(|e| ApiError::new(500, format!("failed to create the staging directory: {e}")))?;
    node.transfer_log(transfer, "Receiving archive from source...");

    let cancel = Arc::clone(transfer.cancel_flag());
    let body = ThrottledReader {
        inner: body,
        throttle: &node.download,
        cancel: &cancel,
    };
    let mut parts = MultipartReader::new(body, boundary);
    let mut digest: Option<String> = None;
    let mut checksum: Option<String> = None;
    let mut extras = Received::new(&node.config.system, uuid, &transfer.id);
    // Pre-copy: content bytes the archive wrote, whether the delta was
    // applied, whether the manifest was checked.
    let mut extracted: u64 = 0;
    let (mut delta_applied, mut manifest_checked) = (false, false);
    while let Some(part) = parts.next_part().map_err(multipart_error)? {
        match wire::classify(&part.name, part.filename.as_deref()) {
            Part::Configuration if digest.is_none() => {
                let text =
                    read_bounded(&mut parts.part_body(), MAX_CONFIGURATION, "configuration")?;
                if config.is_none() {
                    config = Some(configuration_from_part(uuid, &text)?);
                }
            }
            Part::Archive(codec) => {
                if digest.is_some() {
                    return Err(ApiError::new(400, "the archive was sent twice"));
                }
                if let Some(config) = &config {
                    check_environment(node, config)?;
                }
                let limits = ExtractLimits {
                    max_bytes: config.as_ref().and_then(ServerConfig::disk_space_bytes),
                    owner: node.config.system.user,
                };
                let summary = archive::extract_codec(
                    parts.part_body(),
                    codec,
                    &staging,
                    &limits,
                    &cancel,
                    &transfer.counters,
                )
                .map_err(extract_error)?;
                log::info!(
                    "transfer {}: archive extracted: {} entries, {} bytes from {} {} bytes",
                    transfer.id,
                    summary.files,
                    summary.bytes,
                    summary.wire_bytes,
                    codec.name()
                );
                extracted = summary.bytes;
                digest = Some(summary.sha256_hex);
            }
            Part::Checksum => {
                if digest.is_none() {
                    return Err(ApiError::new(
                        400,
                        "archive must be sent before the checksum",
                    ));
                }
                let text = read_bounded(&mut parts.part_body(), MAX_CHECKSUM, "checksum")?;
                let text = String::from_utf8_lossy(&text).trim().to_ascii_lowercase();
                // `checksum` and `checksum_archive` both name the archive's
                // digest; a body that sends two different ones is refused.
                if checksum.as_ref().is_some_and(|first| *first != text) {
                    return Err(ApiError::new(400, CHECKSUMS_DIFFER));
                }
                checksum = Some(text);
            }
            Part::Backup(backup) => {
                node.transfer_log(transfer, &format!("Receiving backup {backup}..."));
                extras
                    .receive_backup(&backup, parts.part_body())
                    .map_err(extras_error)?;
            }
            Part::BackupChecksum(backup) => {
                let text = read_bounded(&mut parts.part_body(), MAX_CHECKSUM, "backup checksum")?;
                extras
                    .announce_backup_checksum(&backup, &text)
                    .map_err(extras_error)?;
            }
            Part::InstallLog => match extras.receive_install_log(parts.part_body()) {
                Ok(()) => {}
                // As Wings: a log that cannot be stored does not fail the
                // transfer; a body that breaks or lies about size does.
                Err(e @ (ExtrasError::Io(_) | ExtrasError::NoSpace)) => {
                    log::warn!("transfer {}: install log not kept: {e}", transfer.id)
                }
                Err(e) => return Err(extras_error(e)),
            },
            Part::BadBackupName(name) => {
                return Err(ApiError::new(
                    400,
                    format!("invalid backup part name: {name}"),
                ))
            }
            Part::PrecopyDelta | Part::PrecopyManifest if !precopy => {
                return Err(ApiError::new(400, PRECOPY_REFUSED));
            }
            Part::PrecopyDelta => {
                if checksum.is_none() || delta_applied {
                    return Err(ApiError::new(
                        400,
                        "the pre-copy delta must follow the archive and its checksum, once",
                    ));
                }
                transfer.set_copy_phase(crate::transfer::manager::CopyPhase::Final);
                node.transfer_log(
                    transfer,
                    "Applying the changes made after the server stopped...",
                );
                let limits = precopy_limits(node, config.as_ref(), extracted);
                let ops = precopy::apply::apply_delta(
                    parts.part_body(),
                    &staging,
                    &limits,
                    &cancel,
                    &transfer.counters,
                )
                .map_err(precopy_error)?;
                log::info!(
                    "transfer {}: pre-copy delta applied ({ops} ops)",
                    transfer.id
                );
                delta_applied = true;
            }
            Part::PrecopyManifest => {
                if !delta_applied || manifest_checked {
                    return Err(ApiError::new(
                        400,
                        "the pre-copy manifest must follow the delta, once",
                    ));
                }
                transfer.set_copy_phase(crate::transfer::manager::CopyPhase::Verify);
                node.transfer_log(
                    transfer,
                    "Verifying the tree against the source's manifest...",
                );
                let limits = precopy_limits(node, config.as_ref(), extracted);
                let entries = precopy::apply::check_manifest(
                    parts.part_body(),
                    &staging,
                    &limits,
                    &cancel,
                    &transfer.counters,
                )
                .map_err(precopy_error)?;
                log::info!(
                    "transfer {}: pre-copy verified {entries} entries against the manifest",
                    transfer.id
                );
                manifest_checked = true;
            }
            Part::Configuration | Part::Unknown => {
                log::debug!("transfer {}: skipping part `{}`", transfer.id, part.name);
                skip_bounded(&mut parts.part_body(), &part.name)?;
            }
        }
    }
    let (Some(digest), Some(checksum)) = (digest, checksum) else {
        return Err(ApiError::new(400, "missing archive or checksum"));
    };
    if precopy && !manifest_checked {
        return Err(ApiError::new(400, PRECOPY_MISSING));
    }
    if node
        .transfers
        .enter_phase(transfer, Phase::Verifying)
        .is_err()
    {
        return Err(ApiError::new(500, "the finish machine refused to verify"));
    }
    if !auth::constant_time_eq(digest.as_bytes(), checksum.as_bytes()) {
        log::warn!(
            "transfer {}: checksum {checksum} but the archive hashes to {digest}",
            transfer.id
        );
        return Err(ApiError::new(400, "checksums don't match"));
    }
    extras.verify().map_err(extras_error)?;
    if transfer.is_cancelled() {
        return Err(ApiError::new(400, ABORTED));
    }
    let config = config.unwrap_or_else(|| ServerConfig::minimal(uuid));
    Ok((staging, config, extras))
}

/// Refuses before any byte is written when the announced size cannot fit.
pub(crate) fn preflight_space(node: &Node, limit: Option<u64>, total: u64) -> Result<(), ApiError> {
    if limit.is_some_and(|limit| total > limit) {
        return Err(ApiError::new(400, NO_SPACE));
    }
    if let Some(free) = free_bytes(&node.config.system.data) {
        if total > free {
            return Err(ApiError::new(400, NO_SPACE));
        }
    }
    Ok(())
}

/// Free bytes for unprivileged writers on the filesystem holding `path`,
/// when it can be told (`archive::free_bytes` does the asking).
pub fn free_bytes(path: &std::path::Path) -> Option<u64> {
    crate::archive::free_bytes(path).ok()
}

/// The main stream of a calagopus multiplexed transfer announces extra
/// streams this node will not join; refused before any byte is read, and
/// (being a begun transfer) reported to the panel as failed.
fn refuse_multiplex(request: &Request) -> Result<(), ApiError> {
    let count = request
        .header(wire::HEADER_MULTIPLEX_STREAM_COUNT)
        .map(|v| v.trim().parse::<u64>().unwrap_or(1))
        .unwrap_or(0);
    if count > 0 {
        return Err(ApiError::new(400, NO_MULTIPLEX));
    }
    Ok(())
}

/// Drains a part nobody reads, so the body stays in step, within a bound.
fn skip_bounded(body: &mut impl Read, name: &str) -> Result<(), ApiError> {
    let n = std::io::copy(&mut body.take(MAX_SKIPPED + 1), &mut std::io::sink())
        .map_err(|e| input_error(&e))?;
    if n > MAX_SKIPPED {
        return Err(ApiError::new(
            400,
            format!("the part `{name}` is larger than {MAX_SKIPPED} bytes"),
        ));
    }
    Ok(())
}

/// The HTTP face of a backup or install-log failure (SPEC §4).
pub(crate) fn extras_error(e: ExtrasError) -> ApiError {
    match e {
        ExtrasError::Input(e) => input_error(&e),
        ExtrasError::NoSpace => ApiError::new(400, NO_SPACE),
        e @ (ExtrasError::Io(_) | ExtrasError::Exists(..)) => ApiError::new(500, e.to_string()),
        e => ApiError::new(400, e.to_string()),
    }
}

fn read_bounded(body: &mut impl Read, max: usize, part: &str) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    body.take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| input_error(&e))?;
    if out.len() > max {
        return Err(ApiError::new(
            400,
            format!("the {part} part is larger than {max} bytes"),
        ));
    }
    Ok(out)
}

/// Accepts the panel's shape (`{"settings","process_configuration"}`) or a
/// bare settings object.
fn configuration_from_part(uuid: &str, text: &[u8]) -> Result<ServerConfig, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(text).map_err(|e| {
        ApiError::new(
            400,
            format!("the configuration part is not valid JSON: {e}"),
        )
    })?;
    if !value.is_object() {
        return Err(ApiError::new(
            400,
            "the configuration part must be a JSON object",
        ));
    }
    let (settings, process) = match value.get("settings") {
        Some(settings) => (
            settings.clone(),
            value
                .get("process_configuration")
                .cloned()
                .unwrap_or_else(|| serde_json::json!({})),
        ),
        None => (value, serde_json::json!({})),
    };
    Ok(ServerConfig {
        uuid: uuid.to_string(),
        settings,
        process_configuration: process,
    })
}

/// SPEC §4: a body that ended without its parts is `missing archive or
/// checksum`; a connection that went away mid-body (the source stopped,
/// cancelled or died) is `Request aborted by client.`.
fn input_error(e: &std::io::Error) -> ApiError {
    let multipart_ended = e
        .get_ref()
        .is_some_and(|inner| matches!(inner.downcast_ref(), Some(MultipartError::Truncated)));
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof if multipart_ended => {
            ApiError::new(400, "missing archive or checksum")
        }
        std::io::ErrorKind::UnexpectedEof => ApiError::new(400, ABORTED),
        _ => ApiError::new(400, format!("the request body could not be read: {e}")),
    }
}

fn multipart_error(e: MultipartError) -> ApiError {
    match e {
        MultipartError::Truncated => ApiError::new(400, "missing archive or checksum"),
        MultipartError::Malformed(m) => {
            ApiError::new(400, format!("malformed multipart body: {m}"))
        }
        MultipartError::Io(e) => input_error(&e),
    }
}

/// The extraction limits for pre-copy's writes: what the archive already
/// wrote counts against the server's disk space.
fn precopy_limits(node: &Node, config: Option<&ServerConfig>, extracted: u64) -> ExtractLimits {
    ExtractLimits {
        max_bytes: config
            .and_then(ServerConfig::disk_space_bytes)
            .map(|limit| limit.saturating_sub(extracted)),
        owner: node.config.system.user,
    }
}

/// The HTTP face of a pre-copy failure (docs/transport.md): a mismatch
/// fails like SPEC §4's checksum row.
fn precopy_error(e: precopy::apply::ApplyError) -> ApiError {
    use precopy::apply::ApplyError;
    match e {
        ApplyError::NoSpace => ApiError::new(400, NO_SPACE),
        ApplyError::Input(e) => input_error(&e),
        ApplyError::Io(m) => ApiError::new(500, format!("pre-copy: {m}")),
        e @ (ApplyError::Mismatch(_) | ApplyError::Unsafe(_)) => ApiError::new(400, e.to_string()),
    }
}

fn extract_error(e: ExtractError) -> ApiError {
    match e {
        ExtractError::Unsafe(path) => ApiError::new(400, format!("unsafe path in archive: {path}")),
        ExtractError::NoSpace => ApiError::new(400, NO_SPACE),
        ExtractError::Corrupt(m) => {
            ApiError::new(500, format!("failed to extract the archive: {m}"))
        }
        ExtractError::Io(m) => {
            ApiError::new(500, format!("failed to write the archive to disk: {m}"))
        }
        ExtractError::Cancelled => ApiError::new(400, ABORTED),
        ExtractError::Input(e) => input_error(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_part_shapes() {
        let c = configuration_from_part(
            "u",
            br#"{"settings":{"a":1},"process_configuration":{"stop":{"type":"signal"}}}"#,
        )
        .unwrap();
        assert_eq!(c.settings, serde_json::json!({"a":1}));
        assert_eq!(c.process_configuration["stop"]["type"], "signal");
        let c = configuration_from_part("u", br#"{"build":{"disk_space":1}}"#).unwrap();
        assert_eq!(c.disk_space_bytes(), Some(1024 * 1024));
        assert_eq!(
            configuration_from_part("u", b"[1]").unwrap_err().status,
            400
        );
        assert_eq!(configuration_from_part("u", b"{").unwrap_err().status, 400);
    }

    #[test]
    fn error_mapping_follows_the_table() {
        assert_eq!(
            extract_error(ExtractError::Unsafe("../x".into())).message,
            "unsafe path in archive: ../x"
        );
        assert_eq!(extract_error(ExtractError::NoSpace).message, NO_SPACE);
        assert_eq!(
            extract_error(ExtractError::Corrupt("gzip: bad header".into())).status,
            500
        );
        assert_eq!(extract_error(ExtractError::Cancelled).message, ABORTED);
        // The connection went away mid-body / the body ended without parts.
        let gone = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "truncated");
        assert_eq!(extract_error(ExtractError::Input(gone)).message, ABORTED);
        let ended =
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, MultipartError::Truncated);
        assert_eq!(
            extract_error(ExtractError::Input(ended)).message,
            "missing archive or checksum"
        );
        let gone = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "truncated");
        assert_eq!(multipart_error(MultipartError::Io(gone)).message, ABORTED);
        assert_eq!(
            multipart_error(MultipartError::Truncated).message,
            "missing archive or checksum"
        );
    }
}
