//! The safety rails, in order. A due ladder step goes ahead only if no rail holds it back;
//! the first rail that does is the recorded reason (the audit's "held back: <name>" and
//! the `reason` label of `nodemedic_actions_suppressed_total`).
//!
//! | # | rail | holds | why |
//! |---|---|---|---|
//! | 1 | `observe_mode` | everything | a fresh install never touches a running node |
//! | 2 | `disabled` | an action off in `[actions.*]` | the operator's switch |
//! | 3 | `paused` | everything | the pause file or node annotation: an operator at work wants no surprises |
//! | 4 | `ineffective` | repairs | this repair did not help this problem `max_ineffective_repairs` times on this node (it came back within `repair_verify_window`): skipped; a ladder that runs out so raises NeedsHuman at once ([`super::repairs`]) |
//! | 5 | `boot_grace` | disruptive actions | container starts after a boot cause the Pi's stalls; acting on them would loop |
//! | 6 | `clock_unsynced` | reboot | the budget window is meaningless with a clock behind what a previous run saw |
//! | 7 | `state_recovered` | reboot | a lost budget counts as spent for 24 h of node time |
//! | 8 | `cap` | any | `max_per_day` in a rolling 24 h, node-wide: no action repeats without bound |
//! | 9 | `subject_cap` | per-subject actions | `max_per_subject_per_day` for this mount point or sandbox name |
//! | 10 | `reboot_min_interval` | reboot | no reboot loop even within budget (node time) |
//! | 11 | `cooldown` | any | give the last run time to work (node time); per subject for per-subject actions, so N blocked pods are freed at once, not one per cooldown |
//! | 12 | `too_few_nodes` | cordon, drain | the cluster has too few Nodes for a cordon ever to leave `kubernetes.min_schedulable_nodes` schedulable (a one-Node cluster): skipped, the ladder goes on, so the restart and reboot steps behind it still run |
//! | 13 | `min_schedulable` | cordon, drain | cordoning this Node would leave fewer schedulable Nodes than `kubernetes.min_schedulable_nodes` (default 1) now, because others are cordoned: a cluster-wide cause must not cordon every Node. Transient: the step waits until another Node is schedulable again |
//! | 14 | `correlated` | restart_k3s, reboot, unmount, drain, evict_besteffort | the same problem is held on at least half of the Nodes (their `NodeMedic*` conditions): a shared cause (NAS, power, switch) that no local action fixes. Transient |
//! | 15 | `root_read_only` | restart_k3s | the root filesystem is read-only: k3s cannot start on it and a restart loses the pods' state for nothing; the step is skipped ([`super::readonly_root`]) |
//! | 16 | `root_read_only_rebooted` | reboot | the root is read-only again after this episode's one reboot: a dying SD card is never rebooted in a loop; exhausting (NeedsHuman) |
//! | 17 | `quorum_unknown` | restart_k3s, reboot on a k3s server | the other servers cannot be seen (API away, not listed yet): a restart or reboot could take the last healthy etcd member down ([`super::quorum`]). Transient; `servers.allow_reboot_with_peer_down` lets a reboot go |
//! | 18 | `quorum` | restart_k3s, reboot on a k3s server | another server is down or unhealthy, or this member going away would leave fewer healthy etcd members than a majority ([`super::quorum`]). Transient |
//! | 19 | `lease_unavailable` | reboot; restart_k3s on a server with other servers | the cluster reboot lease is needed (`kubernetes.reboot_lease`) and not held yet: not granted yet or held by another node (protects etcd quorum: one server down at a time). Transient: nothing is spent, the lease is asked for, and the step goes ahead once it is granted |
//!
//! Then a dry-run action is only recorded. A cordon step while nodemedic's cordon is
//! already on the node is shared: only rails 1-3 apply ([`operator_verdict`]), nothing is
//! counted, and the cordon stays until every problem sharing it has cleared. To add a rail, write its check in its own file
//! under `src/policy/`, add a [`Hold`] variant (its snake_case name, and whether it is
//! transient, exhausting or skips the step), and one entry here, where its order says
//! which reason wins when several apply.

use super::engine::{ActionRule, Hold, Inputs, Lease, PolicyConfig, PolicyState, Verdict};
use crate::config::RunMode;
use crate::model::{ConditionKind, Remedy};

/// What a rail looks at.
pub(crate) struct RailCtx<'a> {
    pub(crate) cfg: &'a PolicyConfig,
    pub(crate) st: &'a PolicyState,
    pub(crate) inp: &'a Inputs,
    /// The problem the step is for.
    pub(crate) kind: ConditionKind,
    pub(crate) action: Remedy,
    /// The episode's subject (a mount point, a sandbox name; empty for node-wide ones).
    pub(crate) subject: &'a str,
}

impl RailCtx<'_> {
    fn rule(&self) -> ActionRule {
        self.cfg
            .rules
            .get(&self.action)
            .copied()
            .unwrap_or(ActionRule {
                enabled: false,
                dry_run: false,
                max_per_day: 0,
                max_per_subject: 0,
            })
    }
}

/// One named rail: `holds` true means the action waits, is skipped or is given up on, as
/// its [`Hold`] says.
pub(crate) struct Rail {
    pub(crate) hold: Hold,
    pub(crate) holds: fn(&RailCtx<'_>) -> bool,
}

/// Every rail, in the order they are checked.
pub(crate) const RAILS: &[Rail] = &[
    Rail {
        hold: Hold::ObserveMode,
        holds: |c| c.cfg.mode == RunMode::Observe,
    },
    Rail {
        hold: Hold::Disabled,
        holds: |c| !c.rule().enabled,
    },
    Rail {
        hold: Hold::Paused,
        holds: |c| c.inp.paused,
    },
    Rail {
        hold: Hold::Ineffective,
        holds: |c| super::repairs::skip(c.cfg, c.st, c.kind, c.action),
    },
    Rail {
        hold: Hold::BootGrace,
        holds: |c| c.action.disruptive() && c.inp.since_boot < c.cfg.boot_grace,
    },
    Rail {
        hold: Hold::ClockUnsynced,
        holds: |c| c.action == Remedy::Reboot && !c.inp.clock_sane,
    },
    Rail {
        hold: Hold::StateRecovered,
        holds: |c| c.action == Remedy::Reboot && c.st.recovering(c.inp.now),
    },
    Rail {
        hold: Hold::Cap,
        holds: |c| c.st.count_last_day(c.action, c.inp.now) >= c.rule().max_per_day,
    },
    Rail {
        hold: Hold::SubjectCap,
        holds: |c| {
            c.action.per_subject()
                && c.st.count_subject_last_day(c.action, c.subject, c.inp.now)
                    >= c.rule().max_per_subject
        },
    },
    Rail {
        hold: Hold::RebootMinInterval,
        holds: |c| {
            c.action == Remedy::Reboot
                && c.st
                    .last(c.action)
                    .is_some_and(|t| t.age(c.inp.now) < c.cfg.reboot_min_interval.as_secs())
        },
    },
    Rail {
        hold: Hold::Cooldown,
        holds: |c| {
            c.st.last_for(c.action, c.subject)
                .is_some_and(|t| t.age(c.inp.now) < c.cfg.cooldown.as_secs())
        },
    },
    Rail {
        hold: Hold::TooFewNodes,
        holds: |c| {
            c.inp
                .cluster
                .as_ref()
                .is_some_and(|v| super::cluster::too_few_nodes(c.cfg, v, c.action))
        },
    },
    Rail {
        hold: Hold::MinSchedulable,
        holds: |c| {
            c.inp
                .cluster
                .as_ref()
                .is_some_and(|v| super::cluster::below_min_schedulable(c.cfg, v, c.action))
        },
    },
    Rail {
        hold: Hold::Correlated,
        holds: |c| {
            super::cluster::held_when_correlated(c.action)
                && c.inp
                    .cluster
                    .as_ref()
                    .is_some_and(|v| super::cluster::correlated(v, c.kind))
        },
    },
    Rail {
        hold: Hold::RootReadOnly,
        holds: |c| {
            super::readonly_root::hold(&c.st.root_read_only, &c.inp.held, c.action)
                == Some(Hold::RootReadOnly)
        },
    },
    Rail {
        hold: Hold::RootReadOnlyRebooted,
        holds: |c| {
            super::readonly_root::hold(&c.st.root_read_only, &c.inp.held, c.action)
                == Some(Hold::RootReadOnlyRebooted)
        },
    },
    Rail {
        hold: Hold::QuorumUnknown,
        holds: |c| quorum_hold(c) == Some(Hold::QuorumUnknown),
    },
    Rail {
        hold: Hold::Quorum,
        holds: |c| quorum_hold(c) == Some(Hold::Quorum),
    },
    Rail {
        hold: Hold::LeaseUnavailable,
        holds: |c| {
            (c.action == Remedy::Reboot && c.inp.lease == Lease::Pending)
                || quorum_hold(c) == Some(Hold::LeaseUnavailable)
        },
    },
];

/// What the quorum rule says of this step (servers only; `None` elsewhere).
fn quorum_hold(c: &RailCtx<'_>) -> Option<Hold> {
    super::quorum::hold(
        &c.inp.servers,
        c.inp.lease,
        c.action,
        c.cfg.allow_reboot_with_peer_down,
    )
}

/// The first rail that holds the action, else dry run or go.
pub(crate) fn verdict(c: &RailCtx<'_>) -> Verdict {
    first_hold(c, RAILS)
}

/// The operator's rails only (observe mode, the switch, the pause): for a step that adds
/// nothing to what nodemedic already did (sharing its cordon).
pub(crate) fn operator_verdict(c: &RailCtx<'_>) -> Verdict {
    first_hold(c, &RAILS[..3])
}

fn first_hold(c: &RailCtx<'_>, rails: &[Rail]) -> Verdict {
    if let Some(r) = rails.iter().find(|r| (r.holds)(c)) {
        return Verdict::Held(r.hold);
    }
    if c.rule().dry_run {
        Verdict::DryRun
    } else {
        Verdict::Go
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_rails_are_the_first_three() {
        let holds: Vec<Hold> = RAILS[..3].iter().map(|r| r.hold).collect();
        assert_eq!(holds, vec![Hold::ObserveMode, Hold::Disabled, Hold::Paused]);
    }

    #[test]
    fn every_rail_has_its_own_hold_and_the_module_doc_lists_them_in_order() {
        let doc = include_str!("rails.rs");
        let mut last = 0;
        for (i, r) in RAILS.iter().enumerate() {
            assert!(
                RAILS[..i].iter().all(|o| o.hold != r.hold),
                "{} twice",
                r.hold.name()
            );
            let row = format!("| {} | `{}` |", i + 1, r.hold.name());
            let at = doc.find(&row).unwrap_or_else(|| panic!("no doc row {row}"));
            assert!(at > last, "doc rows out of order at {row}");
            last = at;
        }
    }
}
