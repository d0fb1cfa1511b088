//! Keeps the cluster's view of this node in line with what nodemedic wants: conditions,
//! cordon, Events and the reboot lock, one bounded pass at a time.
//!
//! The daemon sets wishes whenever it likes (they only change memory) and calls
//! [`NodeSync::sync`] on a timer and after changes. A pass reads the Node, writes what
//! differs, flushes Events and steps the lock. It never takes longer than its deadline;
//! if the API is unavailable it stops, keeps everything owed, and backs off. An
//! unavailable API is reported (metrics, the report), never treated as a sick node.

use std::time::{Duration, SystemTime};

use super::api::{Capabilities, CordonChange, EventType, KubeError, NodeApi, NodeView};
use super::conditions::{self, DesiredCondition};
use super::cordon::{self, CordonOutcome, CordonOwner, CordonWant};
use super::events::{EventDraft, EventLog, Recorded};
use super::lease::{self, LeaseConfig, LeaseStep, LockWant, Observations, SlotState, StepKind};
use super::metrics::KubeMetrics;
use super::queue::{ActionKind, Backoff, Desired, Jitter};

/// A pass makes a handful of calls, each bounded by the client's own deadline; 30 s bounds
/// the whole pass so the daemon's loop is never held longer.
pub(crate) const PASS_DEADLINE: Duration = Duration::from_secs(30);

/// A 409 means someone wrote between our read and our write (kubectl, kubelet, another
/// node taking the lock). Three re-reads settle any race a small cluster produces.
pub(crate) const MAX_CONFLICT_RETRIES: usize = 3;

/// Both clocks, read once by the caller: wall time for what we write, monotonic time for
/// intervals (backoff, lease expiry), which must not jump when NTP fixes a Pi's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    pub wall: SystemTime,
    pub mono: Duration,
}

#[derive(Clone, Debug)]
pub struct SyncConfig {
    pub(crate) node: String,
    pub(crate) capabilities: Capabilities,
    pub lease: LeaseConfig,
    pub pass_deadline: Duration,
}

impl SyncConfig {
    pub fn new(node: impl Into<String>, capabilities: Capabilities) -> Self {
        SyncConfig {
            node: node.into(),
            capabilities,
            lease: LeaseConfig::default(),
            pass_deadline: PASS_DEADLINE,
        }
    }
}

/// Where the reboot lock stands after a pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockStatus {
    Held {
        slot: String,
    },
    Waiting {
        holders: Vec<String>,
        retry_in: Duration,
    },
    NotHeld,
    NotPermitted,
}

/// What one call to [`NodeSync::sync`] did.
#[derive(Clone, Debug, Default)]
pub struct SyncReport {
    /// False when backoff said not yet.
    pub attempted: bool,
    /// The failure that made the pass stop: the API is unavailable.
    pub api_down: Option<KubeError>,
    /// When to try again (backoff), if the pass stopped or was skipped.
    pub(crate) retry_in: Option<Duration>,
    pub(crate) conditions_written: usize,
    pub cordon: Option<CordonOutcome>,
    pub(crate) events_written: usize,
    pub lock: Option<LockStatus>,
    /// Answers the API gave that were not "unavailable" (403, 404, 422, ...).
    pub errors: Vec<KubeError>,
}

pub struct NodeSync<A: NodeApi> {
    api: A,
    cfg: SyncConfig,
    desired: Desired,
    events: EventLog,
    backoff: Backoff,
    jitter: Jitter,
    observations: Observations,
    /// The lock slot we hold and when (monotonic) we last wrote it successfully.
    held: Option<(String, Duration)>,
    cordon_owner: Option<CordonOwner>,
    metrics: Option<KubeMetrics>,
    dropped_reported: u64,
    /// The Node as last read (annotations for the pause switch, Ready for verification).
    node: Option<NodeView>,
}

/// Stops the pass if the API is unavailable; otherwise records the error and goes on.
fn soft(e: KubeError, r: &mut SyncReport) -> Result<(), KubeError> {
    if e.api_unavailable() {
        Err(e)
    } else {
        r.errors.push(e);
        Ok(())
    }
}

impl<A: NodeApi> NodeSync<A> {
    /// `seed` spreads retries of different nodes apart (pid ^ boot time is fine).
    pub fn new(api: A, cfg: SyncConfig, now: Now, seed: u64) -> Self {
        NodeSync {
            events: EventLog::new(cfg.node.clone(), now.mono),
            api,
            cfg,
            desired: Desired::default(),
            backoff: Backoff::default(),
            jitter: Jitter::new(seed),
            observations: Observations::default(),
            held: None,
            cordon_owner: None,
            metrics: None,
            dropped_reported: 0,
            node: None,
        }
    }

    pub fn with_metrics(mut self, metrics: KubeMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn api(&self) -> &A {
        &self.api
    }

    pub fn config(&self) -> &SyncConfig {
        &self.cfg
    }

    /// The complete set of nodemedic conditions that should be on the Node now.
    pub fn set_conditions(&mut self, conditions: Vec<DesiredCondition>) {
        self.desired.set_conditions(conditions);
    }

    pub fn want_cordon(&mut self, reason: impl Into<String>) {
        self.desired.set_cordon(CordonWant::Cordoned {
            reason: reason.into(),
        });
    }

    /// Removes our cordon, if any. Never removes anyone else's.
    pub fn want_uncordon(&mut self) {
        self.desired.set_cordon(CordonWant::Released);
    }

    pub fn want_lock(&mut self, want: LockWant) {
        self.desired.set_lock(want);
    }

    /// Queues an Event about this Node (de-duplicated, rate-limited; sent on the next pass).
    pub fn record_event(&mut self, draft: EventDraft, now: Now) -> Recorded {
        self.events.record(draft, now.wall, now.mono)
    }

    /// Whether we hold the reboot lock and our hold is fresh enough to act on.
    pub(crate) fn lock_held(&self, now_mono: Duration) -> bool {
        self.held.as_ref().is_some_and(|(_, at)| {
            lease::held_fresh(Some(now_mono.saturating_sub(*at)), &self.cfg.lease)
        })
    }

    /// The Node as last read successfully.
    pub(crate) fn node(&self) -> Option<&NodeView> {
        self.node.as_ref()
    }

    #[cfg(test)]
    /// Who held the cordon at the last successful read, if any read succeeded.
    pub(crate) fn cordon_owner(&self) -> Option<CordonOwner> {
        self.cordon_owner
    }

    #[cfg(test)]
    /// Kinds of change still owed to the API.
    pub(crate) fn pending(&self) -> Vec<ActionKind> {
        let mut out: Vec<ActionKind> = [
            ActionKind::Conditions,
            ActionKind::Cordon,
            ActionKind::Lease,
        ]
        .into_iter()
        .filter(|k| self.desired.is_dirty(*k))
        .collect();
        if self.events.pending_count() > 0 {
            out.push(ActionKind::Events);
        }
        out
    }

    /// One pass, unless backoff says to wait. Never takes longer than the pass deadline.
    pub async fn sync(&mut self, now: Now) -> SyncReport {
        if let Some(wait) = self.backoff.retry_in(now.mono) {
            return SyncReport {
                retry_in: Some(wait),
                ..SyncReport::default()
            };
        }
        let mut report = SyncReport {
            attempted: true,
            ..SyncReport::default()
        };
        let deadline = self.cfg.pass_deadline;
        let outcome = tokio::time::timeout(deadline, self.pass(now, &mut report)).await;
        let down = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(KubeError::Timeout {
                verb: "sync",
                resource: "nodes",
                name: self.cfg.node.clone(),
                after: deadline,
            }),
        };
        match down {
            None => self.backoff.succeeded(),
            Some(e) => {
                report.retry_in = Some(self.backoff.failed(now.mono, &mut self.jitter));
                report.api_down = Some(e);
            }
        }
        self.update_metrics(now, report.api_down.is_none());
        report
    }

    async fn pass(&mut self, now: Now, r: &mut SyncReport) -> Result<(), KubeError> {
        let node = self.cfg.node.clone();
        match self.api.get_node(&node).await {
            Ok(view) => {
                self.node = Some(view.clone());
                self.sync_conditions(&view, now, r).await?;
                self.sync_cordon(view, now, r).await?;
            }
            Err(e) => soft(e, r)?,
        }
        self.sync_lock(now, r).await?;
        // Last, so Events about this pass's own actions go out in the same pass.
        self.flush_events(r).await
    }

    async fn sync_conditions(
        &mut self,
        view: &NodeView,
        now: Now,
        r: &mut SyncReport,
    ) -> Result<(), KubeError> {
        let writes = conditions::plan(&view.conditions, self.desired.conditions(), now.wall);
        if !writes.is_empty() {
            if let Err(e) = self.api.patch_node_conditions(&view.name, &writes).await {
                return soft(e, r);
            }
            r.conditions_written = writes.len();
        }
        self.desired.applied(ActionKind::Conditions);
        Ok(())
    }

    async fn sync_cordon(
        &mut self,
        mut view: NodeView,
        now: Now,
        r: &mut SyncReport,
    ) -> Result<(), KubeError> {
        let Some(want) = self.desired.effective_cordon() else {
            self.cordon_owner = Some(cordon::owner(&view));
            return Ok(());
        };
        for attempt in 0..=MAX_CONFLICT_RETRIES {
            let plan = cordon::plan(&view, &want, now.wall);
            if let Some(change) = &plan.change {
                match self
                    .api
                    .patch_node_cordon(&view.name, change, &view.resource_version)
                    .await
                {
                    Ok(()) => self.note_cordon_change(change, &plan.outcome, now),
                    Err(e) if e.is_conflict() && attempt < MAX_CONFLICT_RETRIES => {
                        view = match self.api.get_node(&view.name).await {
                            Ok(v) => v,
                            Err(e) => return soft(e, r),
                        };
                        continue;
                    }
                    Err(e) => return soft(e, r),
                }
            }
            if plan.outcome == CordonOutcome::OperatorUncordonedUs {
                self.desired.operator_overrode_cordon();
            }
            self.cordon_owner = Some(match plan.outcome {
                CordonOutcome::CordonedByUs => CordonOwner::Nodemedic,
                CordonOutcome::CordonedByOperator => CordonOwner::Operator,
                CordonOutcome::Schedulable | CordonOutcome::OperatorUncordonedUs => {
                    CordonOwner::None
                }
            });
            r.cordon = Some(plan.outcome);
            self.desired.applied(ActionKind::Cordon);
            return Ok(());
        }
        Ok(())
    }

    fn note_cordon_change(&mut self, change: &CordonChange, outcome: &CordonOutcome, now: Now) {
        let draft = match (change, outcome) {
            (CordonChange::Cordon { reason, .. }, _) => EventDraft::new(
                EventType::Normal,
                "NodeMedicCordoned",
                format!("nodemedic cordoned the node: {reason}"),
            ),
            (CordonChange::Uncordon, _) => EventDraft::new(
                EventType::Normal,
                "NodeMedicUncordoned",
                "nodemedic removed the cordon it had set",
            ),
            (CordonChange::ForgetOwnership, CordonOutcome::OperatorUncordonedUs) => {
                EventDraft::new(
                    EventType::Normal,
                    "NodeMedicCordonOverridden",
                    "someone uncordoned the node while nodemedic wanted it cordoned; \
                 nodemedic leaves it schedulable until the problem clears",
                )
            }
            (CordonChange::ForgetOwnership, _) => return,
        };
        self.events.record(draft, now.wall, now.mono);
    }

    async fn sync_lock(&mut self, now: Now, r: &mut SyncReport) -> Result<(), KubeError> {
        let want = self.desired.lock();
        if want == LockWant::Untouched {
            return Ok(());
        }
        if !self.cfg.capabilities.leases {
            r.lock = Some(LockStatus::NotPermitted);
            r.errors.push(KubeError::NotPermitted {
                action: "the reboot lock (coordination.k8s.io Leases)",
                identity: self.cfg.capabilities.identity.clone(),
            });
            return Ok(());
        }
        let cfg = self.cfg.lease.clone();
        for attempt in 0..=MAX_CONFLICT_RETRIES {
            let mut slots = Vec::new();
            for name in cfg.slot_names() {
                let lease = match self.api.get_lease(&cfg.namespace, &name).await {
                    Ok(l) => l,
                    Err(e) => return soft(e, r),
                };
                let unchanged_for = self.observations.observe(&name, lease.as_ref(), now.mono);
                slots.push(SlotState {
                    name,
                    lease,
                    unchanged_for,
                });
            }
            let since = self
                .held
                .as_ref()
                .map(|(_, at)| now.mono.saturating_sub(*at));
            let step = lease::decide(&slots, &self.cfg.node, want, now.wall, since, &cfg);
            let (slot, kind, written) = match step {
                LeaseStep::Idle => {
                    self.held = None;
                    r.lock = Some(LockStatus::NotHeld);
                    self.desired.applied(ActionKind::Lease);
                    return Ok(());
                }
                LeaseStep::Keep { slot } => {
                    r.lock = Some(LockStatus::Held { slot });
                    self.desired.applied(ActionKind::Lease);
                    return Ok(());
                }
                LeaseStep::Wait { holders, retry_in } => {
                    if self.held.take().is_some() {
                        let msg =
                            format!("the reboot lock was taken over by {}", holders.join(", "));
                        self.events.record(
                            EventDraft::new(EventType::Warning, "NodeMedicRebootLockLost", msg),
                            now.wall,
                            now.mono,
                        );
                    }
                    r.lock = Some(LockStatus::Waiting { holders, retry_in });
                    return Ok(());
                }
                LeaseStep::Create { slot, lease } => {
                    let res = self.api.create_lease(&cfg.namespace, &slot, &lease).await;
                    (slot, StepKind::Acquire, res)
                }
                LeaseStep::Replace { slot, kind, lease } => {
                    let res = self.api.replace_lease(&cfg.namespace, &slot, &lease).await;
                    (slot, kind, res)
                }
            };
            match written {
                Ok(_) => {
                    self.lock_written(&slot, kind, now, r);
                    return Ok(());
                }
                Err(e)
                    if (e.is_conflict() || e.is_not_found()) && attempt < MAX_CONFLICT_RETRIES =>
                {
                    continue;
                }
                Err(e) => return soft(e, r),
            }
        }
        Ok(())
    }

    fn lock_written(&mut self, slot: &str, kind: StepKind, now: Now, r: &mut SyncReport) {
        let where_ = format!("{}/{slot}", self.cfg.lease.namespace);
        let event = match kind {
            StepKind::Release => {
                self.held = None;
                r.lock = Some(LockStatus::NotHeld);
                Some((
                    "NodeMedicRebootLockReleased",
                    format!("nodemedic released the reboot lock {where_}"),
                ))
            }
            StepKind::Renew => {
                self.held = Some((slot.to_string(), now.mono));
                r.lock = Some(LockStatus::Held { slot: slot.into() });
                None
            }
            StepKind::Acquire => {
                self.held = Some((slot.to_string(), now.mono));
                r.lock = Some(LockStatus::Held { slot: slot.into() });
                Some((
                    "NodeMedicRebootLockAcquired",
                    format!("nodemedic holds the reboot lock {where_}"),
                ))
            }
        };
        if let Some((reason, msg)) = event {
            self.events.record(
                EventDraft::new(EventType::Normal, reason, msg),
                now.wall,
                now.mono,
            );
        }
        self.desired.applied(ActionKind::Lease);
    }

    async fn flush_events(&mut self, r: &mut SyncReport) -> Result<(), KubeError> {
        for w in self.events.pending() {
            let res = if w.create {
                self.api.create_event(&w.event).await
            } else {
                self.api.update_event(&w.event).await
            };
            let name = &w.event.name;
            match res {
                Ok(()) => {
                    self.events.written(name, w.event.count);
                    r.events_written += 1;
                }
                Err(e) if w.create && e.is_conflict() => self.events.already_exists(name),
                Err(e) if !w.create && e.is_not_found() => self.events.missing(name),
                Err(e) if e.api_unavailable() => return Err(e),
                Err(e) if e.code() == Some(429) || e.code().is_some_and(|c| c >= 500) => {
                    // Throttled or failing server: keep the rest for the next pass.
                    r.errors.push(e);
                    return Ok(());
                }
                Err(e) => {
                    // Refused for good (403, 422): drop it rather than retry forever.
                    self.events.written(name, w.event.count);
                    r.errors.push(e);
                }
            }
        }
        Ok(())
    }

    fn update_metrics(&mut self, now: Now, api_up: bool) {
        let Some(m) = &self.metrics else {
            return;
        };
        m.api_up.set(i64::from(api_up));
        if let Some(owner) = self.cordon_owner {
            m.set_cordon_owner(owner);
        }
        m.reboot_lease_held.set(i64::from(self.lock_held(now.mono)));
        for kind in [
            ActionKind::Conditions,
            ActionKind::Cordon,
            ActionKind::Lease,
        ] {
            m.set_pending(kind, usize::from(self.desired.is_dirty(kind)));
        }
        m.set_pending(ActionKind::Events, self.events.pending_count());
        let dropped = self.events.dropped();
        m.events_dropped.inc_by(dropped - self.dropped_reported);
        self.dropped_reported = dropped;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::api::{ConditionStatus, NodeCondition};
    use crate::kube::fake::{ApiCall, FakeNodeApi};
    use std::time::UNIX_EPOCH;

    const S: Duration = Duration::from_secs(1);

    fn now(secs: u64) -> Now {
        Now {
            wall: UNIX_EPOCH + Duration::from_secs(1_764_000_000 + secs),
            mono: Duration::from_secs(1000 + secs),
        }
    }

    fn sync_for(api: &FakeNodeApi, node: &str) -> NodeSync<FakeNodeApi> {
        NodeSync::new(
            api.clone(),
            SyncConfig::new(node, Capabilities::full("test admin")),
            now(0),
            7,
        )
    }

    /// pi5 (`a`) and pi4 (`b`) in one cluster, both wanting the reboot lock.
    fn two_nodes_wanting_the_lock() -> (FakeNodeApi, NodeSync<FakeNodeApi>, NodeSync<FakeNodeApi>) {
        let api = FakeNodeApi::new("pi5");
        api.add_node("pi4");
        let mut a = sync_for(&api, "pi5");
        let mut b = sync_for(&api, "pi4");
        a.want_lock(LockWant::Hold);
        b.want_lock(LockWant::Hold);
        (api, a, b)
    }

    fn rcu() -> DesiredCondition {
        DesiredCondition::new(
            "KernelRCUStall",
            ConditionStatus::True,
            "RCUStallDetected",
            "rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: { P4121 } 21 jiffies",
        )
    }

    fn cond<'a>(n: &'a NodeView, t: &str) -> Option<&'a NodeCondition> {
        n.conditions.iter().find(|c| c.type_ == t)
    }

    #[tokio::test]
    async fn conditions_are_published_once_and_not_rewritten_while_unchanged() {
        let api = FakeNodeApi::new("pi5");
        let mut s = sync_for(&api, "pi5");
        s.set_conditions(vec![rcu()]);
        let r = s.sync(now(0)).await;
        assert!(
            r.attempted && r.api_down.is_none() && r.errors.is_empty(),
            "{r:?}"
        );
        assert_eq!(r.conditions_written, 1);
        let n = api.node("pi5");
        assert_eq!(
            cond(&n, "NodeMedicKernelRCUStall").unwrap().status,
            ConditionStatus::True
        );
        assert_eq!(cond(&n, "Ready").unwrap().reason, "KubeletReady");
        api.clear_calls();
        let r = s.sync(now(10)).await;
        assert_eq!(r.conditions_written, 0);
        assert_eq!(api.calls(), [ApiCall::GetNode], "nothing to write");
        assert!(s.pending().is_empty());
    }

    #[tokio::test]
    async fn a_fresh_instance_clears_conditions_its_predecessor_left() {
        let api = FakeNodeApi::new("pi5");
        let mut old = sync_for(&api, "pi5");
        old.set_conditions(vec![rcu()]);
        old.sync(now(0)).await;
        drop(old);
        let mut fresh = sync_for(&api, "pi5");
        let r = fresh.sync(now(60)).await;
        assert_eq!(r.conditions_written, 1);
        let n = api.node("pi5");
        let c = cond(&n, "NodeMedicKernelRCUStall").unwrap();
        assert_eq!(
            (c.status, c.reason.as_str()),
            (ConditionStatus::False, conditions::CLEARED_REASON)
        );
        assert_eq!(cond(&n, "Ready").unwrap().status, ConditionStatus::True);
    }

    #[tokio::test]
    async fn while_the_api_is_down_changes_wait_and_coalesce_then_apply_once() {
        let api = FakeNodeApi::new("pi5");
        let mut s = sync_for(&api, "pi5");
        api.set_down(true);
        s.set_conditions(vec![rcu()]);
        for i in 0..3 {
            s.record_event(
                EventDraft::new(EventType::Warning, "RCUStall", "stall on CPU 2"),
                now(i),
            );
        }
        s.want_cordon("NodeMedicKernelRCUStall");
        let r = s.sync(now(3)).await;
        assert!(r.api_down.as_ref().is_some_and(KubeError::api_unavailable));
        let wait = r.retry_in.unwrap();
        assert!(wait >= S / 2 && wait <= S, "{wait:?}");
        // Latest wish wins: the cordon is dropped again before the API returns.
        s.want_uncordon();
        s.set_conditions(vec![]);
        let skipped = s.sync(now(3)).await;
        assert!(!skipped.attempted, "backoff holds the next attempt");
        api.set_down(false);
        api.clear_calls();
        let r = s.sync(now(5)).await;
        assert!(r.api_down.is_none(), "{r:?}");
        let n = api.node("pi5");
        assert!(!n.unschedulable, "the cordon wish was withdrawn while down");
        assert!(
            cond(&n, "NodeMedicKernelRCUStall").is_none(),
            "never published, nothing to clear"
        );
        let events = api.events();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].count, 3);
        assert!(s.pending().is_empty());
    }

    #[tokio::test]
    async fn an_operator_cordon_is_left_alone_and_ours_is_removed() {
        let api = FakeNodeApi::new("pi5");
        api.edit_node("pi5", |n| n.unschedulable = true);
        let mut s = sync_for(&api, "pi5");
        s.want_cordon("NodeMedicMemoryPressure");
        assert_eq!(
            s.sync(now(0)).await.cordon,
            Some(CordonOutcome::CordonedByOperator)
        );
        s.want_uncordon();
        s.sync(now(1)).await;
        assert!(api.node("pi5").unschedulable, "operator's cordon stays");
        assert_eq!(s.cordon_owner(), Some(CordonOwner::Operator));

        api.edit_node("pi5", |n| n.unschedulable = false);
        s.want_cordon("NodeMedicMemoryPressure");
        assert_eq!(
            s.sync(now(2)).await.cordon,
            Some(CordonOutcome::CordonedByUs)
        );
        let n = api.node("pi5");
        assert!(n.unschedulable && cordon::annotated_by_us(&n.annotations));
        s.want_uncordon();
        s.sync(now(3)).await;
        let n = api.node("pi5");
        assert!(!n.unschedulable && n.annotations.is_empty(), "{n:?}");
        let reasons: Vec<_> = api.events().into_iter().map(|e| e.reason).collect();
        assert!(reasons.contains(&"NodeMedicCordoned".to_string()));
        assert!(reasons.contains(&"NodeMedicUncordoned".to_string()));
    }

    #[tokio::test]
    async fn an_operator_uncordoning_us_is_not_fought() {
        let api = FakeNodeApi::new("pi5");
        let mut s = sync_for(&api, "pi5");
        s.want_cordon("NodeMedicMemoryPressure");
        s.sync(now(0)).await;
        api.edit_node("pi5", |n| n.unschedulable = false); // kubectl uncordon
        assert_eq!(
            s.sync(now(10)).await.cordon,
            Some(CordonOutcome::OperatorUncordonedUs)
        );
        s.want_cordon("NodeMedicMemoryPressure");
        s.sync(now(20)).await;
        let n = api.node("pi5");
        assert!(!n.unschedulable && n.annotations.is_empty(), "{n:?}");
        // Once the problem clears and comes back, we may cordon again.
        s.want_uncordon();
        s.sync(now(30)).await;
        s.want_cordon("NodeMedicMemoryPressure");
        s.sync(now(40)).await;
        assert!(api.node("pi5").unschedulable);
    }

    #[tokio::test]
    async fn a_cordon_racing_another_writer_rereads_and_respects_it() {
        let api = FakeNodeApi::new("pi5");
        let mut s = sync_for(&api, "pi5");
        s.want_cordon("NodeMedicMemoryPressure");
        // Someone runs `kubectl cordon` right after our read.
        api.after_next_get(|n| n.unschedulable = true);
        let r = s.sync(now(0)).await;
        assert_eq!(r.cordon, Some(CordonOutcome::CordonedByOperator), "{r:?}");
        assert!(!cordon::annotated_by_us(&api.node("pi5").annotations));
        let gets = api
            .calls()
            .iter()
            .filter(|c| **c == ApiCall::GetNode)
            .count();
        assert_eq!(gets, 2, "re-read after the 409");
    }

    #[tokio::test]
    async fn the_lock_is_refused_while_held_and_granted_after_expiry() {
        let (api, mut a, mut b) = two_nodes_wanting_the_lock();
        assert_eq!(
            a.sync(now(0)).await.lock,
            Some(LockStatus::Held {
                slot: "nodemedic-reboot".into()
            })
        );
        assert!(a.lock_held(now(0).mono));
        let r = b.sync(now(1)).await;
        assert!(
            matches!(&r.lock, Some(LockStatus::Waiting { holders, .. }) if holders == &["pi5"]),
            "{r:?}"
        );
        // pi5 dies holding the lock: nothing renews it.
        drop(a);
        let r = b.sync(now(1 + 899)).await;
        assert!(matches!(r.lock, Some(LockStatus::Waiting { .. })), "{r:?}");
        let r = b.sync(now(1 + 900)).await;
        assert!(matches!(r.lock, Some(LockStatus::Held { .. })), "{r:?}");
        let l = api.lease("nodemedic-reboot").unwrap();
        assert_eq!((l.holder.as_deref(), l.transitions), (Some("pi4"), 1));
        b.want_lock(LockWant::Release);
        b.sync(now(1000)).await;
        assert_eq!(api.lease("nodemedic-reboot").unwrap().holder(), None);
        assert!(!b.lock_held(now(1000).mono));
    }

    #[tokio::test]
    async fn a_holder_renews_and_keeps_the_lock_from_others() {
        let (_api, mut a, mut b) = two_nodes_wanting_the_lock();
        a.sync(now(0)).await;
        b.sync(now(1)).await;
        for t in (300..=1800).step_by(300) {
            a.sync(now(t)).await;
            let r = b.sync(now(t + 1)).await;
            assert!(
                matches!(r.lock, Some(LockStatus::Waiting { .. })),
                "t={t}: {r:?}"
            );
        }
        assert!(a.lock_held(now(1800).mono));
    }

    #[tokio::test]
    async fn a_lock_conflict_is_resolved_by_rereading() {
        let api = FakeNodeApi::new("pi5");
        let mut a = sync_for(&api, "pi5");
        a.want_lock(LockWant::Hold);
        // Another node created the Lease between our read and our create, then released it.
        api.after_next_lease_get(|l| {
            l.holder = None;
            l.duration_secs = Some(900);
        });
        let r = a.sync(now(0)).await;
        assert!(matches!(r.lock, Some(LockStatus::Held { .. })), "{r:?}");
        let calls = api.calls();
        assert!(calls.contains(&ApiCall::CreateLease {
            name: "nodemedic-reboot".into(),
            holder: Some("pi5".into())
        }));
        assert!(calls.contains(&ApiCall::ReplaceLease {
            name: "nodemedic-reboot".into(),
            holder: Some("pi5".into())
        }));
    }

    #[tokio::test]
    async fn the_kubelet_identity_never_touches_leases() {
        let api = FakeNodeApi::new("pi4");
        let mut s = NodeSync::new(
            api.clone(),
            SyncConfig::new("pi4", Capabilities::kubelet("k3s kubelet")),
            now(0),
            1,
        );
        s.want_lock(LockWant::Hold);
        let r = s.sync(now(0)).await;
        assert_eq!(r.lock, Some(LockStatus::NotPermitted));
        assert!(matches!(
            r.errors.as_slice(),
            [KubeError::NotPermitted { .. }]
        ));
        assert!(
            api.calls()
                .iter()
                .all(|c| !matches!(c, ApiCall::GetLease(_) | ApiCall::CreateLease { .. }))
        );
    }

    #[tokio::test]
    async fn a_hanging_api_costs_one_pass_deadline_then_backs_off() {
        let api = FakeNodeApi::new("pi5");
        let mut cfg = SyncConfig::new("pi5", Capabilities::full("admin"));
        cfg.pass_deadline = Duration::from_millis(100);
        let mut s = NodeSync::new(api.clone(), cfg, now(0), 3);
        api.set_hang(true);
        let t0 = std::time::Instant::now();
        let r = s.sync(now(0)).await;
        assert!(t0.elapsed() < Duration::from_secs(2));
        assert!(
            matches!(r.api_down, Some(KubeError::Timeout { .. })),
            "{r:?}"
        );
        assert!(r.retry_in.is_some());
        assert_eq!(s.pending(), [ActionKind::Conditions]);
    }

    #[tokio::test]
    async fn a_missing_node_is_reported_and_the_rest_still_syncs() {
        let api = FakeNodeApi::new("pi5");
        let mut s = sync_for(&api, "pi9");
        s.record_event(
            EventDraft::new(EventType::Normal, "Started", "nodemedic started"),
            now(0),
        );
        let r = s.sync(now(0)).await;
        assert!(r.api_down.is_none());
        assert!(r.errors.iter().any(KubeError::is_not_found), "{r:?}");
        assert_eq!(r.events_written, 1);
    }

    #[tokio::test]
    async fn metrics_follow_the_pass() {
        let api = FakeNodeApi::new("pi5");
        let mut reg = prometheus_client::registry::Registry::default();
        let m = KubeMetrics::register(&mut reg);
        let mut s = sync_for(&api, "pi5").with_metrics(m.clone());
        s.want_cordon("NodeMedicMemoryPressure");
        s.want_lock(LockWant::Hold);
        s.sync(now(0)).await;
        assert_eq!(m.api_up.get(), 1);
        assert_eq!(m.reboot_lease_held.get(), 1);
        let by = |b: &'static str| {
            m.node_cordoned
                .get_or_create(&crate::kube::metrics::CordonLabels { by: b })
                .get()
        };
        assert_eq!((by("nodemedic"), by("operator"), by("none")), (1, 0, 0));
        api.set_down(true);
        s.set_conditions(vec![rcu()]);
        s.sync(now(100)).await;
        assert_eq!(m.api_up.get(), 0);
        let pending = m
            .pending
            .get_or_create(&crate::kube::metrics::PendingLabels { kind: "conditions" })
            .get();
        assert_eq!(pending, 1);
    }
}
