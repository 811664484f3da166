//! Test-only failpoints: `FERRY_FAILPOINT=<point>:pause` makes the daemon
//! stop (sleep for an hour) right after it persisted `<point>`, logging
//! `failpoint: paused at <point>`, so a test can SIGKILL it at exactly
//! that point of the finish; `<point>:delay=<ms>` sleeps that long and
//! goes on (logging `failpoint: delaying at <point>`), so a test can act
//! (cancel, delete) inside that window. `<point>` is a `finish::Phase`
//! name (`verifying`, `installing`, `reporting`, `unknown`,
//! `reporting-failure`; not `sent-last-byte`, which is entered inside the
//! HTTP client's body read) or one of the extra points
//! `creating-container` (before the container is created),
//! `container-created` (after), `reported` (the panel answered a
//! report, before the record is written), `segment-receiving` (a
//! segment's request, registered for the cancel, before its cancel check),
//! `cancel-accepted` (a cancel was accepted, before its hooks run),
//! `session-opening` (a session's open, its JWT checked, before the
//! session exists), `delete-removing` (a deleted server's directory,
//! moved out of place, before the background removal) and
//! `segment-checked-again` (a restarted source checked one held segment
//! of the body it packs again). Several may be
//! given, comma separated. Not for production: unset, every call is a
//! lookup in an empty list.

use std::sync::OnceLock;
use std::time::Duration;

use super::Phase;

/// What a failpoint does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Pause,
    Delay(Duration),
}

fn parse(spec: &str) -> Vec<(String, Action)> {
    spec.split(',')
        .filter_map(|p| {
            let (name, action) = p.trim().rsplit_once(':')?;
            let action = match action {
                "pause" => Action::Pause,
                _ => Action::Delay(Duration::from_millis(
                    action.strip_prefix("delay=")?.parse().ok()?,
                )),
            };
            Some((name.to_string(), action))
        })
        .collect()
}

fn points() -> &'static [(String, Action)] {
    static POINTS: OnceLock<Vec<(String, Action)>> = OnceLock::new();
    POINTS.get_or_init(|| {
        std::env::var("FERRY_FAILPOINT")
            .map(|v| parse(&v))
            .unwrap_or_default()
    })
}

/// Called when a transfer enters `phase`.
pub fn reached(phase: Phase) {
    point(phase.as_str());
}

/// Called at a named point that is not a phase.
pub fn point(name: &str) {
    match points().iter().find(|(p, _)| p == name).map(|(_, a)| *a) {
        Some(Action::Pause) => {
            log::warn!("failpoint: paused at {name}");
            std::thread::sleep(Duration::from_secs(3600));
        }
        Some(Action::Delay(d)) => {
            log::warn!("failpoint: delaying at {name} for {d:?}");
            std::thread::sleep(d);
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failpoints_parse() {
        assert_eq!(
            parse("installing:pause, creating-container:delay=1500,bogus,x:delay=y"),
            vec![
                ("installing".to_string(), Action::Pause),
                (
                    "creating-container".to_string(),
                    Action::Delay(Duration::from_millis(1500))
                ),
            ]
        );
    }
}
