//! `[policy]`: the escalation engine's rails and its ladders (`config::ladder`).

use serde::{Deserialize, Serialize};

use super::checks::dur_range;
use super::duration::ConfigDuration;
use super::ladder::Ladders;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct PolicySection {
    pub(crate) boot_grace: ConfigDuration,
    pub(crate) cooldown: ConfigDuration,
    pub(crate) reboot_min_interval: ConfigDuration,
    pub(crate) needs_human_after: ConfigDuration,
    pub(crate) reboot_verify_window: ConfigDuration,
    /// A problem back this soon after it cleared means the last repair did not help.
    pub(crate) repair_verify_window: ConfigDuration,
    /// After this many repairs that did not help a problem on this node, that action is
    /// skipped for it (0: never).
    pub(crate) max_ineffective_repairs: u32,
    /// After a daemon restart within a boot, held problems not yet re-raised keep their
    /// episodes this long.
    pub(crate) restart_grace: ConfigDuration,
    /// While this file exists nodemedic takes no action (it still detects and reports).
    pub(crate) pause_file: String,
    /// A lockup, hung-task or storage problem within this time of under-voltage or thermal
    /// throttling is attributed to it (`policy::power_cause`).
    pub(crate) power_cause_window: ConfigDuration,
    /// Let the ladder reboot for a problem attributed to power or heat (default: NeedsHuman
    /// instead).
    pub(crate) allow_reboot_on_power_cause: bool,
    pub(crate) ladders: Ladders,
}

impl Default for PolicySection {
    fn default() -> Self {
        PolicySection {
            // Containers starting after a boot are what trigger the Pi's RCU stalls; acting
            // on them in the first minutes would turn one reboot into a loop.
            boot_grace: ConfigDuration::secs(600),
            // Give an action time to work before repeating it.
            cooldown: ConfigDuration::secs(600),
            // Even within the daily budget, never reboot more often than hourly.
            reboot_min_interval: ConfigDuration::secs(3600),
            needs_human_after: ConfigDuration::secs(1800),
            reboot_verify_window: ConfigDuration::secs(1800),
            // As long as the reboot's: a problem back within half an hour was not fixed.
            repair_verify_window: ConfigDuration::secs(1800),
            // Twice is a pattern (a dying card, a flaky NAS); once may be chance.
            max_ineffective_repairs: 2,
            // Memory and runtime need 30-40 s to raise again after a restart, the mount
            // prober a few intervals; twice that is safe and still short.
            restart_grace: ConfigDuration::secs(120),
            pause_file: "/etc/nodemedic/pause".into(),
            // The firmware's under-voltage and a lockup it causes (storage stalls, a wedged
            // USB bridge) arrive within minutes of each other, not seconds.
            power_cause_window: ConfigDuration::secs(600),
            // A reboot adds load and SD wear on a sagging supply and fixes nothing.
            allow_reboot_on_power_cause: false,
            ladders: Ladders::default(),
        }
    }
}

impl PolicySection {
    pub(crate) fn validate(&self, v: &mut Vec<String>) {
        dur_range(v, "policy.boot_grace", self.boot_grace, 0, 86_400_000);
        dur_range(v, "policy.cooldown", self.cooldown, 0, 86_400_000);
        dur_range(
            v,
            "policy.reboot_min_interval",
            self.reboot_min_interval,
            600_000,
            7 * 86_400_000,
        );
        dur_range(
            v,
            "policy.needs_human_after",
            self.needs_human_after,
            60_000,
            7 * 86_400_000,
        );
        dur_range(
            v,
            "policy.reboot_verify_window",
            self.reboot_verify_window,
            0,
            86_400_000,
        );
        dur_range(v, "policy.restart_grace", self.restart_grace, 0, 3_600_000);
        dur_range(
            v,
            "policy.repair_verify_window",
            self.repair_verify_window,
            0,
            7 * 86_400_000,
        );
        dur_range(
            v,
            "policy.power_cause_window",
            self.power_cause_window,
            0,
            86_400_000,
        );
        if !self.pause_file.starts_with('/') {
            v.push(format!(
                "key `policy.pause_file` = \"{}\" must be an absolute path",
                self.pause_file
            ));
        }
        self.ladders.validate(v);
    }
}
