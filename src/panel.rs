//! The panel client (SPEC §8): boot sync, server configuration and
//! transfer reports, with retries on network errors and 5xx.

use std::time::Duration;

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

pub struct PanelClient {
    _private: (),
}

impl PanelClient {
    pub fn new(_remote: &str, _token_id: &str, _token: &str, _options: PanelOptions) -> Self {
        unimplemented!("panel client")
    }

    /// Every server this node holds (all pages, from page 0).
    pub fn list_servers(&self) -> Result<Vec<RemoteServer>, PanelError> {
        unimplemented!("panel client")
    }

    pub fn server(&self, _uuid: &str) -> Result<RemoteServer, PanelError> {
        unimplemented!("panel client")
    }

    /// Reports a transfer outcome. A 409 ("not being transferred") is
    /// logged and returned as Ok: there is nothing to retry.
    pub fn report_transfer(&self, _uuid: &str, _success: bool) -> Result<(), PanelError> {
        unimplemented!("panel client")
    }
}
