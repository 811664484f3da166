//! The panel client (SPEC §8): boot sync, server configuration and
//! transfer reports, with retries on network errors and 5xx.
//!
//! Requests go to `{remote}/api/remote` with Wings' headers. Network errors
//! and 5xx answers are retried with exponential backoff (250 ms doubling,
//! capped at 5 s) until `retry_for` has elapsed; 4xx answers are final.
//! The node token is only ever put in the Authorization header: it is never
//! logged and never part of an error.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

/// One server as the panel describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteServer {
    pub uuid: String,
    pub settings: serde_json::Value,
    pub process_configuration: serde_json::Value,
}

#[derive(Debug)]
pub enum PanelError {
    /// The panel answered a 4xx (final); status and body excerpt.
    Refused(u16, String),
    /// Network errors or 5xx until the retry budget ran out.
    Unreachable(String),
    /// The answer was not the JSON expected.
    BadResponse(String),
}

/// The panel's answer to a transfer report, and whether it answered a
/// re-sent attempt (an earlier one timed out or got a 5xx, so the panel may
/// have processed it).
#[derive(Debug)]
pub struct ReportAnswer {
    pub result: Result<(), PanelError>,
    pub resent: bool,
}

impl std::fmt::Display for PanelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PanelError::Refused(status, body) => {
                write!(f, "the panel refused the request (HTTP {status}): {body}")
            }
            PanelError::Unreachable(why) => write!(f, "the panel could not be reached: {why}"),
            PanelError::BadResponse(why) => write!(f, "unexpected answer from the panel: {why}"),
        }
    }
}

impl std::error::Error for PanelError {}

#[derive(Debug, Clone)]
pub struct PanelOptions {
    pub timeout: Duration,
    /// Total time to keep retrying network errors and 5xx.
    pub retry_for: Duration,
}

impl Default for PanelOptions {
    fn default() -> Self {
        PanelOptions {
            timeout: Duration::from_secs(15),
            retry_for: Duration::from_secs(30),
        }
    }
}

/// Servers asked for per page, as Wings does.
pub const PER_PAGE: u32 = 50;
/// Upper bound on pages followed, so a broken `meta` cannot loop forever.
pub const MAX_PAGES: u64 = 10_000;
/// Bound on an answer body (a page of 50 servers' settings is far less).
const MAX_BODY: u64 = 32 * 1024 * 1024;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub struct PanelClient {
    agent: ureq::Agent,
    base: String,
    authorization: String,
    options: PanelOptions,
}

impl std::fmt::Debug for PanelClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PanelClient")
            .field("base", &self.base)
            .field("authorization", &"(redacted)")
            .field("options", &self.options)
            .finish()
    }
}

#[derive(Deserialize)]
struct RawServer {
    uuid: String,
    #[serde(default)]
    settings: Value,
    #[serde(default)]
    process_configuration: Value,
}

#[derive(Deserialize)]
struct Meta {
    current_page: u64,
    last_page: u64,
}

#[derive(Deserialize)]
struct Page {
    data: Vec<RawServer>,
    #[serde(default)]
    meta: Option<Meta>,
}

#[derive(Deserialize)]
struct ServerConfiguration {
    #[serde(default)]
    settings: Value,
    #[serde(default)]
    process_configuration: Value,
}

/// A short, printable excerpt of an answer body for errors and logs.
fn excerpt(body: &str) -> String {
    let mut s: String = body.chars().take(300).collect();
    if s.len() < body.len() {
        s.push('…');
    }
    s
}

#[derive(Clone, Copy)]
enum Method {
    Get,
    Post,
}

impl PanelClient {
    /// `remote` is the panel base URL (`https://panel.example.com`).
    pub fn new(remote: &str, token_id: &str, token: &str, options: PanelOptions) -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(options.timeout))
            // Read 4xx/5xx bodies instead of getting them as errors.
            .http_status_as_error(false)
            .user_agent(format!("ferry/{}", crate::VERSION))
            .tls_config(crate::trust::tls_config())
            .build();
        PanelClient {
            agent: ureq::Agent::new_with_config(config),
            base: format!("{}/api/remote", remote.trim_end_matches('/')),
            authorization: format!("Bearer {token_id}.{token}"),
            options,
        }
    }

    /// One request, no retry: the status and body, or a network error.
    fn once(&self, method: Method, path: &str) -> Result<(u16, String), Failure> {
        let url = format!("{}{}", self.base, path);
        let mut response = match method {
            Method::Get => self
                .agent
                .get(&url)
                .header("Authorization", &self.authorization)
                .header("Accept", "application/vnd.pterodactyl.v1+json")
                .header("Content-Type", "application/json")
                .call()?,
            Method::Post => self
                .agent
                .post(&url)
                .header("Authorization", &self.authorization)
                .header("Accept", "application/vnd.pterodactyl.v1+json")
                .header("Content-Type", "application/json")
                .send("null")?,
        };
        let status = response.status().as_u16();
        let body = match response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
        {
            Ok(body) => body,
            Err(ureq::Error::BodyExceedsLimit(_)) => {
                return Err(Failure::Final(format!(
                    "{path}: the answer is larger than {MAX_BODY} bytes"
                )))
            }
            Err(e) => return Err(Failure::Retry(e)),
        };
        let body = String::from_utf8(body)
            .map_err(|_| Failure::Final(format!("{path}: the answer is not UTF-8")))?;
        Ok((status, body))
    }

    /// A request retried on network errors and 5xx until `retry_for`;
    /// returns the first answer below 500.
    fn request(&self, method: Method, path: &str) -> Result<(u16, String), PanelError> {
        self.request_counted(method, path).0
    }

    /// `request`, with how many attempts it took: an attempt that ended
    /// without an answer (or with a 5xx) may still have been processed.
    fn request_counted(
        &self,
        method: Method,
        path: &str,
    ) -> (Result<(u16, String), PanelError>, u32) {
        let deadline = Instant::now() + self.options.retry_for;
        let mut delay = FIRST_BACKOFF;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let failure = match self.once(method, path) {
                Ok((status, body)) if status < 500 => return (Ok((status, body)), attempts),
                Ok((status, body)) => format!("HTTP {status}: {}", excerpt(&body)),
                // Configuration errors and broken answers do not heal by
                // waiting.
                Err(Failure::Retry(
                    e @ (ureq::Error::BadUri(_) | ureq::Error::RequireHttpsOnly(_)),
                )) => return (Err(PanelError::Unreachable(e.to_string())), attempts),
                Err(Failure::Final(why)) => return (Err(PanelError::BadResponse(why)), attempts),
                Err(Failure::Retry(e)) => e.to_string(),
            };
            let now = Instant::now();
            if now >= deadline {
                log::warn!("panel request {path} failed {attempts} times, giving up: {failure}");
                let error =
                    PanelError::Unreachable(format!("{failure} (after {attempts} attempts)"));
                return (Err(error), attempts);
            }
            log::debug!("panel request {path} failed, retrying in {delay:?}: {failure}");
            std::thread::sleep(delay.min(deadline - now));
            delay = (delay * 2).min(MAX_BACKOFF);
        }
    }

    /// A GET whose 2xx answer is JSON of type `T`.
    fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, PanelError> {
        let (status, body) = self.request(Method::Get, path)?;
        match status {
            200..=299 => serde_json::from_str(&body)
                .map_err(|e| PanelError::BadResponse(format!("GET {path}: {e}"))),
            400..=499 => Err(PanelError::Refused(status, excerpt(&body))),
            _ => Err(PanelError::BadResponse(format!(
                "GET {path}: HTTP {status}"
            ))),
        }
    }

    fn page(&self, page: u64) -> Result<Page, PanelError> {
        self.get_json(&format!("/servers?page={page}&per_page={PER_PAGE}"))
    }

    /// Every server this node holds (all pages, from page 0).
    pub fn list_servers(&self) -> Result<Vec<RemoteServer>, PanelError> {
        // Like Wings: ask for page 0, which Laravel answers as page 1, then
        // for the pages after `meta.current_page` up to `meta.last_page`.
        let first = self.page(0)?;
        let mut raw = first.data;
        if let Some(meta) = first.meta {
            if meta.last_page > MAX_PAGES {
                return Err(PanelError::BadResponse(format!(
                    "the panel announces {} pages of servers (limit {MAX_PAGES})",
                    meta.last_page
                )));
            }
            // Saturating: `current_page` is the panel's word, up to u64::MAX.
            for page in meta.current_page.max(1).saturating_add(1)..=meta.last_page {
                let next = self.page(page)?;
                if next.data.is_empty() {
                    // The list shrank while we read it.
                    break;
                }
                raw.extend(next.data);
            }
        }
        let (servers, skipped) = keep_uuids(raw);
        for id in skipped {
            log::warn!("panel: skipping server {id:?} from the boot list: not a server uuid");
        }
        Ok(servers)
    }

    /// One server's configuration.
    pub fn server(&self, uuid: &str) -> Result<RemoteServer, PanelError> {
        check_uuid(uuid)?;
        let config: ServerConfiguration = self.get_json(&format!("/servers/{uuid}"))?;
        Ok(RemoteServer {
            uuid: uuid.to_string(),
            settings: config.settings,
            process_configuration: config.process_configuration,
        })
    }

    /// Reports a transfer outcome. A 409 ("not being transferred") is
    /// logged and returned as Ok: there is nothing to retry.
    pub fn report_transfer(&self, uuid: &str, success: bool) -> Result<(), PanelError> {
        match self.send_transfer_report(uuid, success) {
            Err(PanelError::Refused(409, body)) => {
                let outcome = if success { "success" } else { "failure" };
                log::warn!(
                    "panel answered 409 to the transfer {outcome} report for {uuid} (not being transferred): {body}"
                );
                Ok(())
            }
            other => other,
        }
    }

    /// Reports a transfer outcome and gives the panel's answer as it is:
    /// Ok for a 2xx, `Refused` with the status and the panel's message
    /// for every 4xx including 409 (the finish machine decides what each
    /// means), `Unreachable` after the retries.
    pub fn send_transfer_report(&self, uuid: &str, success: bool) -> Result<(), PanelError> {
        self.send_transfer_report_counted(uuid, success).result
    }

    /// `send_transfer_report`, saying whether an attempt before the answer
    /// went unanswered: a 409 to a re-sent success may mean the first one
    /// was accepted, so the finish machine reads it differently.
    pub fn send_transfer_report_counted(&self, uuid: &str, success: bool) -> ReportAnswer {
        if let Err(e) = check_uuid(uuid) {
            return ReportAnswer {
                result: Err(e),
                resent: false,
            };
        }
        let outcome = if success { "success" } else { "failure" };
        let path = format!("/servers/{uuid}/transfer/{outcome}");
        let (answer, attempts) = self.request_counted(Method::Post, &path);
        let result = answer.and_then(|(status, body)| match status {
            200..=299 => Ok(()),
            400..=499 => Err(PanelError::Refused(status, panel_message(&body))),
            _ => Err(PanelError::BadResponse(format!(
                "POST {path}: HTTP {status}"
            ))),
        });
        ReportAnswer {
            result,
            resent: attempts > 1,
        }
    }
}

/// The message of a panel error answer (`{"errors":[{"detail":…}]}`), or
/// an excerpt of the body.
fn panel_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/errors/0/detail")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| excerpt(body))
}

/// Why one request failed: worth retrying (network) or not (the answer
/// itself is unusable).
enum Failure {
    Retry(ureq::Error),
    Final(String),
}

impl From<ureq::Error> for Failure {
    fn from(e: ureq::Error) -> Failure {
        match e {
            ureq::Error::BodyExceedsLimit(_) => Failure::Final(e.to_string()),
            e => Failure::Retry(e),
        }
    }
}

/// The boot list's servers whose id is a server uuid (SPEC §2: an id
/// becomes a directory and file name, so `..` or `a/b` must never get
/// through), and the ids skipped, for the log.
fn keep_uuids(raw: Vec<RawServer>) -> (Vec<RemoteServer>, Vec<String>) {
    let mut kept = Vec::with_capacity(raw.len());
    let mut skipped = Vec::new();
    for s in raw {
        // The registry's own test (lowercase, as the panel makes them), so
        // nothing passes here that the registry would refuse at start.
        if crate::server::is_uuid(&s.uuid) {
            kept.push(RemoteServer {
                uuid: s.uuid,
                settings: s.settings,
                process_configuration: s.process_configuration,
            });
        } else {
            skipped.push(s.uuid);
        }
    }
    (kept, skipped)
}

/// Server uuids go into URL paths; refuse anything else.
fn check_uuid(uuid: &str) -> Result<(), PanelError> {
    if crate::server::is_uuid(uuid) {
        Ok(())
    } else {
        Err(PanelError::BadResponse(format!(
            "{uuid:?} is not a server uuid"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let c = PanelClient::new(
            "http://panel/",
            "id",
            "s3cret-token",
            PanelOptions::default(),
        );
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret-token"), "{shown}");
        assert!(shown.contains("http://panel/api/remote"));
    }

    #[test]
    fn non_uuid_paths_are_refused_without_a_request() {
        // Port 9 on loopback: nothing listens; a request would be retried.
        let opts = PanelOptions {
            timeout: Duration::from_secs(1),
            retry_for: Duration::from_secs(5),
        };
        let c = PanelClient::new("http://127.0.0.1:9", "id", "t", opts);
        let started = Instant::now();
        assert!(matches!(
            c.server("../../x"),
            Err(PanelError::BadResponse(_))
        ));
        assert!(matches!(
            c.report_transfer("a/b", true),
            Err(PanelError::BadResponse(_))
        ));
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn the_boot_list_keeps_server_uuids_and_names_the_rest() {
        let raw = |uuid: &str| RawServer {
            uuid: uuid.to_string(),
            settings: serde_json::json!({"uuid": uuid}),
            process_configuration: Value::Null,
        };
        let good = "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
        let bad = [
            "..",
            "../../etc",
            "/../../tmp/x",
            "",
            "7A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D",
            "7a1b2c3d4e5f4a6b8c7d9e0f1a2b3c4d",
            "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d/..",
            "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4\u{0}",
        ];
        let mut list = vec![raw(bad[0]), raw(good)];
        list.extend(bad[1..].iter().map(|b| raw(b)));
        let (kept, skipped) = keep_uuids(list);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].uuid, good);
        assert_eq!(kept[0].settings["uuid"], good);
        assert_eq!(skipped, bad);
        assert_eq!(keep_uuids(Vec::new()), (Vec::new(), Vec::new()));
    }

    #[test]
    fn excerpts_are_bounded() {
        assert_eq!(excerpt("short"), "short");
        let long = "é".repeat(1000);
        let e = excerpt(&long);
        assert_eq!(e.chars().count(), 301);
    }
}
