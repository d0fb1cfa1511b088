//! Config errors through the real binary: exit 78 (EX_CONFIG) naming file and key.

use crate::support::run_cli;

fn with_config(text: &str, args: &[&str]) -> (i32, String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("config.toml");
    std::fs::write(&p, text).unwrap();
    let ps = p.to_str().unwrap().to_string();
    let mut a: Vec<&str> = args.to_vec();
    a.extend(["--config", &ps]);
    let (c, o, e) = run_cli(&a);
    (c, o, e, ps)
}

#[test]
fn unknown_key_exits_78_naming_file_and_key() {
    let (code, _, err, path) = with_config("[health]\nstuck_afterr = \"30s\"\n", &["run"]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains(&path), "{err}");
    assert!(err.contains("unknown key `health.stuck_afterr`"), "{err}");
    assert!(err.contains("stuck_after"), "allowed keys listed: {err}");
}

#[test]
fn wrong_type_exits_78_naming_the_key() {
    let (code, _, err, _) = with_config("[audit]\nmax_entries = \"many\"\n", &["run"]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("key `audit.max_entries`"), "{err}");
}

#[test]
fn negative_interval_exits_78_naming_the_key() {
    let (code, _, err, _) = with_config("[health]\nstuck_after = -30\n", &["run"]);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("key `health.stuck_after`") && err.contains("negative"),
        "{err}"
    );
}

#[test]
fn out_of_range_value_exits_78_with_the_allowed_range() {
    let (code, _, err, _) = with_config("[actions.reboot]\nmax_per_day = 100000\n", &["run"]);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("`actions.reboot.max_per_day` = 100000 is out of range; allowed 0 to 10000"),
        "{err}"
    );
}

#[test]
fn unreadable_config_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    // A directory cannot be read as a file, even by root.
    let (code, _, err) = run_cli(&["run", "--config", dir.path().to_str().unwrap()]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("cannot read the file"), "{err}");
    let missing = dir.path().join("typo.toml");
    let (code, _, err) = run_cli(&["run", "--config", missing.to_str().unwrap()]);
    assert_eq!(
        code, 78,
        "an explicit path that does not exist is a typo, not defaults: {err}"
    );
}

#[test]
fn config_default_is_valid_input_for_config_check() {
    let (code, out, _) = run_cli(&["config", "default"]);
    assert_eq!(code, 0);
    assert!(out.contains("mode = \"observe\""));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("default.toml");
    std::fs::write(&p, &out).unwrap();
    let (code, out, err) = run_cli(&["config", "check", p.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("valid"));
}

#[test]
fn config_check_reports_bad_files_with_78() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, "mode = \"heal\"\n").unwrap();
    let (code, _, err) = run_cli(&["config", "check", p.to_str().unwrap()]);
    assert_eq!(code, 78);
    assert!(
        err.contains("key `mode`") && err.contains("observe"),
        "{err}"
    );
}

#[test]
fn check_exits_2_on_a_bad_config_and_usage_errors_exit_2() {
    let (code, _, err, _) = with_config("bogus = 1\n", &["check"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = run_cli(&["frobnicate"]);
    assert_eq!(code, 2);
}

#[test]
fn version_and_help_work_on_every_subcommand() {
    for args in [
        vec!["--version"],
        vec!["run", "--version"],
        vec!["check", "--version"],
        vec!["preflight", "--version"],
        vec!["config", "default", "--version"],
    ] {
        let (code, out, _) = run_cli(&args);
        assert_eq!(code, 0, "{args:?}");
        assert!(out.contains(env!("CARGO_PKG_VERSION")), "{args:?}: {out}");
    }
    for args in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["check", "--help"],
        vec!["config", "check", "--help"],
    ] {
        let (code, out, _) = run_cli(&args);
        assert_eq!(code, 0, "{args:?}");
        assert!(out.contains("Usage:"), "{args:?}: {out}");
    }
}

#[test]
fn preflight_without_containerd_reports_and_still_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-k3s");
    let cfg = format!(
        "state_dir = \"{s}\"\n[preflight]\ncontainerd_binary = \"{m}/containerd\"\ncontainerd_root = \"{m}/root\"\ncontainerd_state = \"{m}/state\"\ncontainerd_socket = \"{m}/c.sock\"\ncontainerd_config = \"{m}/config.toml\"\ncni_results_dir = \"{m}/results\"\ncni_networks_dir = \"{m}/networks\"\n",
        s = dir.path().join("state").display(),
        m = missing.display()
    );
    let (code, _, err, _) = with_config(&cfg, &["preflight"]);
    assert_eq!(code, 0, "preflight must never block k3s: {err}");
    assert!(err.contains("preflight: dry run"), "observe mode: {err}");
    assert!(
        dir.path().join("state/preflight.json").exists(),
        "a report is always written: {err}"
    );
}

#[test]
fn classify_reads_saved_logs_on_stdin_and_prints_one_json_object_per_line() {
    use std::io::Write;
    let mut child = std::process::Command::new(crate::support::BIN)
        .arg("classify")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"[Sat Nov 21 17:35:41 2026] watchdog: BUG: soft lockup - CPU#3 stuck for 23s! [rpc.nfsd:812]\n\
              Nov 21 17:35:42 pi5 kernel: Out of memory: Killed process 1234 (prometheus) total-vm:2000000kB\n\
              just a line\n",
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(
        lines[0]["kind"], "soft_lockup",
        "a soft lockup in rpc.nfsd is not an NFS fault"
    );
    assert_eq!(lines[0]["cpu"], 3);
    assert_eq!(lines[0]["comm"], "rpc.nfsd");
    assert_eq!(lines[1]["kind"], "oom_kill");
    assert_eq!(lines[1]["pid"], 1234);
    assert_eq!(lines[2]["kind"], serde_json::Value::Null);
    assert_eq!(lines[2]["continuation"], false);
}

#[test]
fn check_shows_the_storage_state_of_each_watched_mount() {
    let state = tempfile::tempdir().unwrap();
    let (code, out, err, _) = with_config(
        &format!(
            "state_dir = \"{}\"\n[kernel]\nenabled = false\n",
            state.path().display()
        ),
        &["check", "--json"],
    );
    assert!(code == 0 || code == 1, "{code}: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let rows: Vec<&serde_json::Value> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["area"] == "storage")
        .collect();
    // The root is always watched: writable, with its filesystem, device and the result of
    // a real write probe in the state directory on it.
    let root = rows
        .iter()
        .find(|r| r["item"] == "/")
        .unwrap_or_else(|| panic!("no storage row for /: {rows:?}\n{out}"));
    let detail = root["detail"].as_str().unwrap();
    assert!(detail.starts_with("writable: "), "{detail}");
    assert!(detail.contains("write probe ok in"), "{detail}");
    assert_eq!(root["status"], "ok", "{root}");
}
