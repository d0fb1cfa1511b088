//! How the previous boot ended, replayed through the real daemon from fixture directories:
//! the state directory a previous run left (the clean-shutdown marker, the reboot intent,
//! `power-state.json`), pstore records under the host root, and the previous boot's kernel
//! lines in a real journal file (written by systemd-journal-remote from the journal export
//! format, read by the real journalctl through `--root`). journald itself cannot be used: a
//! container has no `/dev/kmsg`, so it never stores kernel-transport lines.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::support::fake_apiserver::FakeApiServer;
use super::support::{Daemon, poll, require, run_cli, set_boot_id};

/// The previous boot, as `/proc/sys/kernel/random/boot_id` spelt it, and as the journal does.
const PREV: &str = "0f3c2b1a-9e8d-4c7b-a6f5-e4d3c2b1a090";
const PREV_JOURNAL: &str = "0f3c2b1a9e8d4c7ba6f5e4d3c2b1a090";
const NOW: &str = "7a6b5c4d-3e2f-4a1b-8c9d-0e1f2a3b4c5d";
const MACHINE: &str = "d1c2b3a4e5f60718293a4b5c6d7e8f90";

fn journal_remote() -> Option<PathBuf> {
    [
        "/lib/systemd/systemd-journal-remote",
        "/usr/lib/systemd/systemd-journal-remote",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// Writes `lines` (kernel timestamp in µs, facility, text) as boot PREV's kernel lines into
/// a journal file under `root/var/log/journal`.
fn write_journal(root: &Path, lines: &[(u64, u8, &str)]) {
    let bin = journal_remote().expect("checked by the caller");
    let dir = root.join("var/log/journal").join(MACHINE);
    fs::create_dir_all(&dir).unwrap();
    let mut export = String::new();
    for (i, (ts, fac, text)) in lines.iter().enumerate() {
        export.push_str(&format!(
            "__CURSOR=s=0;i={i}\n__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={ts}\n\
             _BOOT_ID={PREV_JOURNAL}\n_MACHINE_ID={MACHINE}\n_HOSTNAME=pi5\n_TRANSPORT=kernel\n\
             SYSLOG_FACILITY={fac}\nPRIORITY=3\n_SOURCE_MONOTONIC_TIMESTAMP={ts}\nMESSAGE={text}\n\n",
            1_800_000_000_000_000 + ts
        ));
    }
    let mut child = Command::new(bin)
        .arg(format!("--output={}", dir.join("remote.journal").display()))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(export.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A state directory a previous run in boot PREV left, plus whatever the case adds.
fn previous_run(state: &Path) {
    fs::create_dir_all(state).unwrap();
    fs::write(
        state.join("state.json"),
        format!("{{\"schema\": 1, \"boot_id\": \"{PREV}\"}}\n"),
    )
    .unwrap();
}

fn put(dir: &Path, rel: &str, content: &str) {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

struct Case {
    cause: &'static str,
    /// Files in the state dir.
    state: Vec<(&'static str, String)>,
    /// Files under the host root.
    root: Vec<(&'static str, &'static str)>,
    journal: Vec<(u64, u8, &'static str)>,
    /// Words the verdict must give.
    why: &'static str,
}

fn config(root: &Path, extra: &str) -> String {
    format!(
        "host_root = \"{}\"\n{extra}[kernel]\nenabled = false\n[memory]\nenabled = false\n\
         [mounts]\nenabled = false\n[runtime]\nenabled = false\n",
        root.display()
    )
}

fn cases() -> Vec<Case> {
    let marker = || {
        (
            "clean-shutdown.json",
            format!("{{\"boot_id\": \"{PREV}\", \"at_unix\": 1800000000}}"),
        )
    };
    let intent = |kind: &str, why: &str| {
        (
            "reboot-intent.json",
            format!(
                "{{\"boot_id\": \"{PREV}\", \"at_unix\": 1800000000, \"kind\": \"{kind}\", \"reason\": \"{why}\"}}"
            ),
        )
    };
    vec![
        Case {
            cause: "clean",
            state: vec![marker()],
            root: vec![],
            journal: vec![(
                5_000_000,
                0,
                "Booting Linux on physical CPU 0x0000000000 [0x414fd0b1]",
            )],
            why: "shut down cleanly",
        },
        Case {
            cause: "nodemedic_reboot",
            state: vec![
                marker(),
                intent("reboot", "KernelHardLockup: hard LOCKUP on CPU 2"),
            ],
            root: vec![],
            journal: vec![],
            why: "nodemedic rebooted the node: KernelHardLockup",
        },
        Case {
            cause: "watchdog_after_hang",
            state: vec![intent(
                "watchdog_stop",
                "daemon loop(s) policy (31s silent) stuck",
            )],
            root: vec![],
            journal: vec![],
            why: "withheld the hardware watchdog",
        },
        Case {
            cause: "kernel_panic",
            state: vec![],
            root: vec![(
                "var/lib/systemd/pstore/1800000000/dmesg-ramoops-0",
                "Panic#1 Part1\n<4>[ 4100.000000] Unable to handle kernel NULL pointer dereference at virtual address 0000000000000008\n<0>[ 4100.100000] Kernel panic - not syncing: Oops: Fatal exception\n",
            )],
            journal: vec![],
            why: "Kernel panic - not syncing: Oops: Fatal exception",
        },
        Case {
            cause: "thermal",
            // The kernel's hardware-protection shutdown is orderly: the marker exists.
            state: vec![marker()],
            root: vec![],
            journal: vec![
                (
                    9_000_000_000,
                    0,
                    "thermal thermal_zone0: cpu-thermal: critical temperature reached",
                ),
                (
                    9_000_100_000,
                    0,
                    "reboot: HARDWARE PROTECTION shutdown (Temperature too high)",
                ),
            ],
            why: "critical temperature",
        },
        Case {
            cause: "power",
            state: vec![(
                "power-state.json",
                format!(
                    "{{\"boot_id\": \"{PREV}\", \"alarm\": true, \"episodes_boot\": 3, \"episodes_total\": 3}}"
                ),
            )],
            root: vec![],
            journal: vec![],
            why: "3 under-voltage episode(s)",
        },
        Case {
            cause: "power",
            state: vec![],
            root: vec![],
            // The journal alone: under-voltage never normalised before the end. A forged
            // userspace line claiming recovery (facility 1) is not believed.
            journal: vec![
                (100_000_000, 0, "hwmon hwmon1: Undervoltage detected!"),
                (101_000_000, 0, "hwmon hwmon1: Voltage normalised"),
                (200_000_000, 0, "hwmon hwmon1: Undervoltage detected!"),
                (201_000_000, 1, "hwmon hwmon1: Voltage normalised"),
            ],
            why: "(journal)",
        },
        Case {
            cause: "watchdog_after_hang",
            state: vec![],
            root: vec![],
            journal: vec![
                (
                    7_000_000_000,
                    0,
                    "INFO: task containerd:812 blocked for more than 122 seconds.",
                ),
                (7_000_000_100, 0, "      Not tainted 6.12.25-v8+ #1"),
                (
                    7_000_000_200,
                    0,
                    "\"echo 0 > /proc/sys/kernel/hung_task_timeout_secs\" disables this message.",
                ),
                (
                    7_000_000_300,
                    0,
                    "task:containerd       state:D stack:0     pid:812   tgid:812   ppid:1      flags:0x00000004",
                ),
            ],
            why: "hung task containerd:812",
        },
        Case {
            cause: "unknown",
            state: vec![],
            root: vec![],
            journal: vec![(
                5_000_000,
                0,
                "Booting Linux on physical CPU 0x0000000000 [0x414fd0b1]",
            )],
            why: "no trace of why",
        },
    ]
}

#[test]
fn every_previous_boot_cause_is_replayed_from_fixture_directories() {
    if !require(
        journal_remote().is_some(),
        "systemd-journal-remote (apt package systemd-journal-remote)",
    ) {
        return;
    }
    for c in cases() {
        let root = tempfile::tempdir().unwrap();
        set_boot_id(root.path(), NOW);
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        previous_run(&state);
        for (f, text) in &c.state {
            put(&state, f, text);
        }
        for (f, text) in &c.root {
            put(root.path(), f, text);
        }
        if !c.journal.is_empty() {
            write_journal(root.path(), &c.journal);
        }
        let mut d = Daemon::start_in(dir, &config(root.path(), ""), &[]);
        let label = format!("{} ({})", c.cause, c.why);
        let st = d.status();
        let pb = &st["info"]["previous_boot"];
        assert_eq!(pb["cause"], c.cause, "{label}: {pb}");
        assert_eq!(pb["boot_id"], PREV, "{label}");
        assert!(pb["why"].as_str().unwrap().contains(c.why), "{label}: {pb}");
        let m = d.metrics();
        assert!(
            m.contains(&format!(
                "nodemedic_previous_boot_end_total{{cause=\"{}\"}} 1",
                c.cause
            )),
            "{label}: {m}"
        );
        let audit = fs::read_to_string(d.state_dir().join("audit.jsonl")).unwrap();
        let entry: serde_json::Value = audit
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|e| e["action"] == "previous_boot")
            .unwrap_or_else(|| panic!("{label}: {audit}"));
        assert_eq!(entry["problem"], c.cause);
        assert_eq!(entry["subject"], PREV);
        if c.journal.is_empty() {
            assert_eq!(
                entry["evidence"]["journal"]["journal"], "not_read",
                "{label}: {entry}"
            );
        } else {
            assert_eq!(
                entry["evidence"]["journal"]["journal"], "read",
                "{label}: {entry}"
            );
        }
        if !c.root.is_empty() {
            assert!(audit.contains("\"action\":\"pstore\""), "{label}: {audit}");
            for (f, _) in &c.root {
                assert!(
                    root.path().join(f).exists(),
                    "{label}: {f} must never be deleted"
                );
            }
        }
        let cfg = d.dir.path().join("config.toml");
        let (_, out, err) = run_cli(&["check", "--config", cfg.to_str().unwrap()]);
        let row = out
            .lines()
            .find(|l| l.contains("previous boot"))
            .unwrap_or_else(|| panic!("{label}: {out}{err}"));
        assert!(row.contains(&format!("{}: ", c.cause)), "{label}: {row}");
        d.signal(Signal::SIGTERM);
        assert!(d.wait_exit(Duration::from_secs(10)).unwrap().success());
    }
}

#[test]
fn a_panic_counts_as_an_unplanned_reboot_and_the_verdict_is_not_taken_again_on_restart() {
    let root = tempfile::tempdir().unwrap();
    set_boot_id(root.path(), NOW);
    put(
        root.path(),
        "sys/fs/pstore/dmesg-ramoops-0",
        "Panic#1 Part1\n<0>[ 88.0] Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b\n",
    );
    let dir = tempfile::tempdir().unwrap();
    previous_run(&dir.path().join("state"));
    let mut d = Daemon::start_in(dir, &config(root.path(), ""), &[]);
    assert_eq!(d.status()["info"]["previous_boot"]["cause"], "kernel_panic");
    let m = d.metrics();
    assert!(
        m.contains("nodemedic_reboot_budget_remaining 2"),
        "the crash spent a reboot: {m}"
    );
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).unwrap().success());
    let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap());
    let mut d = Daemon::start_in(dir, &config(root.path(), ""), &[]);
    assert_eq!(
        d.status()["info"]["previous_boot"]["cause"],
        "kernel_panic",
        "read back"
    );
    let m = d.metrics();
    assert!(
        m.contains("nodemedic_previous_boot_end_total{cause=\"kernel_panic\"} 1"),
        "counted once: {m}"
    );
    assert!(m.contains("nodemedic_reboot_budget_remaining 2"), "{m}");
    let audit = fs::read_to_string(d.state_dir().join("audit.jsonl")).unwrap();
    assert_eq!(
        audit.matches("\"action\":\"previous_boot\"").count(),
        1,
        "{audit}"
    );
    assert!(root.path().join("sys/fs/pstore/dmesg-ramoops-0").exists());
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).unwrap().success());
}

#[test]
fn the_verdict_becomes_an_event_on_the_node_once_the_api_answers() {
    let server = FakeApiServer::start();
    server.add_node("pi1");
    let kdir = tempfile::tempdir().unwrap();
    let kc = server.write_kubeconfig(&kdir.path().join("kubeconfig"));
    let root = tempfile::tempdir().unwrap();
    set_boot_id(root.path(), NOW);
    let dir = tempfile::tempdir().unwrap();
    previous_run(&dir.path().join("state"));
    let mut d = Daemon::start_in(
        dir,
        &config(
            root.path(),
            &format!(
                "node_name = \"pi1\"\n[kubernetes]\nkubeconfig = \"{}\"\nsync_interval = \"1s\"\nrequest_timeout = \"1s\"\n",
                kc.display()
            ),
        ),
        &[],
    );
    let ev = poll(Duration::from_secs(20), || {
        server
            .events("default")
            .into_iter()
            .find(|e| e["reason"] == "NodeMedicPreviousBootUnknown")
    })
    .unwrap_or_else(|| panic!("events: {:?}", server.events("default")));
    assert_eq!(ev["type"], "Warning");
    assert!(
        ev["message"]
            .as_str()
            .unwrap()
            .contains("no clean shutdown"),
        "{ev}"
    );
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).unwrap().success());
}

/// The whole chain with a real stuck loop: a detector blocked on a FUSE mount nobody
/// serves, the fake watchdog device no longer fed, the intent written before the "reset"
/// (SIGKILL), and the next boot's verdict naming the loop.
#[test]
fn serial_a_loop_stuck_on_a_dead_mount_leaves_a_watchdog_intent_the_next_boot_reads() {
    use super::support::hangfs::HangFs;
    use super::support::is_root;
    if !require(
        is_root() && Path::new("/dev/fuse").exists(),
        "root and /dev/fuse",
    ) {
        return;
    }
    let hang_dir = tempfile::tempdir().unwrap();
    let hung = HangFs::mount(hang_dir.path()).unwrap();
    let dev_dir = tempfile::tempdir().unwrap();
    let dev = dev_dir.path().join("watchdog");
    fs::write(&dev, b"").unwrap();
    let root = tempfile::tempdir().unwrap();
    set_boot_id(root.path(), PREV);
    // What the memory detector reads before it reaches the watched cgroup.
    for f in ["proc/meminfo", "proc/pressure/memory"] {
        if let Ok(t) = fs::read_to_string(Path::new("/").join(f)) {
            put(root.path(), f, &t);
        }
    }
    let base = format!(
        "host_root = \"{}\"\n[watchdog]\nowner = \"nodemedic\"\ndevice = \"{}\"\ntimeout = \"3s\"\n\
         [health]\nstuck_after = \"5s\"\n[kernel]\nenabled = false\n[mounts]\nenabled = false\n\
         [runtime]\nenabled = false\n",
        root.path().display(),
        dev.display()
    );
    // The memory detector reads <host root>/<watched_cgroup>/memory.pressure: on the hung
    // mount, through a link in the fixture root.
    std::os::unix::fs::symlink(hung.path(), root.path().join("hung")).unwrap();
    let mut d = Daemon::start(
        &format!("{base}[memory]\nwatched_cgroup = \"/hung\"\n"),
        &[],
    );
    let intent = poll(Duration::from_secs(30), || {
        let t = fs::read_to_string(d.state_dir().join("reboot-intent.json")).ok()?;
        serde_json::from_str::<serde_json::Value>(&t).ok()
    })
    .unwrap_or_else(|| panic!("no intent written; log:\n{}", d.log.join("\n")));
    assert_eq!(intent["kind"], "watchdog_stop");
    assert_eq!(intent["boot_id"], PREV);
    assert!(
        intent["reason"]
            .as_str()
            .unwrap()
            .contains("detector:memory"),
        "{intent}"
    );
    // The board resets: no clean shutdown, no marker.
    d.signal(Signal::SIGKILL);
    let _ = d.wait_exit(Duration::from_secs(5));
    drop(hung);
    set_boot_id(root.path(), NOW);
    let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap());
    let mut d = Daemon::start_in(dir, &format!("{base}[memory]\nenabled = false\n"), &[]);
    let pb = d.status()["info"]["previous_boot"].clone();
    assert_eq!(pb["cause"], "watchdog_after_hang", "{pb}");
    assert!(
        pb["why"].as_str().unwrap().contains("detector:memory"),
        "{pb}"
    );
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).unwrap().success());
}
