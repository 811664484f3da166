//! A symlink swapped into staging while extraction runs: a local attacker
//! (or a buggy process) replaces a directory being filled with a link to
//! somewhere else. Nothing may ever be written through the link.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferry::archive::{self, Counters, ExtractLimits, Staging};

/// Hands the archive out in tiny pieces with pauses (the compressed
/// archive is small), so the swapping thread gets many chances between
/// entries even on a loaded machine.
struct Slow {
    data: Vec<u8>,
    pos: usize,
}

impl Read for Slow {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.data.len() {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_micros(200));
        let n = buf.len().min(16).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn archive_with_many_files_in_one_dir() -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    {
        let mut tar = tar::Builder::new(&mut gz);
        let mut dir = tar::Header::new_ustar();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o755);
        dir.set_size(0);
        tar.append_data(&mut dir, "d/", std::io::empty()).unwrap();
        for i in 0..3000 {
            let mut h = tar::Header::new_ustar();
            h.set_mode(0o644);
            h.set_size(5);
            tar.append_data(&mut h, format!("d/f{i}"), &b"hello"[..])
                .unwrap();
        }
        tar.finish().unwrap();
    }
    gz.flush().unwrap();
    gz.finish().unwrap()
}

#[test]
fn a_directory_swapped_for_a_symlink_mid_extraction_is_never_written_through() {
    let base = tempfile::tempdir().unwrap();
    let data = base.path().join("volumes");
    let outside = base.path().join("outside");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let staging = Staging::create(&data, "8e9f0a1b-2c3d-4e5f-8a6b-7c8d9e0f1a2b", "race").unwrap();
    let root = staging.path().to_path_buf();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, root, outside) = (Arc::clone(&stop), root.clone(), outside.clone());
        std::thread::spawn(move || {
            let (dir, parked) = (root.join("d"), root.join("d.parked"));
            let mut swaps = 0u32;
            while !stop.load(Ordering::SeqCst) {
                if std::fs::rename(&dir, &parked).is_ok() {
                    if std::os::unix::fs::symlink(&outside, &dir).is_ok() {
                        swaps += 1;
                        std::thread::sleep(Duration::from_micros(300));
                        let _ = std::fs::remove_file(&dir);
                    }
                    let _ = std::fs::rename(&parked, &dir);
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            swaps
        })
    };
    let input = Slow {
        data: archive_with_many_files_in_one_dir(),
        pos: 0,
    };
    let cancel = AtomicBool::new(false);
    let result = archive::extract(
        input,
        &staging,
        &ExtractLimits::default(),
        &cancel,
        &Counters::default(),
    );
    stop.store(true, Ordering::SeqCst);
    let swaps = swapper.join().unwrap();
    // The race happened when the swaps went on during extraction, or when
    // one of them made extraction stop with a refusal (under load the
    // refusal can come at the first swaps).
    assert!(
        swaps > 10 || (swaps > 0 && result.is_err()),
        "the race never happened ({swaps} swaps, {result:?})"
    );
    // Success or a refusal are both fine; writing outside never is.
    let leaked: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        leaked.is_empty(),
        "written through the swapped link: {} files ({result:?})",
        leaked.len()
    );
    staging.abort().unwrap();
    assert!(outside.exists());
}
