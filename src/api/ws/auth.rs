//! A session's client messages: `auth` checks the token (and its
//! `websocket.connect` permission), takes the session's place on first
//! success and tells the writer what it may deliver; other events are not
//! ferry's business.

use crossbeam_channel::Sender;

use super::writer::Control;
use super::{SessionSlot, MAX_SESSIONS, TOO_MANY};
use crate::api::ws_pending::PendingGuard;
use crate::events::{Event, TRANSFER_LOGS_PERMISSION};
use crate::node::Node;

/// A session's authentication: the token's expiry once authenticated,
/// its pending place before, its session place after.
pub(super) struct AuthState {
    pub(super) expires_at: Option<u64>,
    pub(super) warned: bool,
    pub(super) pending: PendingGuard,
    pub(super) slot: Option<SessionSlot>,
}

/// Whether a token's permissions allow opening the event stream (as Wings).
pub fn may_connect(permissions: &[String]) -> bool {
    permissions
        .iter()
        .any(|p| p == WEBSOCKET_CONNECT_PERMISSION || p == "*")
}

const WEBSOCKET_CONNECT_PERMISSION: &str = "websocket.connect";

/// Handles one client message; false ends the session.
pub(super) fn on_message(
    node: &Node,
    server: &str,
    text: &str,
    to_writer: &Sender<Control>,
    auth: &mut AuthState,
) -> bool {
    let Ok(message) = serde_json::from_str::<serde_json::Value>(text) else {
        return true;
    };
    if message.get("event").and_then(|e| e.as_str()) != Some("auth") {
        // Other events (console commands, stats) are not ferry's business.
        return true;
    }
    let token = message
        .pointer("/args/0")
        .and_then(|t| t.as_str())
        .unwrap_or("");
    match crate::jwt::verify_websocket_token(token, node.config.token.as_bytes(), server) {
        Ok(claims) if !may_connect(&claims.permissions) => {
            log::info!("websocket {server}: auth refused: the token lacks websocket.connect");
            send(to_writer, "jwt error", "jwt: token lacks websocket.connect");
            false
        }
        Ok(claims) => {
            if auth.slot.is_none() {
                let Some(slot) = SessionSlot::take() else {
                    log::warn!("websocket {server}: refused: {MAX_SESSIONS} sessions already open");
                    send(to_writer, "jwt error", TOO_MANY);
                    return false;
                };
                auth.slot = Some(slot);
                auth.pending.authenticated();
            }
            auth.expires_at = Some(claims.expires_at);
            auth.warned = false;
            let logs = claims
                .permissions
                .iter()
                .any(|p| p == TRANSFER_LOGS_PERMISSION || p == "*");
            let _ = to_writer.send(Control::Authorized { logs });
            send(to_writer, "auth success", "");
            true
        }
        Err(why) => {
            log::info!("websocket {server}: auth refused: {why}");
            send(to_writer, "jwt error", "jwt: invalid or expired token");
            false
        }
    }
}

pub(super) fn send(to_writer: &Sender<Control>, event: &str, arg: &str) {
    let text = serde_json::to_string(&Event::new(event, arg.to_string())).unwrap_or_default();
    let _ = to_writer.send(Control::Text(text));
}
