//! Addressing the Engine: an image reference → the pull's `fromImage`
//! and `tag`, query values escaped for request paths, and API versions
//! compared as numbers.

/// `fromImage` and `tag` for a pull. The tag must be explicit: an empty tag
/// makes the Engine pull every tag of the repository.
pub fn pull_reference(image: &str) -> (String, String) {
    if let Some((name, digest)) = image.split_once('@') {
        return (name.to_string(), digest.to_string());
    }
    // A ':' after the last '/' is a tag; one before it is a registry port.
    let last_slash = image.rfind('/').map(|i| i + 1).unwrap_or(0);
    match image[last_slash..].rfind(':') {
        Some(i) => (
            image[..last_slash + i].to_string(),
            image[last_slash + i + 1..].to_string(),
        ),
        None => (image.to_string(), "latest".to_string()),
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters kept).
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Compares Engine API versions like `1.41` numerically.
pub fn parse_api_version(v: &str) -> Option<(u32, u32)> {
    let (major, minor) = v.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_references() {
        let p = |s: &str| pull_reference(s);
        assert_eq!(p("alpine"), ("alpine".into(), "latest".into()));
        assert_eq!(
            p("ghcr.io/pterodactyl/yolks:java_17"),
            ("ghcr.io/pterodactyl/yolks".into(), "java_17".into())
        );
        assert_eq!(
            p("registry:5000/team/img"),
            ("registry:5000/team/img".into(), "latest".into())
        );
        assert_eq!(p("img@sha256:abc"), ("img".into(), "sha256:abc".into()));
        assert_eq!(query_escape("a/b:c d"), "a%2Fb%3Ac%20d");
    }

    #[test]
    fn api_versions() {
        assert_eq!(parse_api_version("1.41"), Some((1, 41)));
        assert_eq!(parse_api_version("1.9"), Some((1, 9)));
        assert!(parse_api_version("1.9") < parse_api_version("1.41"));
        assert_eq!(parse_api_version("x"), None);
    }
}
