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
use crate::edge::Clock;
use crate::hub::{Change, Hub};
use crate::kube::api::EventType;
use crate::kube::conditions::DesiredCondition;
use crate::kube::events::EventDraft;
use crate::kube::lease::LockWant;
use crate::liveness::{Heartbeat, Shutdown};
use crate::metrics::ActionResult;
use crate::model::Remedy;
use crate::policy::engine::{self, Decision, Inputs, Lease, PolicyConfig, PolicyState, Verdict};
use crate::state::{RebootRecord, StateStore};

use super::actuators::Actuators;
use super::cluster::EvictRequest;
use super::metrics::{PolicyMetrics, WatchdogMetrics};
use super::record::{camel, entry};
use crate::config::RemedySection;
use crate::model::mib;
use crate::watchdog::FeederHandle;

/// The policy waits this long at most for every detector's first pass.
pub(crate) const FIRST_PASS_WAIT: Duration = Duration::from_secs(60);
/// Written by `nodemedic reset` into the state directory; consumed by the next tick.
pub(crate) const RESET_REQUEST_FILE: &str = "reset-request";
/// How often a reboot waiting for the cluster lease looks again.
const LEASE_POLL: Duration = Duration::from_millis(200);
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
    pub(super) last_paused: Option<bool>,
    pub(super) last_conditions: Option<Vec<DesiredCondition>>,
    /// Post-boot verification is owed for the last reboot record.
    pub(super) verify_pending: bool,
}

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
        let now = clock.unix_secs();
        let verify_pending = {
            let mut s = store.lock().unwrap_or_else(|p| p.into_inner());
            s.data.policy.recovered_at = s.data.recovered_at;
            let mut pending = false;
            if let Some(last) = s.data.reboots.last().cloned()
                && last.outcome.is_none()
                && last.boot_id != cfg.boot_id
            {
                pending = true;
                if s.data.policy.booted_after_reboot.is_none() {
                    s.data.policy.booted_after_reboot = Some(now);
                }
                log::info!(
                    "this boot follows the reboot nodemedic made at {} for {}; verifying the node comes back healthy after {}",
                    crate::timefmt::rfc3339_utc(last.at_unix as f64),
                    last.problem,
                    crate::config::ConfigDuration(cfg.remedy.verify_after.get())
                );
            }
            for (k, v) in &s.data.counters {
                if let Some(reason) = k.strip_prefix("reboots:") {
                    metrics
                        .reboots
                        .get_or_create(&super::metrics::RebootReasonLabels {
                            reason: reason.into(),
                        })
                        .inc_by(*v);
                }
            }
            pending
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
        PolicyLoop {
            cfg,
            act,
            hub,
            store,
            audit,
            metrics,
            clock,
            rebooting: false,
            last_paused: None,
            last_conditions: None,
            verify_pending,
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
                    let wait = if ready && self.idle() {
                        super::IDLE_TICK.max(tick)
                    } else {
                        tick
                    };
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
                        ready = ran >= detector_count || started.elapsed() > FIRST_PASS_WAIT;
                    }
                    if ready {
                        self.tick(&|| hb.beat());
                    }
                    if let Some((m, h)) = &watchdog {
                        m.update(h);
                    }
                    if let Ok(mut s) = self.store.try_lock() {
                        s.data.last_seen_unix = s.data.last_seen_unix.max(self.clock.unix_secs());
                    }
                    hb.beat();
                }
            })
    }

    /// Nothing to age or watch: no condition held, no reboot under way, no post-boot
    /// check owed. The loop may then wait longer between ticks.
    pub(crate) fn idle(&self) -> bool {
        !self.rebooting && !self.verify_pending && self.hub.conditions().is_empty()
    }

    pub(super) fn state(&self) -> std::sync::MutexGuard<'_, StateStore> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One pass. `beat` is called while the loop waits (for the reboot lease), so a wait
    /// within its bound never looks like a stuck loop.
    pub(crate) fn tick(&mut self, beat: &dyn Fn()) -> Vec<Carried> {
        let now = self.clock.unix_secs();
        let since_boot = self.clock.monotonic();
        self.consume_reset(now);
        let paused = self.paused();
        if self.rebooting {
            // The reboot is under way; nothing else is decided in this boot.
            return Vec::new();
        }
        let held: Vec<_> = self
            .hub
            .conditions()
            .into_iter()
            .map(|h| (h.condition.key(), h.since_unix))
            .collect();
        let inputs = Inputs {
            now_unix: now,
            since_boot,
            held,
            paused,
            clock_sane: now >= self.cfg.min_sane_unix,
            lease: self.act.cluster.lease(),
            servers: self.server_view(now),
        };
        let mut st = self.state().data.policy.clone();
        let before = st.clone();
        let decisions = engine::decide(&self.cfg.policy, &mut st, &inputs);
        self.hub
            .set_causes(crate::policy::power_cause::labels(&st.power));
        let mut out = Vec::new();
        for d in decisions {
            let c = self.carry_out(d, &mut st, now, beat);
            out.push(c);
        }
        self.verify_after_reboot(&mut st, now, since_boot);
        self.release_restart_lease(now);
        self.post_detector_events(now);
        self.record_evictions(now);
        if st != before {
            let mut s = self.state();
            s.data.policy = st.clone();
            s.save_or_log("the policy state");
        }
        self.publish_needs_human(&st, now);
        self.metrics.set_steps(&engine::escalation_steps(&st));
        self.metrics
            .reboot_budget_remaining
            .set(st.reboot_budget_remaining(&self.cfg.policy, now).into());
        self.sync_conditions();
        out
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
        let mut cleared = Vec::new();
        for (k, e) in s.data.policy.episodes.iter_mut() {
            if e.needs_human && (what.is_empty() || what == "all" || k.starts_with(&what)) {
                e.needs_human = false;
                cleared.push(k.clone());
            }
        }
        if s.data.policy.verification_failed.take().is_some() {
            cleared.push("post-boot verification".into());
        }
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
                        self.reboot(&d, st, now, beat)
                    } else if d.action == Remedy::RestartK3s {
                        self.restart_k3s(&d, beat)
                    } else {
                        self.execute(&d)
                    };
                    let (o, res) = match &r {
                        Ok(_) => (AuditOutcome::Done, ActionResult::done),
                        Err(_) => (AuditOutcome::Failed, ActionResult::failed),
                    };
                    self.hub.metrics().action(d.action.name(), res);
                    (o, r.unwrap_or_else(|e| e))
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

    /// Every action but reboot. Ok and Err both carry what happened, for the audit.
    pub(super) fn execute(&self, d: &Decision) -> Result<String, String> {
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
                Err(
                format!(
                    "cannot {}: no Kubernetes credentials (see `nodemedic check`)",
                    d.action
                ))
            }
            Remedy::EvictBestEffort => {
                let Some(pm) = &self.act.pod_memory else {
                    return Err("no pod memory reader: cannot rank BestEffort pods".into());
                };
                let usage = pm.besteffort_usage().map_err(|e| {
                    format!("cannot measure BestEffort pods' memory, so none is evicted: {e}")
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
                cluster.want_drain();
                Ok(queued("drain"))
            }
            Remedy::Unmount => match &self.act.mounts {
                Some(m) => m.detach(&d.subject),
                None => Err("lazy unmount is not available in this build".into()),
            },
            Remedy::RemoveSandboxes => match &self.act.sandboxes {
                Some(s) => s.remove_conflicting(&d.subject),
                None => Err("no container runtime connection: cannot remove sandboxes".into()),
            },
            Remedy::RestartK3s => match &self.cfg.k3s_unit {
                // An inactive k3s was stopped on purpose (or systemd's own Restart= gave
                // up): starting it behind the operator's back is not a repair.
                Some(unit) if self.act.services.is_active(unit) == Ok(false) => Err(format!(
                    "{unit} is not active (stopped by an operator?): not restarting it"
                )),
                Some(unit) => self
                    .act
                    .services
                    .restart(unit)
                    .map(|()| format!("restart of {unit} queued"))
                    .map_err(|e| format!("restarting {unit} failed: {e}")),
                None => Err(
                    "no k3s unit found (k3s.service / k3s-agent.service); set remedy.k3s_unit"
                        .into(),
                ),
            },
            Remedy::ResetFailedK3s => match &self.cfg.k3s_unit {
                // Checked again at the moment of acting: an operator's stop in between
                // leaves it inactive, and that is never started behind their back.
                Some(unit) if self.act.services.is_failed(unit) == Ok(false) => Err(format!(
                    "{unit} is no longer failed (stopped by an operator, or started again): not starting it"
                )),
                Some(unit) => self
                    .act
                    .services
                    .reset_failed_start(unit)
                    .map(|()| format!("reset-failed and start of {unit} queued"))
                    .map_err(|e| format!("starting the failed {unit}: {e}")),
                None => Err(
                    "no k3s unit found (k3s.service / k3s-agent.service); set remedy.k3s_unit"
                        .into(),
                ),
            },
            Remedy::NeedsHuman => Ok("NeedsHuman raised; no further automatic action for this problem until it clears or `nodemedic reset`".into()),
            Remedy::Reboot => unreachable!("reboot has its own path"),
        }
    }

    /// The reboot: lease (when the API is reachable), then the fsynced records, then the
    /// sequence on its own thread.
    fn reboot(
        &mut self,
        d: &Decision,
        st: &mut PolicyState,
        now: u64,
        beat: &dyn Fn(),
    ) -> Result<String, String> {
        let cluster = self.act.cluster.clone();
        let mut lease_note = "the Kubernetes API is unreachable: rebooting without the cluster lease (a wedged node must still heal)".to_string();
        if cluster.lease() != Lease::ApiUnreachable {
            cluster.want_lock(LockWant::Hold);
            let end = Instant::now() + self.cfg.remedy.lease_wait.get();
            while !cluster.lock_held() && Instant::now() < end {
                if cluster.lease() == Lease::ApiUnreachable {
                    break;
                }
                beat();
                std::thread::sleep(LEASE_POLL);
            }
            if cluster.lock_held() {
                lease_note = "holding the cluster reboot lease".into();
            } else if cluster.lease() != Lease::ApiUnreachable {
                cluster.want_lock(LockWant::Release);
                return Err(format!(
                    "the cluster reboot lease was not granted within {} ({}); not rebooting now",
                    crate::config::ConfigDuration(self.cfg.remedy.lease_wait.get()),
                    cluster
                        .readings()
                        .last_error
                        .unwrap_or_else(|| "another node holds it".into())
                ));
            }
        }
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
        self.audit.append(&e).map_err(|err| {
            format!("refusing to reboot: the audit record could not be written ({err})")
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
            *s.data
                .counters
                .entry(format!("reboots:{problem}"))
                .or_default() += 1;
            s.data.policy = st.clone();
            s.save().map_err(|err| {
                format!("refusing to reboot: the reboot record could not be persisted ({err})")
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
