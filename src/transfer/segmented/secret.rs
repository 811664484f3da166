//! A session's identity and its secret (docs/transport.md, "Why the
//! panel's JWT only opens the session"): the destination draws a session
//! id and a secret from the OS, gives the secret to the source once, and
//! keeps only its SHA-256, so a leaked session record authorizes nothing.
//! Later requests present `Authorization: Ferry-Session <secret>`.

use sha2::{Digest, Sha256};

use crate::http::auth::constant_time_eq;

/// The scheme of the session's `Authorization` header.
pub const SCHEME: &str = "Ferry-Session";

/// A fresh session: its id (32 hex), its secret (64 hex) and the secret's
/// SHA-256 (hex), the only form stored. `None` when the OS has no
/// randomness to give (the open request then fails with 500).
pub fn issue() -> Option<(String, String, String)> {
    let mut id = [0u8; 16];
    let mut secret = [0u8; 32];
    getrandom::fill(&mut id).ok()?;
    getrandom::fill(&mut secret).ok()?;
    let secret = hex::encode(secret);
    let stored = digest(&secret);
    Some((hex::encode(id), secret, stored))
}

/// The stored form of a secret.
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Does the request's `Authorization` header carry the secret whose digest
/// is `stored`? Compared in constant time.
pub fn authorizes(header: Option<&str>, stored: &str) -> bool {
    let Some(presented) = header.and_then(presented) else {
        return false;
    };
    constant_time_eq(digest(presented).as_bytes(), stored.as_bytes())
}

fn presented(header: &str) -> Option<&str> {
    let (scheme, value) = header.trim().split_once(' ')?;
    let value = value.trim();
    (scheme.eq_ignore_ascii_case(SCHEME) && value.len() == 64).then_some(value)
}

/// Is `id` shaped like a session id (32 lowercase hex)? Checked before it
/// becomes part of a path.
pub fn is_session_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_secret_authorizes_only_itself() {
        let (id, secret, stored) = issue().unwrap();
        assert!(is_session_id(&id));
        assert_ne!(secret, stored, "the secret itself is never the stored form");
        assert!(authorizes(
            Some(&format!("Ferry-Session {secret}")),
            &stored
        ));
        assert!(authorizes(
            Some(&format!("ferry-session  {secret} ")),
            &stored
        ));
        let (_, other, _) = issue().unwrap();
        for header in [
            None,
            Some(String::new()),
            Some(secret.clone()),
            Some(format!("Bearer {secret}")),
            Some(format!("Ferry-Session {other}")),
            Some(format!("Ferry-Session {}", &secret[..63])),
            Some(format!("Ferry-Session {stored}")),
        ] {
            assert!(!authorizes(header.as_deref(), &stored), "{header:?}");
        }
    }

    #[test]
    fn session_ids_are_checked_before_they_become_paths() {
        assert!(is_session_id("0123456789abcdef0123456789abcdef"));
        for bad in [
            "",
            "../../etc/passwd",
            "0123456789ABCDEF0123456789abcdef",
            "0123456789abcdef0123456789abcde/",
        ] {
            assert!(!is_session_id(bad), "{bad}");
        }
    }
}
