//! A server's container through its life, as the `Environment` trait asks:
//! state, create (network and image first), start, the graceful stop that
//! never force-kills, the wait for it, kill and destroy. The Engine calls
//! are `client`'s; the bodies and the stop action are `spec`'s.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::spec::{self, StopAction};
use super::{runtime, DockerEnvironment, POLL_INTERVAL};
use crate::environment::{EnvError, Environment, PowerState, ServerSpec};

impl Environment for DockerEnvironment {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn check_settings(&self, server: &ServerSpec) -> Result<(), EnvError> {
        spec::parse_settings(&server.settings).map(drop)
    }

    fn state(&self, server: &ServerSpec) -> Result<PowerState, EnvError> {
        let state = match self.inspect(&server.uuid)? {
            None => PowerState::Offline,
            Some(doc) => spec::power_state(&doc),
        };
        match state {
            PowerState::Running if self.is_stopping(&server.uuid) => Ok(PowerState::Stopping),
            PowerState::Offline => {
                self.set_stopping(&server.uuid, false);
                Ok(state)
            }
            _ => Ok(state),
        }
    }

    /// Creates the container unless one with the server's name exists already
    /// (then it is kept, as Wings does). Bad settings fail before any Engine
    /// call; a missing image is pulled.
    fn create(&self, server: &ServerSpec) -> Result<(), EnvError> {
        let body = spec::create_body(server, &self.options)?;
        let settings = spec::parse_settings(&server.settings)?;
        if self.inspect(&server.uuid)?.is_some() {
            log::info!("docker: container {} exists; keeping it", server.uuid);
            return Ok(());
        }
        self.ensure_network()?;
        self.ensure_image(&settings.image, settings.local_only)?;
        let path = format!("/containers/create?name={}", server.uuid);
        let r = self.client.request("POST", &path, Some(&body))?;
        if !r.ok() {
            return Err(runtime("create container", &server.uuid, &r));
        }
        if let Ok(v) = r.json() {
            for w in v
                .get("Warnings")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                log::warn!("docker: {}: {}", server.uuid, w.as_str().unwrap_or(""));
            }
        }
        log::info!("docker: created container {}", server.uuid);
        Ok(())
    }

    /// Starts the container, creating it first if it does not exist.
    fn start(&self, server: &ServerSpec) -> Result<(), EnvError> {
        spec::check_container_name(&server.uuid)?;
        self.set_stopping(&server.uuid, false);
        let path = format!("/containers/{}/start", server.uuid);
        let mut r = self.client.request("POST", &path, None)?;
        if r.status == 404 {
            self.create(server)?;
            r = self.client.request("POST", &path, None)?;
        }
        match r.status {
            304 => Ok(()), // already running
            _ if r.ok() => {
                log::info!("docker: started {}", server.uuid);
                Ok(())
            }
            _ => Err(runtime("start", &server.uuid, &r)),
        }
    }

    /// Asks the server to stop, per `process_configuration.stop`:
    /// - `signal`: sends that signal;
    /// - `command`: writes the command to the server's stdin;
    /// - `stop` (or none): sends the container's own stop signal (its
    ///   image's STOPSIGNAL, SIGTERM by default) with `kill`, not the Engine's
    ///   `POST /stop`, because that one SIGKILLs after its timeout and a
    ///   stop here (a transfer's, above all) must never force-kill.
    ///
    /// Returns at once; `wait_for_stop` waits. A container that is absent or
    /// not running is left alone.
    fn stop(&self, server: &ServerSpec) -> Result<(), EnvError> {
        let Some(doc) = self.inspect(&server.uuid)? else {
            log::info!("docker: no container for {}; nothing to stop", server.uuid);
            return Ok(());
        };
        if spec::power_state(&doc) == PowerState::Offline {
            return Ok(());
        }
        self.set_stopping(&server.uuid, true);
        match spec::stop_action(&server.process_configuration) {
            StopAction::Signal(sig) => {
                log::info!("docker: stopping {} with {sig}", server.uuid);
                self.signal(&server.uuid, &sig)
            }
            StopAction::Command(cmd) => {
                log::info!("docker: stopping {} with command {cmd:?}", server.uuid);
                self.send_command(&server.uuid, &cmd)
            }
            StopAction::Native => {
                let sig = doc
                    .pointer("/Config/StopSignal")
                    .and_then(Value::as_str)
                    .and_then(spec::normalize_signal)
                    .unwrap_or_else(|| "SIGTERM".to_string());
                log::info!(
                    "docker: stopping {} with its stop signal {sig}",
                    server.uuid
                );
                self.signal(&server.uuid, &sig)
            }
        }
    }

    /// Polls until the container is not running (or gone): Ok(true); after
    /// `timeout`, Ok(false) with the server left as it is.
    fn wait_for_stop(&self, server: &ServerSpec, timeout: Duration) -> Result<bool, EnvError> {
        let deadline = Instant::now() + timeout;
        loop {
            let running = match self.inspect(&server.uuid)? {
                None => false,
                Some(doc) => spec::power_state(&doc) != PowerState::Offline,
            };
            if !running {
                self.set_stopping(&server.uuid, false);
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                log::info!(
                    "docker: {} still running after {:?}; not killing it",
                    server.uuid,
                    timeout
                );
                return Ok(false);
            }
            std::thread::sleep(POLL_INTERVAL.min(deadline - now));
        }
    }

    fn kill(&self, server: &ServerSpec) -> Result<(), EnvError> {
        log::info!("docker: killing {}", server.uuid);
        self.signal(&server.uuid, "SIGKILL")?;
        self.set_stopping(&server.uuid, false);
        Ok(())
    }

    /// Removes the container (killing it if running) and its anonymous
    /// volumes; absent is fine.
    fn destroy(&self, server: &ServerSpec) -> Result<(), EnvError> {
        spec::check_container_name(&server.uuid)?;
        self.set_stopping(&server.uuid, false);
        let path = format!("/containers/{}?v=1&force=1", server.uuid);
        let r = self.client.request("DELETE", &path, None)?;
        match r.status {
            404 => Ok(()),
            _ if r.ok() => {
                log::info!("docker: removed container {}", server.uuid);
                Ok(())
            }
            _ => Err(runtime("remove container", &server.uuid, &r)),
        }
    }
}
