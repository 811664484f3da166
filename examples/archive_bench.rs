//! Measures the archive engine for `scripts/bench-archive.sh`.
//!
//! archive_bench pack SRC [LEVEL] [THREADS] [OUT]   pack+gzip+hash (OUT or a sink)
//! archive_bench extract ARCHIVE DATA_DIR          extract into staging and commit
//!
//! Prints one line: `<op> secs=<s> cpu=<s> bytes=<content bytes> wire=<archive bytes>
//! files=<n> maxrss_kib=<peak RSS> sha256=<hex>`, plus `cpu=` (user+system
//! seconds of all threads).

use ferry::archive::{self, Counters, ExtractLimits, PackOptions, Staging};
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// (peak RSS in KiB, user+system CPU seconds) of this process.
fn usage_now() -> (i64, f64) {
    // SAFETY: getrusage fills the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (ru.ru_maxrss, secs(ru.ru_utime) + secs(ru.ru_stime))
}

fn usage() -> ! {
    eprintln!("usage: archive_bench pack SRC [LEVEL] [THREADS] [OUT] | extract ARCHIVE DATA_DIR");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cancel = AtomicBool::new(false);
    let counters = Counters::default();
    match args.first().map(String::as_str) {
        Some("pack") if args.len() >= 2 => {
            let level = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
            let threads = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
            let opts = PackOptions {
                level,
                threads,
                ..PackOptions::default()
            };
            let src = Path::new(&args[1]);
            let t = Instant::now();
            let r = match args.get(4) {
                Some(out) => match std::fs::File::create(out) {
                    Ok(f) => archive::pack(src, BufWriter::new(f), &opts, &cancel, &counters),
                    Err(e) => fail(&format!("creating {out}: {e}")),
                },
                None => archive::pack(src, std::io::sink(), &opts, &cancel, &counters),
            };
            let secs = t.elapsed().as_secs_f64();
            match r {
                Ok(s) => report("pack", secs, s.bytes, s.wire_bytes, s.files, &s.sha256_hex),
                Err(e) => fail(&e.to_string()),
            }
        }
        Some("extract") if args.len() == 3 => {
            let input = match std::fs::File::open(&args[1]) {
                Ok(f) => BufReader::with_capacity(256 * 1024, f),
                Err(e) => fail(&format!("opening {}: {e}", args[1])),
            };
            let data = Path::new(&args[2]);
            let t = Instant::now();
            let staging =
                match Staging::create(data, "00000000-0000-4000-8000-000000000000", "bench") {
                    Ok(s) => s,
                    Err(e) => fail(&format!("staging: {e}")),
                };
            let s = match archive::extract(
                input,
                &staging,
                &ExtractLimits::default(),
                &cancel,
                &counters,
            ) {
                Ok(s) => s,
                Err(e) => fail(&e.to_string()),
            };
            if let Err(e) = staging.commit() {
                fail(&format!("commit: {e}"));
            }
            let secs = t.elapsed().as_secs_f64();
            report(
                "extract",
                secs,
                s.bytes,
                s.wire_bytes,
                s.files,
                &s.sha256_hex,
            );
        }
        _ => usage(),
    }
}

fn report(op: &str, secs: f64, bytes: u64, wire: u64, files: u64, sha: &str) {
    let mut out = std::io::stdout().lock();
    let (rss, cpu) = usage_now();
    let _ = writeln!(
        out,
        "{op} secs={secs:.3} cpu={cpu:.3} bytes={bytes} wire={wire} files={files} maxrss_kib={rss} sha256={sha}"
    );
}

fn fail(msg: &str) -> ! {
    eprintln!("archive_bench: {msg}");
    std::process::exit(1)
}
