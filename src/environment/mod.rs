//! Where servers run: the `Environment` trait and its implementations,
//! `docker` (Engine API over the unix socket) and `none` (no runtime).

pub mod docker;
pub mod none;

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerState {
    Offline,
    Starting,
    Running,
    Stopping,
}

impl PowerState {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerState::Offline => "offline",
            PowerState::Starting => "starting",
            PowerState::Running => "running",
            PowerState::Stopping => "stopping",
        }
    }
}

/// What the environment needs to know of a server.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub uuid: String,
    /// The panel's `settings` object (SPEC §9).
    pub settings: serde_json::Value,
    /// The panel's `process_configuration` object (stop type).
    pub process_configuration: serde_json::Value,
    /// `<system.data>/<uuid>` on the host.
    pub data_dir: PathBuf,
}

#[derive(Debug)]
pub enum EnvError {
    /// The runtime cannot be reached (socket missing, refused).
    Unavailable(String),
    /// The runtime answered with an error; carries its message.
    Runtime(String),
    /// The server's settings cannot make a container.
    BadSettings(String),
}

impl std::fmt::Display for EnvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvError::Unavailable(m) => write!(f, "environment unavailable: {m}"),
            EnvError::Runtime(m) => write!(f, "environment error: {m}"),
            EnvError::BadSettings(m) => write!(f, "invalid server settings: {m}"),
        }
    }
}

pub trait Environment: Send + Sync {
    fn name(&self) -> &'static str;
    fn state(&self, server: &ServerSpec) -> Result<PowerState, EnvError>;
    /// Whether `create` could work with these settings, checked without
    /// touching anything (a destination asks before receiving an archive).
    fn check_settings(&self, _server: &ServerSpec) -> Result<(), EnvError> {
        Ok(())
    }
    /// Creates the container (pulling the image if absent locally).
    fn create(&self, server: &ServerSpec) -> Result<(), EnvError>;
    fn start(&self, server: &ServerSpec) -> Result<(), EnvError>;
    /// Asks the server to stop gracefully per its stop configuration.
    fn stop(&self, server: &ServerSpec) -> Result<(), EnvError>;
    /// Waits until offline; Ok(false) on timeout. Never kills.
    fn wait_for_stop(&self, server: &ServerSpec, timeout: Duration) -> Result<bool, EnvError>;
    fn kill(&self, server: &ServerSpec) -> Result<(), EnvError>;
    /// Removes the container if it exists.
    fn destroy(&self, server: &ServerSpec) -> Result<(), EnvError>;
}
