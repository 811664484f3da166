//! An in-memory pipe of owned blocks between a producing thread (the
//! archive writer) and a consuming one (the HTTP client's body reader).
//! Bounded, so a slow network throttles packing and memory stays flat.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};

const BLOCK: usize = 256 * 1024;

pub fn pipe(depth: usize, cancel: Arc<AtomicBool>) -> (PipeWriter, PipeReader) {
    let (tx, rx) = bounded(depth.max(1));
    // Emptied blocks go back to the writer, so a transfer allocates at most
    // depth + 2 blocks instead of one per 256 KiB.
    let (pool_tx, pool_rx) = bounded(depth.max(1) + 1);
    (
        PipeWriter {
            tx,
            pool: pool_rx,
            buf: Vec::with_capacity(BLOCK),
        },
        PipeReader {
            rx,
            pool: pool_tx,
            current: Vec::new(),
            pos: 0,
            cancel,
            done: false,
        },
    )
}

pub struct PipeWriter {
    tx: Sender<Vec<u8>>,
    pool: Receiver<Vec<u8>>,
    buf: Vec<u8>,
}

impl PipeWriter {
    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = match self.pool.try_recv() {
            Ok(mut v) => {
                v.clear();
                v
            }
            Err(_) => Vec::with_capacity(BLOCK),
        };
        let block = std::mem::replace(&mut self.buf, next);
        self.tx
            .send(block)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped reading"))
    }
}

impl Write for PipeWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = BLOCK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= BLOCK {
            self.send_buf()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buf()
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        let _ = self.send_buf();
    }
}

pub struct PipeReader {
    rx: Receiver<Vec<u8>>,
    pool: Sender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
    cancel: Arc<AtomicBool>,
    done: bool,
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.current.len() {
            if self.done {
                return Ok(0);
            }
            if self.cancel.load(Ordering::Relaxed) {
                return Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "transfer cancelled",
                ));
            }
            match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(block) => {
                    let used = std::mem::replace(&mut self.current, block);
                    self.pos = 0;
                    if used.capacity() > 0 {
                        // Dropped if the pool is full or the writer is gone.
                        let _ = self.pool.try_send(used);
                    }
                }
                Err(RecvTimeoutError::Timeout) => continue,
                // The writer is gone: that is the end of the body. Whether it
                // ended well is the producer's result, checked by the caller.
                Err(RecvTimeoutError::Disconnected) => self.done = true,
            }
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_arrive_in_order_and_end_with_eof() {
        let cancel = Arc::new(AtomicBool::new(false));
        let (mut w, mut r) = pipe(2, cancel);
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let producer = std::thread::spawn(move || {
            for chunk in data.chunks(7777) {
                w.write_all(chunk).unwrap();
            }
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        producer.join().unwrap();
        assert_eq!(got, expected);
    }

    #[test]
    fn cancel_interrupts_a_waiting_reader() {
        let cancel = Arc::new(AtomicBool::new(false));
        let (_w, mut r) = pipe(2, Arc::clone(&cancel));
        cancel.store(true, Ordering::SeqCst);
        let mut buf = [0u8; 10];
        assert_eq!(
            r.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::Interrupted
        );
    }

    #[test]
    fn writer_fails_when_reader_is_gone() {
        let cancel = Arc::new(AtomicBool::new(false));
        let (mut w, r) = pipe(1, cancel);
        drop(r);
        let big = vec![0u8; BLOCK * 3];
        assert_eq!(
            w.write_all(&big).unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
    }
}
