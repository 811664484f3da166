//! Node-token authentication (SPEC §2.1): `Authorization: Bearer <token>`
//! compared in constant time, with Wings' 401/403 messages.

use super::reply::ApiError;

pub const MISSING: &str = "The required authorization heads were not present in the request.";
pub const FORBIDDEN: &str = "You are not authorized to access this endpoint.";

/// The bearer credential of an Authorization header, if it has one.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let header = header?.trim();
    let (scheme, rest) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let credential = rest.trim();
    (!credential.is_empty()).then_some(credential)
}

/// Checks the node token: 401 when absent or not Bearer, 403 when wrong.
pub fn check_node_token(header: Option<&str>, token: &str) -> Result<(), ApiError> {
    let Some(given) = bearer(header) else {
        return Err(ApiError::new(401, MISSING).with_header("WWW-Authenticate", "Bearer"));
    };
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::new(403, FORBIDDEN))
    }
}

/// Compares without an early exit so timing does not reveal a prefix.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes() {
        assert_eq!(check_node_token(None, "t").unwrap_err().status, 401);
        assert_eq!(check_node_token(Some(""), "t").unwrap_err().status, 401);
        assert_eq!(
            check_node_token(Some("Basic dDp0"), "t")
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(
            check_node_token(Some("Bearer "), "t").unwrap_err().status,
            401
        );
        assert_eq!(
            check_node_token(Some("Bearer"), "t").unwrap_err().status,
            401
        );
        let e = check_node_token(Some("Bearer x"), "t").unwrap_err();
        assert_eq!((e.status, e.message.as_str()), (403, FORBIDDEN));
        assert!(check_node_token(Some("Bearer t"), "t").is_ok());
        assert!(check_node_token(Some("bearer  t "), "t").is_ok());
        let e = check_node_token(None, "t").unwrap_err();
        assert_eq!(e.message, MISSING);
        assert!(e
            .headers
            .iter()
            .any(|(k, v)| k == "WWW-Authenticate" && v == "Bearer"));
    }

    #[test]
    fn constant_time_eq_cases() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        // Lengths differing by a multiple of 256 must still differ.
        assert!(!constant_time_eq(&[0u8; 256], b""));
    }
}
