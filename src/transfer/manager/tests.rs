//! The manager's unit tests: one active transfer per server, the status
//! machine, cancels, audit lines, persistence and resumption.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::events::EventBus;
use crate::server::ServerConfig;
use crate::transfer::record::Direction;

fn manager() -> (tempfile::TempDir, Manager, Arc<EventBus>) {
    let dir = tempfile::tempdir().unwrap();
    let events = Arc::new(EventBus::default());
    let m = Manager::new(dir.path(), Arc::clone(&events)).unwrap();
    (dir, m, events)
}

#[test]
fn one_active_transfer_per_server_and_direction() {
    let (_d, m, _) = manager();
    let t = m.begin("s", Direction::Outgoing, "http://d").unwrap();
    assert_eq!(
        m.begin("s", Direction::Outgoing, "http://d").err(),
        Some(AlreadyActive)
    );
    assert!(m.begin("s", Direction::Incoming, "src").is_ok());
    assert!(m.transition(&t, Status::Processing, None));
    assert!(m.transition(&t, Status::Failed, Some("x".into())));
    assert!(m.begin("s", Direction::Outgoing, "http://d").is_ok());
}

#[test]
fn illegal_transitions_are_refused_and_terminal_is_final() {
    let (_d, m, _) = manager();
    let t = m.begin("s", Direction::Outgoing, "p").unwrap();
    assert!(!m.transition(&t, Status::Completed, None));
    assert!(!m.transition(&t, Status::Cancelled, None));
    assert!(m.transition(&t, Status::Processing, None));
    assert!(m.transition(&t, Status::Completed, None));
    assert!(!m.transition(&t, Status::Failed, None));
    assert_eq!(t.status(), Status::Completed);
    assert!(t.record().finished_at.is_some());
    assert_eq!(
        m.totals(),
        vec![((Direction::Outgoing, Status::Completed), 1)]
    );
}

#[test]
fn cancel_runs_hooks_once_and_only_for_active_transfers() {
    let (_d, m, events) = manager();
    let sub = events.subscribe("s", 16);
    let t = m.begin("s", Direction::Outgoing, "p").unwrap();
    let hits = Arc::new(AtomicU64::new(0));
    let h = Arc::clone(&hits);
    t.on_cancel(move || {
        h.fetch_add(1, Ordering::SeqCst);
    });
    assert_eq!(m.cancel(&t, Some("maintenance".into())), Ok(()));
    assert!(t.is_cancelled());
    assert_eq!(
        m.cancel(&t, None),
        Err(CancelRefused::NotActive),
        "already cancelling"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // A hook registered after the cancel runs at once.
    let h = Arc::clone(&hits);
    t.on_cancel(move || {
        h.fetch_add(1, Ordering::SeqCst);
    });
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    assert_eq!(m.finish(&t, Err("stream closed".into())), Status::Cancelled);
    assert_eq!(m.finish(&t, Ok(())), Status::Cancelled, "terminal is final");
    assert_eq!(t.record().cancel_reason.as_deref(), Some("maintenance"));
    let statuses: Vec<String> = sub.receiver.try_iter().map(|e| e.args[0].clone()).collect();
    assert_eq!(statuses, vec!["cancelling", "cancelled"]);
}

#[test]
fn bulk_cancel_selectors() {
    let (_d, m, _) = manager();
    let a = m
        .begin("a", Direction::Outgoing, "http://node2:8080/api/transfers")
        .unwrap();
    let b = m
        .begin("b", Direction::Outgoing, "http://node3:8080/api/transfers")
        .unwrap();
    let c = m.begin("c", Direction::Incoming, "10.0.0.1").unwrap();
    let f = CancelFilter {
        destination: Some("http://node2".into()),
        ..Default::default()
    };
    assert_eq!(m.cancel_matching(&f, "r"), vec![a.id.clone()]);
    let f = CancelFilter {
        direction: Some(Direction::Incoming),
        ..Default::default()
    };
    assert_eq!(m.cancel_matching(&f, "r"), vec![c.id.clone()]);
    let f = CancelFilter {
        servers: Some(vec!["b".into(), "zzz".into()]),
        ..Default::default()
    };
    assert_eq!(m.cancel_matching(&f, "r"), vec![b.id.clone()]);
    assert!(m.cancel_matching(&CancelFilter::default(), "r").is_empty());
}

#[test]
fn audit_log_has_a_line_per_change() {
    let (dir, m, _) = manager();
    let t = m.begin("s", Direction::Incoming, "p").unwrap();
    m.transition(&t, Status::Processing, None);
    m.transition(&t, Status::Failed, Some("checksums don't match".into()));
    let text = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2]["from"], "processing");
    assert_eq!(lines[2]["to"], "failed");
    assert_eq!(lines[2]["error"], "checksums don't match");
    assert_eq!(lines[2]["transfer"], t.id.as_str());
}

/// A status change whose disk write hangs (here: the state file's
/// temporary is a FIFO nobody reads) must not stall readers of the
/// transfer list.
#[test]
fn readers_never_wait_for_a_status_change_on_a_stuck_disk() {
    let (dir, m, _) = manager();
    let m = Arc::new(m);
    let t = m.begin("s", Direction::Outgoing, "p").unwrap();
    let state_file = dir
        .path()
        .join("transfers")
        .join(format!(".{}.json.tmp", t.id));
    crate::sys::mkfifo(&state_file).unwrap();
    let changer = {
        let (m, t) = (Arc::clone(&m), Arc::clone(&t));
        std::thread::spawn(move || m.transition(&t, Status::Processing, None))
    };
    // The writer is now blocked opening the FIFO (or about to be).
    std::thread::sleep(Duration::from_millis(100));
    let (tx, rx) = crossbeam_channel::bounded(1);
    {
        let (m, t) = (Arc::clone(&m), Arc::clone(&t));
        std::thread::spawn(move || {
            let _ = tx.send((m.records()[0].status, t.record().status));
        });
    }
    let seen = rx.recv_timeout(Duration::from_secs(2));
    assert!(!changer.is_finished());
    // Unblock the writer (also on failure, so the test ends): read what it writes.
    let written = std::fs::read(&state_file).unwrap();
    let seen = seen.expect("records() waited for the stuck state write");
    assert_eq!(
        seen,
        (Status::Pending, Status::Pending),
        "not visible before it is persisted"
    );
    assert!(String::from_utf8_lossy(&written).contains("processing"));
    assert!(changer.join().unwrap());
    assert_eq!(t.status(), Status::Processing);
}

#[test]
fn active_transfers_survive_as_orphans_and_finished_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let events = Arc::new(EventBus::default());
    {
        let m = Manager::new(dir.path(), Arc::clone(&events)).unwrap();
        let a = m.begin("a", Direction::Outgoing, "p").unwrap();
        m.transition(&a, Status::Processing, None);
        let b = m.begin("b", Direction::Incoming, "p").unwrap();
        m.transition(&b, Status::Failed, None);
    }
    let m = Manager::new(dir.path(), events).unwrap();
    let orphans = m.orphans();
    assert_eq!(orphans.len(), 1);
    assert_eq!(
        (orphans[0].server.as_str(), orphans[0].status),
        ("a", Status::Processing)
    );
    m.forget_orphan(&orphans[0].id);
    assert!(m.orphans().is_empty());
}

#[test]
fn a_cancel_and_the_report_step_exclude_each_other() {
    let (_d, m, _) = manager();
    // The report step first: the cancel is refused.
    let t = m.begin("s", Direction::Incoming, "p").unwrap();
    m.transition(&t, Status::Processing, None);
    for phase in [Phase::Verifying, Phase::Installing, Phase::Reporting] {
        assert_eq!(m.enter_phase(&t, phase), Ok(()));
    }
    assert_eq!(m.cancel(&t, None), Err(CancelRefused::Finalizing));
    assert_eq!(m.orphans()[0].phase, Phase::Reporting, "persisted first");
    // The cancel first: the report step is refused.
    let u = m.begin("u", Direction::Incoming, "p").unwrap();
    m.transition(&u, Status::Processing, None);
    m.enter_phase(&u, Phase::Verifying).unwrap();
    m.enter_phase(&u, Phase::Installing).unwrap();
    assert_eq!(m.cancel(&u, None), Ok(()));
    assert_eq!(
        m.enter_phase(&u, Phase::Reporting),
        Err(PhaseRefused::Cancelled)
    );
    assert_eq!(m.finish(&u, Err("cancelled".into())), Status::Cancelled);
}

#[test]
fn a_resumed_transfer_keeps_its_id_and_phase() {
    let (_d, m, _) = manager();
    let t = m.begin("s", Direction::Incoming, "p").unwrap();
    m.transition(&t, Status::Processing, None);
    m.set_config(&t, &ServerConfig::minimal("s"));
    m.enter_phase(&t, Phase::Verifying).unwrap();
    m.enter_phase(&t, Phase::Installing).unwrap();
    m.enter_phase(&t, Phase::Reporting).unwrap();
    let saved = m.orphans().pop().unwrap();
    assert_eq!(saved.config, Some(ServerConfig::minimal("s")));
    let r = m.resume(&saved);
    assert_eq!(
        (r.id.as_str(), r.phase()),
        (t.id.as_str(), Phase::Reporting)
    );
    assert_eq!(m.cancel(&r, None), Err(CancelRefused::Finalizing));
    assert_eq!(m.finish(&r, Ok(())), Status::Completed);
    assert!(m.orphans().is_empty(), "settled: state removed");
}

#[test]
fn a_transfer_taken_up_again_is_no_longer_an_orphan_and_keeps_its_session() {
    let dir = tempfile::tempdir().unwrap();
    let events = Arc::new(EventBus::default());
    let session = crate::transfer::persist::OutgoingSession {
        url: "http://dest/api/transfers".into(),
        sid: "a".repeat(32),
        secret: "b".repeat(64),
        boundary: "x".into(),
        segment_size: 1 << 20,
        resume_window: 900,
        backups: vec![],
        start_on_completion: false,
        codec: crate::archive::Codec::Zstd,
    };
    {
        let m = Manager::new(dir.path(), Arc::clone(&events)).unwrap();
        let a = m.begin("a", Direction::Outgoing, "p").unwrap();
        m.transition(&a, Status::Processing, None);
        m.set_outgoing_session(&a, session.clone());
        let b = m.begin("b", Direction::Outgoing, "p").unwrap();
        m.transition(&b, Status::Processing, None);
    }
    let m = Manager::new(dir.path(), events).unwrap();
    let orphans = m.orphans();
    let saved = orphans.iter().find(|o| o.server == "a").unwrap();
    assert_eq!(saved.session.as_ref(), Some(&session), "persisted at once");
    let t = m.take_up(saved);
    let left: Vec<_> = m.orphans().into_iter().map(|o| o.server).collect();
    assert_eq!(left, vec!["b".to_string()], "recovery no longer sees it");
    // Still persisted with its session while it goes on.
    m.enter_phase(&t, Phase::SentLastByte).unwrap();
    let again = Manager::new(dir.path(), Arc::new(EventBus::default())).unwrap();
    let kept = again
        .orphans()
        .into_iter()
        .find(|o| o.server == "a")
        .unwrap();
    assert_eq!(
        (kept.phase, kept.session),
        (Phase::SentLastByte, Some(session))
    );
    assert_eq!(m.finish(&t, Ok(())), Status::Completed);
    let left: Vec<_> = m.orphans().into_iter().map(|o| o.server).collect();
    assert_eq!(left, vec!["b".to_string()], "ended: its state is gone");
}

#[test]
fn uuids_are_v4_shaped() {
    let u = new_uuid();
    assert!(crate::server::is_uuid(&u), "{u}");
    assert_eq!(&u[14..15], "4");
    assert_ne!(new_uuid(), u);
}
