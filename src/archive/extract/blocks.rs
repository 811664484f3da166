//! The tar stage's input: the decompressed stream read in place from the
//! blocks the inflate stage sends, with the cancel flag watched on every
//! wait. Reads here are bounded by the caller; a short stream is
//! `tar: truncated archive`.

use std::sync::atomic::AtomicBool;

use crossbeam_channel::{Receiver, Sender};

use super::{corrupt, Fail, Msg};
use crate::archive::pipe;
use crate::archive::tarfmt;

/// The decompressed stream, read in place from the blocks it arrives in.
pub(crate) struct Blocks<'a> {
    rx: Receiver<Msg>,
    pool: Sender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    len: usize,
    ended: bool,
    cancel: &'a AtomicBool,
}

impl<'a> Blocks<'a> {
    pub(super) fn new(
        rx: Receiver<Msg>,
        pool: Sender<Vec<u8>>,
        cancel: &'a AtomicBool,
    ) -> Blocks<'a> {
        Blocks {
            rx,
            pool,
            cur: Vec::new(),
            pos: 0,
            len: 0,
            ended: false,
            cancel,
        }
    }

    /// Makes data available; false at the end of the stream.
    fn fill(&mut self) -> Result<bool, Fail> {
        while self.pos == self.len {
            if self.ended {
                return Ok(false);
            }
            let old = std::mem::take(&mut self.cur);
            (self.pos, self.len) = (0, 0);
            if !old.is_empty() {
                let _ = self.pool.try_send(old);
            }
            match pipe::recv(&self.rx, self.cancel)? {
                Msg::Data(buf, n) => {
                    self.cur = buf;
                    self.pos = 0;
                    self.len = n;
                }
                Msg::End => self.ended = true,
            }
        }
        Ok(true)
    }

    /// Up to `max` bytes in place; `None` at the end of the stream.
    pub(crate) fn slice(&mut self, max: usize) -> Result<Option<&[u8]>, Fail> {
        if !self.fill()? {
            return Ok(None);
        }
        let n = (self.len - self.pos).min(max);
        let s = &self.cur[self.pos..self.pos + n];
        self.pos += n;
        Ok(Some(s))
    }

    /// Fills `out`; returns how many bytes were available (short at the end).
    pub(super) fn read_full(&mut self, out: &mut [u8]) -> Result<usize, Fail> {
        let mut got = 0;
        while got < out.len() {
            match self.slice(out.len() - got)? {
                Some(s) => {
                    out[got..got + s.len()].copy_from_slice(s);
                    got += s.len();
                }
                None => break,
            }
        }
        Ok(got)
    }

    pub(super) fn skip(&mut self, mut n: u64) -> Result<(), Fail> {
        while n > 0 {
            match self.slice(n.min(usize::MAX as u64) as usize)? {
                Some(s) => n -= s.len() as u64,
                None => return Err(corrupt("tar: truncated archive")),
            }
        }
        Ok(())
    }

    pub(super) fn read_vec(&mut self, n: u64) -> Result<Vec<u8>, Fail> {
        let mut v = vec![0; n as usize];
        if self.read_full(&mut v)? < v.len() {
            return Err(corrupt("tar: truncated archive"));
        }
        self.skip(tarfmt::padding(n) as u64)?;
        Ok(v)
    }
}
