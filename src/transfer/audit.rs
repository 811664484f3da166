//! The audit log (SPEC §7): one JSON line per status change in
//! `<root>/ferry/audit.log`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct AuditLine<'a> {
    pub time: String,
    pub transfer: &'a str,
    pub server: &'a str,
    pub direction: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
}

/// Bumped by SIGHUP (`request_reopen`): every audit log opened at an
/// older generation reopens its path before its next line, so `logrotate`
/// can move the file aside (no `copytruncate`) and lose nothing.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Asks every audit log to reopen its file before its next line.
pub fn request_reopen() {
    GENERATION.fetch_add(1, Ordering::AcqRel);
}

pub struct AuditLog {
    path: PathBuf,
    file: Mutex<Option<File>>,
    generation: AtomicU64,
}

impl AuditLog {
    pub fn open(path: &Path) -> AuditLog {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| log::error!("audit: cannot open {}: {e}", path.display()))
            .ok();
        AuditLog {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            generation: AtomicU64::new(GENERATION.load(Ordering::Acquire)),
        }
    }

    /// Appends a line; an unwritable audit log is logged, never fatal to a
    /// transfer.
    pub fn write(&self, line: &AuditLine<'_>) {
        let Ok(mut text) = serde_json::to_string(line) else {
            return;
        };
        text.push('\n');
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let wanted = GENERATION.load(Ordering::Acquire);
        if self.generation.swap(wanted, Ordering::AcqRel) != wanted {
            let reopened = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path);
            match reopened {
                Ok(f) => *guard = Some(f),
                // Keep writing to the old file rather than losing lines.
                Err(e) => log::error!("audit: cannot reopen {}: {e}", self.path.display()),
            }
        }
        if let Some(file) = guard.as_mut() {
            if let Err(e) = file.write_all(text.as_bytes()) {
                log::error!("audit: cannot write {}: {e}", self.path.display());
            }
        }
    }
}
