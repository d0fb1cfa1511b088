//! `[remedy]`: how actions are carried out (which unit, which command, how long to wait).

use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::checks::dur_range;
use super::duration::ConfigDuration;

/// What systemd machines use to reboot in order (units stopped, filesystems unmounted).
pub(crate) const DEFAULT_GRACEFUL_ARGV: [&str; 2] = ["systemctl", "reboot"];
/// systemd's DefaultTimeoutStopSec= is 90 s per unit; a shutdown that has not killed us
/// after that plus a margin is stuck.
pub(crate) const DEFAULT_GRACEFUL_DEADLINE: Duration = Duration::from_secs(120);

/// `[remedy]`: how actions are carried out (which unit, which command, how long to wait).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemedySection {
    /// The unit `restart_k3s` restarts and post-boot verification checks; "auto" picks
    /// `k3s.service` on servers and `k3s-agent.service` on agents.
    pub(crate) k3s_unit: String,
    /// The graceful reboot command (run with a deadline).
    pub(crate) reboot_command: Vec<String>,
    /// How long a graceful shutdown may take before the watchdog or reboot(2) takes over.
    pub(crate) reboot_deadline: ConfigDuration,
    /// When the graceful reboot does not finish and no hardware watchdog is owned, force
    /// it with sync + reboot(2). Off only when a stuck reboot should wait for a human.
    pub(crate) reboot_syscall_fallback: bool,
    /// A reboot that has waited this long for the cluster reboot lease is reported (it
    /// keeps waiting).
    pub(crate) lease_wait: ConfigDuration,
    /// A node-local action (restart_k3s, unmount, remove_sandboxes) still running after
    /// this is reported and not waited for; capped at 2/3 of `health.stuck_after`.
    pub(crate) action_deadline: ConfigDuration,
    /// After a reboot nodemedic caused, when to check that the node came back healthy.
    pub(crate) verify_after: ConfigDuration,
    /// Pod name prefixes of DaemonSets that must run again after a reboot (checked only
    /// when such pods exist on the node).
    pub(crate) critical_daemonsets: Vec<String>,
    /// How often the policy loop ticks when no condition changes.
    pub(crate) tick: ConfigDuration,
    /// Ask logind for the reboot (`org.freedesktop.login1.Manager.Reboot`), so the
    /// kubelet's delay inhibitor gets its graceful node shutdown; `reboot_command` when
    /// logind is absent.
    pub(crate) reboot_via_logind: bool,
}

impl Default for RemedySection {
    fn default() -> Self {
        RemedySection {
            k3s_unit: "auto".into(),
            reboot_command: DEFAULT_GRACEFUL_ARGV
                .iter()
                .map(|s| s.to_string())
                .collect(),
            reboot_deadline: ConfigDuration(DEFAULT_GRACEFUL_DEADLINE),
            reboot_syscall_fallback: true,
            // A peer's reboot holds the lease for its reboot and post-boot check, minutes
            // on a Pi; ten minutes of waiting is worth a human's glance.
            lease_wait: ConfigDuration::secs(600),
            // systemctl answers in a second, umount2 is bounded by unmount_timeout, one CRI
            // call by 10 s; 20 s stays below the default health.stuck_after (30 s).
            action_deadline: ConfigDuration::secs(20),
            // The same as the post-boot grace: by then k3s has had time to start pods.
            verify_after: ConfigDuration::secs(600),
            // Longhorn's CSI plugin is what leaves volumes unusable after an unclean reboot
            // (its pod stuck behind a leaked sandbox name).
            critical_daemonsets: vec!["longhorn-csi-plugin".into()],
            // Condition changes wake the loop at once; the tick only ages episodes, whose
            // delays are minutes. With nothing held the loop waits IDLE_TICK instead.
            tick: ConfigDuration::secs(2),
            reboot_via_logind: true,
        }
    }
}

impl RemedySection {
    pub(crate) fn validate(&self, v: &mut Vec<String>) {
        if self.k3s_unit != "auto" && !self.k3s_unit.ends_with(".service") {
            v.push(format!(
                "key `remedy.k3s_unit` = \"{}\" must be \"auto\" or a unit name ending in .service",
                self.k3s_unit
            ));
        }
        if self.reboot_command.is_empty() || self.reboot_command[0].is_empty() {
            v.push(
                "key `remedy.reboot_command` is empty; expected a command such as [\"systemctl\", \"reboot\"]"
                    .into(),
            );
        }
        dur_range(
            v,
            "remedy.reboot_deadline",
            self.reboot_deadline,
            1_000,
            3_600_000,
        );
        dur_range(v, "remedy.lease_wait", self.lease_wait, 0, 86_400_000);
        dur_range(v, "remedy.verify_after", self.verify_after, 0, 86_400_000);
        dur_range(
            v,
            "remedy.action_deadline",
            self.action_deadline,
            100,
            600_000,
        );
        dur_range(v, "remedy.tick", self.tick, 100, 60_000);
    }
}
