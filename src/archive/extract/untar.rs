//! The tar stage: entries parsed and validated here (every length bounded,
//! every path checked), sparse maps read, and each entry handed to
//! `unpack` for the safe write beneath the root.

use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender};

use super::blocks::Blocks;
use super::{corrupt, Fail, Msg, MAX_ENTRIES, MAX_TRAILING};
use crate::archive::pipe::Halt;
use crate::archive::tarfmt::{self, Overrides, BLOCK};
use crate::archive::unpack::{Kind, Target};
use crate::archive::{Counters, ExtractError, ExtractLimits, Stage};

/// Most bytes a PAX 1.0 sparse map may take at the start of the data.
const MAX_SPARSE_MAP: usize = 16 << 20;

/// The map of an old GNU `S` entry: the header's regions plus those of
/// its extension blocks (each counted as an entry).
fn gnu_sparse_map(
    blocks: &mut Blocks<'_>,
    g: &tarfmt::GnuSparse,
    entries: &mut u64,
) -> Result<tarfmt::Sparse, Fail> {
    let mut regions = g.regions.clone();
    let mut more = g.extended;
    let mut ext = [0u8; BLOCK];
    while more {
        if regions.len() > tarfmt::MAX_SPARSE_REGIONS {
            return Err(corrupt("tar: sparse map has too many regions"));
        }
        *entries += 1;
        if blocks.read_full(&mut ext)? < BLOCK {
            return Err(corrupt("tar: truncated archive"));
        }
        more = tarfmt::decode_gnu_sparse_ext(&ext, &mut regions)
            .map_err(|e| corrupt(format!("tar: {e}")))?;
    }
    Ok(tarfmt::Sparse {
        regions,
        real_size: g.real_size,
    })
}

/// The map of a PAX sparse entry. For format 1.0 the map is read from the
/// start of the data, and `size` shrinks to the data that follows it.
fn pax_sparse_map(
    blocks: &mut Blocks<'_>,
    records: tarfmt::SparseRecords,
    size: &mut u64,
) -> Result<tarfmt::Sparse, Fail> {
    let real_size = records.real_size.unwrap_or(*size);
    if !records.map_in_data {
        return Ok(tarfmt::Sparse {
            regions: records.regions,
            real_size,
        });
    }
    let mut head: Vec<u8> = Vec::new();
    let mut block = [0u8; BLOCK];
    // Parsed once every number's newline has arrived (the first line is
    // the count), so a long map is read in one pass.
    let mut newlines = 0usize;
    loop {
        if head.len() as u64 + BLOCK as u64 > *size || head.len() >= MAX_SPARSE_MAP {
            return Err(corrupt("tar: malformed sparse map"));
        }
        if blocks.read_full(&mut block)? < BLOCK {
            return Err(corrupt("tar: truncated archive"));
        }
        head.extend_from_slice(&block);
        newlines += block.iter().filter(|&&b| b == b'\n').count();
        let count_known = head
            .iter()
            .position(|&b| b == b'\n')
            .and_then(|nl| std::str::from_utf8(&head[..nl]).ok()?.parse::<usize>().ok());
        match count_known {
            Some(n) if n <= tarfmt::MAX_SPARSE_REGIONS && newlines <= n * 2 => continue,
            None if newlines == 0 && head.len() < 32 => continue,
            _ => {}
        }
        match tarfmt::parse_sparse_map_1_0(&head) {
            Ok(Some((regions, _))) => {
                *size -= head.len() as u64;
                return Ok(tarfmt::Sparse { regions, real_size });
            }
            Ok(None) => {}
            Err(e) => return Err(corrupt(format!("tar: {e}"))),
        }
    }
}

fn lossy(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

pub(super) fn untar(
    rx: Receiver<Msg>,
    pool: Sender<Vec<u8>>,
    root: std::os::fd::RawFd,
    limits: &ExtractLimits,
    cancel: &AtomicBool,
    counters: &Counters,
) -> Result<(u64, u64), Fail> {
    let _clock = counters.stage_clock(Stage::Unpack);
    let mut blocks = Blocks::new(rx, pool, cancel);
    let mut target = Target::new(root, limits, counters)?;
    let mut ov = Overrides::default();
    let mut entries: u64 = 0;
    let mut hdr = [0u8; BLOCK];
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(Fail::Halt(Halt::Cancelled));
        }
        match blocks.read_full(&mut hdr)? {
            0 => return Err(corrupt("tar: missing end-of-archive marker")),
            BLOCK => {}
            _ => return Err(corrupt("tar: truncated archive")),
        }
        if tarfmt::is_zero_block(&hdr) {
            break;
        }
        entries += 1;
        if entries > MAX_ENTRIES {
            return Err(corrupt(format!("tar: more than {MAX_ENTRIES} entries")));
        }
        let h = tarfmt::decode(&hdr).map_err(|e| corrupt(format!("tar: {e}")))?;
        match h.kind {
            b'x' | b'g' => {
                if h.size > tarfmt::MAX_PAX {
                    return Err(corrupt("tar: PAX header too large"));
                }
                let data = blocks.read_vec(h.size)?;
                // Global headers ('g') carry nothing we apply.
                if h.kind == b'x' {
                    tarfmt::parse_pax(&data, &mut ov).map_err(|e| corrupt(format!("tar: {e}")))?;
                }
                continue;
            }
            b'L' | b'K' => {
                if h.size > tarfmt::MAX_NAME as u64 + 1 {
                    return Err(corrupt("tar: entry name longer than 4096 bytes"));
                }
                let mut data = blocks.read_vec(h.size)?;
                while data.last() == Some(&0) {
                    data.pop();
                }
                if h.kind == b'L' {
                    ov.path = Some(data);
                } else {
                    ov.link = Some(data);
                }
                continue;
            }
            _ => {}
        }
        let o = std::mem::take(&mut ov);
        let mut size = o.size.unwrap_or(h.size);
        let mtime = o.mtime.unwrap_or((h.mtime, 0));
        // A sparse file's real name (PAX 0.1 and 1.0) beats the
        // `GNUSparseFile.<pid>/…` placeholder in `path`.
        let path = o.sparse.name.clone().or(o.path).unwrap_or(h.path);
        let link = o.link.unwrap_or(h.link);
        if path.len() > tarfmt::MAX_NAME || link.len() > tarfmt::MAX_NAME {
            return Err(corrupt(format!(
                "tar: entry name longer than {} bytes: {}",
                tarfmt::MAX_NAME,
                lossy(&path[..path.len().min(200)])
            )));
        }
        let unsafe_path = || Fail::Error(ExtractError::Unsafe(lossy(&path)));
        let comps = tarfmt::components(&path).map_err(|_| unsafe_path())?;
        let sparse = match (&h.gnu_sparse, o.sparse.present()) {
            (Some(g), _) => Some(gnu_sparse_map(&mut blocks, g, &mut entries)?),
            (None, true) if matches!(h.kind, b'0' | 0 | b'7') => {
                Some(pax_sparse_map(&mut blocks, o.sparse, &mut size)?)
            }
            _ => None,
        };
        if let Some(map) = &sparse {
            map.validate(size)
                .map_err(|e| corrupt(format!("tar: {e} for {}", lossy(&path))))?;
        }
        let kind = match h.kind {
            b'S' => Kind::File,
            // Old tars mark directories only by a trailing slash.
            b'0' | 0 | b'7' if path.ends_with(b"/") && sparse.is_none() => Kind::Dir,
            b'0' | 0 | b'7' => Kind::File,
            b'5' => Kind::Dir,
            b'2' => Kind::Symlink,
            b'1' => Kind::HardLink,
            // Character/block devices and FIFOs.
            b'3' | b'4' | b'6' => return Err(unsafe_path()),
            other => {
                return Err(corrupt(format!(
                    "tar: unsupported entry type {:?} for {}",
                    other as char,
                    lossy(&path)
                )))
            }
        };
        if comps.is_empty() {
            // The root itself (`./`): staging already exists.
            if kind != Kind::Dir {
                return Err(unsafe_path());
            }
            blocks.skip(size + tarfmt::padding(size) as u64)?;
            continue;
        }
        let display = lossy(&path);
        match kind {
            Kind::File => {
                let map = sparse.unwrap_or(tarfmt::Sparse {
                    regions: vec![(0, size)],
                    real_size: size,
                });
                target.file(&mut blocks, &comps, &display, h.mode, mtime, &map)?;
                blocks.skip(tarfmt::padding(size) as u64)?;
            }
            Kind::Dir => {
                target.dir(&comps, &display, h.mode, mtime)?;
                blocks.skip(size + tarfmt::padding(size) as u64)?;
            }
            Kind::Symlink => {
                target.symlink(&comps, &display, &link, mtime)?;
                blocks.skip(size + tarfmt::padding(size) as u64)?;
            }
            Kind::HardLink => {
                // Only a link to a regular file already extracted beneath
                // the root is accepted; `unpack` checks what it names.
                let to = tarfmt::components(&link).map_err(|_| unsafe_path())?;
                if to.is_empty() {
                    return Err(unsafe_path());
                }
                target.hard_link(&comps, &display, &to)?;
                blocks.skip(size + tarfmt::padding(size) as u64)?;
            }
        }
    }
    // Past the end marker: drain so the gzip stage reaches EOF (every byte
    // is hashed and the gzip CRC checked), but bounded.
    let mut trailing: u64 = 0;
    while let Some(s) = blocks.slice(usize::MAX)? {
        trailing += s.len() as u64;
        if trailing > MAX_TRAILING {
            return Err(corrupt(
                "tar: too much data after the end-of-archive marker",
            ));
        }
    }
    target.finish()?;
    Ok((target.files, target.bytes))
}
