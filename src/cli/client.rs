//! A small blocking client for a node's API as the CLI uses it: where the
//! node is, its token, and JSON requests whose failures read as advice
//! (start the node, pass `--node`, check `--token-file`) rather than as
//! transport errors.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// Where the development node listens by default (`ferry serve --dev`).
pub const DEFAULT_NODE: &str = "http://127.0.0.1:8080";
/// The development node's token file (`ferry serve --dev --dir .ferry`).
pub const DEFAULT_TOKEN_FILE: &str = ".ferry/token";

/// A node's answer: status and JSON body (`Null` when empty).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    /// The node's `error` message, or a generic one with the status.
    pub fn error(&self) -> String {
        match self.body.get("error").and_then(Value::as_str) {
            Some(message) => message.to_string(),
            None => format!("HTTP {}", self.status),
        }
    }
}

pub struct NodeClient {
    pub base: String,
    token: String,
    token_file: String,
    agent: ureq::Agent,
}

impl NodeClient {
    /// `base` must already be normalised by [`node_url`].
    pub fn new(base: &str, token: &str, token_file: &str) -> NodeClient {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_global(Some(Duration::from_secs(30)))
            .user_agent(format!("ferry-cli/{}", crate::VERSION))
            .tls_config(crate::trust::tls_config())
            .build()
            .into();
        NodeClient {
            base: base.to_string(),
            token: token.to_string(),
            token_file: token_file.to_string(),
            agent,
        }
    }

    /// One JSON request. Network failures and refused tokens come back as
    /// a message saying what to check; other statuses are the caller's.
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Reply, String> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token);
        let result = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            ("POST", body) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .content_type("application/json")
                .send(body.unwrap_or(&Value::Null).to_string()),
            ("DELETE", Some(body)) => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .force_send_body()
                .content_type("application/json")
                .send(body.to_string()),
            ("DELETE", None) => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .call(),
            _ => return Err(format!("internal: unsupported method {method}")),
        };
        let mut response = result.map_err(|e| self.unreachable(&e))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(16 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| format!("the node at {} sent an unreadable answer: {e}", self.base))?;
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        let reply = Reply { status, body };
        match status {
            401 | 403 => Err(format!(
                "the node at {} refused the token from {} ({}): pass --token-file with that node's token",
                self.base,
                self.token_file,
                reply.error()
            )),
            _ => Ok(reply),
        }
    }

    fn unreachable(&self, e: &ureq::Error) -> String {
        format!(
            "cannot reach the node at {} ({e}): is it running? Pass --node URL to use another one",
            self.base
        )
    }
}

/// Checks and normalises a node base URL: http(s), no trailing slash.
pub fn node_url(raw: &str, flag: &str) -> Result<String, String> {
    let url = raw.trim();
    let (scheme, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => ("http://", rest),
        (_, Some(rest)) => ("https://", rest),
        _ => {
            return Err(format!(
                "--{flag}: `{raw}` is not an http:// or https:// URL"
            ))
        }
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("--{flag}: `{raw}` has no host"));
    }
    let url = format!("{scheme}{rest}");
    if url.parse::<ureq::http::Uri>().is_err() {
        return Err(format!("--{flag}: `{raw}` is not a valid URL"));
    }
    Ok(url)
}

/// Reads a node token file (trimmed, never empty).
pub fn read_token(path: &str, flag: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(Path::new(path)).map_err(|e| {
        let hint = if path == DEFAULT_TOKEN_FILE {
            " (start a development node with `ferry serve --dev`, or pass"
        } else {
            " (pass"
        };
        format!("cannot read the token file {path}: {e}{hint} --{flag} F with the node's token)")
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("the token file {path} is empty"));
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_urls() {
        assert_eq!(
            node_url("http://127.0.0.1:8080/", "node").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            node_url(" https://n.example ", "node").unwrap(),
            "https://n.example"
        );
        assert!(node_url("127.0.0.1:8080", "node")
            .unwrap_err()
            .contains("not an http"));
        assert!(node_url("http://", "to").unwrap_err().contains("no host"));
        assert!(node_url("http:///x", "to").unwrap_err().contains("no host"));
    }

    #[test]
    fn token_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "  secret-token\n").unwrap();
        assert_eq!(
            read_token(path.to_str().unwrap(), "token-file").unwrap(),
            "secret-token"
        );
        std::fs::write(&path, "\n").unwrap();
        assert!(read_token(path.to_str().unwrap(), "token-file")
            .unwrap_err()
            .contains("empty"));
        let missing = read_token("/no/such/token", "dest-token-file").unwrap_err();
        assert!(missing.contains("--dest-token-file"), "{missing}");
    }

    #[test]
    fn reply_errors() {
        let r = Reply {
            status: 409,
            body: serde_json::json!({"error": "Server is not currently being transferred."}),
        };
        assert_eq!(r.error(), "Server is not currently being transferred.");
        assert_eq!(
            Reply {
                status: 502,
                body: Value::Null
            }
            .error(),
            "HTTP 502"
        );
    }
}
