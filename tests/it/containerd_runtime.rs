//! The runtime detector, the conflict actuator and preflight's clock check and caps against
//! a real containerd 1.6 with CRI (`support/containerd_bed.rs`): a name-reservation conflict
//! after a real power cut, found from containerd's own log and confirmed over CRI, then
//! removed exactly; a SIGSTOPped containerd that must cost the detector one deadline per
//! pass and nothing more; a board clock behind the daemon's last-seen time.
//!
//! Needs root, containerd, runc, the CNI plugins, gcc and busybox-static (SKIP on a dev box,
//! failure under CI), except the tests that need no containerd.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_cri::v1::PodSandboxState;
use nodemedic::config::RuntimeSection;
use nodemedic::detect::{Detector, Sample};
use nodemedic::edge::SystemClock;
use nodemedic::model::ConditionKind;
use nodemedic::preflight::clock_sanity::{ClockVerdict, FakeTimeSync};
use nodemedic::preflight::gate::Switch;
use nodemedic::preflight::run::{ItemResult, Outcome, run_with};
use nodemedic::runtime::cri::GrpcCri;
use nodemedic::runtime::detector::RuntimeDetector;
use nodemedic::runtime::metrics::RuntimeMetrics;
use nodemedic::runtime::resolve::{MAX_PER_CONFLICT, resolve_conflicts};
use prometheus_client::registry::Registry;

use crate::support::containerd_bed::{ContainerdBed, ReservedName, prerequisites};
use crate::support::{BIN, is_root, require};

/// Under a fully loaded 2-core machine a healthy ListPodSandbox still answers well within this.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a test waits for something containerd does asynchronously (log, restart).
const SETTLE: Duration = Duration::from_secs(60);

fn detector(
    bed: &ContainerdBed,
    call_timeout: Duration,
    down_after: u32,
) -> (RuntimeDetector, Registry) {
    let mut reg = Registry::default();
    let metrics = RuntimeMetrics::register(&mut reg);
    let cfg = RuntimeSection {
        socket: bed.socket.clone(),
        log_file: bed.log.clone(),
        call_timeout: nodemedic::config::ConfigDuration(call_timeout),
        down_after,
        ..Default::default()
    };
    (
        RuntimeDetector::real(cfg, Arc::new(SystemClock), Some(metrics), None),
        reg,
    )
}

fn kinds(s: &Sample) -> Vec<(ConditionKind, String)> {
    s.conditions
        .iter()
        .map(|c| (c.kind, c.subject.clone()))
        .collect()
}

/// Samples until `done` holds for a pass, failing after `timeout`.
fn sample_until(
    d: &mut RuntimeDetector,
    timeout: Duration,
    what: &str,
    done: impl Fn(&Sample) -> bool,
) -> Sample {
    let end = Instant::now() + timeout;
    loop {
        let s = d
            .sample()
            .expect("the runtime detector reports failures as conditions");
        if done(&s) {
            return s;
        }
        assert!(
            Instant::now() < end,
            "{what} not seen within {timeout:?}; last pass: {:?} {}",
            kinds(&s),
            s.info
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_reserved_name_after_a_power_cut_is_detected_and_only_its_dead_holder_is_removed() {
    if !prerequisites() {
        return;
    }
    let mut bed = ContainerdBed::new();
    let ReservedName {
        old,
        other,
        live,
        old_ip,
    } = bed.reserved_name_after_power_cut();
    let name = "web-0_default_uid-e_0";

    let (mut det, reg) = detector(&bed, CALL_TIMEOUT, 3);
    let first = det.sample().unwrap();
    assert!(
        first.conditions.is_empty(),
        "nothing conflicts before the kubelet retries: {:?}",
        kinds(&first)
    );
    assert_eq!(first.info["sandboxes"]["ready"], 1);
    assert_eq!(first.info["sandboxes"]["notready"], 2);
    let text = nodemedic::metrics::encode(&reg);
    assert!(text.contains("nodemedic_runtime_up 1"), "{text}");
    assert!(
        text.contains("nodemedic_sandboxes{state=\"notready\"} 2"),
        "{text}"
    );

    // The kubelet's retry fails; containerd logs it, the detector confirms it over CRI.
    let err = bed.run_pod("web-0", "default", "uid-e", 0).unwrap_err();
    assert!(
        err.message().contains("failed to reserve sandbox name"),
        "{err:?}"
    );
    let s = sample_until(&mut det, SETTLE, "SandboxNameReserved", |s| {
        !s.conditions.is_empty()
    });
    assert_eq!(
        kinds(&s),
        vec![(ConditionKind::SandboxNameReserved, name.to_string())]
    );
    assert!(
        s.conditions[0].message.contains(&old[..12]),
        "{}",
        s.conditions[0].message
    );
    assert_eq!(s.info["conflicts"][0]["holder"], old.as_str());
    assert_eq!(s.info["conflicts"][0]["source"], "log");

    // Observe mode: the detector only reports; passes later everything is still there.
    for _ in 0..3 {
        assert_eq!(kinds(&det.sample().unwrap()).len(), 1);
    }
    let ids: BTreeSet<String> = bed.list_pods().into_iter().map(|p| p.id).collect();
    assert_eq!(
        ids,
        BTreeSet::from([old.clone(), other.clone(), live.clone()])
    );

    // Act mode: the executor's call removes exactly the dead holder of that name.
    let mut cri = GrpcCri::connect(&bed.socket, SETTLE).unwrap();
    let removed = resolve_conflicts(&mut cri, name, MAX_PER_CONFLICT).unwrap();
    assert_eq!(
        removed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        vec![old.as_str()]
    );
    assert!(
        !bed.reserved_ips().contains_key(&old_ip),
        "the stop released its IP"
    );
    let ids: BTreeSet<String> = bed.list_pods().into_iter().map(|p| p.id).collect();
    assert_eq!(
        ids,
        BTreeSet::from([other.clone(), live.clone()]),
        "web-1 is dead too but holds no wanted name"
    );
    let after = det.sample().unwrap();
    assert!(after.conditions.is_empty(), "{:?}", kinds(&after));

    // The kubelet's next retry succeeds; a second call finds nothing to do.
    let new = bed.run_pod("web-0", "default", "uid-e", 0).unwrap();
    assert_eq!(
        bed.pod_state(&new).unwrap().0,
        PodSandboxState::SandboxReady
    );
    assert_eq!(
        resolve_conflicts(&mut cri, name, MAX_PER_CONFLICT),
        Ok(vec![])
    );
    assert_eq!(
        bed.pod_state(&live).unwrap().0,
        PodSandboxState::SandboxReady
    );
}

/// SIGCONTs the process when dropped, so a failing assertion never leaves it stopped.
struct Stopped(nix::unistd::Pid);

impl Stopped {
    /// Returns once every thread of `pid` is stopped: kill(2) only queues the signal, and
    /// a thread busy on the other core may still answer a request sent right after it.
    fn new(pid: u32) -> Stopped {
        let p = nix::unistd::Pid::from_raw(pid as i32);
        nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGSTOP).unwrap();
        let stopped = Stopped(p);
        let all_stopped = || {
            std::fs::read_dir(format!("/proc/{pid}/task"))
                .unwrap()
                .flatten()
                .all(|t| {
                    let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
                    // The state follows the command name's closing parenthesis.
                    stat.rsplit_once(')')
                        .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
                })
        };
        let end = Instant::now() + Duration::from_secs(10);
        while !all_stopped() {
            assert!(Instant::now() < end, "containerd {pid} did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
        stopped
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}

#[test]
fn a_stopped_containerd_is_down_within_the_deadline_and_up_again_after_sigcont() {
    if !prerequisites() {
        return;
    }
    let mut bed = ContainerdBed::new();
    bed.run_pod("web-0", "default", "uid-s", 0).unwrap();
    let deadline = Duration::from_secs(1);
    let (mut det, reg) = detector(&bed, deadline, 2);
    sample_until(&mut det, SETTLE, "runtime up", |s| {
        s.info["runtime"]["state"] == "up"
    });

    let stopped = Stopped::new(bed.containerd_pid().unwrap());
    let mut passes = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let s = det.sample().unwrap();
        passes.push((t.elapsed(), kinds(&s), s.info["runtime"].clone()));
    }
    eprintln!("passes against the stopped containerd: {passes:#?}");
    for (took, _, state) in &passes {
        assert_eq!(state["state"], "down", "{state}");
        // Connect and list each have the deadline; far more would mean the thread hangs.
        assert!(
            *took < 2 * deadline + Duration::from_secs(3),
            "a pass took {took:?}"
        );
    }
    assert!(passes[0].1.is_empty(), "one failure is not down yet");
    assert_eq!(
        passes[1].1,
        vec![(ConditionKind::ContainerRuntimeDown, String::new())]
    );
    assert!(nodemedic::metrics::encode(&reg).contains("nodemedic_runtime_up 0"));
    let s = det.sample().unwrap();
    assert_eq!(s.conditions[0].reason, "CriTimeout", "{:?}", s.conditions);

    drop(stopped);
    sample_until(&mut det, SETTLE, "recovery after SIGCONT", |s| {
        s.conditions.is_empty()
    });
    assert!(nodemedic::metrics::encode(&reg).contains("nodemedic_runtime_up 1"));

    // Killed hard, containerd leaves its socket file behind: refused, so down again.
    bed.kill_containerd();
    assert!(bed.socket.exists());
    let s = sample_until(&mut det, SETTLE, "down after SIGKILL", |s| {
        !s.conditions.is_empty()
    });
    assert_eq!(s.conditions[0].kind, ConditionKind::ContainerRuntimeDown);
    assert_eq!(s.conditions[0].reason, "CriUnreachable");
}

#[test]
fn a_machine_without_a_runtime_socket_never_raises_runtime_down() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = RuntimeSection {
        socket: dir.path().join("no-k3s-here.sock"),
        log_file: dir.path().join("no-containerd.log"),
        down_after: 1,
        ..Default::default()
    };
    let mut reg = Registry::default();
    let metrics = RuntimeMetrics::register(&mut reg);
    let mut det = RuntimeDetector::real(cfg, Arc::new(SystemClock), Some(metrics), None);
    for _ in 0..5 {
        let s = det.sample().unwrap();
        assert!(s.conditions.is_empty(), "{:?}", kinds(&s));
        assert_eq!(s.info["runtime"]["state"], "absent");
    }
    assert!(nodemedic::metrics::encode(&reg).contains("nodemedic_runtime_up 0"));
}

fn write_last_seen(state_dir: &Path, unix: u64) {
    std::fs::create_dir_all(state_dir).unwrap();
    std::fs::write(
        state_dir.join("state.json"),
        format!("{{\"schema\":1,\"last_seen_unix\":{unix}}}"),
    )
    .unwrap();
}

fn removed_sandboxes(s: &nodemedic::preflight::run::Summary) -> usize {
    s.report
        .items
        .iter()
        .filter(|i| {
            i.result == ItemResult::Done
                && matches!(
                    i.item.action,
                    nodemedic::preflight::plan::Action::RemoveSandbox { .. }
                )
        })
        .count()
}

#[test]
fn preflight_repairs_first_then_waits_for_a_clock_behind_last_seen_until_ntp_steps_it() {
    if !prerequisites() {
        return;
    }
    let mut bed = ContainerdBed::new();
    bed.run_pod("web-0", "default", "uid-c", 0).unwrap();
    bed.power_cut();
    let state = bed.dir.join("pf-state");
    let seen = 1_763_700_000;
    write_last_seen(&state, seen);
    let results = bed.dir.join("cni-results");
    std::fs::create_dir_all(&results).unwrap();
    let cfg = bed.preflight_config(&results, &state);

    // A Pi without RTC: the clock starts near the epoch; NTP steps it 3 s (fake) later.
    let time = FakeTimeSync::new(60).jump_at(Duration::from_secs(3), seen + 30);
    let s = run_with(&cfg, &time);
    assert_eq!(s.outcome, Outcome::Completed);
    assert_eq!(removed_sandboxes(&s), 1, "{}", s.plan_text);
    let c = s.report.clock.clone().unwrap();
    assert_eq!(c.verdict, ClockVerdict::CaughtUp, "{c:?}");
    assert_eq!(
        (c.behind_secs, c.waited_ms, c.wall_unix_at_end),
        (seen - 60, 3_000, seen + 30)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("preflight.json")).unwrap()).unwrap();
    assert_eq!(json["clock"]["verdict"], "caught_up");
    assert_eq!(json["clock"]["last_seen_unix"], seen);

    // A clock that never syncs: the wait ends at clock_wait and k3s may start.
    let cfg2 = nodemedic::preflight::run::PreflightConfig {
        clock_wait: Duration::from_secs(5),
        ..cfg.clone()
    };
    let never = FakeTimeSync::new(60);
    let s = run_with(&cfg2, &never);
    assert_eq!(s.outcome, Outcome::Completed);
    let c = s.report.clock.unwrap();
    assert_eq!((c.verdict, c.waited_ms), (ClockVerdict::GaveUp, 5_000));
    assert!(
        c.message.contains("letting k3s start anyway"),
        "{}",
        c.message
    );
    let t = nodemedic::preflight::totals::read(&state).unwrap().unwrap();
    assert_eq!(t.runs, 2);
    assert_eq!(t.sandboxes_removed["dead_after_reboot"], 1);
}

#[test]
fn a_preflight_over_its_record_cap_removes_no_record_until_the_cap_allows_them_all() {
    if !prerequisites() {
        return;
    }
    let mut bed = ContainerdBed::new();
    let pods: Vec<String> = (0..3)
        .map(|i| {
            bed.run_pod(&format!("web-{i}"), "default", &format!("uid-cap{i}"), 0)
                .unwrap()
        })
        .collect();
    bed.power_cut();
    let results = bed.dir.join("cni-results");
    std::fs::create_dir_all(&results).unwrap();
    let state = bed.dir.join("pf-state");
    let mut cfg = bed.preflight_config(&results, &state);
    cfg.records = Switch::allowed(2);
    let s = nodemedic::preflight::run::run(&cfg);
    assert_eq!(s.outcome, Outcome::Completed);
    assert_eq!(s.done, s.planned - s.withheld, "{}", s.plan_text);
    assert_eq!(removed_sandboxes(&s), 0);
    let d = &s.report.decisions[0];
    assert!(!d.allowed && d.planned == 3, "{d:?}");
    assert!(d.reason.contains("over the cap of 2"), "{}", d.reason);
    assert_eq!(s.report.reboot_cleanup_boot_id, None);

    cfg.records = Switch::allowed(3);
    let s = nodemedic::preflight::run::run(&cfg);
    assert_eq!(removed_sandboxes(&s), 3, "{}", s.plan_text);
    bed.start(true);
    let left: Vec<String> = bed.list_pods().into_iter().map(|p| p.id).collect();
    assert!(left.iter().all(|id| !pods.contains(id)), "{left:?}");
}

#[test]
fn the_preflight_command_reports_a_behind_clock_and_still_exits_0_within_its_budget() {
    if !require(is_root(), "root (preflight's private run dir under /run)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // The daemon saw a time an hour ahead of this clock.
    write_last_seen(&state, now + 3600);
    let p = |s: &str| dir.path().join(s).display().to_string();
    let config = format!(
        "mode = \"act\"\nstate_dir = \"{}\"\n[preflight]\nbudget = \"5s\"\nclock_wait = \"2s\"\ncontainerd_binary = \"{}\"\ncontainerd_config = \"{}\"\ncontainerd_root = \"{}\"\ncontainerd_state = \"{}\"\ncontainerd_socket = \"{}\"\ncni_results_dir = \"{}\"\ncni_networks_dir = \"{}\"\n",
        state.display(),
        p("no-containerd"),
        p("config.toml"),
        p("root"),
        p("run-state"),
        p("k3s.sock"),
        p("results"),
        p("networks"),
    );
    let cfg_path: PathBuf = dir.path().join("nodemedic.toml");
    std::fs::write(&cfg_path, config).unwrap();
    let t = Instant::now();
    let out = std::process::Command::new(BIN)
        .args(["preflight", "--config"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    let took = t.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("preflight.json")).unwrap()).unwrap();
    let verdict = json["clock"]["verdict"].as_str().unwrap().to_string();
    // This machine's own NTP state decides which: never synced here gives up after 2 s.
    match verdict.as_str() {
        "gave_up" => {
            assert!(
                json["clock"]["waited_ms"].as_u64().unwrap() >= 2_000,
                "{json}"
            );
            assert!(
                stderr.contains("earlier than the last time nodemedic saw"),
                "{stderr}"
            );
            assert!(stdout.contains("letting k3s start anyway"), "{stdout}");
        }
        "synced" => assert!(json["clock"]["synced_by"].is_string(), "{json}"),
        other => panic!("unexpected clock verdict {other}: {json}"),
    }
    assert!(
        took < Duration::from_secs(5) + Duration::from_secs(5),
        "took {took:?}"
    );
    assert_eq!(json["outcome"], "containerd_unavailable");
}
