//! Token verification: the transfer JWT the panel mints for a destination
//! node and the websocket JWT, both HS256 keyed with the node token; and
//! minting of both for the CLI and tests.

use std::time::Duration;

/// Why a transfer token was refused; maps to SPEC §4's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// No or blank Authorization, or not `Bearer` (401, "heads" message).
    Missing,
    /// Signature, expiry, `sub` or other claim check failed (401); the
    /// string says which, for the log only.
    Invalid(String),
    /// A `scope` claim without `transfer` (403).
    Forbidden,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferClaims {
    /// `sub`: the server uuid.
    pub server: String,
    /// `unique_id`, else `jti` + `iat`: the replay guard's key.
    pub replay_key: String,
    /// Seconds since the epoch the token expires.
    pub expires_at: u64,
}

/// Verifies `Authorization: Bearer <jwt>` for `POST /api/transfers`.
pub fn verify_transfer_token(
    _authorization: Option<&str>,
    _key: &[u8],
) -> Result<TransferClaims, TokenError> {
    unimplemented!("jwt")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebsocketClaims {
    pub server_uuid: String,
    pub permissions: Vec<String>,
    pub expires_at: u64,
}

/// Verifies a websocket `auth` token for `server`.
pub fn verify_websocket_token(
    _token: &str,
    _key: &[u8],
    _server: &str,
) -> Result<WebsocketClaims, String> {
    unimplemented!("jwt")
}

/// Mints a transfer token for `server` shaped like the panel's.
pub fn mint_transfer_token(_key: &[u8], _server: &str, _valid_for: Duration) -> String {
    unimplemented!("jwt")
}

/// Mints a websocket token.
pub fn mint_websocket_token(
    _key: &[u8],
    _server: &str,
    _permissions: &[&str],
    _valid_for: Duration,
) -> String {
    unimplemented!("jwt")
}
