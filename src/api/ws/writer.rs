//! A session's writer thread: owns every write to the socket (events from
//! the bus once authorized, replies, and the control frames the reader's
//! protocol state produces), told what to do by the reader through
//! `Control`.

use std::io::Write;

use crossbeam_channel::{select, Receiver};
use tungstenite::protocol::Role;
use tungstenite::{Message, WebSocket};

use super::session::config;
use crate::events::Event;
use crate::http::Stream;

/// What the reader tells the writer.
pub(super) enum Control {
    /// A text message to send.
    Text(String),
    /// Frame bytes the protocol produced while reading (pong, close echo).
    Raw(Vec<u8>),
    /// Authenticated (again): deliver events; logs only with permission.
    Authorized {
        logs: bool,
    },
    /// The token expired: stop delivering events.
    Unauthorized,
    Ping,
    Close,
    /// The node is shutting down: close with 1001.
    GoingAway,
}

pub(super) fn write_loop(
    server: &str,
    stream: Box<dyn Stream>,
    controls: &Receiver<Control>,
    events: &Receiver<Event>,
) {
    let mut socket = WebSocket::from_raw_socket(stream, Role::Server, Some(config()));
    let mut authorized = false;
    let mut logs = false;
    loop {
        let result = select! {
            recv(controls) -> control => match control {
                Ok(Control::Text(text)) => socket.send(Message::text(text)),
                Ok(Control::Raw(bytes)) => socket.get_mut().write_all(&bytes).and_then(|()| socket.get_mut().flush()).map_err(tungstenite::Error::Io),
                Ok(Control::Authorized { logs: l }) => { authorized = true; logs = l; Ok(()) }
                Ok(Control::Unauthorized) => { authorized = false; Ok(()) }
                Ok(Control::Ping) => socket.send(Message::Ping(Vec::new().into())),
                Ok(Control::Close) => {
                    let _ = socket.close(None);
                    let _ = socket.flush();
                    return;
                }
                Ok(Control::GoingAway) => {
                    let _ = socket.close(Some(tungstenite::protocol::CloseFrame {
                        code: tungstenite::protocol::frame::coding::CloseCode::Away,
                        reason: "node shutting down".into(),
                    }));
                    let _ = socket.flush();
                    return;
                }
                Err(_) => return,
            },
            recv(events) -> event => match event {
                Ok(event) if authorized && (logs || event.event != "transfer logs") => {
                    match serde_json::to_string(&event) {
                        Ok(text) => socket.send(Message::text(text)),
                        Err(_) => Ok(()),
                    }
                }
                Ok(_) => Ok(()),
                // The bus dropped us (too slow); the reader notices and ends.
                Err(_) => return,
            },
        };
        if let Err(e) = result {
            log::debug!("websocket {server}: write failed: {e}");
            return;
        }
    }
}
