//! An inspect answer → the server's power state, for current engines
//! (`State.Status`) and older ones (the `Running`/`Restarting` flags).

use serde_json::Value;

use crate::environment::PowerState;

/// Power state from an inspect body's `State`.
pub fn power_state(inspect: &Value) -> PowerState {
    let state = inspect.get("State");
    let status = state
        .and_then(|s| s.get("Status"))
        .and_then(Value::as_str)
        .unwrap_or("");
    match status {
        "running" | "paused" => PowerState::Running,
        "restarting" => PowerState::Starting,
        "removing" => PowerState::Stopping,
        "created" | "exited" | "dead" => PowerState::Offline,
        // Older engines without Status: fall back to the booleans.
        _ => {
            let flag = |k: &str| state.and_then(|s| s.get(k)).and_then(Value::as_bool);
            if flag("Restarting") == Some(true) {
                PowerState::Starting
            } else if flag("Running") == Some(true) {
                PowerState::Running
            } else {
                PowerState::Offline
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn power_states() {
        let st = |s: &str| power_state(&json!({"State": {"Status": s}}));
        assert_eq!(st("running"), PowerState::Running);
        assert_eq!(st("paused"), PowerState::Running);
        assert_eq!(st("restarting"), PowerState::Starting);
        assert_eq!(st("removing"), PowerState::Stopping);
        assert_eq!(st("exited"), PowerState::Offline);
        assert_eq!(st("created"), PowerState::Offline);
        assert_eq!(
            power_state(&json!({"State": {"Running": true}})),
            PowerState::Running
        );
        assert_eq!(power_state(&json!({})), PowerState::Offline);
    }
}
