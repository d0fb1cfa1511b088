//! The policy loop: one [`PolicyLoop::tick`] reads the hub's conditions, asks the pure
//! engine what to do, carries out each decision through the actuators and records it.
//!
//! Order within a decision, and why:
//! 1. suppressed / dry-run decisions are only recorded (audit, journal, metric, Event);
//! 2. an action that goes ahead is first recorded as `started` (fsynced); if that record
//!    cannot be written (a full or read-only state dir) the action does not run and is
//!    recorded as held back (`audit_unwritable`); otherwise it runs, then its outcome is
//!    recorded;
//! 3. a reboot is the exception: the audit record and the reboot record are fsynced
//!    *before* the reboot starts (the next boot needs them to cap reboots), and if either
//!    cannot be written the reboot does not happen.
//!
//! The engine's state is persisted in `state.json` whenever a tick changes it, so budget,
//! cooldowns and episodes survive restarts and the reboots the loop causes.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::audit::{AuditLog, AuditOutcome};
use crate::config::kubernetes::RebootLease;
use crate::edge::Clock;
use crate::hub::{Change, Hub};
use crate::kube::api::EventType;
use crate::kube::conditions::DesiredCondition;
use crate::kube::events::EventDraft;
use crate::kube::lease::LockWant;
use crate::liveness::{Heartbeat, Shutdown};
use crate::metrics::ActionResult;
use crate::model::{CounterKey, EpisodeKey, Remedy};
use crate::policy::boot::{self, BootNote};
use crate::policy::clock::{self, At, ClockJudgement};
use crate::policy::engine::{self, Decision, Inputs, PolicyConfig, PolicyState, Verdict};
use crate::state::{RebootRecord, StateStore};

use super::actuators::Actuators;
use super::cluster::EvictRequest;
use super::error::{ActionError, Target};
use super::metrics::{PolicyMetrics, WatchdogMetrics};
use super::record::{camel, entry};
use super::services::UnitState;
use crate::config::RemedySection;
use crate::model::mib;
use crate::watchdog::FeederHandle;

/// The policy waits this long at most for every detector's first pass.
pub(crate) const FIRST_PASS_WAIT: Duration = Duration::from_secs(60);
/// Written by `nodemedic reset` into the state directory; consumed by the next tick.
pub(crate) const RESET_REQUEST_FILE: &str = "reset-request";
/// The detector name under which the loop publishes `NeedsHuman`.
pub(crate) const POLICY_DETECTOR: &str = "policy";

pub(crate) struct LoopConfig {
    pub(crate) policy: PolicyConfig,
    pub(crate) remedy: RemedySection,
    pub(crate) pause_file: PathBuf,
    /// None: no k3s unit found (restart and the k3s check are then impossible).
    pub(crate) k3s_unit: Option<String>,
    pub(crate) boot_id: String,
    /// The wall clock is trusted once it reaches the last time a previous run saw.
    pub(crate) min_sane_unix: u64,
    pub(crate) state_dir: PathBuf,
    /// Events on the Node for detections and actions.
    pub(crate) post_events: bool,
    pub(crate) publish_conditions: bool,
    /// The eviction step leaves BestEffort pods under this working set alone.
    pub(crate) evict_min_bytes: u64,
    /// Events detectors ask for, posted (and audited) by the loop.
    pub(crate) detector_events: crate::model::EventOutbox,
    /// Whether a reboot needs the cluster reboot lease (`kubernetes.reboot_lease`).
    pub(crate) reboot_lease: RebootLease,
}

/// What a tick did with one decision (for tests and `/status`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Carried {
    pub(crate) decision: Decision,
    pub(crate) outcome: AuditOutcome,
    pub(crate) detail: String,
}

/// What the policy thread needs beside the loop itself.
pub(crate) struct LoopThread {
    /// Condition changes from the hub; they wake the loop at once.
    pub(crate) changes: mpsc::Receiver<Change>,
    pub(crate) heartbeat: Heartbeat,
    pub(crate) shutdown: Shutdown,
    /// Detectors started: decisions wait until each has published a first pass.
    pub(crate) detector_count: usize,
    /// The hardware watchdog's gauges, refreshed every tick, when nodemedic owns it.
    pub(crate) watchdog: Option<(WatchdogMetrics, FeederHandle)>,
}

pub(crate) struct PolicyLoop {
    pub(super) cfg: LoopConfig,
    pub(super) act: Actuators,
    pub(super) hub: Arc<Hub>,
    pub(super) store: Arc<Mutex<StateStore>>,
    pub(super) audit: AuditLog,
    pub(super) metrics: PolicyMetrics,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) rebooting: bool,
    /// CLOCK_MONOTONIC when the daemon started, if that was a restart within the boot it
    /// last ran in (`policy.restart_grace` runs from there).
    pub(super) restarted_at: Option<Duration>,
    /// The episode the reboot under way is for.
    pub(super) reboot_for: Option<EpisodeKey>,
    pub(super) last_paused: Option<bool>,
    pub(super) last_conditions: Option<Vec<DesiredCondition>>,
    /// The wall clock counts as synchronised once it reaches this (the last time a
    /// previous run saw), or the kernel says so.
    pub(super) min_sane_unix: u64,
    /// Node time of the last save of `last_seen_unix` and node time.
    pub(super) touched_node: u64,
    /// Node time since which a due reboot has been waiting for the cluster lease (the
    /// lease is asked for), and whether that wait was reported after `lease_wait`.
    pub(super) lease_asked: Option<(u64, bool)>,
}

/// `last_seen_unix` and node time are saved at least this often (node time), so after a
/// power cut the clock check compares against a recent time, and node time loses at most
/// this much of the last boot.
pub(crate) const TOUCH_EVERY: Duration = Duration::from_secs(300);

impl PolicyLoop {
    pub fn new(
        cfg: LoopConfig,
        act: Actuators,
        hub: Arc<Hub>,
        store: Arc<Mutex<StateStore>>,
        audit: AuditLog,
        metrics: PolicyMetrics,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let (now, verify_pending, same_boot) = {
            let mut s = store.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(last) = s.data.reboots.last().cloned() {
                boot::adopt_reboot_record(
                    &mut s.data.policy,
                    last.at_unix,
                    &last.boot_id,
                    last.outcome.is_some(),
                );
            }
            let (now, note) = boot::note_boot(
                &mut s.data.policy,
                &cfg.boot_id,
                clock.unix_secs(),
                clock.monotonic().as_secs(),
            );
            // Moments an older release kept as wall time only get node time; a corrupt
            // state replaced at this start is stamped now, on node time.
            clock::adopt_wall_times(&mut s.data.policy, now);
            if s.data.recovered_at.is_some() && s.data.policy.recovered_at.is_none() {
                s.data.policy.recovered_at = Some(now);
            }
            let same_boot = note == BootNote::Same;
            if let BootNote::AfterOurReboot { problem, at } = note {
                log::info!(
                    "this boot follows the reboot nodemedic made at {} for {problem}; verifying the node comes back healthy after {}",
                    crate::timefmt::rfc3339_utc(at.unix as f64),
                    crate::config::ConfigDuration(cfg.remedy.verify_after.get())
                );
            }
            let pending = s.data.policy.verify_pending;
            for (k, v) in &s.data.counters {
                if let CounterKey::Reboots(reason) = k {
                    metrics
                        .reboots
                        .get_or_create(&super::metrics::RebootReasonLabels {
                            reason: reason.into(),
                        })
                        .inc_by(*v);
                }
            }
            (now, pending, same_boot)
        };
        {
            // Right from the start, not only after the first tick: a scrape during the
            // first-pass wait must not show an empty budget.
            let s = store.lock().unwrap_or_else(|p| p.into_inner());
            metrics.reboot_budget_remaining.set(
                s.data
                    .policy
                    .reboot_budget_remaining(&cfg.policy, now)
                    .into(),
            );
            metrics.set_steps(&engine::escalation_steps(&s.data.policy));
        }
        if verify_pending {
            act.cluster
                .check_pods(cfg.remedy.critical_daemonsets.clone());
        }
        // Cordon wishes made while the API was down die with the process: bring the Node
        // in line with what the state says nodemedic holds. Only nodemedic's own cordon is
        // ever removed (the node API layer checks its annotation).
        let cordoned = store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .data
            .policy
            .cordoned_by_us;
        if cfg.policy.mode != crate::config::RunMode::Act {
            // Observe mode touches nothing, not even to reconcile.
        } else if cordoned {
            act.cluster
                .want_cordon("nodemedic's cordon, re-asserted at start (a held problem wants it)");
        } else {
            act.cluster.want_uncordon();
        }
        let restarted_at = same_boot.then(|| clock.monotonic());
        PolicyLoop {
            cfg,
            act,
            hub,
            store,
            audit,
            metrics,
            clock,
            rebooting: false,
            restarted_at,
            reboot_for: None,
            last_paused: None,
            last_conditions: None,
            min_sane_unix: 0,
            touched_node: now.node,
            lease_asked: None,
        }
        .with_min_sane()
    }

    fn with_min_sane(mut self) -> Self {
        self.min_sane_unix = self.cfg.min_sane_unix;
        self
    }

    /// Node time and the wall clock now.
    pub(super) fn now(&self) -> At {
        let s = self.state();
        clock::now(
            &s.data.policy,
            self.clock.unix_secs(),
            self.clock.monotonic().as_secs(),
        )
    }

    /// Saves `st` as the engine's state, with node time and `last_seen_unix` brought up
    /// to `now` (a wall clock behind the last seen time is not written back).
    pub(super) fn persist(&mut self, st: &mut PolicyState, now: At) {
        st.node_seen = st.node_seen.max(now.node);
        let mut s = self.state();
        s.data.policy = st.clone();
        s.data.last_seen_unix = s.data.last_seen_unix.max(now.unix);
        s.save_or_log("the policy state");
        drop(s);
        self.touched_node = now.node;
    }

    /// Keeps `last_seen_unix` and node time on disk current while nothing else is saved.
    pub(crate) fn touch(&mut self) {
        let now = self.now();
        if now.node.saturating_sub(self.touched_node) >= TOUCH_EVERY.as_secs() {
            let mut st = self.state().data.policy.clone();
            self.persist(&mut st, now);
        }
    }

    /// The wall clock against the last time seen: sane, behind (reboots wait), or behind
    /// a remembered time the kernel says was bogus (re-based, audited).
    fn clock_sane(&mut self, now: At) -> bool {
        let clock = self.clock.clone();
        match clock::judge_clock(self.min_sane_unix, now.unix, || clock.synchronized()) {
            ClockJudgement::Sane => true,
            ClockJudgement::Behind { .. } => false,
            ClockJudgement::Rebase { bogus } => {
                self.min_sane_unix = now.unix;
                {
                    let mut s = self.state();
                    s.data.last_seen_unix = now.unix;
                    s.save_or_log("the re-based clock");
                }
                let why = format!(
                    "the clock is synchronised (kernel) but {}s behind the last time nodemedic saw ({}): that remembered time was wrong; re-based to now",
                    bogus - now.unix,
                    crate::timefmt::rfc3339_utc(bogus as f64)
                );
                self.record(
                    entry(
                        now.unix,
                        &self.cfg.boot_id,
                        "clock_rebased",
                        "",
                        "",
                        AuditOutcome::Done,
                        why.clone(),
                    ),
                    EventDraft::new(EventType::Warning, "NodeMedicClockRebased", why),
                );
                true
            }
        }
    }

    /// Runs the loop on its own thread until `shutdown`: waits for a condition change or
    /// the tick, decides once every detector has published its first pass (a restarted
    /// daemon must not end episodes it simply has not re-derived yet), and keeps
    /// `last_seen_unix` current.
    pub(crate) fn spawn(mut self, t: LoopThread) -> std::io::Result<JoinHandle<()>> {
        let LoopThread {
            changes,
            heartbeat: hb,
            shutdown,
            detector_count,
            watchdog,
        } = t;
        let tick = self.cfg.remedy.tick.get();
        std::thread::Builder::new()
            .name("policy".into())
            .spawn(move || {
                let started = Instant::now();
                let mut ready = false;
                while !shutdown.is_triggered() {
                    let wait = if ready { self.next_wait(tick) } else { tick };
                    hb.beat_for(wait);
                    match changes.recv_timeout(wait) {
                        Ok(change) => self.on_change(&change),
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                    while let Ok(change) = changes.try_recv() {
                        self.on_change(&change);
                    }
                    if !ready {
                        let ran = self
                            .hub
                            .detectors()
                            .values()
                            .filter(|d| d.last_run_unix.is_some())
                            .count();
                        // With credentials, the Kubernetes task's first pass too: the
                        // lease and the other Nodes are unknown before it.
                        let r = self.act.cluster.readings();
                        let cluster_known = !r.configured || r.api_up.is_some();
                        ready = (ran >= detector_count && cluster_known)
                            || started.elapsed() > FIRST_PASS_WAIT;
                    }
                    if ready {
                        self.tick(&|| hb.beat());
                    }
                    if let Some((m, h)) = &watchdog {
                        m.update(h);
                    }
                    self.touch();
                    hb.beat();
                }
            })
    }

    /// How long the loop may wait for a change before it must look again: `tick` while a
    /// reboot, a post-boot check, a restart grace or an eviction's outcome is under way, else until the engine
    /// owes its next step ([`crate::policy::wake`]), between `tick` and
    /// [`super::IDLE_TICK`].
    pub(crate) fn next_wait(&self, tick: Duration) -> Duration {
        let idle = super::IDLE_TICK.max(tick);
        let restarting = self.restarted_at.is_some_and(|t| {
            self.clock.monotonic().saturating_sub(t) < self.cfg.policy.restart_grace
        });
        let now = self.now();
        let st = self.state();
        if self.rebooting
            || restarting
            || st.data.policy.verify_pending
            || self.act.cluster.eviction_owed()
        {
            return tick;
        }
        match crate::policy::wake::next_wake(&self.cfg.policy, &st.data.policy, now) {
            None => idle,
            Some(d) => d.clamp(tick, idle),
        }
    }

    pub(super) fn state(&self) -> std::sync::MutexGuard<'_, StateStore> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One pass. Nothing in it waits on the cluster: a reboot that needs the lease is held
    /// (transient, nothing spent) until a later tick sees it granted. `beat` keeps the
    /// heartbeat honest while a node-local action runs ([`Self::execute_bounded`]).
    pub(crate) fn tick(&mut self, beat: &dyn Fn()) -> Vec<Carried> {
        let at = self.now();
        let now = at.unix;
        let since_boot = self.clock.monotonic();
        self.consume_reset(now);
        let paused = self.paused();
        if self.rebooting {
            match self.act.rebooter.ended_without_reboot() {
                // The reboot is under way; nothing else is decided in this boot.
                None => return Vec::new(),
                Some(why) => {
                    self.rebooting = false;
                    let mut st = self.state().data.policy.clone();
                    let out = self.reboot_did_not_happen(&mut st, at, &why);
                    self.persist(&mut st, at);
                    self.publish_needs_human(&st, now);
                    self.sync_conditions();
                    return out;
                }
            }
        }
        let held: Vec<_> = self
            .hub
            .conditions()
            .into_iter()
            // An instance of a problem kind that is only a warning (a KernelOops that
            // killed a user task) is reported, never escalated. Warning kinds stay: rails
            // read them (under-voltage names the cause of a lockup).
            .filter(|h| h.condition.severity != Some(crate::model::Severity::Warning))
            .map(|h| h.condition.key())
            .collect();
        let (lease, lease_why) = self.act.cluster.lease(self.cfg.reboot_lease);
        let inputs = Inputs {
            now: at,
            since_boot,
            held,
            paused,
            clock_sane: self.clock_sane(at),
            lease,
            restarting: self.restarted_at.is_some_and(|t| {
                self.clock.monotonic().saturating_sub(t) < self.cfg.policy.restart_grace
            }),
            cluster: self.act.cluster.readings().cluster,
            servers: self.server_view(at.unix),
        };
        let mut st = self.state().data.policy.clone();
        let before = st.clone();
        let decisions = engine::decide(&self.cfg.policy, &mut st, &inputs);
        self.hub
            .set_causes(crate::policy::power_cause::labels(&st.power));
        let mut out = Vec::new();
        for d in decisions {
            let c = self.carry_out(d, &mut st, now, lease_why, beat);
            let start_failed = c.decision.action == Remedy::Reboot
                && c.decision.verdict == Verdict::Go
                && c.outcome == AuditOutcome::Failed;
            let why = c.detail.clone();
            out.push(c);
            if start_failed {
                self.rebooting = false;
                out.extend(self.reboot_did_not_happen(&mut st, at, &why));
            }
        }
        self.ask_for_lease(&st, at, lease_why);
        self.verify_after_reboot(&mut st, now, since_boot);
        self.release_restart_lease(now);
        self.post_detector_events(now);
        self.record_evictions(now);
        if st != before || at.node.saturating_sub(self.touched_node) >= TOUCH_EVERY.as_secs() {
            self.persist(&mut st, at);
        }
        self.publish_needs_human(&st, now);
        self.metrics.set_steps(&engine::escalation_steps(&st));
        self.metrics
            .reboot_budget_remaining
            .set(st.reboot_budget_remaining(&self.cfg.policy, at).into());
        self.sync_conditions();
        out
    }

    /// The reboot for `self.reboot_for` did not happen: that episode needs a human now.
    fn reboot_did_not_happen(&mut self, st: &mut PolicyState, at: At, why: &str) -> Vec<Carried> {
        let Some(key) = self.reboot_for.take() else {
            return Vec::new();
        };
        log::error!("the reboot for {key} did not happen: {why}");
        engine::reboot_did_not_happen(&self.cfg.policy, st, &key, why)
            .map(|d| self.carry_out(d, st, at.unix, "", &|| {}))
            .into_iter()
            .collect()
    }

    /// A due reboot waits for the cluster lease: ask for it (once), report a wait longer
    /// than `remedy.lease_wait`, and give it back when no reboot wants it any more.
    fn ask_for_lease(&mut self, st: &PolicyState, at: At, why: &str) {
        if st.lease_wanted {
            let (since, reported) = *self.lease_asked.get_or_insert_with(|| {
                self.act.cluster.want_lock(LockWant::Hold);
                (at.node, false)
            });
            let waited = at.node.saturating_sub(since);
            if !reported && waited >= self.cfg.remedy.lease_wait.get().as_secs() {
                self.lease_asked = Some((since, true));
                let msg = format!(
                    "a reboot has waited {waited}s for the cluster reboot lease ({why}); it keeps waiting, spending nothing"
                );
                log::warn!("{msg}");
                if self.cfg.post_events {
                    self.act.cluster.event(EventDraft::new(
                        EventType::Warning,
                        "NodeMedicRebootWaitingForLease",
                        msg,
                    ));
                }
            }
        } else if self.lease_asked.take().is_some() && !self.rebooting {
            self.act.cluster.want_lock(LockWant::Release);
        }
    }

    fn paused(&mut self) -> bool {
        let by_file = self.cfg.pause_file.exists();
        let by_node = self.act.cluster.readings().paused;
        let paused = by_file || by_node;
        if self.last_paused != Some(paused) {
            if paused {
                log::warn!(
                    "automatic actions PAUSED by {}; detection and reporting go on",
                    if by_file {
                        format!("the pause file {}", self.cfg.pause_file.display())
                    } else {
                        "the node annotation".to_string()
                    }
                );
            } else if self.last_paused.is_some() {
                log::info!("automatic actions resumed");
            }
            self.last_paused = Some(paused);
        }
        self.metrics.paused.set(i64::from(paused));
        paused
    }

    fn consume_reset(&mut self, now: u64) {
        let path = self.cfg.state_dir.join(RESET_REQUEST_FILE);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return;
        };
        let what = text.trim().to_string();
        let mut s = self.state();
        let cleared = crate::policy::reset::reset(&mut s.data.policy, &what);
        let saved = s.save();
        drop(s);
        if let Err(e) = saved {
            log::error!("cannot persist the reset: {e}; it will be retried");
            return;
        }
        let _ = std::fs::remove_file(&path);
        let reason = if cleared.is_empty() {
            format!("operator reset ({what:?}): nothing needed a human")
        } else {
            format!("operator reset: {}", cleared.join(", "))
        };
        self.record(
            entry(
                now,
                &self.cfg.boot_id,
                "reset",
                "",
                "",
                AuditOutcome::Done,
                reason,
            ),
            EventDraft::new(
                EventType::Normal,
                "NodeMedicReset",
                "an operator reset nodemedic's NeedsHuman state",
            ),
        );
    }

    fn carry_out(
        &mut self,
        d: Decision,
        st: &mut PolicyState,
        now: u64,
        lease_why: &str,
        beat: &dyn Fn(),
    ) -> Carried {
        let problem = d.kind.map(|k| k.name()).unwrap_or("");
        let (outcome, detail) = match d.verdict {
            Verdict::Held(h) => {
                self.hub.metrics().suppressed(d.action.name(), h.name());
                (AuditOutcome::Suppressed, format!("held back: {}", h.name()))
            }
            Verdict::DryRun => {
                self.hub
                    .metrics()
                    .action(d.action.name(), ActionResult::dry_run);
                (AuditOutcome::DryRun, "dry run: not carried out".to_string())
            }
            Verdict::Go => match self.record_intent(&d, now) {
                // Never act on a decision that could not be recorded first (issue 18).
                Err(why) => {
                    self.hub
                        .metrics()
                        .suppressed(d.action.name(), "audit_unwritable");
                    (AuditOutcome::Suppressed, format!("held back: {why}"))
                }
                Ok(()) => {
                    let r = if d.action == Remedy::Reboot {
                        self.reboot(&d, st, now, lease_why)
                    } else if d.action == Remedy::RestartK3s {
                        self.restart_k3s(&d, beat)
                    } else {
                        self.execute_bounded(&d, beat)
                    };
                    let (o, res) = match &r {
                        Ok(_) => (AuditOutcome::Done, ActionResult::done),
                        Err(_) => (AuditOutcome::Failed, ActionResult::failed),
                    };
                    // A shared cordon is a no-op on the node: audited, not counted
                    // as a remediation.
                    if !d.shared {
                        self.hub.metrics().action(d.action.name(), res);
                    }
                    match r {
                        Ok(text) => (o, text),
                        Err(e) if e.retryable() && d.action != Remedy::Reboot => {
                            if let Some(kind) = d.kind {
                                engine::retry_step(st, &EpisodeKey::new(kind, &d.subject), d.step);
                            }
                            (
                                o,
                                format!("{e}; the step is tried again after the cooldown"),
                            )
                        }
                        Err(e) => (o, e.to_string()),
                    }
                }
            },
        };
        let reason = format!("{}; {detail}", d.reason);
        // The reboot's own record went to disk before the reboot started.
        let already_recorded = d.action == Remedy::Reboot && outcome == AuditOutcome::Done;
        let e = entry(
            now,
            &self.cfg.boot_id,
            d.action.name(),
            problem,
            &d.subject,
            outcome,
            reason.clone(),
        );
        // Suppressed decisions too: the engine records a hold once, not every tick.
        let event = EventDraft::new(
            if outcome == AuditOutcome::Failed || d.action == Remedy::NeedsHuman {
                EventType::Warning
            } else {
                EventType::Normal
            },
            format!(
                "NodeMedic{}{}",
                camel(d.action.name()),
                camel(outcome.as_str())
            ),
            reason.clone(),
        );
        if already_recorded {
            self.publish(e, event, false);
        } else {
            self.record(e, event);
        }
        Carried {
            decision: d,
            outcome,
            detail,
        }
    }

    /// [`Self::execute`], with the node-local actions that may block (systemctl, umount,
    /// CRI calls: a CRI repair can take 80 s) on their own thread under
    /// `remedy.action_deadline`, below `health.stuck_after`. While one runs the loop keeps
    /// beating; one still running at the deadline is reported (retried after the
    /// cooldown), not waited for: a slow actuator must not get the daemon killed, and
    /// with owner = "nodemedic" the board reset, mid-action.
    pub(super) fn execute_bounded(
        &self,
        d: &Decision,
        beat: &dyn Fn(),
    ) -> Result<String, ActionError> {
        if !matches!(
            d.action,
            Remedy::Unmount
                | Remedy::RemoveSandboxes
                | Remedy::RestartK3s
                | Remedy::ReclaimDisk
                | Remedy::ResetFailedK3s
        ) {
            return self.execute(d);
        }
        let (tx, rx) = mpsc::channel();
        let act = self.act.clone();
        let unit = self.cfg.k3s_unit.clone();
        let (action, subject) = (d.action, d.subject.clone());
        std::thread::Builder::new()
            .name(format!("act-{}", action.name()))
            .spawn(move || {
                let _ = tx.send(run_local(&act, unit.as_deref(), action, &subject));
            })
            .map_err(|e| {
                ActionError::unavailable(Target::Node, format!("cannot start {action}: {e}"))
            })?;
        let deadline = self.cfg.remedy.action_deadline.get();
        let started = Instant::now();
        loop {
            beat();
            let left = deadline.saturating_sub(started.elapsed());
            match rx.recv_timeout(left.min(Duration::from_secs(1))) {
                Ok(r) => return r,
                Err(mpsc::RecvTimeoutError::Timeout) if started.elapsed() < deadline => {}
                Err(_) => {
                    log::error!(
                        "{} on {:?} still running after {}: reported, not waited for",
                        d.action,
                        d.subject,
                        crate::config::ConfigDuration(deadline)
                    );
                    return Err(ActionError::unavailable(
                        Target::Node,
                        format!(
                            "{} still running after remedy.action_deadline ({}); it goes on in the background and is not waited for",
                            d.action,
                            crate::config::ConfigDuration(deadline)
                        ),
                    ));
                }
            }
        }
    }

    /// Every action but reboot. Ok and Err both carry what happened, for the audit.
    pub(super) fn execute(&self, d: &Decision) -> Result<String, ActionError> {
        let cluster = &self.act.cluster;
        let readings = cluster.readings();
        let queued = |what: &str| {
            if readings.api_up == Some(false) {
                format!("{what} queued: the Kubernetes API is unreachable; applied when it is back")
            } else {
                format!("{what} requested")
            }
        };
        match d.action {
            Remedy::Cordon | Remedy::Uncordon | Remedy::Drain | Remedy::EvictBestEffort
                if !readings.configured =>
            {
                Err(ActionError::refused(
                    Target::Cluster,
                    format!(
                        "cannot {}: no Kubernetes credentials (see `nodemedic check`)",
                        d.action
                    ),
                ))
            }
            Remedy::EvictBestEffort => {
                let Some(pm) = &self.act.pod_memory else {
                    return Err(ActionError::refused(
                        Target::PodCgroups,
                        "no pod memory reader: cannot rank BestEffort pods",
                    ));
                };
                let usage = pm.besteffort_usage().map_err(|e| {
                    ActionError::failed(
                        Target::PodCgroups,
                        format!("cannot measure BestEffort pods' memory, so none is evicted: {e}"),
                    )
                })?;
                let largest = usage.iter().map(|u| u.working_set).max();
                let measured = format!(
                    "{} BestEffort pod cgroup(s) measured{}",
                    usage.len(),
                    largest
                        .map(|b| format!(", largest working set {}", mib(b)))
                        .unwrap_or_default()
                );
                cluster.want_evict(EvictRequest {
                    usage,
                    min_bytes: self.cfg.evict_min_bytes,
                });
                Ok(format!("{}; {measured}", queued("eviction of the largest BestEffort pod")))
            }
            Remedy::Cordon => {
                cluster.want_cordon(&d.reason);
                Ok(queued("cordon"))
            }
            Remedy::Uncordon => {
                cluster.want_uncordon();
                Ok(queued("uncordon of nodemedic's own cordon"))
            }
            Remedy::Drain => {
                // Cordon first: pods evicted from a schedulable node come straight back.
                cluster.want_cordon(&d.reason);
                cluster.want_drain();
                Ok(queued("cordon, then drain"))
            }
            Remedy::Unmount
            | Remedy::RemoveSandboxes
            | Remedy::RestartK3s
            | Remedy::ReclaimDisk
            | Remedy::ResetFailedK3s => {
                run_local(&self.act, self.cfg.k3s_unit.as_deref(), d.action, &d.subject)
            }
            Remedy::NeedsHuman => Ok("NeedsHuman raised; no further automatic action for this problem until it clears or `nodemedic reset`".into()),
            Remedy::Reboot => unreachable!("reboot has its own path"),
        }
    }

    /// The reboot: the engine let it go, so the lease is held or not needed (`lease_note`
    /// says which); the fsynced records, then the sequence on its own thread.
    fn reboot(
        &mut self,
        d: &Decision,
        st: &mut PolicyState,
        now: u64,
        lease_note: &str,
    ) -> Result<String, ActionError> {
        let problem = d.kind.map(|k| k.name()).unwrap_or("").to_string();
        let reason = format!("{}; {lease_note}", d.reason);
        let evidence = serde_json::json!({
            "decision": d,
            "conditions": self.hub.conditions().iter().map(|h| serde_json::json!({
                "kind": h.condition.kind.name(),
                "subject": h.condition.subject,
                "reason": h.condition.reason,
                "message": h.condition.message,
                "since_unix": h.since_unix,
                "detector": h.detector,
            })).collect::<Vec<_>>(),
        });
        let mut e = entry(
            now,
            &self.cfg.boot_id,
            "reboot",
            &problem,
            &d.subject,
            AuditOutcome::Done,
            format!("rebooting now: {reason}"),
        );
        e.evidence = evidence;
        // The next boot's node time starts from here: never before this reboot's stamp.
        st.node_seen = st.node_seen.max(self.now().node);
        self.audit.append(&e).map_err(|err| {
            ActionError::refused(
                Target::Node,
                format!("refusing to reboot: the audit record could not be written ({err})"),
            )
        })?;
        {
            let mut s = self.state();
            s.data.reboots.push(RebootRecord {
                at_unix: now,
                boot_id: self.cfg.boot_id.clone(),
                problem: problem.clone(),
                reason: reason.clone(),
                outcome: None,
            });
            let over = s
                .data
                .reboots
                .len()
                .saturating_sub(crate::state::MAX_REBOOT_RECORDS);
            s.data.reboots.drain(..over);
            s.bump(CounterKey::Reboots(problem.clone()), 1);
            s.data.policy = st.clone();
            s.save().map_err(|err| {
                ActionError::refused(
                    Target::Node,
                    format!("refusing to reboot: the reboot record could not be persisted ({err})"),
                )
            })?;
        }
        log::log!(
            log::Level::Error,
            action = "reboot", problem = problem.as_str(), outcome = "done";
            "REBOOTING the node: {reason}"
        );
        self.metrics
            .reboots
            .get_or_create(&super::metrics::RebootReasonLabels {
                reason: problem.clone(),
            })
            .inc();
        // The next boot's verdict on how this one ended (`power::boot_end`) rests on it.
        let intent = crate::state::reboot_intent::RebootIntent {
            boot_id: self.cfg.boot_id.clone(),
            at_unix: now,
            kind: crate::state::reboot_intent::IntentKind::Reboot,
            reason: format!("{problem}: {reason}"),
        };
        if let Err(err) = crate::state::reboot_intent::write(&self.cfg.state_dir, &intent) {
            log::error!(
                "cannot write the reboot intent (the next boot may not know why this one ended): {err}"
            );
        }
        self.rebooting = true;
        self.reboot_for = d.kind.map(|k| EpisodeKey::new(k, &d.subject));
        if let Err(e) = self.act.rebooter.start(&reason) {
            let _ = crate::state::reboot_intent::withdraw(
                &self.cfg.state_dir,
                &self.cfg.boot_id,
                crate::state::reboot_intent::IntentKind::Reboot,
            );
            return Err(e);
        }
        Ok(format!("reboot started: {reason}"))
    }
}

/// The node-local actions that may block (systemctl, umount, CRI calls): run on their own
/// thread by [`PolicyLoop::execute_bounded`].
fn run_local(
    act: &Actuators,
    k3s_unit: Option<&str>,
    action: Remedy,
    subject: &str,
) -> Result<String, ActionError> {
    let k3s_unit = k3s_unit.map(str::to_string);
    match action {
        Remedy::Unmount => match &act.mounts {
            Some(m) => m.detach(subject),
            None => Err(ActionError::refused(
                Target::Mount(subject.to_string()),
                "lazy unmount is not available in this build",
            )),
        },
        Remedy::RemoveSandboxes => match &act.sandboxes {
            Some(s) => s.remove_conflicting(subject),
            None => Err(ActionError::refused(
                Target::Sandbox(subject.to_string()),
                "no container runtime connection: cannot remove sandboxes",
            )),
        },
        Remedy::RestartK3s => match &k3s_unit {
            // An inactive or failed k3s was stopped on purpose (or systemd's own
            // Restart= gave up): starting it behind the operator's back is not a
            // repair. An activating one may be hung before READY: restart it.
            Some(unit) => {
                let state = act.services.active_state(unit)?;
                if state.is_stopped() {
                    return Err(ActionError::refused(
                        Target::Unit(unit.clone()),
                        format!(
                            "it is not active ({}; stopped by an operator?): not restarting it",
                            state.as_str()
                        ),
                    ));
                }
                act.services
                    .restart(unit)
                    .map(|()| format!("restart of {unit} queued"))
            }
            None => Err(ActionError::refused(
                Target::Unit("k3s".into()),
                "no k3s unit found (k3s.service / k3s-agent.service); set remedy.k3s_unit",
            )),
        },
        Remedy::ResetFailedK3s => match &k3s_unit {
            // Checked again at the moment of acting: an operator's stop in between leaves
            // it inactive, and that is never started behind their back.
            Some(unit) => {
                let state = act.services.active_state(unit)?;
                if state != UnitState::Failed {
                    return Err(ActionError::refused(
                        Target::Unit(unit.clone()),
                        format!(
                            "it is no longer failed ({}: stopped by an operator, or started again): not starting it",
                            state.as_str()
                        ),
                    ));
                }
                act.services
                    .reset_failed_start(unit)
                    .map(|()| format!("reset-failed and start of {unit} queued"))
            }
            None => Err(ActionError::refused(
                Target::Unit("k3s".into()),
                "no k3s unit found (k3s.service / k3s-agent.service); set remedy.k3s_unit",
            )),
        },
        // Journal vacuum and image removal can take long on an SD card: on this thread too.
        Remedy::ReclaimDisk => match &act.disk {
            Some(r) => r.reclaim(subject),
            None => Err(ActionError::refused(
                Target::Filesystem(subject.to_string()),
                "no disk reclaimer: nothing to vacuum or remove",
            )),
        },
        _ => unreachable!("only node-local actions run here"),
    }
}
