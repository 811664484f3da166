//! Bandwidth caps shared by every transfer in one direction
//! (`upload_limit`, `download_limit`): a token bucket that sleeps callers.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Throttle {
    /// Bytes per second; 0 = unlimited.
    rate: u64,
    bucket: Mutex<(Instant, f64)>,
}

impl Throttle {
    pub fn new(rate: u64) -> Self {
        Throttle {
            rate,
            bucket: Mutex::new((Instant::now(), 0.0)),
        }
    }

    pub fn unlimited(&self) -> bool {
        self.rate == 0
    }

    /// Accounts `bytes` and returns how long the caller must wait first.
    fn reserve(&self, bytes: usize) -> Duration {
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let rate = self.rate as f64;
        // Allow at most a quarter second of burst so idle time is not banked.
        let (last, tokens) = *bucket;
        let refilled = (tokens + now.duration_since(last).as_secs_f64() * rate).min(rate / 4.0);
        let left = refilled - bytes as f64;
        *bucket = (now, left);
        if left >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-left / rate)
        }
    }

    /// Waits until `bytes` may pass, in short naps so a cancel is seen.
    pub fn take(&self, bytes: usize, cancel: &AtomicBool) {
        if self.unlimited() || bytes == 0 {
            return;
        }
        let mut wait = self.reserve(bytes);
        while !wait.is_zero() && !cancel.load(Ordering::Relaxed) {
            let nap = wait.min(Duration::from_millis(50));
            std::thread::sleep(nap);
            wait -= nap;
        }
    }
}

/// A reader whose bytes pass through a throttle.
pub struct ThrottledReader<'a, R> {
    pub inner: R,
    pub throttle: &'a Throttle,
    pub cancel: &'a AtomicBool,
}

impl<R: Read> Read for ThrottledReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Small reads keep the pacing smooth at low rates.
        let cap = if self.throttle.unlimited() {
            buf.len()
        } else {
            buf.len().min(64 * 1024)
        };
        let n = self.inner.read(&mut buf[..cap])?;
        self.throttle.take(n, self.cancel);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_never_waits_and_limited_paces() {
        let cancel = AtomicBool::new(false);
        let free = Throttle::new(0);
        let t = Instant::now();
        free.take(1 << 30, &cancel);
        assert!(t.elapsed() < Duration::from_millis(50));
        // 1 MiB at 4 MiB/s: at least ~200 ms (a quarter second of burst is
        // never banked up front).
        let limited = Throttle::new(4 << 20);
        let t = Instant::now();
        for _ in 0..16 {
            limited.take(64 << 10, &cancel);
        }
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn cancel_cuts_the_wait_short() {
        let cancel = AtomicBool::new(true);
        let limited = Throttle::new(1024);
        let t = Instant::now();
        limited.take(1 << 20, &cancel);
        assert!(t.elapsed() < Duration::from_millis(100));
    }
}
