//! A reboot nobody asked for counts against the reboot budget. When the previous boot
//! ended in a kernel panic or a hang that a watchdog reset (`power::boot_end`), that reboot
//! is noted in the reboot history as if nodemedic had made it: the rolling cap and the
//! minimum interval then see crash, reboot, crash, reboot as the loop it is, and nodemedic
//! asks a human instead of adding reboots of its own.

use super::engine::PolicyState;
use crate::model::Remedy;

/// Records an unplanned reboot at `at_unix` (the boot's start). On node time the new boot
/// starts where the last one's persisted node time ended (`node_seen`; see
/// [`super::clock`]): called before this boot is noted.
pub(crate) fn note_unplanned_reboot(st: &mut PolicyState, at_unix: u64) {
    let at = super::clock::At::new(at_unix, st.node_seen);
    let v = st.history.entry(Remedy::Reboot).or_default();
    v.push(super::engine::Acted { at, subject: None });
    // `last()` must stay the newest: the minimum interval reads it.
    v.sort_by_key(|a| (a.at.node, a.at.unix));
}

#[cfg(test)]
mod tests {
    use super::super::engine::*;
    use super::super::policy_config;
    use super::*;
    use crate::config::{Config, RunMode};
    use crate::model::ConditionKind;
    use std::time::Duration;

    #[test]
    fn a_crash_reboot_spends_the_budget_and_holds_the_next_reboot() {
        let t0 = 1_800_000_000;
        let c = policy_config(&Config {
            mode: RunMode::Act,
            ..Default::default()
        });
        let mut st = PolicyState {
            node_seen: 50_000,
            ..Default::default()
        };
        // The node panicked and came back 20 minutes ago.
        note_unplanned_reboot(&mut st, t0 - 1200);
        let now = crate::policy::clock::At::new(t0, 50_000 + 1200);
        assert_eq!(st.reboot_budget_remaining(&c, now), 2);
        let inp = Inputs {
            now,
            since_boot: Duration::from_secs(3600),
            held: vec![(ConditionKind::KernelHardLockup, String::new())],
            paused: false,
            clock_sane: true,
            lease: Lease::Held,
            restarting: false,
            cluster: None,
            servers: Default::default(),
        };
        let d = decide(&c, &mut st, &inp);
        assert_eq!(d[0].action, Remedy::Reboot);
        assert_eq!(
            d[0].verdict,
            Verdict::Held(Hold::RebootMinInterval),
            "{d:?}"
        );
        assert_eq!(d[1].action, Remedy::NeedsHuman);
    }
}
