//! The loop with recording fakes: every decision is carried out (or not) and recorded.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::actuators::{Actuators, FixedPodMemory, RecordingRemedy};
use super::cluster::ClusterLink;
use super::metrics::PolicyMetrics;
use super::policy_loop::*;
use super::rebooter::Rebooter;
use crate::audit::{AuditEntry, AuditLog, AuditOutcome};
use crate::config::{Config, RunMode};
use crate::edge::Clock;
use crate::edge::FakeClock;
use crate::hub::{Change, Hub};
use crate::kube::evict_besteffort::EvictResult;
use crate::kube::lease::LockWant;
use crate::metrics::CoreMetrics;
use crate::model::PodUsage;
use crate::model::{Condition, ConditionKind, Remedy};
use crate::remedy::rebooter::RecordingRebooter;
use crate::remedy::services::{RecordingServices, ServiceCall};
use crate::state::StateStore;
use prometheus_client::registry::Registry;

pub(crate) const T0: u64 = 1_790_000_000;
pub(crate) const MIN: Duration = Duration::from_secs(60);

pub(crate) struct Bed {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) clock: Arc<FakeClock>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) services: RecordingServices,
    pub(crate) rebooter: Arc<AuditCheckingRebooter>,
    pub(crate) remedy: RecordingRemedy,
    pub(crate) cluster: Arc<ClusterLink>,
    pub(crate) registry: Registry,
    pub(crate) lp: PolicyLoop,
}

/// A rebooter that, when called, checks the reboot's audit record is already on disk.
#[derive(Default)]
pub(crate) struct AuditCheckingRebooter {
    dir: Mutex<Option<PathBuf>>,
    pub(crate) inner: RecordingRebooter,
    audit_had_record: Mutex<Vec<bool>>,
}

impl Rebooter for AuditCheckingRebooter {
    fn start(&self, reason: &str) -> Result<(), crate::remedy::error::ActionError> {
        let dir = self.dir.lock().unwrap().clone().unwrap();
        let (entries, _) = crate::audit::read_tail(&dir, 100);
        let on_disk = entries
            .iter()
            .any(|e| e.action == "reboot" && e.outcome == AuditOutcome::Done);
        let state: crate::state::PersistedState =
            serde_json::from_slice(&std::fs::read(dir.join(crate::state::STATE_FILE)).unwrap())
                .unwrap();
        self.audit_had_record
            .lock()
            .unwrap()
            .push(on_disk && state.reboots.len() == 1);
        self.inner.start(reason)
    }
    fn ended_without_reboot(&self) -> Option<String> {
        self.inner.ended_without_reboot()
    }
}

pub fn config(mode: RunMode, f: impl FnOnce(&mut Config)) -> Config {
    let mut c = Config {
        mode,
        ..Config::default()
    };
    // Tests start right after "boot": no grace unless a test wants it.
    c.policy.boot_grace = crate::config::ConfigDuration::secs(0);
    f(&mut c);
    c
}

pub(crate) fn bed_in(
    dir: tempfile::TempDir,
    cfg: &Config,
    boot: &str,
    clock: Arc<FakeClock>,
) -> Bed {
    let mut registry = Registry::default();
    let hub = Arc::new(Hub::new(CoreMetrics::register(&mut registry), None));
    let (store, _) = StateStore::load(dir.path(), clock.unix_secs()).unwrap();
    let min_sane = store.data.last_seen_unix;
    let store = Arc::new(Mutex::new(store));
    let audit = AuditLog::open(dir.path(), 1000).unwrap();
    let services = RecordingServices::new(true);
    let rebooter = Arc::new(AuditCheckingRebooter::default());
    *rebooter.dir.lock().unwrap() = Some(dir.path().to_path_buf());
    let remedy = RecordingRemedy::default();
    let cluster = ClusterLink::new(true);
    // The Kubernetes task has made a pass and found the API away, unless a test says
    // otherwise (before any pass a reboot waits for the lease: see lease_tests).
    cluster.update_readings(|r| r.api_up = Some(false));
    let lcfg = LoopConfig {
        policy: crate::policy::policy_config(cfg),
        remedy: cfg.remedy.clone(),
        pause_file: dir.path().join("pause"),
        k3s_unit: Some("k3s.service".into()),
        boot_id: boot.into(),
        min_sane_unix: min_sane,
        state_dir: dir.path().to_path_buf(),
        post_events: true,
        publish_conditions: true,
        evict_min_bytes: 32 << 20,
        detector_events: Default::default(),
        reboot_lease: cfg.kubernetes.reboot_lease,
    };
    let act = Actuators {
        services: Arc::new(services.clone()),
        rebooter: rebooter.clone(),
        mounts: Some(Arc::new(remedy.clone())),
        sandboxes: Some(Arc::new(remedy.clone())),
        pod_memory: Some(Arc::new(FixedPodMemory(Ok(vec![
            PodUsage {
                uid: "uid-scraper".into(),
                working_set: 300 << 20,
            },
            PodUsage {
                uid: "uid-cron".into(),
                working_set: 40 << 20,
            },
        ])))),
        disk: Some(Arc::new(remedy.clone())),
        cluster: cluster.clone(),
    };
    let metrics = PolicyMetrics::register(&mut registry);
    let lp = PolicyLoop::new(lcfg, act, hub.clone(), store, audit, metrics, clock.clone());
    Bed {
        dir,
        clock,
        hub,
        services,
        rebooter,
        remedy,
        cluster,
        registry,
        lp,
    }
}

pub(crate) fn bed(cfg: &Config) -> Bed {
    let clock = Arc::new(FakeClock::new(T0, Duration::from_secs(3600)));
    bed_in(tempfile::tempdir().unwrap(), cfg, "boot-a", clock)
}

impl Bed {
    pub(crate) fn hold(&self, kind: ConditionKind, subject: &str) {
        self.hub.publish(
            "test",
            vec![Condition::new(kind, subject, "Seen", "seen by the test")],
            self.clock.unix_secs(),
        );
    }
    pub(crate) fn clear(&self) {
        self.hub.publish("test", vec![], self.clock.unix_secs());
    }
    pub(crate) fn tick(&mut self) -> Vec<Carried> {
        self.lp.tick(&|| {})
    }
    /// Ticks every minute for `mins` minutes, collecting what was carried out.
    pub(crate) fn run_for(&mut self, mins: u64) -> Vec<Carried> {
        let mut all = self.tick();
        for _ in 0..mins {
            self.clock.advance(MIN);
            all.extend(self.tick());
        }
        all
    }
    pub fn audit(&self) -> Vec<AuditEntry> {
        crate::audit::read_tail(self.dir.path(), 1000).0
    }
    pub fn metrics(&self) -> String {
        crate::metrics::encode(&self.registry)
    }
}

fn actions(c: &[Carried]) -> Vec<(Remedy, AuditOutcome)> {
    c.iter().map(|c| (c.decision.action, c.outcome)).collect()
}

#[test]
fn observe_mode_records_the_whole_ladder_as_suppressed_and_touches_nothing() {
    let mut b = bed(&config(RunMode::Observe, |_| {}));
    b.hold(ConditionKind::KernelRcuStall, "");
    let done = b.run_for(40);
    assert_eq!(
        actions(&done),
        vec![
            (Remedy::Cordon, AuditOutcome::Suppressed),
            (Remedy::RestartK3s, AuditOutcome::Suppressed),
            (Remedy::Reboot, AuditOutcome::Suppressed),
        ]
    );
    assert!(b.services.calls().is_empty());
    assert!(b.rebooter.inner.calls().is_empty());
    assert!(
        b.cluster.take().cordon.is_none(),
        "no cordon wish in observe mode"
    );
    let audit = b.audit();
    assert_eq!(
        audit
            .iter()
            .filter(|e| e.outcome == AuditOutcome::Suppressed)
            .count(),
        3
    );
    let m = b.metrics();
    assert!(
        m.contains(
            "nodemedic_actions_suppressed_total{action=\"reboot\",reason=\"observe_mode\"} 1"
        ),
        "{m}"
    );
}

#[test]
fn act_mode_escalates_cordon_restart_reboot_and_persists_the_reboot_before_starting_it() {
    let mut b = bed(&config(RunMode::Act, |_| {}));
    b.hold(ConditionKind::KernelRcuStall, "");
    let done = b.run_for(31);
    assert_eq!(
        actions(&done),
        vec![
            (Remedy::Cordon, AuditOutcome::Done),
            (Remedy::RestartK3s, AuditOutcome::Done),
            (Remedy::Reboot, AuditOutcome::Done),
        ]
    );
    assert_eq!(
        b.services.calls(),
        vec![
            ServiceCall::ActiveState("k3s.service".into()),
            ServiceCall::Restart("k3s.service".into())
        ]
    );
    assert_eq!(b.rebooter.inner.calls().len(), 1);
    assert_eq!(
        *b.rebooter.audit_had_record.lock().unwrap(),
        vec![true],
        "audit and reboot record must be on disk before the reboot starts"
    );
    let w = b.cluster.take();
    assert!(matches!(w.cordon, Some(Some(_))), "cordon wished");
    let m = b.metrics();
    assert!(
        m.contains("nodemedic_reboots_total{reason=\"KernelRCUStall\"} 1"),
        "{m}"
    );
    assert!(m.contains("nodemedic_reboot_budget_remaining 2"), "{m}");
    // Once rebooting, nothing more is decided in this boot.
    b.clock.advance(MIN * 60);
    assert!(b.tick().is_empty());
}

#[test]
fn a_restart_across_a_reboot_keeps_the_budget_and_the_audit_and_verifies_the_node() {
    let cfg = config(RunMode::Act, |_| {});
    let mut b = bed(&cfg);
    b.hold(ConditionKind::KernelRcuStall, "");
    b.run_for(31);
    let before = b.audit().len();
    let Bed { dir, clock, .. } = b;
    // The simulated reboot: a new boot id, the monotonic clock restarts, the wall clock
    // goes on; same state directory.
    let clock2 = Arc::new(FakeClock::new(
        clock.unix_secs() + 120,
        Duration::from_secs(30),
    ));
    let mut b2 = bed_in(dir, &cfg, "boot-b", clock2);
    assert_eq!(b2.audit().len(), before, "the audit trail survived");
    b2.tick();
    assert!(
        b2.metrics().contains("nodemedic_reboot_budget_remaining 2"),
        "budget spent before the reboot is still spent"
    );
    assert!(
        b2.metrics()
            .contains("nodemedic_reboots_total{reason=\"KernelRCUStall\"} 1")
    );
    assert!(
        b2.cluster.take().check_pods.is_some(),
        "critical DaemonSets are asked for"
    );
    // After verify_after (10 min) the node is checked: k3s active, Ready, DaemonSets up.
    b2.cluster.update_readings(|r| {
        r.api_up = Some(true);
        r.node_ready = Some(true);
        r.critical_pods = Some(Ok(()));
    });
    b2.run_for(11);
    let v: Vec<_> = b2
        .audit()
        .into_iter()
        .filter(|e| e.action == "post_boot_verify")
        .collect();
    assert_eq!(v.len(), 1, "verified once");
    assert_eq!(v[0].outcome, AuditOutcome::Done, "{v:?}");
    assert!(
        b2.services
            .calls()
            .contains(&ServiceCall::ActiveState("k3s.service".into()))
    );
    let state = std::fs::read_to_string(b2.dir.path().join("state.json")).unwrap();
    assert!(state.contains("healthy"), "{state}");
    assert_eq!(
        b2.cluster.take().lock,
        Some(LockWant::Release),
        "lease released"
    );
}

#[test]
fn a_failed_post_boot_check_raises_needs_human_until_an_operator_resets_it() {
    let cfg = config(RunMode::Act, |_| {});
    let mut b = bed(&cfg);
    b.hold(ConditionKind::KernelRcuStall, "");
    b.run_for(31);
    let Bed { dir, clock, .. } = b;
    let clock2 = Arc::new(FakeClock::new(
        clock.unix_secs() + 120,
        Duration::from_secs(30),
    ));
    let mut b2 = bed_in(dir, &cfg, "boot-b", clock2);
    b2.services.set_active(false);
    b2.cluster.update_readings(|r| {
        r.api_up = Some(true);
        r.node_ready = Some(true);
        r.critical_pods = Some(Err(
            "longhorn-system/longhorn-csi-plugin-x is Pending".into()
        ));
    });
    b2.run_for(11);
    let v: Vec<_> = b2
        .audit()
        .into_iter()
        .filter(|e| e.action == "post_boot_verify")
        .collect();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].outcome, AuditOutcome::Failed);
    assert!(
        v[0].reason.contains("k3s.service is not active") && v[0].reason.contains("longhorn"),
        "{v:?}"
    );
    let held = b2.hub.conditions();
    assert!(
        held.iter()
            .any(|h| h.condition.kind == ConditionKind::NeedsHuman
                && h.condition.subject == "post-boot"),
        "{held:?}"
    );
    std::fs::write(b2.dir.path().join(RESET_REQUEST_FILE), "all\n").unwrap();
    b2.tick();
    assert!(
        !b2.hub
            .conditions()
            .iter()
            .any(|h| h.condition.kind == ConditionKind::NeedsHuman)
    );
    assert!(!b2.dir.path().join(RESET_REQUEST_FILE).exists(), "consumed");
    assert!(b2.audit().iter().any(|e| e.action == "reset"));
}

#[test]
fn the_pause_file_holds_every_action_and_releasing_it_lets_the_ladder_go_on() {
    let mut b = bed(&config(RunMode::Act, |_| {}));
    std::fs::write(b.dir.path().join("pause"), "").unwrap();
    b.hold(ConditionKind::KernelRcuStall, "");
    let done = b.run_for(5);
    assert_eq!(
        actions(&done),
        vec![(Remedy::Cordon, AuditOutcome::Suppressed)]
    );
    assert!(b.metrics().contains("nodemedic_paused 1"));
    std::fs::remove_file(b.dir.path().join("pause")).unwrap();
    let done = b.run_for(1);
    assert_eq!(actions(&done), vec![(Remedy::Cordon, AuditOutcome::Done)]);
    assert!(b.metrics().contains("nodemedic_paused 0"));
}

#[test]
fn the_node_pause_annotation_holds_actions_like_the_file() {
    let mut b = bed(&config(RunMode::Act, |_| {}));
    b.cluster.update_readings(|r| r.paused = true);
    b.hold(ConditionKind::MemoryPressure, "");
    assert_eq!(
        actions(&b.tick()),
        vec![(Remedy::Cordon, AuditOutcome::Suppressed)]
    );
}

#[test]
fn memory_pressure_cordons_and_its_clearing_removes_only_our_cordon() {
    let mut b = bed(&config(RunMode::Act, |_| {}));
    b.hold(ConditionKind::MemoryPressure, "");
    assert_eq!(
        actions(&b.tick()),
        vec![(Remedy::Cordon, AuditOutcome::Done)]
    );
    assert!(matches!(b.cluster.take().cordon, Some(Some(_))));
    b.clock.advance(MIN);
    b.clear();
    assert_eq!(
        actions(&b.tick()),
        vec![(Remedy::Uncordon, AuditOutcome::Done)]
    );
    // The wish is "remove our cordon": NodeSync removes only a cordon carrying our
    // ownership annotation (tested against the fake API server in tests/it/kube_api.rs).
    assert_eq!(b.cluster.take().cordon, Some(None));
    b.clock.advance(MIN);
    assert!(b.tick().is_empty(), "nothing further");
}

#[test]
fn the_eviction_step_is_off_by_default_and_only_audited() {
    let mut b = bed(&config(RunMode::Act, |_| {}));
    b.hold(ConditionKind::MemoryPressure, "");
    let done = b.run_for(3);
    assert_eq!(
        actions(&done),
        vec![
            (Remedy::Cordon, AuditOutcome::Done),
            (Remedy::EvictBestEffort, AuditOutcome::Suppressed)
        ]
    );
    assert_eq!(done[1].detail, "held back: disabled");
    assert!(b.cluster.take().evict.is_none(), "no eviction wish");
}

#[test]
fn memory_pressure_evicts_through_the_cluster_task_and_audits_which_pod_went() {
    let mut b = bed(&config(RunMode::Act, |c| {
        c.actions.evict_besteffort.enabled = true
    }));
    b.hold(ConditionKind::MemoryPressure, "");
    let done = b.run_for(1);
    assert_eq!(
        actions(&done),
        vec![(Remedy::Cordon, AuditOutcome::Done)],
        "not before 2 min"
    );
    b.cluster.take();
    b.clock.advance(MIN);
    let done = b.tick();
    assert_eq!(
        actions(&done),
        vec![(Remedy::EvictBestEffort, AuditOutcome::Done)]
    );
    assert!(
        done[0]
            .detail
            .contains("2 BestEffort pod cgroup(s) measured, largest working set 300.0 MiB"),
        "{}",
        done[0].detail
    );
    let wish = b.cluster.take().evict.expect("eviction wished");
    assert_eq!(wish.usage.len(), 2);
    assert_eq!(wish.min_bytes, 32 << 20);

    // Until its outcome is taken, the loop looks every tick (not at the ladder's pace).
    assert_eq!(b.lp.next_wait(TICK), TICK);

    // What the Kubernetes task reports back is audited on the next tick, with the pod.
    b.cluster.push_eviction(Ok(EvictResult::Evicted {
        pod: "apps/scraper".into(),
        working_set: 300 << 20,
        passed: vec![("apps/cache".into(), "PodDisruptionBudget: refused".into())],
    }));
    b.cluster
        .push_eviction(Err(crate::remedy::error::ActionError::unavailable(
            crate::remedy::error::Target::Cluster,
            "the Kubernetes API is unreachable (timeout); no pod evicted",
        )));
    assert_eq!(b.lp.next_wait(TICK), TICK, "pushed, not yet taken");
    b.clock.advance(MIN);
    b.tick();
    assert!(
        b.lp.next_wait(TICK) > TICK,
        "taken: the ladder's pace again"
    );
    let audit = b.audit();
    let ev: Vec<&AuditEntry> = audit
        .iter()
        .filter(|e| e.action == "evict_besteffort" && e.outcome != AuditOutcome::Started)
        .collect();
    assert_eq!(ev.len(), 3, "{ev:#?}");
    assert_eq!(
        (ev[1].outcome, ev[1].subject.as_str()),
        (AuditOutcome::Done, "apps/scraper")
    );
    assert!(
        ev[1].reason.contains("passed over: apps/cache"),
        "{}",
        ev[1].reason
    );
    assert_eq!(ev[2].outcome, AuditOutcome::Failed);
    assert!(ev[2].reason.contains("unreachable"), "{}", ev[2].reason);
    let m = b.metrics();
    assert!(
        m.contains("nodemedic_pod_evictions_total{result=\"evicted\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("nodemedic_pod_evictions_total{result=\"failed\"} 1"),
        "{m}"
    );
    let events = b.cluster.take().events;
    assert!(
        events
            .iter()
            .any(|e| e.reason == "NodeMedicEvictedBestEffortPod"),
        "{events:?}"
    );
    // The cap: one eviction step per episode, then the cooldown and max_per_day.
    assert!(b.cluster.take().evict.is_none());
}

#[test]
fn an_unreadable_pod_memory_is_a_failed_eviction_not_a_guess() {
    let mut b = bed(&config(RunMode::Act, |c| {
        c.actions.evict_besteffort.enabled = true;
        c.policy.ladders.memory_pressure =
            vec![crate::config::ladder::Step::parse("evict_besteffort@0s").unwrap()];
    }));
    b.lp.act.pod_memory = Some(Arc::new(FixedPodMemory(Err(
        "no BestEffort QoS memory cgroup found".into(),
    ))));
    b.hold(ConditionKind::MemoryPressure, "");
    let done = b.tick();
    assert_eq!(
        actions(&done),
        vec![(Remedy::EvictBestEffort, AuditOutcome::Failed)]
    );
    assert!(
        done[0].detail.contains("none is evicted"),
        "{}",
        done[0].detail
    );
    assert!(b.cluster.take().evict.is_none());
}

#[test]
fn a_hung_mount_is_lazily_unmounted_by_subject_when_the_action_is_on() {
    let mut b = bed(&config(RunMode::Act, |c| c.actions.unmount.enabled = true));
    b.hold(ConditionKind::NetworkMountHung, "/mnt/nas");
    let done = b.run_for(3);
    assert_eq!(
        actions(&done),
        vec![
            (Remedy::Cordon, AuditOutcome::Done),
            (Remedy::Unmount, AuditOutcome::Done)
        ]
    );
    assert_eq!(*b.remedy.calls.lock().unwrap(), vec!["detach /mnt/nas"]);
}

#[test]
fn an_action_is_recorded_as_started_before_it_runs_and_not_run_when_that_record_fails() {
    let mut b = bed(&config(RunMode::Act, |c| c.actions.unmount.enabled = true));
    b.hold(ConditionKind::NetworkMountHung, "/mnt/nas");
    assert_eq!(
        actions(&b.tick()),
        vec![(Remedy::Cordon, AuditOutcome::Done)]
    );
    let trail: Vec<_> = b
        .audit()
        .into_iter()
        .filter(|e| e.action == "cordon")
        .map(|e| e.outcome)
        .collect();
    assert_eq!(trail, vec![AuditOutcome::Started, AuditOutcome::Done]);

    // The trail cannot be written any more (here: its file replaced by a directory, as
    // good as a full or read-only card): the unmount that comes due is not carried out.
    let current = b.dir.path().join(crate::audit::CURRENT);
    std::fs::rename(&current, b.dir.path().join("audit.saved")).unwrap();
    std::fs::create_dir(&current).unwrap();
    b.clock.advance(3 * MIN);
    let done = b.tick();
    assert_eq!(
        actions(&done),
        vec![(Remedy::Unmount, AuditOutcome::Suppressed)]
    );
    assert!(
        done[0].detail.contains("could not be written first"),
        "{}",
        done[0].detail
    );
    assert!(
        b.remedy.calls.lock().unwrap().is_empty(),
        "nothing detached"
    );
    assert!(b.metrics().contains(
        "nodemedic_actions_suppressed_total{action=\"unmount\",reason=\"audit_unwritable\"} 1"
    ));
}

#[test]
fn dry_run_records_and_counts_without_calling_the_actuator() {
    let mut b = bed(&config(RunMode::Act, |c| {
        c.actions.remove_sandboxes.dry_run = true;
    }));
    b.hold(ConditionKind::SandboxNameReserved, "web-0_default_uid_1");
    assert_eq!(
        actions(&b.tick()),
        vec![(Remedy::RemoveSandboxes, AuditOutcome::DryRun)]
    );
    assert!(b.remedy.calls.lock().unwrap().is_empty());
    assert!(b.metrics().contains(
        "nodemedic_remediation_actions_total{action=\"remove_sandboxes\",result=\"dry_run\"} 1"
    ));
}

#[test]
fn a_reboot_goes_ahead_without_the_lease_when_the_api_is_unreachable() {
    let mut b = bed(&config(RunMode::Act, |c| {
        c.policy.ladders.kernel_rcu_stall = vec!["reboot@0s".parse_step()];
    }));
    b.cluster.update_readings(|r| r.api_up = Some(false));
    b.hold(ConditionKind::KernelRcuStall, "");
    let done = b.tick();
    assert_eq!(actions(&done), vec![(Remedy::Reboot, AuditOutcome::Done)]);
    assert!(done[0].detail.contains("without the cluster lease"));
    assert_eq!(b.rebooter.inner.calls().len(), 1);
}

#[test]
fn condition_changes_become_audit_entries_and_node_events() {
    let mut b = bed(&config(RunMode::Observe, |_| {}));
    b.hold(ConditionKind::KernelHungTasks, "");
    let raised = Change::Raised(b.hub.conditions()[0].clone());
    b.lp.on_change(&raised);
    let ev = b.cluster.take().events;
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].reason, "KernelHungTasks");
    assert!(
        b.audit()
            .iter()
            .any(|e| e.action == "condition" && e.reason.starts_with("raised"))
    );
    // Node conditions follow the hub.
    b.tick();
    let conds = b.cluster.take().conditions.expect("conditions wished");
    assert_eq!(conds.len(), 1);
    assert_eq!(conds[0].type_suffix, "KernelHungTasks");
}

trait ParseStep {
    fn parse_step(&self) -> crate::config::ladder::Step;
}

impl ParseStep for &str {
    fn parse_step(&self) -> crate::config::ladder::Step {
        crate::config::ladder::Step::parse(self).unwrap()
    }
}

#[test]
fn a_k3s_an_operator_stopped_is_not_restarted() {
    let mut b = bed(&config(RunMode::Act, |c| {
        c.policy.ladders.container_runtime_down = vec!["restart_k3s@0s".parse_step()];
    }));
    b.services.set_active(false);
    b.hold(ConditionKind::ContainerRuntimeDown, "");
    let done = b.tick();
    assert_eq!(
        actions(&done),
        vec![(Remedy::RestartK3s, AuditOutcome::Failed)]
    );
    assert!(done[0].detail.contains("not active"), "{}", done[0].detail);
    assert!(
        !b.services
            .calls()
            .contains(&ServiceCall::Restart("k3s.service".into()))
    );
}

#[test]
fn a_k3s_hung_in_activating_is_restarted_and_only_inactive_or_failed_is_refused() {
    use crate::remedy::services::UnitState;
    for (state, restarted) in [
        (UnitState::Activating, true),
        (UnitState::Deactivating, true),
        (UnitState::Active, true),
        (UnitState::Inactive, false),
        (UnitState::Failed, false),
    ] {
        let mut b = bed(&config(RunMode::Act, |c| {
            c.policy.ladders.container_runtime_down = vec!["restart_k3s@0s".parse_step()];
        }));
        b.services.set_state(state.clone());
        b.hold(ConditionKind::ContainerRuntimeDown, "");
        let done = b.tick();
        let want = if restarted {
            AuditOutcome::Done
        } else {
            AuditOutcome::Failed
        };
        assert_eq!(
            actions(&done),
            vec![(Remedy::RestartK3s, want)],
            "{state:?}: {done:?}"
        );
        assert_eq!(
            b.services
                .calls()
                .contains(&ServiceCall::Restart("k3s.service".into())),
            restarted,
            "{state:?}"
        );
    }
}

#[test]
fn an_unavailable_actuator_is_retried_after_the_cooldown_and_a_refusal_moves_on() {
    use crate::remedy::error::{ActionError, Target};
    let mut b = bed(&config(RunMode::Act, |c| {
        c.policy.ladders.sandbox_name_reserved = vec![
            "remove_sandboxes@0s".parse_step(),
            "restart_k3s@1m".parse_step(),
        ];
    }));
    let name = "web-0_default_uid_1";
    *b.remedy.fail.lock().unwrap() = Some(ActionError::unavailable(
        Target::Sandbox(name.into()),
        "cannot reach the container runtime",
    ));
    b.hold(ConditionKind::SandboxNameReserved, name);
    let first = b.tick();
    assert_eq!(
        actions(&first),
        vec![(Remedy::RemoveSandboxes, AuditOutcome::Failed)]
    );
    assert!(
        first[0].detail.contains("tried again"),
        "{}",
        first[0].detail
    );
    // Within the cooldown the step waits (audited once) instead of escalating to restart.
    let mid = b.run_for(9);
    assert_eq!(
        actions(&mid),
        vec![(Remedy::RemoveSandboxes, AuditOutcome::Suppressed)],
        "{mid:?}"
    );
    *b.remedy.fail.lock().unwrap() = None;
    let later = b.run_for(1);
    assert_eq!(
        actions(&later),
        vec![(Remedy::RemoveSandboxes, AuditOutcome::Done)]
    );
    assert_eq!(b.remedy.calls.lock().unwrap().len(), 2);

    // A refusal is final for this step: the ladder moves on.
    let mut b = bed(&config(RunMode::Act, |c| {
        c.policy.ladders.sandbox_name_reserved = vec![
            "remove_sandboxes@0s".parse_step(),
            "restart_k3s@1m".parse_step(),
        ];
    }));
    *b.remedy.fail.lock().unwrap() = Some(ActionError::refused(
        Target::Sandbox(name.into()),
        "more NotReady sandboxes than the cap",
    ));
    b.hold(ConditionKind::SandboxNameReserved, name);
    let done = b.run_for(2);
    assert_eq!(
        actions(&done),
        vec![
            (Remedy::RemoveSandboxes, AuditOutcome::Failed),
            (Remedy::RestartK3s, AuditOutcome::Done)
        ]
    );
    b.services.fail_restart_with(ActionError::unavailable(
        Target::Unit("k3s.service".into()),
        "Failed to connect to bus",
    ));
}

#[test]
fn the_node_limits_are_warnings_that_cordon_only_for_pids_and_conntrack() {
    let mut b = bed(&config(RunMode::Act, |_| {}));
    b.hold(ConditionKind::ZombieProcesses, "");
    assert!(
        b.run_for(40).is_empty(),
        "a warning without a ladder is only reported"
    );
    b.hold(ConditionKind::ConntrackTableFull, "");
    assert_eq!(
        actions(&b.tick()),
        vec![(Remedy::Cordon, AuditOutcome::Done)]
    );
    b.clock.advance(MIN);
    b.clear();
    assert_eq!(
        actions(&b.tick()),
        vec![(Remedy::Uncordon, AuditOutcome::Done)]
    );
}

#[test]
fn disk_reclaim_is_off_then_dry_run_first_then_runs_through_its_actuator() {
    let ladder = |c: &mut Config| {
        c.policy.ladders.disk_space_low =
            vec![crate::config::ladder::Step::parse("reclaim_disk@0s").unwrap()]
    };
    let mut b = bed(&config(RunMode::Act, ladder));
    b.hold(ConditionKind::DiskSpaceLow, "/var/lib/rancher/k3s");
    let done = b.tick();
    assert_eq!(
        actions(&done),
        vec![(Remedy::ReclaimDisk, AuditOutcome::Suppressed)]
    );
    assert_eq!(done[0].detail, "held back: disabled");

    let mut b = bed(&config(RunMode::Act, |c| {
        ladder(c);
        c.actions.reclaim_disk.enabled = true;
    }));
    b.hold(ConditionKind::DiskSpaceLow, "/var/lib/rancher/k3s");
    assert_eq!(
        actions(&b.tick()),
        vec![(Remedy::ReclaimDisk, AuditOutcome::DryRun)],
        "enabled alone is a dry run"
    );
    assert!(b.remedy.calls.lock().unwrap().is_empty());

    let mut b = bed(&config(RunMode::Act, |c| {
        ladder(c);
        c.actions.reclaim_disk.enabled = true;
        c.actions.reclaim_disk.dry_run = false;
    }));
    b.hold(ConditionKind::DiskSpaceLow, "/var/lib/rancher/k3s");
    let done = b.tick();
    assert_eq!(
        actions(&done),
        vec![(Remedy::ReclaimDisk, AuditOutcome::Done)]
    );
    assert_eq!(
        *b.remedy.calls.lock().unwrap(),
        vec!["reclaim /var/lib/rancher/k3s".to_string()]
    );
    let audit = b.audit();
    assert!(
        audit
            .iter()
            .any(|e| e.action == "reclaim_disk" && e.outcome == AuditOutcome::Done),
        "{audit:?}"
    );
}

#[test]
fn disk_reclaim_waits_out_the_boot_grace_like_every_disruptive_action() {
    let mut b = bed(&config(RunMode::Act, |c| {
        c.policy.ladders.disk_space_low =
            vec![crate::config::ladder::Step::parse("reclaim_disk@0s").unwrap()];
        c.actions.reclaim_disk.enabled = true;
        c.actions.reclaim_disk.dry_run = false;
        c.policy.boot_grace = crate::config::ConfigDuration::secs(7200);
    }));
    b.hold(ConditionKind::DiskSpaceLow, "/");
    let done = b.tick();
    assert_eq!(
        actions(&done),
        vec![(Remedy::ReclaimDisk, AuditOutcome::Suppressed)]
    );
    assert!(
        b.remedy.calls.lock().unwrap().is_empty(),
        "images of pods not yet started look unused after a boot"
    );
}

const TICK: Duration = Duration::from_secs(2);
const IDLE: Duration = crate::remedy::IDLE_TICK;

#[test]
fn a_held_warning_nothing_acts_on_leaves_the_loop_idle() {
    let mut b = bed(&config(RunMode::Act, |_| {}));
    b.tick();
    assert_eq!(b.lp.next_wait(TICK), IDLE);
    b.hold(ConditionKind::DiskSpaceLow, "/");
    b.tick();
    assert_eq!(
        b.lp.next_wait(TICK),
        IDLE,
        "a disk at 85% for weeks must not tick the loop every 2 s"
    );
}

#[test]
fn a_held_problem_wakes_the_loop_when_its_next_step_is_due_not_every_tick() {
    let mut b = bed(&config(RunMode::Act, |c| {
        c.policy.ladders.kernel_hung_tasks = ["cordon@0s", "restart_k3s@1m"]
            .map(|s| crate::config::ladder::Step::parse(s).unwrap())
            .to_vec();
    }));
    b.hold(ConditionKind::KernelHungTasks, "");
    assert_eq!(
        actions(&b.tick()),
        vec![(Remedy::Cordon, AuditOutcome::Done)]
    );
    // restart_k3s is due in 60 s: the loop waits the longest it may.
    assert_eq!(b.lp.next_wait(TICK), IDLE);
    b.clock.advance(Duration::from_secs(50));
    assert_eq!(b.lp.next_wait(TICK), Duration::from_secs(10));
    b.clock.advance(Duration::from_secs(9));
    assert_eq!(b.lp.next_wait(TICK), TICK, "never shorter than the tick");
    assert!(b.tick().is_empty(), "not due yet");
    b.clock.advance(Duration::from_secs(1));
    assert_eq!(
        actions(&b.tick()),
        vec![(Remedy::RestartK3s, AuditOutcome::Done)]
    );
    // Only NeedsHuman is left, `needs_human_after` (30 min) after the last step.
    assert_eq!(b.lp.next_wait(TICK), IDLE);
    b.clock.advance(Duration::from_secs(1800));
    let done = b.tick();
    assert!(
        done.iter().any(|c| c.decision.action == Remedy::NeedsHuman),
        "{:?}",
        actions(&done)
    );
    assert_eq!(
        b.lp.next_wait(TICK),
        IDLE,
        "a problem a human must look at owes nothing more: the loop is idle"
    );
}

#[test]
fn a_step_held_by_something_that_lifts_by_itself_is_looked_at_every_tick() {
    let mut b = bed(&config(RunMode::Act, |_| {}));
    std::fs::write(b.dir.path().join("pause"), "").unwrap();
    b.hold(ConditionKind::KernelHungTasks, "");
    assert_eq!(
        actions(&b.tick()),
        vec![(Remedy::Cordon, AuditOutcome::Suppressed)]
    );
    assert_eq!(b.lp.next_wait(TICK), TICK);
}

#[test]
fn in_observe_mode_a_held_problem_wakes_the_loop_only_for_its_steps() {
    let mut b = bed(&config(RunMode::Observe, |_| {}));
    b.hold(ConditionKind::KernelHungTasks, "");
    b.tick();
    assert_eq!(b.lp.next_wait(TICK), IDLE);
    // The default ladder's last step (reboot@30m) recorded: nothing is owed any more.
    b.clock.advance(Duration::from_secs(1800));
    b.tick();
    b.tick();
    assert!(
        b.audit().iter().any(|e| e.action == "reboot"),
        "{:?}",
        b.audit()
    );
    assert_eq!(b.lp.next_wait(TICK), IDLE);
}
