//! The `none` environment: servers without a runtime. Every server is always
//! offline and every power call is a no-op that says so in the log, so a node
//! can hold and transfer server data on a machine with no container runtime.

use std::time::Duration;

use super::{EnvError, Environment, PowerState, ServerSpec};

#[derive(Debug, Default, Clone, Copy)]
pub struct NoneEnvironment;

impl NoneEnvironment {
    pub fn new() -> Self {
        NoneEnvironment
    }
}

impl Environment for NoneEnvironment {
    fn name(&self) -> &'static str {
        "none"
    }

    fn state(&self, _server: &ServerSpec) -> Result<PowerState, EnvError> {
        Ok(PowerState::Offline)
    }

    fn create(&self, server: &ServerSpec) -> Result<(), EnvError> {
        log::info!(
            "environment none: no runtime; no container created for {}",
            server.uuid
        );
        Ok(())
    }

    fn start(&self, server: &ServerSpec) -> Result<(), EnvError> {
        log::info!(
            "environment none: no runtime; {} stays offline (start ignored)",
            server.uuid
        );
        Ok(())
    }

    fn stop(&self, server: &ServerSpec) -> Result<(), EnvError> {
        log::info!(
            "environment none: no runtime; {} is already offline (stop ignored)",
            server.uuid
        );
        Ok(())
    }

    fn wait_for_stop(&self, _server: &ServerSpec, _timeout: Duration) -> Result<bool, EnvError> {
        // Nothing runs, so it has already stopped.
        Ok(true)
    }

    fn kill(&self, server: &ServerSpec) -> Result<(), EnvError> {
        log::info!(
            "environment none: no runtime; nothing to kill for {}",
            server.uuid
        );
        Ok(())
    }

    fn destroy(&self, server: &ServerSpec) -> Result<(), EnvError> {
        log::info!(
            "environment none: no runtime; no container to remove for {}",
            server.uuid
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn always_offline_and_every_call_succeeds() {
        let env = NoneEnvironment::new();
        let s = ServerSpec {
            uuid: "0b5d4c5e-6c1f-4a8e-9e52-3f7f1c2a9d10".into(),
            settings: serde_json::json!({}),
            process_configuration: serde_json::json!({}),
            data_dir: PathBuf::from("/nonexistent"),
        };
        assert_eq!(env.name(), "none");
        env.create(&s).unwrap();
        env.start(&s).unwrap();
        assert_eq!(env.state(&s).unwrap(), PowerState::Offline);
        env.stop(&s).unwrap();
        assert!(env.wait_for_stop(&s, Duration::ZERO).unwrap());
        env.kill(&s).unwrap();
        env.destroy(&s).unwrap();
        assert_eq!(env.state(&s).unwrap(), PowerState::Offline);
    }
}
