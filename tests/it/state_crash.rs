//! Persisted state under kill -9: a writer killed at random points never leaves a
//! truncated or unparsable state file, and corruption is recovered from.

use nodemedic::state::{LoadOutcome, RebootRecord, STATE_FILE, StateStore, parse_state};
use std::process::Command;
use std::time::Duration;

const WRITER_DIR: &str = "NODEMEDIC_TEST_WRITER_DIR";

/// Not a test on its own: the child process `kill_9_during_writes...` re-executes.
#[test]
#[ignore = "helper process for kill_9_during_writes_never_leaves_a_truncated_state_file"]
fn state_writer_child() {
    let Ok(dir) = std::env::var(WRITER_DIR) else {
        return;
    };
    let (mut s, _) = StateStore::load(std::path::Path::new(&dir), 1).unwrap();
    for i in 0u64.. {
        s.bump("writes", 1);
        // Vary the size so a torn write would show up as truncated JSON.
        if i % 7 == 0 {
            s.push_reboot(RebootRecord {
                at_unix: i,
                boot_id: "x".repeat((i % 300) as usize),
                problem: "KernelRCUStall".into(),
                reason: "test".into(),
                outcome: None,
            });
        }
        s.save().unwrap();
    }
}

#[test]
fn kill_9_during_writes_never_leaves_a_truncated_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut last = 0;
    for round in 0..15u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "state_crash::state_writer_child",
                "--ignored",
                "--nocapture",
            ])
            .env(WRITER_DIR, dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait for its first write (a loaded machine can take long to start it and to
        // fsync), then let it get through a varying number more before the kill.
        let progressed = crate::support::poll(Duration::from_secs(30), || {
            let b = std::fs::read(dir.path().join(STATE_FILE)).ok()?;
            let w = parse_state(&b)
                .ok()?
                .counters
                .get(&nodemedic::model::CounterKey::Other("writes".into()))
                .copied()?;
            (w > last).then_some(())
        });
        assert!(
            progressed.is_some(),
            "round {round}: the writer never wrote"
        );
        std::thread::sleep(Duration::from_millis(30 + (round * 17) % 90));
        child.kill().unwrap();
        child.wait().unwrap();
        let bytes = std::fs::read(dir.path().join(STATE_FILE)).expect("state file must exist");
        let st = parse_state(&bytes).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let writes = st.counters[&"writes".into()];
        assert!(
            writes >= last,
            "round {round}: counter went back {last} -> {writes}"
        );
        assert!(
            writes > last,
            "round {round}: the writer made no progress; the test proves nothing"
        );
        last = writes;
        // The next load cleans any temp file the killed writer left.
        let (_, outcome) = StateStore::load(dir.path(), 2).unwrap();
        assert_eq!(outcome, LoadOutcome::Loaded);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp."))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}

#[test]
fn the_daemon_reports_and_replaces_a_corrupt_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join(STATE_FILE), b"\x00\x00garbage{").unwrap();
    let mut d = crate::support::Daemon::start_in(dir, "", &[]);
    let line = d
        .wait_log("was corrupt", Duration::from_secs(5))
        .expect("corruption must be reported");
    assert!(line.contains("safe defaults"), "{line}");
    let s = d.status();
    assert!(s["persisted"]["recovered_at"].as_u64().is_some(), "{s}");
    let moved: Vec<_> = std::fs::read_dir(d.state_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("state.json.corrupt-"))
        .collect();
    assert_eq!(moved.len(), 1, "the corrupt file is kept for forensics");
}
