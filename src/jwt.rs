//! Token verification: the transfer JWT the panel mints for a destination
//! node and the websocket JWT, both HS256 keyed with the node token; and
//! minting of both for the CLI and tests.
//!
//! Verification uses `jwt-simple` with strict options, because its defaults
//! are lax: 15 minutes of clock tolerance and no `exp` required. Here the
//! tolerance is [`LEEWAY`] on every time claim, tokens are bounded to
//! [`MAX_TOKEN_LEN`], only `alg` = HS256 is accepted (`none`, HS512 and the
//! rest fail jwt-simple's algorithm check before any signature work), the
//! signature is compared in constant time by jwt-simple, and `exp` presence,
//! `sub`, `scope` and the websocket claims are checked here.
//!
//! Float dates (lcobucci/jwt without Pterodactyl's `TimestampDates` emits
//! `1700000000.123456`): jwt-simple deserializes them, truncating to whole
//! seconds, which the 60 s leeway dwarfs, so no hand-rolled HMAC check is
//! needed. Also from jwt-simple: an `iat` more than the leeway in the future
//! is refused, and keys shorter than [`MIN_KEY_LEN`] bytes are refused as
//! weak (panel node tokens are 64 characters).
//!
//! Minting is done here by hand (HMAC-SHA256 through jwt-simple's key type)
//! because the panel's tokens carry `jti` and `sub` in the header too, which
//! jwt-simple's builder cannot express, and tests need hostile tokens.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jwt_simple::algorithms::{HS256Key, MACLike};
use jwt_simple::claims::JWTClaims;
use jwt_simple::common::VerificationOptions;
use jwt_simple::reexports::coarsetime;
use jwt_simple::reexports::ct_codecs::{Base64UrlSafeNoPadding, Encoder};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Clock tolerance on `exp`, `nbf` and `iat`.
pub const LEEWAY: Duration = Duration::from_secs(60);
/// Longest token accepted; the panel's are well under 1 KiB.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Shortest key jwt-simple accepts for HMAC.
pub const MIN_KEY_LEN: usize = 12;

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

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::Missing => f.write_str("no Bearer authorization"),
            TokenError::Invalid(why) => write!(f, "invalid token: {why}"),
            TokenError::Forbidden => f.write_str("token scope does not include transfer"),
        }
    }
}

impl std::error::Error for TokenError {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferClaims {
    /// `sub`: the server uuid (lowercased).
    pub server: String,
    /// `unique_id`, else `jti` + ":" + `iat`, else the token's signature:
    /// the replay guard's key.
    pub replay_key: String,
    /// Seconds since the epoch the token expires.
    pub expires_at: u64,
}

/// Claims of a transfer token beyond the registered ones.
#[derive(Debug, Deserialize)]
struct TransferExtra {
    #[serde(default)]
    scope: Option<Value>,
    #[serde(default)]
    unique_id: Option<String>,
}

/// Claims of a websocket token beyond the registered ones.
#[derive(Debug, Deserialize)]
struct WebsocketExtra {
    #[serde(default)]
    server_uuid: Option<String>,
    #[serde(default)]
    permissions: Vec<String>,
}

/// Whether `s` is a UUID in its 8-4-4-4-12 hex form.
pub(crate) fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn strict_options(now: Option<u64>) -> VerificationOptions {
    VerificationOptions {
        time_tolerance: Some(coarsetime::Duration::from_secs(LEEWAY.as_secs())),
        max_token_length: Some(MAX_TOKEN_LEN),
        artificial_time: now.map(coarsetime::UnixTimeStamp::from_secs),
        ..VerificationOptions::default()
    }
}

/// Signature, algorithm, times and claim types; `exp` required.
fn verify_hs256<T: serde::de::DeserializeOwned>(
    token: &str,
    key: &[u8],
    now: Option<u64>,
) -> Result<(JWTClaims<T>, u64), String> {
    if key.len() < MIN_KEY_LEN {
        return Err(format!(
            "the node token is shorter than {MIN_KEY_LEN} bytes, refused as an HMAC key"
        ));
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(format!("token longer than {MAX_TOKEN_LEN} bytes"));
    }
    let claims = HS256Key::from_bytes(key)
        .verify_token::<T>(token, Some(strict_options(now)))
        .map_err(|e| e.to_string())?;
    let exp = claims
        .expires_at
        .ok_or_else(|| "token has no exp".to_string())?
        .as_secs();
    Ok((claims, exp))
}

/// The token of `Authorization: Bearer <token>`; the scheme is
/// case-insensitive.
fn bearer(authorization: Option<&str>) -> Result<&str, TokenError> {
    let value = authorization.map(str::trim).unwrap_or("");
    let (scheme, token) = value.split_once([' ', '\t']).ok_or(TokenError::Missing)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(TokenError::Missing);
    }
    Ok(token)
}

/// Whether a `scope` claim grants `transfer`: a space- or comma-separated
/// string, or an array of strings.
fn scope_allows_transfer(scope: &Value) -> bool {
    match scope {
        Value::String(s) => s.split([' ', ',']).any(|item| item.trim() == "transfer"),
        Value::Array(items) => items.iter().any(|v| v.as_str() == Some("transfer")),
        _ => false,
    }
}

/// Verifies `Authorization: Bearer <jwt>` for `POST /api/transfers`.
pub fn verify_transfer_token(
    authorization: Option<&str>,
    key: &[u8],
) -> Result<TransferClaims, TokenError> {
    verify_transfer_token_at(authorization, key, None)
}

/// [`verify_transfer_token`] at a given time (seconds since the epoch);
/// `None` is the clock.
pub fn verify_transfer_token_at(
    authorization: Option<&str>,
    key: &[u8],
    now: Option<u64>,
) -> Result<TransferClaims, TokenError> {
    let token = bearer(authorization)?;
    let (claims, expires_at) =
        verify_hs256::<TransferExtra>(token, key, now).map_err(TokenError::Invalid)?;
    let sub = claims
        .subject
        .as_deref()
        .ok_or_else(|| TokenError::Invalid("token has no sub".into()))?;
    if !is_uuid(sub) {
        return Err(TokenError::Invalid("token sub is not a server uuid".into()));
    }
    if let Some(scope) = &claims.custom.scope {
        if !scope_allows_transfer(scope) {
            return Err(TokenError::Forbidden);
        }
    }
    let replay_key = match (&claims.custom.unique_id, &claims.jwt_id, claims.issued_at) {
        (Some(unique), _, _) if !unique.is_empty() => unique.clone(),
        (_, Some(jti), Some(iat)) if !jti.is_empty() => format!("{jti}:{}", iat.as_secs()),
        // Verified above, so the token has three parts.
        _ => token.rsplit('.').next().unwrap_or(token).to_string(),
    };
    Ok(TransferClaims {
        server: sub.to_ascii_lowercase(),
        replay_key,
        expires_at,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebsocketClaims {
    pub server_uuid: String,
    pub permissions: Vec<String>,
    pub expires_at: u64,
}

/// Verifies a websocket `auth` token for `server`.
pub fn verify_websocket_token(
    token: &str,
    key: &[u8],
    server: &str,
) -> Result<WebsocketClaims, String> {
    verify_websocket_token_at(token, key, server, None)
}

/// [`verify_websocket_token`] at a given time; `None` is the clock.
pub fn verify_websocket_token_at(
    token: &str,
    key: &[u8],
    server: &str,
    now: Option<u64>,
) -> Result<WebsocketClaims, String> {
    let (claims, expires_at) = verify_hs256::<WebsocketExtra>(token.trim(), key, now)?;
    let server_uuid = claims
        .custom
        .server_uuid
        .ok_or_else(|| "token has no server_uuid".to_string())?;
    if !server_uuid.eq_ignore_ascii_case(server) {
        return Err("token is for another server".into());
    }
    Ok(WebsocketClaims {
        server_uuid,
        permissions: claims.custom.permissions,
        expires_at,
    })
}

/// `n` random ASCII letters and digits, like Laravel's `Str::random`.
fn random_alnum(n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(n);
    let mut counter = 0u64;
    while out.len() < n {
        let mut bytes = [0u8; 64];
        if getrandom::fill(&mut bytes).is_err() {
            // No OS randomness: the id only has to be unique, not secret.
            let mut h = Sha256::new();
            h.update(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
                    .to_le_bytes(),
            );
            h.update(counter.to_le_bytes());
            counter += 1;
            bytes[..32].copy_from_slice(&h.finalize());
            bytes[32..].fill(255);
        }
        // Rejection sampling keeps the 62 symbols equally likely.
        for b in bytes {
            if out.len() < n && (b as usize) < ALPHABET.len() * 4 {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    out
}

fn b64(data: &[u8]) -> String {
    // Encoding into a String only fails on length overflow.
    Base64UrlSafeNoPadding::encode_to_string(data).unwrap_or_default()
}

/// Mints an HS256 token from raw claims. `header_json_extra` (an object;
/// anything else is ignored) is merged over `{"typ":"JWT","alg":"HS256"}`,
/// so tests can forge `alg` values; the signature is always HMAC-SHA256.
pub fn mint_token_from_claims(key: &[u8], header_json_extra: Value, claims: Value) -> String {
    let mut header = serde_json::Map::new();
    header.insert("typ".into(), json!("JWT"));
    header.insert("alg".into(), json!("HS256"));
    if let Value::Object(extra) = header_json_extra {
        header.extend(extra);
    }
    let signing_input = format!(
        "{}.{}",
        b64(Value::Object(header).to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let tag = HS256Key::from_bytes(key).authentication_tag(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(&tag))
}

/// Mints a transfer token for `server` shaped like the panel's
/// NodeJWTService: `iss`, `aud` as an array, `jti` = sha256 hex of the
/// uuid, `iat`, `nbf` 5 minutes back, `exp`, `sub`, a 16-character
/// `unique_id`, and `scope: transfer`, which newer Wings, Pelican and
/// calagopus require; `jti` and `sub` repeated in the header.
pub fn mint_transfer_token(key: &[u8], server: &str, valid_for: Duration) -> String {
    let jti = hex::encode(Sha256::digest(server.as_bytes()));
    mint_token_from_claims(
        key,
        json!({"jti": jti, "sub": server}),
        claims_with(&jti, valid_for, json!({"sub": server, "scope": "transfer"})),
    )
}

/// The claims every token ferry mints carries (issuer, audience, `jti`,
/// `iat`, `nbf` 5 minutes back, `exp`, a 16-character `unique_id`), plus
/// the token kind's own `extra` ones.
fn claims_with(jti: &str, valid_for: Duration, extra: Value) -> Value {
    let now = now_secs();
    let mut claims = json!({
        "iss": "ferry",
        "aud": ["ferry"],
        "jti": jti,
        "iat": now,
        "nbf": now.saturating_sub(300),
        "exp": now.saturating_add(valid_for.as_secs()),
        "unique_id": random_alnum(16),
    });
    if let (Some(all), Value::Object(extra)) = (claims.as_object_mut(), extra) {
        all.extend(extra);
    }
    claims
}

/// Mints a websocket token.
pub fn mint_websocket_token(
    key: &[u8],
    server: &str,
    permissions: &[&str],
    valid_for: Duration,
) -> String {
    let jti = random_alnum(16);
    mint_token_from_claims(
        key,
        json!({"jti": jti}),
        claims_with(
            &jti,
            valid_for,
            json!({"server_uuid": server, "permissions": permissions}),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use jwt_simple::algorithms::HS512Key;

    const KEY: &[u8] = b"node-token-0123456789abcdef";
    const UUID: &str = "0b8c2e5e-7c1a-4d1e-9a53-1f7a2b3c4d5e";
    const NOW: u64 = 1_700_000_000;

    fn claims(extra: Value) -> Value {
        let mut c = json!({
            "iss": "https://panel.example", "aud": ["https://node.example:8080"],
            "jti": "j1", "iat": NOW, "nbf": NOW - 300, "exp": NOW + 900,
            "sub": UUID, "unique_id": "AbCdEfGhIjKlMnOp",
        });
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    fn check(token: &str) -> Result<TransferClaims, TokenError> {
        verify_transfer_token_at(Some(&format!("Bearer {token}")), KEY, Some(NOW))
    }

    fn check_claims(extra: Value) -> Result<TransferClaims, TokenError> {
        check(&mint_token_from_claims(KEY, json!({}), claims(extra)))
    }

    fn invalid(r: Result<TransferClaims, TokenError>) -> String {
        match r {
            Err(TokenError::Invalid(why)) => why,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn panel_shaped_token_is_accepted() {
        let got = check_claims(json!({})).unwrap();
        assert_eq!(
            got,
            TransferClaims {
                server: UUID.into(),
                replay_key: "AbCdEfGhIjKlMnOp".into(),
                expires_at: NOW + 900,
            }
        );
    }

    #[test]
    fn authorization_header_forms() {
        let token = mint_token_from_claims(KEY, json!({}), claims(json!({})));
        for ok in [
            format!("Bearer {token}"),
            format!("bearer  {token} "),
            format!("BEARER\t{token}"),
        ] {
            assert!(
                verify_transfer_token_at(Some(&ok), KEY, Some(NOW)).is_ok(),
                "{ok}"
            );
        }
        for missing in [
            None,
            Some(""),
            Some("   "),
            Some("Bearer"),
            Some("Bearer   "),
            Some("Basic abc"),
            Some(token.as_str()),
        ] {
            assert_eq!(
                verify_transfer_token_at(missing, KEY, Some(NOW)),
                Err(TokenError::Missing),
                "{missing:?}"
            );
        }
    }

    #[test]
    fn wrong_key_and_tampering() {
        let token = mint_token_from_claims(b"another-node-token-xyz", json!({}), claims(json!({})));
        invalid(check(&token));
        // Claims swapped under a valid signature.
        let good = mint_token_from_claims(KEY, json!({}), claims(json!({})));
        let other = mint_token_from_claims(
            KEY,
            json!({}),
            claims(json!({"sub": "11111111-2222-3333-4444-555555555555"})),
        );
        let g: Vec<&str> = good.split('.').collect();
        let o: Vec<&str> = other.split('.').collect();
        invalid(check(&format!("{}.{}.{}", g[0], o[1], g[2])));
    }

    #[test]
    fn only_hs256() {
        // alg none, with and without a signature.
        let none = mint_token_from_claims(KEY, json!({"alg": "none"}), claims(json!({})));
        invalid(check(&none));
        let unsigned = format!("{}.", none.rsplit_once('.').unwrap().0);
        invalid(check(&unsigned));
        // A real HS512 token with the same key.
        let head = b64(br#"{"typ":"JWT","alg":"HS512"}"#);
        let body = b64(claims(json!({})).to_string().as_bytes());
        let input = format!("{head}.{body}");
        let tag = HS512Key::from_bytes(KEY).authentication_tag(input.as_bytes());
        invalid(check(&format!("{input}.{}", b64(&tag))));
        for alg in ["hs256", "RS256", "HS384"] {
            invalid(check(&mint_token_from_claims(
                KEY,
                json!({"alg": alg}),
                claims(json!({})),
            )));
        }
    }

    #[test]
    fn expiry_rules() {
        assert!(invalid(check_claims(json!({"exp": null}))).contains("exp"));
        invalid(check_claims(json!({"exp": NOW - 61})));
        invalid(check_claims(json!({"exp": NOW - 3600})));
        // Within the 60 s leeway.
        assert!(check_claims(json!({"exp": NOW - 59})).is_ok());
        invalid(check_claims(json!({"exp": "tomorrow"})));
    }

    #[test]
    fn not_before_and_issued_at() {
        invalid(check_claims(json!({"nbf": NOW + 120})));
        assert!(check_claims(json!({"nbf": NOW + 30})).is_ok());
        assert!(check_claims(json!({"nbf": null})).is_ok());
        invalid(check_claims(json!({"iat": NOW + 120})));
    }

    #[test]
    fn float_dates() {
        let got = check_claims(json!({
            "iat": NOW as f64 + 0.123456, "nbf": (NOW - 300) as f64 + 0.5, "exp": (NOW + 900) as f64 + 0.75
        }))
        .unwrap();
        assert_eq!(got.expires_at, NOW + 900);
        invalid(check_claims(json!({"exp": (NOW - 61) as f64 + 0.5})));
        invalid(check_claims(json!({"nbf": (NOW + 61) as f64 + 0.5})));
    }

    #[test]
    fn subject_must_be_a_uuid() {
        invalid(check_claims(json!({"sub": null})));
        for bad in [
            "",
            "not-a-uuid",
            "0b8c2e5e7c1a4d1e9a531f7a2b3c4d5e",
            "0b8c2e5e-7c1a-4d1e-9a53-1f7a2b3c4d5g",
            "../../etc/passwd",
        ] {
            assert!(
                invalid(check_claims(json!({ "sub": bad }))).contains("sub"),
                "{bad}"
            );
        }
        let upper = check_claims(json!({"sub": UUID.to_uppercase()})).unwrap();
        assert_eq!(upper.server, UUID);
    }

    #[test]
    fn scope_rules() {
        for ok in [
            json!("transfer"),
            json!("read transfer"),
            json!("read,transfer"),
            json!("a, transfer"),
            json!(["x", "transfer"]),
        ] {
            assert!(check_claims(json!({ "scope": ok.clone() })).is_ok(), "{ok}");
        }
        for bad in [
            json!("read"),
            json!("transfers"),
            json!(""),
            json!(["read"]),
            json!([]),
            json!(7),
            json!({"transfer": true}),
        ] {
            assert_eq!(
                check_claims(json!({ "scope": bad.clone() })),
                Err(TokenError::Forbidden),
                "{bad}"
            );
        }
    }

    #[test]
    fn replay_key_fallbacks() {
        let by_jti = check_claims(json!({"unique_id": null})).unwrap();
        assert_eq!(by_jti.replay_key, format!("j1:{NOW}"));
        let token = mint_token_from_claims(
            KEY,
            json!({}),
            claims(json!({"unique_id": null, "jti": null})),
        );
        assert_eq!(
            check(&token).unwrap().replay_key,
            token.rsplit('.').next().unwrap()
        );
        invalid(check_claims(json!({"unique_id": 5})));
    }

    #[test]
    fn websocket_token_is_not_a_transfer_token() {
        let ws = mint_websocket_token(
            KEY,
            UUID,
            &["admin.websocket.transfer"],
            Duration::from_secs(600),
        );
        let r = verify_transfer_token(Some(&format!("Bearer {ws}")), KEY);
        assert!(invalid(r).contains("sub"));
    }

    #[test]
    fn framing_and_size_bounds() {
        let good = mint_token_from_claims(KEY, json!({}), claims(json!({})));
        let parts: Vec<&str> = good.split('.').collect();
        invalid(check(&format!("{}.{}", parts[0], parts[1])));
        invalid(check(&format!("{good}.{}", parts[2])));
        invalid(check(parts[0]));
        invalid(check(&format!("{}*.{}.{}", parts[0], parts[1], parts[2])));
        invalid(check(&format!("{}.{}=.{}", parts[0], parts[1], parts[2])));
        invalid(check("..."));
        let huge = mint_token_from_claims(
            KEY,
            json!({}),
            claims(json!({"pad": "x".repeat(MAX_TOKEN_LEN)})),
        );
        assert!(invalid(check(&huge)).contains("longer"));
        // A token under the bound with everything else right still passes.
        assert!(check(&mint_token_from_claims(
            KEY,
            json!({}),
            claims(json!({"pad": "x".repeat(4000)}))
        ))
        .is_ok());
    }

    #[test]
    fn short_keys_are_refused_with_a_reason() {
        let token = mint_token_from_claims(b"short", json!({}), claims(json!({})));
        let r = verify_transfer_token_at(Some(&format!("Bearer {token}")), b"short", Some(NOW));
        assert!(invalid(r).contains("shorter"));
    }

    #[test]
    fn minted_transfer_token_is_panel_shaped() {
        let token = mint_transfer_token(KEY, UUID, Duration::from_secs(900));
        let got = verify_transfer_token(Some(&format!("Bearer {token}")), KEY).unwrap();
        assert_eq!(got.server, UUID);
        assert_eq!(got.replay_key.len(), 16);
        assert!(got.replay_key.bytes().all(|b| b.is_ascii_alphanumeric()));
        let decode = |i: usize| -> Value {
            use jwt_simple::reexports::ct_codecs::Decoder;
            let raw = Base64UrlSafeNoPadding::decode_to_vec(token.split('.').nth(i).unwrap(), None)
                .unwrap();
            serde_json::from_slice(&raw).unwrap()
        };
        let (header, body) = (decode(0), decode(1));
        let jti = hex::encode(Sha256::digest(UUID.as_bytes()));
        assert_eq!(header["alg"], "HS256");
        assert_eq!(header["jti"], jti.as_str());
        assert_eq!(header["sub"], UUID);
        assert_eq!(body["jti"], jti.as_str());
        assert!(body["aud"].is_array());
        assert_eq!(
            body["scope"], "transfer",
            "newer Wings refuse a token without it"
        );
        let iat = body["iat"].as_u64().unwrap();
        assert_eq!(body["nbf"].as_u64().unwrap(), iat - 300);
        assert_eq!(body["exp"].as_u64().unwrap(), iat + 900);
        assert_eq!(got.expires_at, iat + 900);
        // Two tokens for the same server differ in their replay key.
        let again = mint_transfer_token(KEY, UUID, Duration::from_secs(900));
        assert_ne!(
            verify_transfer_token(Some(&format!("Bearer {again}")), KEY)
                .unwrap()
                .replay_key,
            got.replay_key
        );
    }

    #[test]
    fn websocket_tokens() {
        let token = mint_websocket_token(
            KEY,
            UUID,
            &["control.console", "admin.websocket.transfer"],
            Duration::from_secs(600),
        );
        let got = verify_websocket_token(&token, KEY, UUID).unwrap();
        assert_eq!(got.server_uuid, UUID);
        assert_eq!(
            got.permissions,
            ["control.console", "admin.websocket.transfer"]
        );
        assert!(
            verify_websocket_token(&token, KEY, "11111111-2222-3333-4444-555555555555").is_err()
        );
        assert!(verify_websocket_token(&token, b"another-node-token-xyz", UUID).is_err());

        let ws = |extra: Value| {
            let mut c =
                json!({"server_uuid": UUID, "permissions": ["a"], "exp": NOW + 60, "iat": NOW});
            for (k, v) in extra.as_object().unwrap() {
                if v.is_null() {
                    c.as_object_mut().unwrap().remove(k);
                } else {
                    c[k] = v.clone();
                }
            }
            verify_websocket_token_at(
                &mint_token_from_claims(KEY, json!({}), c),
                KEY,
                UUID,
                Some(NOW),
            )
        };
        assert!(ws(json!({})).is_ok());
        assert!(ws(json!({"exp": null})).unwrap_err().contains("exp"));
        assert!(ws(json!({"exp": NOW - 120})).is_err());
        assert!(ws(json!({"server_uuid": null}))
            .unwrap_err()
            .contains("server_uuid"));
        assert!(ws(json!({"permissions": "a"})).is_err());
        assert_eq!(
            ws(json!({"permissions": null})).unwrap().permissions,
            Vec::<String>::new()
        );
        // A transfer token has no server_uuid.
        let transfer = mint_transfer_token(KEY, UUID, Duration::from_secs(60));
        assert!(verify_websocket_token(&transfer, KEY, UUID).is_err());
    }
}
