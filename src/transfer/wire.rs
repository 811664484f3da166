//! The transfer body's wire contract, named once for both sides (SPEC §3,
//! §4 "Dialects"): part names and their order as ferry sends them, and
//! what every known sender's part names mean to a receiver.
//!
//! Senders: Pterodactyl Wings (`archive`, `checksum`), Pelican Wings
//! (`archive`, `checksum_archive`, `backup_<uuid>.tar.gz` +
//! `checksum_backup_<uuid>.tar.gz`, `install_logs`), calagopus
//! (`archive` named by its format, `checksum` as a file part,
//! `backup-<uuid>` + `backup-checksum-<uuid>`, `install-logs`, and
//! multiplexed streams) and ferry (all of Pelican's plus `configuration`).
//!
//! Pure: names in, meanings out. No I/O.

use crate::archive::Codec;
use crate::server::is_uuid;

pub const CONFIGURATION: &str = "configuration";
pub const ARCHIVE: &str = "archive";
pub const ARCHIVE_FILENAME: &str = "archive.tar.gz";

/// The archive part's filename for `codec`: what `codec_for` reads back.
/// Wings and Pelican get `archive.tar.gz` only (gzip is all they read).
pub fn archive_filename(codec: Codec) -> &'static str {
    match codec {
        Codec::Gzip => ARCHIVE_FILENAME,
        Codec::Zstd => "archive.tar.zst",
        Codec::Plain => "archive.tar",
    }
}
/// The archive's SHA-256 as Pterodactyl Wings and calagopus read it.
pub const CHECKSUM: &str = "checksum";
/// The same digest as Pelican Wings reads it.
pub const CHECKSUM_ARCHIVE: &str = "checksum_archive";
pub const INSTALL_LOGS: &str = "install_logs";
pub const INSTALL_LOG_FILENAME: &str = "install.log";

const PELICAN_BACKUP: &str = "backup_";
const PELICAN_BACKUP_CHECKSUM: &str = "checksum_backup_";
const BACKUP_SUFFIX: &str = ".tar.gz";
const CALAGOPUS_BACKUP: &str = "backup-";
const CALAGOPUS_BACKUP_CHECKSUM: &str = "backup-checksum-";
const CALAGOPUS_INSTALL_LOGS: &str = "install-logs";

/// Request headers (all optional for a receiver).
pub const HEADER_TRANSFER_ID: &str = "X-Ferry-Transfer-Id";
pub const HEADER_BYTES_TOTAL: &str = "X-Ferry-Bytes-Total";
/// Bytes the content takes on disk (holes not counted): the preflight's
/// number when present.
pub const HEADER_DISK_TOTAL: &str = "X-Ferry-Disk-Total";
pub const HEADER_FILES_TOTAL: &str = "X-Ferry-Files-Total";
pub const HEADER_START_ON_COMPLETION: &str = "X-Ferry-Start-On-Completion";
/// calagopus: the main stream announces how many extra streams follow.
pub const HEADER_MULTIPLEX_STREAM_COUNT: &str = "Multiplex-Stream-Count";
/// calagopus: an extra stream of a transfer already under way.
pub const HEADER_MULTIPLEX_STREAM: &str = "Multiplex-Stream";

/// ferry's part name for a backup file (Pelican's).
pub fn backup_part(backup: &str) -> String {
    format!("{PELICAN_BACKUP}{backup}{BACKUP_SUFFIX}")
}

/// ferry's part name for a backup's SHA-256 (Pelican's).
pub fn backup_checksum_part(backup: &str) -> String {
    format!("{PELICAN_BACKUP_CHECKSUM}{backup}{BACKUP_SUFFIX}")
}

/// What a part of an incoming body is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Configuration,
    /// The data archive and how it is compressed.
    Archive(Codec),
    /// The archive's digest; `checksum` and `checksum_archive` alike.
    Checksum,
    /// A backup file; carries the backup's UUID.
    Backup(String),
    /// A backup's digest; carries the backup's UUID.
    BackupChecksum(String),
    InstallLog,
    /// A backup part whose name holds no backup UUID (never used as a path).
    BadBackupName(String),
    /// Pre-copy's changes after the stop (SPEC §10; ferry sessions only).
    PrecopyDelta,
    /// Pre-copy's manifest of the stopped tree.
    PrecopyManifest,
    /// Anything else: drained and skipped.
    Unknown,
}

/// Names a part by its form name and, for the archive, its filename.
pub fn classify(name: &str, filename: Option<&str>) -> Part {
    match name {
        CONFIGURATION => return Part::Configuration,
        ARCHIVE => return Part::Archive(codec_for(filename)),
        CHECKSUM | CHECKSUM_ARCHIVE => return Part::Checksum,
        INSTALL_LOGS | CALAGOPUS_INSTALL_LOGS => return Part::InstallLog,
        crate::transfer::precopy::wire::DELTA => return Part::PrecopyDelta,
        crate::transfer::precopy::wire::MANIFEST => return Part::PrecopyManifest,
        _ => {}
    }
    // Longest prefixes first: `backup-checksum-` starts with `backup-`.
    let backup = |id: &str, make: fn(String) -> Part| {
        let id = id.to_ascii_lowercase();
        if is_uuid(&id) {
            make(id)
        } else {
            Part::BadBackupName(name.to_string())
        }
    };
    if let Some(rest) = name.strip_prefix(PELICAN_BACKUP_CHECKSUM) {
        return backup(
            rest.strip_suffix(BACKUP_SUFFIX).unwrap_or(rest),
            Part::BackupChecksum,
        );
    }
    if let Some(rest) = name.strip_prefix(CALAGOPUS_BACKUP_CHECKSUM) {
        return backup(rest, Part::BackupChecksum);
    }
    if let Some(rest) = name.strip_prefix(PELICAN_BACKUP) {
        return backup(
            rest.strip_suffix(BACKUP_SUFFIX).unwrap_or(rest),
            Part::Backup,
        );
    }
    if let Some(rest) = name.strip_prefix(CALAGOPUS_BACKUP) {
        return backup(rest, Part::Backup);
    }
    Part::Unknown
}

/// The archive's compression from its part's filename, as calagopus names
/// it after its `archive_format`; gzip when absent or unknown (Wings).
pub fn codec_for(filename: Option<&str>) -> Codec {
    let name = filename.unwrap_or("").to_ascii_lowercase();
    if name.ends_with(".tar.zst") || name.ends_with(".tar.zstd") {
        Codec::Zstd
    } else if name.ends_with(".tar") {
        Codec::Plain
    } else {
        Codec::Gzip
    }
}

/// A lowercase hex SHA-256, trimmed; None when it is not one.
pub fn parse_digest(text: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(text).ok()?.trim().to_ascii_lowercase();
    (text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: &str = "0b6f3a52-5c1e-4f8e-9a0d-2f4c6b8e1a3d";

    #[test]
    fn every_senders_checksum_name_is_the_archive_digest() {
        assert_eq!(classify("checksum", None), Part::Checksum);
        assert_eq!(classify("checksum", Some("checksum")), Part::Checksum);
        assert_eq!(classify("checksum_archive", None), Part::Checksum);
    }

    #[test]
    fn backups_in_pelicans_and_calagopus_spelling() {
        assert_eq!(classify(&backup_part(B), Some("x")), Part::Backup(B.into()));
        assert_eq!(
            classify(&backup_checksum_part(B), None),
            Part::BackupChecksum(B.into())
        );
        assert_eq!(
            classify(&format!("backup-{B}"), None),
            Part::Backup(B.into())
        );
        assert_eq!(
            classify(&format!("backup-checksum-{B}"), None),
            Part::BackupChecksum(B.into())
        );
        assert_eq!(
            classify(&format!("backup_{}.tar.gz", B.to_uppercase()), None),
            Part::Backup(B.into())
        );
    }

    #[test]
    fn a_backup_name_without_a_uuid_is_never_a_path() {
        for name in [
            "backup_../../etc.tar.gz",
            "backup-x",
            "checksum_backup_a/b.tar.gz",
        ] {
            assert_eq!(classify(name, None), Part::BadBackupName(name.into()));
        }
    }

    #[test]
    fn install_logs_in_both_spellings_and_the_rest_unknown() {
        assert_eq!(
            classify("install_logs", Some("install.log")),
            Part::InstallLog
        );
        assert_eq!(classify("install-logs", None), Part::InstallLog);
        assert_eq!(classify("diff-db", None), Part::Unknown);
        assert_eq!(classify("configuration", None), Part::Configuration);
        assert_eq!(classify("ferry_delta", None), Part::PrecopyDelta);
        assert_eq!(classify("ferry_manifest", None), Part::PrecopyManifest);
    }

    #[test]
    fn the_archive_codec_follows_its_filename() {
        assert_eq!(classify("archive", None), Part::Archive(Codec::Gzip));
        assert_eq!(codec_for(Some("archive.tar.gz")), Codec::Gzip);
        for codec in [Codec::Gzip, Codec::Zstd, Codec::Plain] {
            assert_eq!(codec_for(Some(archive_filename(codec))), codec);
        }
        assert_eq!(codec_for(Some("archive.tgz")), Codec::Gzip);
        assert_eq!(codec_for(Some("archive.tar.zst")), Codec::Zstd);
        assert_eq!(codec_for(Some("ARCHIVE.TAR")), Codec::Plain);
        assert_eq!(codec_for(Some("archive.bin")), Codec::Gzip);
    }

    #[test]
    fn digests_are_64_hex_digits() {
        let d = "a".repeat(64);
        assert_eq!(
            parse_digest(format!(" {} \n", d.to_uppercase()).as_bytes()),
            Some(d)
        );
        assert_eq!(parse_digest(b"abc"), None);
        assert_eq!(parse_digest(&[b'g'; 64]), None);
    }
}
