//! Proof and memory of repairs (issue 17, point 9): a repair that did not help, because
//! the problem came back within `repair_verify_window` of clearing after it, is
//! remembered per (problem, action) in `state.json`, across restarts and reboots. After
//! `max_ineffective_repairs` such failures on this node the action is skipped for that
//! problem (rail `ineffective`), and a ladder that runs out that way raises NeedsHuman at
//! once instead of after `needs_human_after`. This stops useless k3s restarts and
//! reboots on a node with a dying card. Pure: functions of the state and the time.

use serde::{Deserialize, Serialize};

use super::clock::At;
use super::engine::{PolicyConfig, PolicyState};
use crate::model::{ConditionKind, EpisodeKey, Remedy};

/// How often a repair did not help one problem on this node. Names are kept as text, so
/// a state file written by a release that knows more problems or actions still loads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RepairMemory {
    pub(crate) problem: String,
    pub(crate) action: String,
    pub(crate) failures: u32,
    pub(crate) last: At,
}

/// An episode ended after `action` went ahead for it: the repair is proved once the
/// problem stays away for the verify window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Unproved {
    pub(crate) key: EpisodeKey,
    pub(crate) action: Remedy,
    pub(crate) cleared: At,
}

/// Actions that try to repair (not cordon bookkeeping, not asking a human).
pub(crate) fn is_repair(a: Remedy) -> bool {
    !matches!(a, Remedy::Cordon | Remedy::Uncordon | Remedy::NeedsHuman)
}

/// How often `action` did not help `kind` here.
pub(crate) fn failures(st: &PolicyState, kind: ConditionKind, action: Remedy) -> u32 {
    st.ineffective
        .iter()
        .find(|m| m.problem == kind.name() && m.action == action.name())
        .map_or(0, |m| m.failures)
}

/// The rail: this repair failed often enough for this problem to be skipped.
pub(crate) fn skip(cfg: &PolicyConfig, st: &PolicyState, kind: ConditionKind, a: Remedy) -> bool {
    cfg.max_ineffective_repairs > 0
        && is_repair(a)
        && failures(st, kind, a) >= cfg.max_ineffective_repairs
}

/// Remembers that `action` did not help `kind`.
pub(crate) fn remember_failure(st: &mut PolicyState, kind: ConditionKind, action: Remedy, now: At) {
    match st
        .ineffective
        .iter_mut()
        .find(|m| m.problem == kind.name() && m.action == action.name())
    {
        Some(m) => {
            m.failures = m.failures.saturating_add(1);
            m.last = now;
        }
        None => st.ineffective.push(RepairMemory {
            problem: kind.name().to_string(),
            action: action.name().to_string(),
            failures: 1,
            last: now,
        }),
    }
}

/// An episode ended; `last_repair` is the last repair that went ahead for it.
pub(crate) fn episode_ended(
    st: &mut PolicyState,
    key: &EpisodeKey,
    last_repair: Option<Remedy>,
    now: At,
) {
    if let Some(action) = last_repair {
        st.unproved.retain(|u| &u.key != key);
        st.unproved.push(Unproved {
            key: key.clone(),
            action,
            cleared: now,
        });
    }
}

/// A fresh episode of `key` started: a repair that cleared it within the window did not
/// help. Returns that action. Proofs older than the window are dropped.
pub(crate) fn episode_started(
    cfg: &PolicyConfig,
    st: &mut PolicyState,
    key: &EpisodeKey,
    now: At,
) -> Option<Remedy> {
    let window = cfg.repair_verify_window.as_secs();
    st.unproved.retain(|u| u.cleared.age(now) < window);
    let i = st.unproved.iter().position(|u| &u.key == key)?;
    let u = st.unproved.remove(i);
    remember_failure(st, key.kind, u.action, now);
    Some(u.action)
}
