//! An in-memory pipe of owned blocks between a producing thread (the
//! archive writer) and a consuming one (the HTTP client's body reader).
//! Bounded, so a slow network throttles packing and memory stays flat.
//!
//! The writer may set a pause point (`Pause::here`): the reader, having
//! read everything up to it, answers `WouldBlock` instead of waiting, so
//! a consumer that batches (the segmented sender's kept segment) can end
//! its batch exactly there (pre-copy's stop waits for those bytes to be
//! acknowledged, SPEC §10).

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TryRecvError};

const BLOCK: usize = 256 * 1024;

/// What the writer and the reader share: bytes handed to the reader, the
/// pause point, whether the reader is gone.
struct Shared {
    sent: AtomicU64,
    /// `u64::MAX`: no pause.
    pause_at: AtomicU64,
    reader_gone: AtomicBool,
}

/// The writer's handle on the pause point (see the module doc).
#[derive(Clone)]
pub struct Pause(Arc<Shared>);

impl Pause {
    /// Sets the pause point at everything the writer has handed over so
    /// far (flush the writer first) and returns that offset.
    pub fn here(&self) -> u64 {
        let at = self.0.sent.load(Ordering::SeqCst);
        self.0.pause_at.store(at, Ordering::SeqCst);
        at
    }

    /// The reader was dropped: nothing more will be consumed.
    pub fn reader_gone(&self) -> bool {
        self.0.reader_gone.load(Ordering::SeqCst)
    }
}

pub fn pipe(depth: usize, cancel: Arc<AtomicBool>) -> (PipeWriter, PipeReader) {
    let shared = Arc::new(Shared {
        sent: AtomicU64::new(0),
        pause_at: AtomicU64::new(u64::MAX),
        reader_gone: AtomicBool::new(false),
    });
    let (tx, rx) = bounded(depth.max(1));
    // Emptied blocks go back to the writer, so a transfer allocates at most
    // depth + 2 blocks instead of one per 256 KiB.
    let (pool_tx, pool_rx) = bounded(depth.max(1) + 1);
    (
        PipeWriter {
            tx,
            pool: pool_rx,
            buf: Vec::with_capacity(BLOCK),
            shared: Arc::clone(&shared),
        },
        PipeReader {
            rx,
            pool: pool_tx,
            current: Vec::new(),
            pos: 0,
            cancel,
            done: false,
            read: 0,
            shared,
        },
    )
}

pub struct PipeWriter {
    tx: Sender<Vec<u8>>,
    pool: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    shared: Arc<Shared>,
}

impl PipeWriter {
    /// The handle that sets this pipe's pause point.
    pub fn pause(&self) -> Pause {
        Pause(Arc::clone(&self.shared))
    }

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
        let n = block.len() as u64;
        self.tx
            .send(block)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped reading"))?;
        self.shared.sent.fetch_add(n, Ordering::SeqCst);
        Ok(())
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
    /// Bytes read so far (the body's offset).
    read: u64,
    shared: Arc<Shared>,
}

impl Drop for PipeReader {
    fn drop(&mut self) {
        self.shared.reader_gone.store(true, Ordering::SeqCst);
    }
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.current.len() {
            if self.done {
                return Ok(0);
            }
            // Everything up to the pause point is read: the writer waits
            // for it to be consumed, so nothing comes until then.
            let paused = self.read == self.shared.pause_at.load(Ordering::SeqCst);
            if self.cancel.load(Ordering::Relaxed) {
                return Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "transfer cancelled",
                ));
            }
            let received = if paused {
                match self.rx.try_recv() {
                    Ok(block) => Ok(block),
                    Err(TryRecvError::Empty) => {
                        return Err(io::Error::new(
                            io::ErrorKind::WouldBlock,
                            "the writer paused here",
                        ))
                    }
                    Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
                }
            } else {
                // Short, so a pause point set while this waits is seen soon.
                self.rx.recv_timeout(Duration::from_millis(20))
            };
            match received {
                Ok(block) => {
                    let used = std::mem::replace(&mut self.current, block);
                    self.pos = 0;
                    if used.capacity() > 0 {
                        // Dropped if the pool is full or the writer is gone.
                        let _ = self.pool.try_send(used);
                    }
                }
                Err(RecvTimeoutError::Timeout) => continue,
                // The writer is gone: that is the end of the body (a
                // paused writer that gave up included). Whether it ended
                // well is the producer's result, checked by the caller.
                Err(RecvTimeoutError::Disconnected) => self.done = true,
            }
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        self.read += n as u64;
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
    fn a_reader_at_the_pause_point_answers_would_block_until_more_comes() {
        let cancel = Arc::new(AtomicBool::new(false));
        let (mut w, mut r) = pipe(4, cancel);
        let pause = w.pause();
        w.write_all(&[7u8; 1000]).unwrap();
        w.flush().unwrap();
        assert_eq!(pause.here(), 1000);
        let mut buf = [0u8; 600];
        assert_eq!(r.read(&mut buf).unwrap(), 600);
        assert_eq!(r.read(&mut buf).unwrap(), 400);
        // Nothing was dropped or duplicated, and the reader does not wait.
        assert_eq!(
            r.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        w.write_all(&[8u8; 10]).unwrap();
        w.flush().unwrap();
        assert_eq!(r.read(&mut buf).unwrap(), 10);
        assert_eq!(buf[..10], [8u8; 10]);
        assert!(!pause.reader_gone());
        // A paused writer that gives up ends the body, as any writer.
        pause.here();
        assert_eq!(
            r.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        drop(w);
        assert_eq!(r.read(&mut buf).unwrap(), 0);
        drop(r);
        assert!(pause.reader_gone());
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
