//! The escalation engine: pure. Conditions, time and persisted state in; decisions out.
//!
//! Each held problem condition is an *episode*. Its ladder's steps come due as the episode
//! ages; each due step is checked against the safety rails, in this order, and the first
//! rail that holds it back is the recorded reason:
//!
//! | rail | why |
//! |---|---|
//! | observe mode | a fresh install never touches a running node |
//! | action disabled in `[actions.*]` | the operator's switch |
//! | pause (file or node annotation) | an operator at work wants no surprises |
//! | post-boot grace (disruptive actions) | container starts after a boot cause the Pi's stalls; acting on them would loop |
//! | clock not synced (reboot) | the budget window is meaningless with a clock in the past |
//! | state recovered from corruption (reboot) | a lost budget is treated as spent for 24 h |
//! | cap per rolling 24 h (`max_per_day`) | no action repeats without bound |
//! | reboot minimum interval | no reboot loop even within budget |
//! | per-action cooldown | give the last action time to work |
//! | cluster reboot lease held elsewhere (API reachable) | protects etcd quorum |
//! | quorum rail ([`super::quorum`]): a server's restart or reboot with another server down, too few healthy etcd members, or none to be seen | protects etcd quorum |
//! | dry-run | record, count, do nothing |
//!
//! Transient rails (pause, grace, clock, cooldown, lease) make the step wait; permanent
//! ones in observe mode or a disabled action skip the step so the audit shows the whole
//! ladder as it would have run; an exhausted cap or reboot budget means automatic
//! remediation has given up: the episode is marked `NeedsHuman` and nothing more is done
//! for it until it clears or an operator resets it. A step that waits is recorded once
//! per reason, not on every tick.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::RunMode;
use crate::config::ladder::Ladders;
use crate::model::Remedy;
use crate::model::{ConditionKey, ConditionKind, Severity};

/// Why an action was held back. The snake_case name is the metric's `reason` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Hold {
    ObserveMode,
    Disabled,
    Paused,
    BootGrace,
    ClockUnsynced,
    StateRecovered,
    Cap,
    RebootMinInterval,
    Cooldown,
    LeaseUnavailable,
    Quorum,
    QuorumUnknown,
}

impl Hold {
    pub fn name(self) -> &'static str {
        match self {
            Hold::ObserveMode => "observe_mode",
            Hold::Disabled => "disabled",
            Hold::Paused => "paused",
            Hold::BootGrace => "boot_grace",
            Hold::ClockUnsynced => "clock_unsynced",
            Hold::StateRecovered => "state_recovered",
            Hold::Cap => "cap",
            Hold::RebootMinInterval => "reboot_min_interval",
            Hold::Cooldown => "cooldown",
            Hold::LeaseUnavailable => "lease_unavailable",
            Hold::Quorum => "quorum",
            Hold::QuorumUnknown => "quorum_unknown",
        }
    }

    /// Holds that mean "try again later" rather than "skip" or "give up".
    fn transient(self) -> bool {
        matches!(
            self,
            Hold::Paused
                | Hold::BootGrace
                | Hold::ClockUnsynced
                | Hold::Cooldown
                | Hold::LeaseUnavailable
                | Hold::Quorum
                | Hold::QuorumUnknown
        )
    }

    /// Holds that mean automatic remediation has run out of room.
    fn exhausted(self) -> bool {
        matches!(
            self,
            Hold::Cap | Hold::RebootMinInterval | Hold::StateRecovered
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "verdict", content = "hold")]
pub(crate) enum Verdict {
    Go,
    DryRun,
    Held(Hold),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The problem the decision is for; None for node-wide housekeeping (uncordon).
    pub(crate) kind: Option<ConditionKind>,
    pub(crate) subject: String,
    pub(crate) action: Remedy,
    pub(crate) verdict: Verdict,
    /// Ladder step index (NeedsHuman: the ladder length; Uncordon: 0).
    pub(crate) step: usize,
    pub reason: String,
}

/// Per-action switches, caps and the dry-run flag, from `[actions.*]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ActionRule {
    pub(crate) enabled: bool,
    pub(crate) dry_run: bool,
    pub(crate) max_per_day: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PolicyConfig {
    pub(crate) mode: RunMode,
    pub(crate) ladders: Ladders,
    pub(crate) rules: BTreeMap<Remedy, ActionRule>,
    pub(crate) boot_grace: Duration,
    pub(crate) cooldown: Duration,
    pub(crate) reboot_min_interval: Duration,
    pub(crate) needs_human_after: Duration,
    /// A problem that comes back this soon after a reboot nodemedic caused means the
    /// reboot did not help.
    pub(crate) reboot_verify_window: Duration,
    /// `[servers] allow_reboot_with_peer_down`, for the quorum rail.
    pub(crate) allow_reboot_with_peer_down: bool,
    /// `policy::power_cause`: the window, and whether an attributed problem may still reboot.
    pub(crate) power_cause_window: Duration,
    pub(crate) allow_reboot_on_power_cause: bool,
}

/// The cluster reboot lease as the node API layer sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lease {
    /// API unreachable: node-local healing must still work (a wedged control-plane node
    /// hosts the API itself), so the lease is not required.
    ApiUnreachable,
    Available,
    HeldElsewhere,
}

/// Everything the engine looks at on one tick.
#[derive(Clone, Debug)]
pub(crate) struct Inputs {
    pub(crate) now_unix: u64,
    pub(crate) since_boot: Duration,
    /// Held problem conditions with the unix time each was first seen.
    pub(crate) held: Vec<(ConditionKey, u64)>,
    pub(crate) paused: bool,
    pub(crate) clock_sane: bool,
    pub(crate) lease: Lease,
    /// The other k3s servers, for the quorum rail.
    pub(crate) servers: super::quorum::ServerView,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Episode {
    pub(crate) started_unix: u64,
    /// Next ladder step to consider.
    pub(crate) next_step: usize,
    pub(crate) last_step_unix: Option<u64>,
    /// The hold last recorded for `next_step`, so a waiting step is audited once.
    pub(crate) last_hold: Option<Hold>,
    pub(crate) needs_human: bool,
    /// True once a cordon for this episode went ahead.
    pub(crate) cordoned: bool,
}

/// Persisted in `state.json`: survives restarts and reboots.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct PolicyState {
    /// Keyed by `Kind` or `Kind:subject`.
    pub(crate) episodes: BTreeMap<String, Episode>,
    /// Unix times of actions that went ahead, per action (bounded to the cap window).
    pub(crate) history: BTreeMap<Remedy, Vec<u64>>,
    /// nodemedic holds a cordon on the node.
    pub(crate) cordoned_by_us: bool,
    /// Set from the persisted state: a corrupt state file was replaced at this time.
    pub(crate) recovered_at: Option<u64>,
    /// Last reboot nodemedic caused: (unix time, problem kind name).
    pub(crate) last_reboot: Option<(u64, String)>,
    /// Unix time of the boot following `last_reboot`, set when the daemon first starts in it.
    pub(crate) booted_after_reboot: Option<u64>,
    /// The post-boot check after nodemedic's last reboot failed, and why. Raises
    /// `NeedsHuman` until an operator resets it (`nodemedic reset`). Not read by `decide`.
    pub(crate) verification_failed: Option<String>,
    /// The cause-aware rail's memory (`policy::power_cause`).
    pub(crate) power: super::power_cause::PowerMemory,
}

const DAY: u64 = 86_400;

pub(crate) fn episode_key(key: &ConditionKey) -> String {
    if key.1.is_empty() {
        key.0.name().to_string()
    } else {
        format!("{}:{}", key.0.name(), key.1)
    }
}

impl PolicyState {
    fn count_last_day(&self, a: Remedy, now: u64) -> u32 {
        self.history.get(&a).map_or(0, |v| {
            v.iter().filter(|&&t| t + DAY > now && t <= now).count() as u32
        })
    }

    fn last(&self, a: Remedy) -> Option<u64> {
        self.history.get(&a).and_then(|v| v.last().copied())
    }

    fn note(&mut self, a: Remedy, now: u64) {
        let v = self.history.entry(a).or_default();
        v.push(now);
        v.retain(|&t| t + DAY > now);
    }

    /// Reboots left in the rolling 24 h budget.
    pub(crate) fn reboot_budget_remaining(&self, cfg: &PolicyConfig, now: u64) -> u32 {
        let cap = cfg.rules.get(&Remedy::Reboot).map_or(0, |r| r.max_per_day);
        if self.recovered_at.is_some_and(|t| t + DAY > now) {
            return 0;
        }
        cap.saturating_sub(self.count_last_day(Remedy::Reboot, now))
    }
}

/// Checks one candidate action against the rails.
pub(crate) fn verdict(
    cfg: &PolicyConfig,
    st: &PolicyState,
    inp: &Inputs,
    action: Remedy,
) -> Verdict {
    let rule = cfg.rules.get(&action).copied().unwrap_or(ActionRule {
        enabled: false,
        dry_run: false,
        max_per_day: 0,
    });
    let now = inp.now_unix;
    if cfg.mode == RunMode::Observe {
        return Verdict::Held(Hold::ObserveMode);
    }
    if !rule.enabled {
        return Verdict::Held(Hold::Disabled);
    }
    if inp.paused {
        return Verdict::Held(Hold::Paused);
    }
    if action.disruptive() && inp.since_boot < cfg.boot_grace {
        return Verdict::Held(Hold::BootGrace);
    }
    if action == Remedy::Reboot {
        if !inp.clock_sane {
            return Verdict::Held(Hold::ClockUnsynced);
        }
        if st.recovered_at.is_some_and(|t| t + DAY > now) {
            return Verdict::Held(Hold::StateRecovered);
        }
    }
    if st.count_last_day(action, now) >= rule.max_per_day {
        return Verdict::Held(Hold::Cap);
    }
    if let Some(last) = st.last(action) {
        if action == Remedy::Reboot && last + cfg.reboot_min_interval.as_secs() > now {
            return Verdict::Held(Hold::RebootMinInterval);
        }
        if last + cfg.cooldown.as_secs() > now {
            return Verdict::Held(Hold::Cooldown);
        }
    }
    if action == Remedy::Reboot && inp.lease == Lease::HeldElsewhere {
        return Verdict::Held(Hold::LeaseUnavailable);
    }
    if rule.dry_run {
        return Verdict::DryRun;
    }
    Verdict::Go
}

/// One tick. Mutates `st` (episodes, history) and returns the decisions to carry out and
/// audit. Deterministic: the same state and inputs always give the same result.
pub(crate) fn decide(cfg: &PolicyConfig, st: &mut PolicyState, inp: &Inputs) -> Vec<Decision> {
    let now = inp.now_unix;
    let mut out = Vec::new();
    super::power_cause::observe(cfg, &mut st.power, &inp.held, now);

    let held: BTreeMap<String, (ConditionKey, u64)> = inp
        .held
        .iter()
        .filter(|(k, _)| k.0.severity() == Severity::Problem && k.0 != ConditionKind::NeedsHuman)
        .map(|(k, since)| (episode_key(k), (k.clone(), *since)))
        .collect();

    // Episodes whose problem cleared end; their escalation resets.
    st.episodes.retain(|k, _| held.contains_key(k));

    for (ek, (key, since)) in &held {
        let ladder = cfg.ladders.for_kind(key.0);
        if ladder.is_empty() {
            continue;
        }
        let fresh = !st.episodes.contains_key(ek);
        let mut ep = st.episodes.remove(ek).unwrap_or(Episode {
            started_unix: (*since).min(now),
            ..Default::default()
        });
        let mk = |action, verdict, step, reason: String| Decision {
            kind: Some(key.0),
            subject: key.1.clone(),
            action,
            verdict,
            step,
            reason,
        };

        // A problem back soon after the reboot nodemedic made for it: the reboot did not help.
        if fresh
            && cfg.mode == RunMode::Act
            && let (Some((_, problem)), Some(boot)) = (&st.last_reboot, st.booted_after_reboot)
            && problem == key.0.name()
            && now < boot + cfg.reboot_verify_window.as_secs()
        {
            ep.needs_human = true;
            out.push(mk(
                        Remedy::NeedsHuman,
                        Verdict::Go,
                        ladder.len(),
                        format!(
                            "{} came back within {}s of the reboot nodemedic made for it: the reboot did not help",
                            key.0,
                            cfg.reboot_verify_window.as_secs()
                        ),
                    ));
        }

        if !ep.needs_human {
            let age = Duration::from_secs(now.saturating_sub(ep.started_unix));
            // At most one step goes ahead per tick: each action gets observed before the next.
            while let Some(step) = ladder.get(ep.next_step).copied() {
                if age < step.after {
                    break;
                }
                if let Some(why) =
                    super::power_cause::instead_of_reboot(cfg, &st.power, key, step.action)
                {
                    ep.needs_human = true;
                    out.push(mk(Remedy::NeedsHuman, Verdict::Go, ladder.len(), why));
                    break;
                }
                let v = match verdict(cfg, st, inp, step.action) {
                    v @ (Verdict::Go | Verdict::DryRun) => super::quorum::hold(
                        &inp.servers,
                        inp.lease,
                        step.action,
                        cfg.allow_reboot_with_peer_down,
                    )
                    .map_or(v, Verdict::Held),
                    held => held,
                };
                let why = format!(
                    "{} held for {}s; ladder step {} ({step})",
                    key.0,
                    age.as_secs(),
                    ep.next_step + 1
                );
                match v {
                    Verdict::Go | Verdict::DryRun => {
                        if v == Verdict::Go {
                            st.note(step.action, now);
                            if step.action == Remedy::Cordon {
                                ep.cordoned = true;
                                st.cordoned_by_us = true;
                            }
                            if step.action == Remedy::Reboot {
                                st.last_reboot = Some((now, key.0.name().to_string()));
                                st.booted_after_reboot = None;
                            }
                        }
                        out.push(mk(step.action, v, ep.next_step, why));
                        ep.next_step += 1;
                        ep.last_step_unix = Some(now);
                        ep.last_hold = None;
                        if v == Verdict::Go {
                            break;
                        }
                    }
                    Verdict::Held(h) if h.transient() => {
                        if ep.last_hold != Some(h) {
                            out.push(mk(step.action, v, ep.next_step, why));
                            ep.last_hold = Some(h);
                        }
                        break;
                    }
                    Verdict::Held(h) if h.exhausted() => {
                        out.push(mk(step.action, v, ep.next_step, why));
                        ep.needs_human = true;
                        out.push(mk(
                            Remedy::NeedsHuman,
                            Verdict::Go,
                            ladder.len(),
                            format!(
                                "{}: {} is held back ({}): automatic remediation gave up",
                                key.0,
                                step.action,
                                h.name()
                            ),
                        ));
                        break;
                    }
                    Verdict::Held(_) => {
                        // Observe mode or a disabled action: record and move on, so the
                        // audit shows the whole ladder as it would have run.
                        out.push(mk(step.action, v, ep.next_step, why));
                        ep.next_step += 1;
                        ep.last_step_unix = Some(now);
                        ep.last_hold = None;
                    }
                }
            }
            // Every step done and the problem is still here: ask a human. Not in observe
            // mode, where nothing was tried.
            if cfg.mode == RunMode::Act && !ep.needs_human && ep.next_step >= ladder.len() {
                let last = ep.last_step_unix.unwrap_or(ep.started_unix);
                if now >= last + cfg.needs_human_after.as_secs() {
                    ep.needs_human = true;
                    out.push(mk(
                        Remedy::NeedsHuman,
                        Verdict::Go,
                        ladder.len(),
                        format!(
                            "{} still held {}s after the last ladder step: automatic remediation is exhausted",
                            key.0,
                            now - last
                        ),
                    ));
                }
            }
        }
        st.episodes.insert(ek.clone(), ep);
    }

    // Our cordon comes off once no episode that cordoned is left. Undoing our own cordon
    // is restorative, so only a pause holds it back. The node API layer checks the
    // annotation, so an operator's cordon is never removed.
    if st.cordoned_by_us && !st.episodes.values().any(|e| e.cordoned) && !inp.paused {
        st.cordoned_by_us = false;
        out.push(Decision {
            kind: None,
            subject: String::new(),
            action: Remedy::Uncordon,
            verdict: Verdict::Go,
            step: 0,
            reason: "no problem that caused nodemedic's cordon is held any more".into(),
        });
    }
    super::power_cause::annotate(&st.power, &mut out);
    out
}

/// Episodes that need a human, for the `NeedsHuman` condition.
pub(crate) fn needs_human(st: &PolicyState) -> Vec<String> {
    st.episodes
        .iter()
        .filter(|(_, e)| e.needs_human)
        .map(|(k, _)| k.clone())
        .collect()
}

/// Current ladder step per problem kind (0 = none taken), for `nodemedic_escalation_step`.
pub(crate) fn escalation_steps(st: &PolicyState) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for (k, e) in &st.episodes {
        let kind = k.split(':').next().unwrap_or(k).to_string();
        let v = m.entry(kind).or_insert(0);
        *v = (*v).max(e.next_step);
    }
    m
}
