//! `process_configuration.stop` → what a graceful stop does: a signal
//! (normalised to the names the Engine accepts), a console command, or the
//! Engine's own stop.

use serde_json::Value;

use super::settings::env_value;

/// What a graceful stop does, from `process_configuration.stop`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopAction {
    /// Send this signal (a `SIG…` name).
    Signal(String),
    /// Write this line to the server's stdin.
    Command(String),
    /// The Engine's notion of stop: the container's configured stop signal.
    Native,
}

/// Signal names the Engine accepts, without the `SIG` prefix.
const SIGNALS: [&str; 31] = [
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "IOT", "BUS", "FPE", "KILL", "USR1", "SEGV",
    "USR2", "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU",
    "URG", "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR",
];

/// Normalises a configured signal: `SIGINT`, `sigint`, `INT`, `^C` (the
/// legacy egg spelling of Ctrl-C), `^SIGINT`, or a number 1..=64.
pub fn normalize_signal(value: &str) -> Option<String> {
    let v = value.trim();
    if v == "^C" || v == "^c" {
        return Some("SIGINT".into());
    }
    let v = v.strip_prefix('^').unwrap_or(v).to_ascii_uppercase();
    if let Ok(n) = v.parse::<u8>() {
        return (1..=64).contains(&n).then(|| n.to_string());
    }
    let bare = v.strip_prefix("SIG").unwrap_or(&v);
    SIGNALS.contains(&bare).then(|| format!("SIG{bare}"))
}

/// Reads `stop.{type,value}`. An unknown or unusable signal falls back to
/// SIGTERM rather than Wings' SIGKILL: a graceful stop never force-kills.
pub fn stop_action(process_configuration: &Value) -> StopAction {
    let stop = process_configuration.get("stop");
    let kind = stop
        .and_then(|s| s.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let value = stop
        .and_then(|s| s.get("value"))
        .map(env_value)
        .unwrap_or_default();
    match kind.as_str() {
        "signal" => match normalize_signal(&value) {
            Some(sig) => StopAction::Signal(sig),
            None => {
                log::warn!("unknown stop signal {value:?}; sending SIGTERM instead");
                StopAction::Signal("SIGTERM".into())
            }
        },
        "command" if !value.trim().is_empty() => StopAction::Command(value),
        _ => StopAction::Native,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stop_actions() {
        let sa = |t: &str, v: Value| stop_action(&json!({"stop": {"type": t, "value": v}}));
        assert_eq!(
            sa("signal", json!("SIGINT")),
            StopAction::Signal("SIGINT".into())
        );
        assert_eq!(
            sa("signal", json!("^C")),
            StopAction::Signal("SIGINT".into())
        );
        assert_eq!(
            sa("signal", json!("term")),
            StopAction::Signal("SIGTERM".into())
        );
        assert_eq!(
            sa("signal", json!("^SIGQUIT")),
            StopAction::Signal("SIGQUIT".into())
        );
        assert_eq!(sa("signal", json!(15)), StopAction::Signal("15".into()));
        assert_eq!(
            sa("signal", json!("bogus")),
            StopAction::Signal("SIGTERM".into())
        );
        assert_eq!(
            sa("command", json!("stop")),
            StopAction::Command("stop".into())
        );
        assert_eq!(sa("command", json!("")), StopAction::Native);
        assert_eq!(sa("stop", Value::Null), StopAction::Native);
        assert_eq!(stop_action(&json!({})), StopAction::Native);
        assert_eq!(normalize_signal("99"), None);
    }
}
