//! When the policy loop must look again (issue 24: wake-ups). Conditions that change wake
//! the loop at once; what is left is time: the next ladder step's delay, the NeedsHuman
//! delay after the last step, and holds that may lift by themselves (a cooldown, the boot
//! grace, the lease, the other Nodes). Without this the loop re-ran the engine every
//! `remedy.tick` (2 s) for as long as any problem was held, often for days on a node whose
//! ladder had long run out: 30 of the 59 idle wake-ups a minute measured with one held
//! KernelHungTasks.

use std::time::Duration;

use super::clock::At;
use super::engine::{PolicyConfig, PolicyState};
use crate::config::RunMode;

/// How long after `now` the engine can next decide anything for the episodes in `st`
/// (as `decide` left them), with the same conditions held: `None` when nothing is owed
/// (no episode, or each one waits only for its problem to clear), `Some(ZERO)` when a held
/// step may go ahead at any moment.
pub(crate) fn next_wake(cfg: &PolicyConfig, st: &PolicyState, now: At) -> Option<Duration> {
    if st.lease_wanted {
        return Some(Duration::ZERO);
    }
    let mut soonest: Option<Duration> = None;
    for (key, ep) in &st.episodes {
        if ep.needs_human {
            continue;
        }
        let ladder = cfg.ladders.for_kind(key.kind);
        let due = match ladder.get(ep.next_step) {
            // Held by something that lifts by itself or from outside: look again soon.
            Some(_) if ep.last_hold.is_some() => Duration::ZERO,
            Some(step) => step
                .after
                .saturating_sub(Duration::from_secs(ep.started.age(now))),
            // Every step done (or the ladder is empty): only NeedsHuman is left, and only
            // in act mode.
            None if cfg.mode == RunMode::Act && !ladder.is_empty() => {
                let last = ep.last_step.unwrap_or(ep.started);
                cfg.needs_human_after
                    .saturating_sub(Duration::from_secs(last.age(now)))
            }
            None => continue,
        };
        soonest = Some(soonest.map_or(due, |s| s.min(due)));
    }
    soonest
}
