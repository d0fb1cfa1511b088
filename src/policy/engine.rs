//! The escalation engine: pure. Conditions, time and persisted state in; decisions out.
//!
//! Each held problem condition is an *episode*. Its ladder's steps come due as the episode
//! ages (on node time, see [`super::clock`]); each due step is checked against the safety
//! rails of [`super::rails`], an ordered list, and the first rail that holds it back is
//! the recorded reason.
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
use crate::model::{ConditionKey, ConditionKind, EpisodeKey, Severity};

pub(crate) use super::clock::At;

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
    SubjectCap,
    RebootMinInterval,
    Cooldown,
    LeaseUnavailable,
    Quorum,
    QuorumUnknown,
    Ineffective,
    MinSchedulable,
    /// The cluster has too few Nodes for a cordon ever to leave the minimum schedulable
    /// (a one-Node cluster): the step is skipped, the ladder goes on.
    TooFewNodes,
    Correlated,
    /// The root filesystem is read-only: k3s is not restarted (the step is skipped).
    RootReadOnly,
    /// The root filesystem is read-only again after this episode's one reboot.
    RootReadOnlyRebooted,
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
            Hold::SubjectCap => "subject_cap",
            Hold::RebootMinInterval => "reboot_min_interval",
            Hold::Cooldown => "cooldown",
            Hold::LeaseUnavailable => "lease_unavailable",
            Hold::Quorum => "quorum",
            Hold::QuorumUnknown => "quorum_unknown",
            Hold::Ineffective => "ineffective",
            Hold::MinSchedulable => "min_schedulable",
            Hold::TooFewNodes => "too_few_nodes",
            Hold::Correlated => "correlated",
            Hold::RootReadOnly => "root_read_only",
            Hold::RootReadOnlyRebooted => "root_read_only_rebooted",
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
                | Hold::MinSchedulable
                | Hold::Correlated
        )
    }

    /// Holds that mean automatic remediation has run out of room.
    fn exhausted(self) -> bool {
        matches!(
            self,
            Hold::Cap
                | Hold::SubjectCap
                | Hold::RebootMinInterval
                | Hold::StateRecovered
                | Hold::RootReadOnlyRebooted
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
    /// The step adds nothing nodemedic has not already done (a cordon already on the
    /// node, shared with this problem): not counted, no cooldown.
    #[serde(default)]
    pub(crate) shared: bool,
}

/// Per-action switches, caps and the dry-run flag, from `[actions.*]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ActionRule {
    pub(crate) enabled: bool,
    pub(crate) dry_run: bool,
    pub(crate) max_per_day: u32,
    /// Per-subject actions: the cap for one subject (under `max_per_day`).
    pub(crate) max_per_subject: u32,
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
    /// A problem back this soon after clearing means the last repair did not help.
    pub(crate) repair_verify_window: Duration,
    /// After this many repairs that did not help a problem, that action is skipped for it
    /// (0: never).
    pub(crate) max_ineffective_repairs: u32,
    /// After a daemon restart within a boot, episodes whose problem is not re-raised yet
    /// are kept this long (at least the slowest detector's raise time).
    pub(crate) restart_grace: Duration,
    /// Never cordon (or drain) when fewer schedulable Nodes than this would be left.
    pub(crate) min_schedulable_nodes: u32,
    /// `policy::power_cause`: the window, and whether an attributed problem may still reboot.
    pub(crate) power_cause_window: Duration,
    pub(crate) allow_reboot_on_power_cause: bool,
}

/// The cluster reboot lease as `kubernetes.reboot_lease` and the node API layer see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lease {
    /// A reboot needs no lease now: `off`; or `when_permitted` and the API is unreachable
    /// (a wedged control-plane node hosts it) or the credentials may not take it (a k3s
    /// agent's kubelet identity).
    NotNeeded,
    /// This node holds it.
    Held,
    /// Needed and not held: not asked for yet, asked and not granted yet, or held by
    /// another node. A reboot waits (transient, nothing spent) and it is asked for.
    Pending,
}

/// Everything the engine looks at on one tick.
#[derive(Clone, Debug)]
pub(crate) struct Inputs {
    /// Wall clock and node time ([`super::clock::now`]).
    pub(crate) now: At,
    pub(crate) since_boot: Duration,
    /// Held problem conditions. An episode starts at the first tick that sees its
    /// condition: the hub's own "since" is wall-clock time and may be off by a step.
    pub(crate) held: Vec<ConditionKey>,
    pub(crate) paused: bool,
    pub(crate) clock_sane: bool,
    pub(crate) lease: Lease,
    /// The other k3s servers, for the quorum rail.
    pub(crate) servers: super::quorum::ServerView,
    /// The daemon restarted within this boot less than `restart_grace` ago: detectors
    /// may not have re-raised what they held before (memory and runtime need 30-40 s).
    /// Episodes whose problem is not held (yet) are kept as they are, not ended: no
    /// uncordon, no ladder reset.
    pub(crate) restarting: bool,
    /// The other Nodes as last read (None: not known: no credentials, API away).
    pub(crate) cluster: Option<ClusterView>,
}

/// What the other Nodes of the cluster say (issue 17, point 8, [`super::cluster`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ClusterView {
    /// Nodes in the cluster, this one included.
    pub(crate) nodes: u32,
    /// Schedulable Nodes (not cordoned), this one included if it is.
    pub(crate) schedulable: u32,
    /// Whether this Node is schedulable now.
    pub(crate) this_schedulable: bool,
    /// Other Nodes holding each problem kind (their `NodeMedic*` condition is True).
    pub(crate) held_elsewhere: BTreeMap<ConditionKind, u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Episode {
    /// When the episode started (`started_unix`: a bare unix time, in older files).
    #[serde(alias = "started_unix")]
    pub(crate) started: At,
    /// Next ladder step to consider.
    pub(crate) next_step: usize,
    #[serde(alias = "last_step_unix")]
    pub(crate) last_step: Option<At>,
    /// The hold last recorded for `next_step`, so a waiting step is audited once.
    pub(crate) last_hold: Option<Hold>,
    pub(crate) needs_human: bool,
    /// True once a cordon for this episode went ahead.
    pub(crate) cordoned: bool,
    /// The last repair that went ahead for it ([`super::repairs`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) last_repair: Option<Remedy>,
}

impl Episode {
    pub(crate) fn starting(at: At) -> Episode {
        Episode {
            started: at,
            next_step: 0,
            last_step: None,
            last_hold: None,
            needs_human: false,
            cordoned: false,
            last_repair: None,
        }
    }
}

/// One action that went ahead: when, and on what subject (per-subject actions).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Acted {
    #[serde(flatten)]
    pub(crate) at: At,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) subject: Option<String>,
}

/// Reads `{"unix", "node", "subject"}`, or a bare unix time as older releases wrote it.
impl<'de> Deserialize<'de> for Acted {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct ActedFull {
            unix: u64,
            node: u64,
            #[serde(default)]
            subject: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum ActedForm {
            ActedFull(ActedFull),
            Wall(u64),
        }
        Ok(match ActedForm::deserialize(d)? {
            ActedForm::ActedFull(f) => Acted {
                at: At::new(f.unix, f.node),
                subject: f.subject,
            },
            ActedForm::Wall(unix) => Acted {
                at: At::new(unix, super::clock::NODE_UNKNOWN),
                subject: None,
            },
        })
    }
}

/// Persisted in `state.json`: survives restarts and reboots.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct PolicyState {
    /// Keyed by `Kind` or `Kind:subject`.
    pub(crate) episodes: BTreeMap<EpisodeKey, Episode>,
    /// Actions that went ahead, per action (bounded to the cap window).
    pub(crate) history: BTreeMap<Remedy, Vec<Acted>>,
    /// nodemedic holds a cordon on the node.
    pub(crate) cordoned_by_us: bool,
    /// A corrupt state file was replaced by defaults then: the reboot budget counts as
    /// spent for 24 h of node time (a wall clock stepped forward does not end it).
    pub(crate) recovered_at: Option<At>,
    /// Last reboot nodemedic caused.
    pub(crate) last_reboot: Option<LastReboot>,
    /// When the daemon first started in the boot following `last_reboot`.
    pub(crate) booted_after_reboot: Option<At>,
    /// The post-boot check after nodemedic's last reboot failed, and why. Raises
    /// `NeedsHuman` until an operator resets it (`nodemedic reset`). Not read by `decide`.
    pub(crate) verification_failed: Option<String>,
    /// The boot the daemon runs in (set by [`super::boot::note_boot`]).
    pub(crate) boot_id: Option<String>,
    /// The post-boot check of the last reboot is owed (survives a daemon restart).
    pub(crate) verify_pending: bool,
    /// A due reboot waits for the cluster lease: the loop asks for it. Derived every tick.
    #[serde(skip)]
    pub(crate) lease_wanted: bool,
    /// Node time at this boot's CLOCK_MONOTONIC zero (see [`super::clock`]).
    pub(crate) node_offset: u64,
    /// The latest node time persisted: where the next boot's node time starts.
    pub(crate) node_seen: u64,
    /// Repairs that did not help, per problem and action ([`super::repairs`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) ineffective: Vec<super::repairs::RepairMemory>,
    /// Repairs after which a problem cleared, not yet proved by staying away.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) unproved: Vec<super::repairs::Unproved>,
    /// The read-only-root episode, if one is running (`readonly_root`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) root_read_only: Option<super::readonly_root::RootReadOnly>,
    /// The cause-aware rail's memory (`policy::power_cause`).
    pub(crate) power: super::power_cause::PowerMemory,
}

/// The last reboot nodemedic made. Written as `[unix, "Problem"]` by releases before the
/// boot ids were kept; those still load (without boot ids).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct LastReboot {
    pub(crate) at: At,
    pub(crate) problem: String,
    /// The boot that was rebooted.
    pub(crate) boot_id: Option<String>,
    /// The boot that followed, once the daemon has started in it: the reboot is proved.
    pub(crate) rebooted_into: Option<String>,
}

impl<'de> Deserialize<'de> for LastReboot {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct LastRebootFull {
            at: At,
            problem: String,
            #[serde(default)]
            boot_id: Option<String>,
            #[serde(default)]
            rebooted_into: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum LastRebootForm {
            LastRebootFull(LastRebootFull),
            Legacy(u64, String),
        }
        Ok(match LastRebootForm::deserialize(d)? {
            LastRebootForm::LastRebootFull(f) => LastReboot {
                at: f.at,
                problem: f.problem,
                boot_id: f.boot_id,
                rebooted_into: f.rebooted_into,
            },
            LastRebootForm::Legacy(at_unix, problem) => LastReboot {
                at: At::new(at_unix, super::clock::NODE_UNKNOWN),
                problem,
                boot_id: None,
                rebooted_into: None,
            },
        })
    }
}

pub(crate) fn episode_key(key: &ConditionKey) -> EpisodeKey {
    EpisodeKey::from(key)
}

impl PolicyState {
    pub(crate) fn count_last_day(&self, a: Remedy, now: At) -> u32 {
        self.history.get(&a).map_or(0, |v| {
            v.iter().filter(|x| x.at.within_day(now)).count() as u32
        })
    }

    pub(crate) fn last(&self, a: Remedy) -> Option<At> {
        self.history.get(&a).and_then(|v| v.last()).map(|x| x.at)
    }

    /// Runs of a per-subject action on `subject` in the rolling day.
    pub(crate) fn count_subject_last_day(&self, a: Remedy, subject: &str, now: At) -> u32 {
        self.history.get(&a).map_or(0, |v| {
            v.iter()
                .filter(|x| x.subject.as_deref() == Some(subject) && x.at.within_day(now))
                .count() as u32
        })
    }

    /// The last run of `a` that a new run on `subject` must cool down from: any run for a
    /// node-wide action, the last on the same subject for a per-subject one.
    pub(crate) fn last_for(&self, a: Remedy, subject: &str) -> Option<At> {
        if !a.per_subject() {
            return self.last(a);
        }
        self.history.get(&a).and_then(|v| {
            v.iter()
                .rev()
                .find(|x| x.subject.as_deref() == Some(subject))
                .map(|x| x.at)
        })
    }

    fn note(&mut self, a: Remedy, now: At, subject: &str) {
        let v = self.history.entry(a).or_default();
        v.push(Acted {
            at: now,
            subject: a.per_subject().then(|| subject.to_string()),
        });
        v.retain(|x| x.at.within_day(now));
    }

    /// The corrupt-state rail is on.
    pub(crate) fn recovering(&self, now: At) -> bool {
        self.recovered_at.is_some_and(|t| t.within_day(now))
    }

    /// Reboots left in the rolling 24 h budget.
    pub(crate) fn reboot_budget_remaining(&self, cfg: &PolicyConfig, now: At) -> u32 {
        let cap = cfg.rules.get(&Remedy::Reboot).map_or(0, |r| r.max_per_day);
        if self.recovering(now) {
            return 0;
        }
        cap.saturating_sub(self.count_last_day(Remedy::Reboot, now))
    }
}

/// Checks one candidate action on `subject` against the rails ([`super::rails::RAILS`],
/// in order).
#[cfg(test)]
pub(crate) fn verdict(
    cfg: &PolicyConfig,
    st: &PolicyState,
    inp: &Inputs,
    action: Remedy,
    subject: &str,
) -> Verdict {
    super::rails::verdict(&super::rails::RailCtx {
        cfg,
        st,
        inp,
        // The problem matters only to the `ineffective` rail; tests of it use `decide`.
        kind: ConditionKind::KernelRcuStall,
        action,
        subject,
    })
}

/// Problems drive the engine; a warning only when its ladder has steps (the node's limits:
/// cordon on no PIDs or a full conntrack table, the opt-in disk reclaim).
pub(crate) fn acted_on(cfg: &PolicyConfig, k: ConditionKind) -> bool {
    k != ConditionKind::NeedsHuman
        && (k.severity() == Severity::Problem || !cfg.ladders.for_kind(k).is_empty())
}

/// One tick. Mutates `st` (episodes, history) and returns the decisions to carry out and
/// audit. Deterministic: the same state and inputs always give the same result.
pub(crate) fn decide(cfg: &PolicyConfig, st: &mut PolicyState, inp: &Inputs) -> Vec<Decision> {
    let now = inp.now;
    let mut out = Vec::new();
    st.lease_wanted = false;
    // The cause-aware rail (policy::power_cause) keys on wall time and "since"; an episode
    // starts at the first tick that sees its condition, so that tick stands for "since".
    let power_held: Vec<(ConditionKey, u64)> =
        inp.held.iter().map(|k| (k.clone(), now.unix)).collect();
    super::power_cause::observe(cfg, &mut st.power, &power_held, now.unix);

    let held: BTreeMap<EpisodeKey, ConditionKey> = inp
        .held
        .iter()
        .filter(|k| acted_on(cfg, k.0))
        .map(|k| (episode_key(k), k.clone()))
        .collect();

    // Episodes whose problem cleared end; their escalation resets. The last repair of
    // each is proved only if the problem stays away.
    let ended: Vec<(EpisodeKey, Option<Remedy>)> = st
        .episodes
        .iter()
        .filter(|(k, _)| !held.contains_key(*k) && !inp.restarting)
        .map(|(k, e)| (k.clone(), e.last_repair))
        .collect();
    for (k, last) in ended {
        st.episodes.remove(&k);
        super::repairs::episode_ended(st, &k, last, now);
    }
    super::readonly_root::track(
        &mut st.root_read_only,
        &inp.held,
        now.unix,
        cfg.reboot_verify_window,
    );

    for (ek, key) in &held {
        let ladder = cfg.ladders.for_kind(key.0);
        if ladder.is_empty() {
            continue;
        }
        let fresh = !st.episodes.contains_key(ek);
        let came_back_after = if fresh && cfg.mode == RunMode::Act {
            super::repairs::episode_started(cfg, st, ek, now)
        } else {
            None
        };
        let mut ep = st
            .episodes
            .remove(ek)
            .unwrap_or_else(|| Episode::starting(now));
        let mk = |action, verdict, step, reason: String| Decision {
            kind: Some(key.0),
            subject: key.1.clone(),
            action,
            verdict,
            step,
            reason,
            shared: false,
        };

        // A problem back soon after the reboot nodemedic made for it: the reboot did not help.
        if fresh
            && cfg.mode == RunMode::Act
            && let (Some(LastReboot { problem, .. }), Some(boot)) =
                (&st.last_reboot, st.booted_after_reboot)
            && problem == key.0.name()
            && boot.age(now) < cfg.reboot_verify_window.as_secs()
        {
            if came_back_after != Some(Remedy::Reboot) {
                super::repairs::remember_failure(st, key.0, Remedy::Reboot, now);
            }
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
            let age = Duration::from_secs(ep.started.age(now));
            // The ladder ran out this tick by skipping a repair known not to help.
            let mut ran_out_skipping = false;
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
                // nodemedic's cordon is already on the node: this problem shares it. Not
                // a new action (no cooldown, no cap), but it keeps the cordon until this
                // problem clears too.
                let shared = step.action == Remedy::Cordon && st.cordoned_by_us;
                let ctx = super::rails::RailCtx {
                    cfg,
                    st,
                    inp,
                    kind: key.0,
                    action: step.action,
                    subject: &key.1,
                };
                let v = if shared {
                    super::rails::operator_verdict(&ctx)
                } else {
                    super::rails::verdict(&ctx)
                };
                if v == Verdict::Held(Hold::LeaseUnavailable) {
                    st.lease_wanted = true;
                }
                let mut why = format!(
                    "{} held for {}s; ladder step {} ({step})",
                    key.0,
                    age.as_secs(),
                    ep.next_step + 1
                );
                if shared {
                    why.push_str("; nodemedic's cordon is already on the node: shared");
                }
                match v {
                    Verdict::Go | Verdict::DryRun => {
                        if v == Verdict::Go {
                            if !shared {
                                st.note(step.action, now, &key.1);
                            }
                            // A drain cordons first: its cordon is nodemedic's too.
                            if matches!(step.action, Remedy::Cordon | Remedy::Drain) {
                                ep.cordoned = true;
                                st.cordoned_by_us = true;
                            }
                            if super::repairs::is_repair(step.action) {
                                ep.last_repair = Some(step.action);
                            }
                            if step.action == Remedy::Reboot {
                                st.last_reboot = Some(LastReboot {
                                    at: now,
                                    problem: key.0.name().to_string(),
                                    boot_id: st.boot_id.clone(),
                                    rebooted_into: None,
                                });
                                st.booted_after_reboot = None;
                                st.verify_pending = false;
                                super::readonly_root::rebooted(&mut st.root_read_only);
                            }
                        }
                        out.push(Decision {
                            shared,
                            ..mk(step.action, v, ep.next_step, why)
                        });
                        ep.next_step += 1;
                        ep.last_step = Some(now);
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
                    Verdict::Held(h) => {
                        // Observe mode, a disabled action or one known not to help this
                        // problem: record and move on, so the audit shows the whole
                        // ladder as it would have run.
                        out.push(mk(step.action, v, ep.next_step, why));
                        ran_out_skipping =
                            h == Hold::Ineffective && ep.next_step + 1 >= ladder.len();
                        ep.next_step += 1;
                        ep.last_step = Some(now);
                        ep.last_hold = None;
                    }
                }
            }
            // Every step done and the problem is still here: ask a human. Not in observe
            // mode, where nothing was tried.
            if cfg.mode == RunMode::Act && !ep.needs_human && ep.next_step >= ladder.len() {
                let last = ep.last_step.unwrap_or(ep.started);
                if ran_out_skipping || last.age(now) >= cfg.needs_human_after.as_secs() {
                    ep.needs_human = true;
                    out.push(mk(
                        Remedy::NeedsHuman,
                        Verdict::Go,
                        ladder.len(),
                        if ran_out_skipping {
                            format!(
                                "{}: the remaining repairs did not help this problem before on this node (max_ineffective_repairs): automatic remediation is exhausted",
                                key.0
                            )
                        } else {
                            format!(
                                "{} still held {}s after the last ladder step: automatic remediation is exhausted",
                                key.0,
                                last.age(now)
                            )
                        },
                    ));
                }
            }
        }
        st.episodes.insert(ek.clone(), ep);
    }

    // Our cordon comes off once no episode that cordoned is left. Undoing our own cordon
    // is restorative, so only a pause holds it back. The node API layer checks the
    // annotation, so an operator's cordon is never removed.
    // Nor while a restarted daemon's detectors re-raise what they held: a restart must
    // change nothing on the node.
    if st.cordoned_by_us
        && !st.episodes.values().any(|e| e.cordoned)
        && !inp.paused
        && !inp.restarting
    {
        st.cordoned_by_us = false;
        out.push(Decision {
            kind: None,
            subject: String::new(),
            action: Remedy::Uncordon,
            verdict: Verdict::Go,
            step: 0,
            reason: "no problem that caused nodemedic's cordon is held any more".into(),
            shared: false,
        });
    }
    super::power_cause::annotate(&st.power, &mut out);
    out
}

/// A step that went ahead failed in a way worth retrying (what carries it was unavailable):
/// the episode waits at that step again instead of moving up the ladder. The attempt stays
/// in the history, so the cooldown spaces the retries and the daily cap bounds them.
pub(crate) fn retry_step(st: &mut PolicyState, key: &EpisodeKey, step: usize) {
    if let Some(ep) = st.episodes.get_mut(key) {
        ep.next_step = ep.next_step.min(step);
        ep.last_hold = None;
    }
}

/// The reboot the engine let go did not happen (it could not start, or the sequence
/// ended with the node still up): nothing more can be done automatically for that
/// episode in this boot, so it needs a human now, not after `needs_human_after`.
/// Returns the `NeedsHuman` decision to carry out, unless the episode is gone or
/// already needs a human.
pub(crate) fn reboot_did_not_happen(
    cfg: &PolicyConfig,
    st: &mut PolicyState,
    key: &EpisodeKey,
    why: &str,
) -> Option<Decision> {
    let ep = st.episodes.get_mut(key)?;
    if ep.needs_human {
        return None;
    }
    ep.needs_human = true;
    Some(Decision {
        kind: Some(key.kind),
        subject: key.subject.clone(),
        action: Remedy::NeedsHuman,
        verdict: Verdict::Go,
        step: cfg.ladders.for_kind(key.kind).len(),
        reason: format!("{}: the reboot did not happen ({why})", key.kind),
        shared: false,
    })
}

/// Episodes that need a human, for the `NeedsHuman` condition.
pub(crate) fn needs_human(st: &PolicyState) -> Vec<EpisodeKey> {
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
        let v = m.entry(k.kind.name().to_string()).or_insert(0);
        *v = (*v).max(e.next_step);
    }
    m
}
