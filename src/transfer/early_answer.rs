//! Hearing a destination that answers before the body is sent (SPEC §5:
//! "a source always records the destination's status and message when
//! the destination answered at all"). A destination that refuses early
//! (401, 409 exists, no space, cancelled there) writes its answer and
//! closes; the source's next write then fails with a broken pipe or a
//! reset, and ureq returns only that. The answer itself is already in the
//! socket's receive queue (TCP is ordered: it came before the reset), so
//! a transport wrapper reads what is queued when a write fails and keeps
//! it; `parse` turns it into the status and message.
//!
//! The wrapper sits on top of the TLS layer, so it hears the decrypted
//! answer over https too. It only reads after a write error that is not a
//! timeout: a write that failed because the peer is gone returns at once.

use std::io;
use std::sync::{Arc, Mutex};

use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, NextTimeout, RustlsConnector, TcpConnector, Transport,
};

/// Bytes heard after a failed write, shared with the transport.
pub type Heard = Arc<Mutex<Vec<u8>>>;

/// Bound on what is kept of an early answer.
const MAX_HEARD: usize = 64 * 1024;

/// An agent whose connections keep an early answer in `heard`.
pub fn agent(config: ureq::config::Config, heard: &Heard) -> ureq::Agent {
    let connector =
        ().chain(TcpConnector::default())
            .chain(RustlsConnector::default())
            .chain(Hearing {
                heard: Arc::clone(heard),
            });
    ureq::Agent::with_parts(config, connector, DefaultResolver::default())
}

#[derive(Debug)]
struct Hearing {
    heard: Heard,
}

impl<In: Transport> Connector<In> for Hearing {
    type Out = HearingTransport<In>;

    fn connect(
        &self,
        _details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        Ok(chained.map(|inner| HearingTransport {
            inner,
            heard: Arc::clone(&self.heard),
        }))
    }
}

#[derive(Debug)]
struct HearingTransport<T> {
    inner: T,
    heard: Heard,
}

impl<T: Transport> Transport for HearingTransport<T> {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let result = self.inner.transmit_output(amount, timeout);
        if let Err(ureq::Error::Io(e)) = &result {
            if matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
            ) {
                self.hear(timeout);
            }
        }
        result
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.inner.await_input(timeout)
    }

    fn is_open(&mut self) -> bool {
        self.inner.is_open()
    }

    fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }
}

impl<T: Transport> HearingTransport<T> {
    /// Reads what the peer sent before it went away.
    fn hear(&mut self, timeout: NextTimeout) {
        let mut heard = Vec::new();
        while heard.len() < MAX_HEARD {
            match self.inner.await_input(timeout) {
                Ok(true) => {
                    let input = self.inner.buffers().input();
                    if input.is_empty() {
                        break;
                    }
                    heard.extend_from_slice(input);
                    let n = input.len();
                    self.inner.buffers().input_consume(n);
                }
                _ => break,
            }
        }
        if !heard.is_empty() {
            *self.heard.lock().unwrap_or_else(|p| p.into_inner()) = heard;
        }
    }
}

/// The status and message of an HTTP answer in `bytes` (the `error` of a
/// JSON envelope, else the body's start); None if it is not one.
pub fn parse(bytes: &[u8]) -> Option<(u16, String)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return None,
    };
    let status = response.code?;
    let body = &bytes[head_len..];
    let text = String::from_utf8_lossy(body);
    let message = serde_json::from_str::<serde_json::Value>(text.trim())
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| text.chars().take(200).collect());
    Some((status, message))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn an_early_answer_is_read_as_status_and_message() {
        let bytes = b"HTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\nContent-Length: 60\r\n\r\n{\"error\":\"The transfer was cancelled on the destination.\"}";
        assert_eq!(
            parse(bytes),
            Some((409, "The transfer was cancelled on the destination.".into()))
        );
        assert_eq!(parse(b"HTTP/1.1 40"), None);
        assert_eq!(parse(b""), None);
    }
}
