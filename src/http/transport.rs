//! The byte transport under a connection: plain TCP or TLS (rustls), usable
//! from several threads at once.
//!
//! TLS is the hard part: after an upgrade one thread reads while another
//! writes. The rustls state sits behind a mutex that is only ever held for
//! in-memory work; socket reads and writes happen outside it (raw bytes are
//! read into a private buffer first, then fed to rustls), so a reader
//! blocked on the socket never stalls a writer. Encrypted output goes
//! through an `out` buffer whose lock orders writers; lock order is always
//! `out` then `state`. The same code serves nonblocking sockets (the head
//! reader): output that could not be written stays in `out` until
//! [`Transport::flush_pending`] is called on writability.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use rustls::ServerConnection;

use super::Stream;

/// Raw TLS bytes read from the socket but not yet fed to rustls.
struct RawIn {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

pub(crate) struct TlsConn {
    sock: Arc<TcpStream>,
    state: Mutex<ServerConnection>,
    out: Mutex<Vec<u8>>,
    raw: Mutex<RawIn>,
}

#[derive(Clone)]
pub(crate) enum Transport {
    Plain(Arc<TcpStream>),
    Tls(Arc<TlsConn>),
}

fn lock<T>(m: &Mutex<T>) -> io::Result<MutexGuard<'_, T>> {
    // A poisoned lock means a panic mid-update of TLS state: the session
    // can't be trusted any more, so the connection fails.
    m.lock()
        .map_err(|_| io::Error::other("connection state poisoned by an earlier panic"))
}

/// Writes as much of `out` as the socket takes. `WouldBlock` (nonblocking
/// socket full, or a send timeout) leaves the rest in `out`.
fn drain(sock: &TcpStream, out: &mut Vec<u8>) -> io::Result<()> {
    let mut written = 0;
    let result = loop {
        if written == out.len() {
            break Ok(());
        }
        match (&*sock).write(&out[written..]) {
            Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    out.drain(..written);
    if out.is_empty() {
        // Don't keep a large buffer around per idle connection.
        out.shrink_to(16 * 1024);
    }
    result
}

impl Transport {
    pub fn plain(sock: TcpStream) -> Transport {
        Transport::Plain(Arc::new(sock))
    }

    pub fn tls(sock: TcpStream, conn: ServerConnection) -> Transport {
        Transport::Tls(Arc::new(TlsConn {
            sock: Arc::new(sock),
            state: Mutex::new(conn),
            out: Mutex::new(Vec::new()),
            raw: Mutex::new(RawIn {
                buf: vec![0u8; 16 * 1024].into_boxed_slice(),
                start: 0,
                end: 0,
            }),
        }))
    }

    pub fn sock(&self) -> &Arc<TcpStream> {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => &t.sock,
        }
    }

    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => (&**s).read(buf),
            Transport::Tls(t) => t.read(buf),
        }
    }

    /// Accepts some of `buf`. For TLS the bytes may stay encrypted in the
    /// pending buffer when the socket is full; see [`flush`](Self::flush).
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => (&**s).write(buf),
            Transport::Tls(t) => t.write(buf),
        }
    }

    pub fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.write(buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Pushes out every pending byte; on a blocking socket with a send
    /// timeout, `WouldBlock` means the peer stopped reading.
    pub fn flush(&self) -> io::Result<()> {
        match self {
            Transport::Plain(_) => Ok(()),
            Transport::Tls(t) => t.flush_out(),
        }
    }

    /// Nonblocking-friendly flush: `Ok(true)` when nothing is pending any more.
    pub fn flush_pending(&self) -> io::Result<bool> {
        match self.flush() {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether output is waiting for the socket to become writable.
    pub fn wants_write(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(t) => {
                let out_pending = t.out.lock().map(|o| !o.is_empty()).unwrap_or(false);
                out_pending || t.state.lock().map(|s| s.wants_write()).unwrap_or(false)
            }
        }
    }

    /// Queues a TLS close_notify (best effort, before closing).
    pub fn close_notify(&self) {
        if let Transport::Tls(t) = self {
            if let Ok(mut s) = t.state.lock() {
                s.send_close_notify();
            }
            let _ = self.flush_pending();
        }
    }
}

impl TlsConn {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // Serializes readers; held across the socket read, never with `state`
        // held, so writers keep going.
        let mut raw = lock(&self.raw)?;
        loop {
            let needs_flush;
            {
                let mut st = lock(&self.state)?;
                match st.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if raw.start == raw.end {
                    // Nothing buffered: fall through to the socket.
                    needs_flush = None;
                } else {
                    let RawIn {
                        buf: rbuf,
                        start,
                        end,
                    } = &mut *raw;
                    let mut pending = &rbuf[*start..*end];
                    let used = st.read_tls(&mut pending)?;
                    if used == 0 {
                        // rustls took nothing and has nothing to give: a
                        // stuck session, not something to spin on.
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "TLS input not accepted",
                        ));
                    }
                    *start += used;
                    let processed = st.process_new_packets();
                    needs_flush = Some((st.wants_write(), processed.err()));
                }
            }
            match needs_flush {
                Some((wants_write, err)) => {
                    if wants_write {
                        self.try_flush_from_reader()?;
                    }
                    if let Some(e) = err {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                    continue;
                }
                None => {
                    raw.start = 0;
                    raw.end = 0;
                    let n = loop {
                        match (&*self.sock).read(&mut raw.buf) {
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            other => break other?,
                        }
                    };
                    if n == 0 {
                        // Tell rustls about EOF; its reader then reports a
                        // clean close or UnexpectedEof.
                        let mut st = lock(&self.state)?;
                        st.read_tls(&mut io::empty())?;
                        let _ = st.process_new_packets();
                        return match st.reader().read(buf) {
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                Err(io::ErrorKind::UnexpectedEof.into())
                            }
                            other => other,
                        };
                    }
                    raw.end = n;
                }
            }
        }
    }

    /// Sends handshake/alert output produced while reading, unless a writer
    /// is busy (it will carry the bytes out with its next write).
    fn try_flush_from_reader(&self) -> io::Result<()> {
        let mut out = match self.out.try_lock() {
            Ok(out) => out,
            Err(TryLockError::WouldBlock) => return Ok(()),
            Err(TryLockError::Poisoned(_)) => {
                return Err(io::Error::other("connection state poisoned"));
            }
        };
        self.move_tls_out(&mut out)?;
        match drain(&self.sock, &mut out) {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(()),
        }
    }

    fn move_tls_out(&self, out: &mut Vec<u8>) -> io::Result<()> {
        let mut st = lock(&self.state)?;
        while st.wants_write() {
            st.write_tls(out)?;
        }
        Ok(())
    }

    fn write(&self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let mut out = lock(&self.out)?;
        // At most one write's worth stays pending: refuse more while the
        // socket hasn't taken the previous one.
        if !out.is_empty() {
            drain(&self.sock, &mut out)?;
        }
        let n = {
            let mut st = lock(&self.state)?;
            let n = st.writer().write(data)?;
            while st.wants_write() {
                st.write_tls(&mut *out)?;
            }
            n
        };
        match drain(&self.sock, &mut out) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(n),
            Err(e) => Err(e),
            Ok(()) => Ok(n),
        }
    }

    fn flush_out(&self) -> io::Result<()> {
        let mut out = lock(&self.out)?;
        self.move_tls_out(&mut out)?;
        drain(&self.sock, &mut out)
    }
}

/// The connection handed to an upgrade function. Clones share the socket and
/// the connection slot, which is released when the last clone is dropped.
pub(crate) struct UpgradedStream {
    pub transport: Transport,
    pub slot: Arc<dyn Send + Sync>,
}

impl Read for UpgradedStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.transport.read(buf)
    }
}

impl Write for UpgradedStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.transport.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.transport.flush()
    }
}

impl Stream for UpgradedStream {
    fn try_clone_stream(&self) -> io::Result<Box<dyn Stream>> {
        Ok(Box::new(UpgradedStream {
            transport: self.transport.clone(),
            slot: Arc::clone(&self.slot),
        }))
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.transport.sock().set_read_timeout(timeout)
    }

    /// Tears the socket down at once. No TLS close_notify: a writer blocked
    /// on a full socket holds the output lock, and teardown must not wait.
    fn shutdown(&self) -> io::Result<()> {
        match self.transport.sock().shutdown(Shutdown::Both) {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            other => other,
        }
    }
}
