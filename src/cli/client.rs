//! A small blocking client for a node's API as the CLI uses it: where the
//! node is, its token, and JSON requests whose failures read as advice
//! (start the node, pass `--node`, check `--token-file`) rather than as
//! transport errors.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::args::Args;
use super::Fail;
use crate::config::Config;

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
    /// The option that names the token, for the advice when it is refused.
    token_flag: &'static str,
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
            token_flag: "--token-file",
            agent,
        }
    }

    /// Names the option the advice points at when the token is refused.
    pub fn token_flag(mut self, flag: &'static str) -> NodeClient {
        self.token_flag = flag;
        self
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
                "the node at {} refused the token from {} ({}): pass {} with that node's token",
                self.base,
                self.token_file,
                reply.error(),
                self.token_flag
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

/// Where a client verb sends its requests, and with which token.
#[derive(Debug)]
pub struct Target {
    pub url: String,
    pub token: String,
    /// Where the token came from, for messages: a token file or a config.
    pub token_source: String,
    /// The node's config, when given with `--config` (the CLI then runs
    /// on that node and can look at its data directory).
    pub config: Option<Config>,
}

/// The node a client verb talks to: `--config PATH` (the node's own
/// config.yml: its listen address and token), else `--token-file` (default
/// the development node's); `--node URL` overrides the address either way.
/// A config that does not parse is exit 2, as for `check-config`.
pub fn target(args: &Args) -> Result<Target, Fail> {
    if let Some(path) = args.value("config") {
        if args.has("token-file") {
            return Err(Fail::usage(
                "--config and --token-file exclude each other (the config holds the node token)",
            ));
        }
        let (c, _unknown) = crate::config::load_checked(Path::new(path))
            .map_err(|e| Fail::Config(e.to_string()))?;
        let url = match args.value("node") {
            Some(n) => node_url(n, "node").map_err(Fail::Usage)?,
            None => url_of_config(&c),
        };
        return Ok(Target {
            url,
            token: c.token.clone(),
            token_source: path.to_string(),
            config: Some(c),
        });
    }
    let url = node_url(args.value("node").unwrap_or(DEFAULT_NODE), "node").map_err(Fail::Usage)?;
    let file = args.value("token-file").unwrap_or(DEFAULT_TOKEN_FILE);
    let token = read_token(file, "token-file").map_err(Fail::Runtime)?;
    Ok(Target {
        url,
        token,
        token_source: file.to_string(),
        config: None,
    })
}

/// The URL a node's own config says it answers on, from the same machine:
/// a wildcard listen address becomes loopback. With TLS the certificate
/// must name that host; otherwise pass `--node https://<its name>:<port>`.
pub fn url_of_config(c: &Config) -> String {
    let scheme = if c.api.ssl.is_some() { "https" } else { "http" };
    let host = match c.api.host.trim() {
        "" | "0.0.0.0" => "127.0.0.1".to_string(),
        "::" | "[::]" => "[::1]".to_string(),
        h if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
        h => h.to_string(),
    };
    format!("{scheme}://{host}:{}", c.api.port)
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
    fn a_config_names_its_own_address() {
        let mut c = crate::config::parse("token: abcdefghijklmnop\napi:\n  port: 8443\n").unwrap();
        assert_eq!(url_of_config(&c), "http://127.0.0.1:8443");
        c.api.host = "::".into();
        assert_eq!(url_of_config(&c), "http://[::1]:8443");
        c.api.host = "fd00::2".into();
        assert_eq!(url_of_config(&c), "http://[fd00::2]:8443");
        c.api.host = "10.0.0.2".into();
        c.api.ssl = Some(crate::config::SslConfig {
            cert: "c".into(),
            key: "k".into(),
        });
        assert_eq!(url_of_config(&c), "https://10.0.0.2:8443");
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
