//! Time as the engine keeps it. A Raspberry Pi has no RTC: it boots with the wall clock
//! hours or days behind and NTP steps it later, so the wall clock cannot measure how long
//! anything took. The engine measures intervals (episode ages, cooldowns, the reboot
//! minimum interval, the post-reboot windows) on *node time*: CLOCK_MONOTONIC within a
//! boot, continued across boots from the last node time a previous boot persisted (so it
//! never goes back, and undercounts only the time the node was down). The wall clock is
//! kept beside it for people and for the rolling 24 h caps, whose window must also close
//! across a long power-off.

use serde::{Deserialize, Deserializer, Serialize};

/// A moment: the wall clock (unix seconds) and node time (seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct At {
    pub(crate) unix: u64,
    pub(crate) node: u64,
}

/// The node time of a moment written by a release that kept only the wall clock; replaced
/// at load by [`adopt_wall_times`]. Until then it reads as "just now", which only ever
/// holds an action back.
pub(crate) const NODE_UNKNOWN: u64 = u64::MAX;

const DAY: u64 = 86_400;

impl At {
    pub(crate) fn new(unix: u64, node: u64) -> At {
        At { unix, node }
    }

    /// Node seconds from `self` to `now`; 0 for a moment not in the past.
    pub(crate) fn age(self, now: At) -> u64 {
        now.node.saturating_sub(self.node)
    }

    /// Still inside a rolling 24 h window by either clock: node time (a wall clock stepped
    /// forward must not free the window early) or the wall clock (a node that was off for
    /// a day has not counted that day in node time). A moment ahead of the wall clock
    /// (stepped back) counts as inside.
    pub(crate) fn within_day(self, now: At) -> bool {
        self.age(now) < DAY || now.unix.saturating_sub(self.unix) < DAY
    }

    /// A legacy moment (wall clock only) placed on node time by how long ago the wall clock
    /// says it was; a moment ahead of the wall clock becomes `now`.
    fn adopted(self, now: At) -> At {
        if self.node != NODE_UNKNOWN {
            return self;
        }
        let ago = now.unix.saturating_sub(self.unix);
        At::new(self.unix, now.node.saturating_sub(ago))
    }
}

/// Reads `{"unix": .., "node": ..}`, or a bare unix time as releases before node time
/// wrote it.
impl<'de> Deserialize<'de> for At {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct AtFull {
            unix: u64,
            node: u64,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum AtForm {
            AtFull(AtFull),
            Wall(u64),
        }
        Ok(match AtForm::deserialize(d)? {
            AtForm::AtFull(f) => At::new(f.unix, f.node),
            AtForm::Wall(unix) => At::new(unix, NODE_UNKNOWN),
        })
    }
}

/// Every moment of `st` that a legacy state file left without node time gets one.
pub(crate) fn adopt_wall_times(st: &mut super::engine::PolicyState, now: At) {
    let fix = |a: &mut At| *a = a.adopted(now);
    for e in st.episodes.values_mut() {
        fix(&mut e.started);
        if let Some(a) = e.last_step.as_mut() {
            fix(a);
        }
    }
    for v in st.history.values_mut() {
        for a in v.iter_mut() {
            fix(&mut a.at);
        }
    }
    for a in [st.recovered_at.as_mut(), st.booted_after_reboot.as_mut()]
        .into_iter()
        .flatten()
    {
        fix(a);
    }
    if let Some(r) = st.last_reboot.as_mut() {
        fix(&mut r.at);
    }
}

/// Node time now: the boot's offset plus CLOCK_MONOTONIC.
pub(crate) fn now(st: &super::engine::PolicyState, unix: u64, mono_secs: u64) -> At {
    At::new(unix, st.node_offset.saturating_add(mono_secs))
}

/// The wall clock against the last time a previous run saw (`last_seen_unix`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClockJudgement {
    /// At or past it: the budget window can be trusted.
    Sane,
    /// Behind it and not known to be synchronised: a board without RTC that NTP has not
    /// reached yet. Reboots wait.
    Behind { by: u64 },
    /// Behind it, but the kernel says the clock is synchronised: the remembered time was
    /// the bogus one (a clock once stepped far ahead). Re-base it to now and say so.
    Rebase { bogus: u64 },
}

/// `last_seen_unix` is whole seconds; this little behind is rounding, not a clock problem.
pub(crate) const SLACK_SECS: u64 = 2;

/// `synchronized` is asked only when the clock is behind.
pub(crate) fn judge_clock(
    last_seen: u64,
    wall: u64,
    synchronized: impl FnOnce() -> bool,
) -> ClockJudgement {
    if wall.saturating_add(SLACK_SECS) >= last_seen {
        ClockJudgement::Sane
    } else if synchronized() {
        ClockJudgement::Rebase { bogus: last_seen }
    } else {
        ClockJudgement::Behind {
            by: last_seen - wall,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_wall_times_read_and_are_placed_on_node_time() {
        let a: At = serde_json::from_str("1800000000").unwrap();
        assert_eq!(a, At::new(1_800_000_000, NODE_UNKNOWN));
        let now = At::new(1_800_000_600, 5_000);
        assert_eq!(a.adopted(now), At::new(1_800_000_000, 4_400));
        // Ahead of the wall clock (the clock is behind): "just now".
        let ahead: At = serde_json::from_str("1800009999").unwrap();
        assert_eq!(ahead.adopted(now).node, 5_000);
        let b: At = serde_json::from_str(r#"{"unix": 7, "node": 3}"#).unwrap();
        assert_eq!(b, At::new(7, 3));
        assert_eq!(serde_json::to_string(&b).unwrap(), r#"{"unix":7,"node":3}"#);
    }

    #[test]
    fn the_day_window_closes_only_when_both_clocks_say_so() {
        let t = At::new(1_000_000, 100);
        assert!(
            t.within_day(At::new(1_000_000 + DAY + 1, 100 + DAY - 1)),
            "node says no"
        );
        assert!(
            t.within_day(At::new(1_000_000 + DAY - 1, 100 + DAY + 1)),
            "wall says no"
        );
        assert!(!t.within_day(At::new(1_000_000 + DAY, 100 + DAY)));
        assert!(
            t.within_day(At::new(1_000_000 - 5 * DAY, 100 + 2 * DAY)),
            "stepped back"
        );
        assert_eq!(At::new(0, NODE_UNKNOWN).age(At::new(5, 5)), 0);
    }

    #[test]
    fn a_clock_behind_last_seen_is_rebased_only_when_synchronised() {
        let never = || -> bool { panic!("asked while the clock is not behind") };
        assert_eq!(judge_clock(1000, 999, never), ClockJudgement::Sane);
        assert_eq!(
            judge_clock(1000, 900, || false),
            ClockJudgement::Behind { by: 100 }
        );
        assert_eq!(
            judge_clock(1000, 900, || true),
            ClockJudgement::Rebase { bogus: 1000 }
        );
    }
}
