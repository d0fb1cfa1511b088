//! Escalation ladders: per problem, which actions apply and after how long.
//!
//! Written in the config as `"action@delay"` strings, e.g.
//! `kernel_rcu_stall = ["cordon@0s", "restart_k3s@15m", "reboot@30m"]`: each step runs
//! when the problem has been held continuously for its delay since the episode started.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

use super::duration::{ConfigDuration, parse_duration};
use crate::model::{ConditionKind, Remedy};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Step {
    pub(crate) action: Remedy,
    pub(crate) after: Duration,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.action, ConfigDuration(self.after))
    }
}

impl Step {
    pub(crate) fn parse(s: &str) -> Result<Step, String> {
        let allowed = Remedy::LADDER_ACTIONS.map(|a| a.name()).join(", ");
        let (a, d) = s
            .split_once('@')
            .ok_or_else(|| format!("\"{s}\" is not a step; write \"action@delay\" such as \"cordon@0s\" (actions: {allowed})"))?;
        let action = Remedy::from_name(a.trim()).ok_or_else(|| {
            format!(
                "\"{s}\": unknown action \"{}\"; allowed: {allowed}",
                a.trim()
            )
        })?;
        let after = parse_duration(d).map_err(|e| format!("\"{s}\": delay {e}"))?;
        Ok(Step { action, after })
    }
}

impl Serialize for Step {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Step::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The ladder of `UserMountHung`, and the only actions it may hold: a mount any user can
/// make and stall on purpose must never earn a restart, an unmount, a drain or a reboot.
const USER_MOUNT_HUNG: &str = "user_mount_hung";
const USER_MOUNT_ACTIONS: [Remedy; 1] = [Remedy::Cordon];

fn steps(list: &[(Remedy, u64)]) -> Vec<Step> {
    list.iter()
        .map(|&(action, secs)| Step {
            action,
            after: Duration::from_secs(secs),
        })
        .collect()
}

/// One ladder per problem condition. Warnings (KernelLogBlind, HardNFSMount) have none.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Ladders {
    pub(crate) kernel_rcu_stall: Vec<Step>,
    pub(crate) kernel_soft_lockup: Vec<Step>,
    pub(crate) kernel_hard_lockup: Vec<Step>,
    pub(crate) kernel_hung_tasks: Vec<Step>,
    pub(crate) network_mount_hung: Vec<Step>,
    pub(crate) memory_pressure: Vec<Step>,
    pub(crate) sandbox_name_reserved: Vec<Step>,
    pub(crate) container_runtime_down: Vec<Step>,
    pub(crate) pids_low: Vec<Step>,
    pub(crate) file_handles_low: Vec<Step>,
    pub(crate) conntrack_table_full: Vec<Step>,
    pub(crate) disk_space_low: Vec<Step>,
    pub(crate) inodes_low: Vec<Step>,
    pub(crate) zombie_processes: Vec<Step>,
    pub(crate) k3s_unresponsive: Vec<Step>,
    pub(crate) k3s_crash_looping: Vec<Step>,
    pub(crate) k3s_unit_failed: Vec<Step>,
    pub(crate) etcd_near_quota: Vec<Step>,
    pub(crate) k3s_certificate_rotation_due: Vec<Step>,
    pub(crate) storage_errors: Vec<Step>,
    pub(crate) read_only_filesystem: Vec<Step>,
    pub(crate) kernel_oops: Vec<Step>,
    pub(crate) user_mount_hung: Vec<Step>,
}

impl Default for Ladders {
    fn default() -> Self {
        use Remedy::*;
        const M: u64 = 60;
        Ladders {
            // Recurring severe stalls: stop new pods (container starts trigger the Pi's
            // stalls), then restart k3s, then reboot. 30 min lets a transient storm pass.
            kernel_rcu_stall: steps(&[(Cordon, 0), (RestartK3s, 15 * M), (Reboot, 30 * M)]),
            kernel_soft_lockup: steps(&[(Cordon, 0), (Reboot, 10 * M)]),
            // A hard lockup the kernel lived to report: the CPU was wedged; reboot at once
            // (a truly wedged kernel never gets here: the hardware watchdog resets it).
            kernel_hard_lockup: steps(&[(Reboot, 0)]),
            kernel_hung_tasks: steps(&[(Cordon, 0), (RestartK3s, 10 * M), (Reboot, 30 * M)]),
            // Tasks already in D state are only freed by a reboot, but a dead NAS does not
            // earn one by default: unmount so new accesses fail fast, and ask a human.
            network_mount_hung: steps(&[(Cordon, 0), (Unmount, 2 * M)]),
            // Stop new pods landing; never kill processes ourselves. The eviction step is
            // off until `[actions.evict_besteffort]` is enabled; 2 min after the cordon
            // lets a transient peak (a pod starting, a compaction) pass first.
            memory_pressure: steps(&[(Cordon, 0), (EvictBestEffort, 2 * M)]),
            sandbox_name_reserved: steps(&[(RemoveSandboxes, 0)]),
            container_runtime_down: steps(&[(RestartK3s, 5 * M)]),
            // The node's limits are warnings; these ladders are the only actions they
            // take. No PIDs left: every new container fails to start (runc cannot fork),
            // so stop pods landing here. A full conntrack table drops new flows, and every
            // new pod brings more.
            pids_low: steps(&[(Cordon, 0)]),
            conntrack_table_full: steps(&[(Cordon, 0)]),
            // Report only. The opt-in reclaim (journal vacuum, unused images) is a step
            // the operator adds: "reclaim_disk@0ms" with [actions.reclaim_disk] enabled.
            disk_space_low: vec![],
            file_handles_low: vec![],
            inodes_low: vec![],
            zombie_processes: vec![],
            // A live but wedged k3s is restarted by nothing else (k3s issue 14479): 2 min
            // on top of the 90 s of failed probes. A restart ends the episode (the unit
            // restarts, the probes start over), so a k3s that stays wedged is restarted at
            // most actions.restart_k3s.max_per_day times, then NeedsHuman.
            k3s_unresponsive: steps(&[(RestartK3s, 2 * M)]),
            // systemd already restarts it; another restart adds nothing. Stop new pods
            // landing on a node whose kubelet keeps going away.
            k3s_crash_looping: steps(&[(Cordon, 0)]),
            // systemd gave up: one fresh start (capped per day) is worth trying at once.
            k3s_unit_failed: steps(&[(ResetFailedK3s, 0)]),
            // k3s defragments etcd and disarms its alarms at start, so a restart is the
            // remedy; 5 min lets the API server's own compaction (every 5 min) show first.
            // The quorum rail (`policy::quorum`) lets it run only with every other member
            // healthy and the cluster lease held.
            etcd_near_quota: steps(&[(RestartK3s, 5 * M)]),
            // The detector raises it only inside the maintenance window: renew at once.
            k3s_certificate_rotation_due: steps(&[(RestartK3s, 0)]),
            // A failing disk or card: stop new pods landing on it at once. Restarting k3s
            // or rebooting does not fix hardware; a human replaces the card.
            storage_errors: steps(&[(Cordon, 0)]),
            // A read-only filesystem the node needs: cordon at once; a reboot runs fsck and
            // often brings it back writable, but at most one per read-only-root episode
            // (policy::readonly_root), so a dying card is never rebooted in a loop.
            read_only_filesystem: steps(&[(Cordon, 0), (Reboot, 10 * M)]),
            // An oops that killed a kernel thread or a kernel BUG leaves the kernel in an
            // unknown state: keep new work off the node until a human looks.
            kernel_oops: steps(&[(Cordon, 0)]),
            // A FUSE mount any user can make and stall on purpose: stop new pods landing
            // on a node whose storage misbehaves, nothing more (validation forbids more).
            user_mount_hung: steps(&[(Cordon, 0)]),
        }
    }
}

impl Ladders {
    pub(crate) fn for_kind(&self, k: ConditionKind) -> &[Step] {
        match k {
            ConditionKind::KernelRcuStall => &self.kernel_rcu_stall,
            ConditionKind::KernelSoftLockup => &self.kernel_soft_lockup,
            ConditionKind::KernelHardLockup => &self.kernel_hard_lockup,
            ConditionKind::KernelHungTasks => &self.kernel_hung_tasks,
            ConditionKind::NetworkMountHung => &self.network_mount_hung,
            ConditionKind::MemoryPressure => &self.memory_pressure,
            ConditionKind::SandboxNameReserved => &self.sandbox_name_reserved,
            ConditionKind::ContainerRuntimeDown => &self.container_runtime_down,
            ConditionKind::PidsLow => &self.pids_low,
            ConditionKind::FileHandlesLow => &self.file_handles_low,
            ConditionKind::ConntrackTableFull => &self.conntrack_table_full,
            ConditionKind::DiskSpaceLow => &self.disk_space_low,
            ConditionKind::InodesLow => &self.inodes_low,
            ConditionKind::ZombieProcesses => &self.zombie_processes,
            ConditionKind::K3sUnresponsive => &self.k3s_unresponsive,
            ConditionKind::K3sCrashLooping => &self.k3s_crash_looping,
            ConditionKind::K3sUnitFailed => &self.k3s_unit_failed,
            ConditionKind::EtcdNearQuota => &self.etcd_near_quota,
            ConditionKind::K3sCertificateRotationDue => &self.k3s_certificate_rotation_due,
            ConditionKind::StorageErrors => &self.storage_errors,
            ConditionKind::ReadOnlyFilesystem => &self.read_only_filesystem,
            ConditionKind::KernelOops => &self.kernel_oops,
            ConditionKind::UserMountHung => &self.user_mount_hung,
            // Warnings: EtcdSlowDisk in particular never restarts or reboots a member (that
            // only adds leader elections); its message tells the operator what to move.
            ConditionKind::KernelLogBlind
            | ConditionKind::HardNfsMount
            | ConditionKind::NeedsHuman
            | ConditionKind::ClockUnsynchronized
            | ConditionKind::GracefulShutdownIneffective
            | ConditionKind::StateDirUnusable
            | ConditionKind::MountsUnprobed
            | ConditionKind::EtcdSlowDisk
            | ConditionKind::KineSlowSql
            | ConditionKind::K3sCertificateExpiring => &[],
            ConditionKind::UnderVoltage | ConditionKind::ThermalThrottling => &[],
        }
    }

    pub(crate) fn all(&self) -> [(&'static str, &Vec<Step>); 23] {
        [
            ("kernel_rcu_stall", &self.kernel_rcu_stall),
            ("kernel_soft_lockup", &self.kernel_soft_lockup),
            ("kernel_hard_lockup", &self.kernel_hard_lockup),
            ("kernel_hung_tasks", &self.kernel_hung_tasks),
            ("network_mount_hung", &self.network_mount_hung),
            ("memory_pressure", &self.memory_pressure),
            ("sandbox_name_reserved", &self.sandbox_name_reserved),
            ("container_runtime_down", &self.container_runtime_down),
            ("pids_low", &self.pids_low),
            ("file_handles_low", &self.file_handles_low),
            ("conntrack_table_full", &self.conntrack_table_full),
            ("disk_space_low", &self.disk_space_low),
            ("inodes_low", &self.inodes_low),
            ("zombie_processes", &self.zombie_processes),
            ("k3s_unresponsive", &self.k3s_unresponsive),
            ("k3s_crash_looping", &self.k3s_crash_looping),
            ("k3s_unit_failed", &self.k3s_unit_failed),
            ("etcd_near_quota", &self.etcd_near_quota),
            (
                "k3s_certificate_rotation_due",
                &self.k3s_certificate_rotation_due,
            ),
            ("storage_errors", &self.storage_errors),
            ("read_only_filesystem", &self.read_only_filesystem),
            ("kernel_oops", &self.kernel_oops),
            ("user_mount_hung", &self.user_mount_hung),
        ]
    }

    pub(crate) fn validate(&self, v: &mut Vec<String>) {
        for (name, steps) in self.all() {
            if name != "memory_pressure"
                && steps.iter().any(|s| s.action == Remedy::EvictBestEffort)
            {
                v.push(format!(
                    "key `policy.ladders.{name}`: evict_besteffort only relieves memory; use it in `policy.ladders.memory_pressure`"
                ));
            }
            if name != "disk_space_low" && steps.iter().any(|s| s.action == Remedy::ReclaimDisk) {
                v.push(format!(
                    "key `policy.ladders.{name}`: reclaim_disk only frees disk space; use it in `policy.ladders.disk_space_low`"
                ));
            }
            if name != "k3s_unit_failed" && steps.iter().any(|s| s.action == Remedy::ResetFailedK3s)
            {
                v.push(format!(
                    "key `policy.ladders.{name}`: reset_failed_k3s only starts a failed k3s unit; use it in `policy.ladders.k3s_unit_failed`"
                ));
            }
            if name == USER_MOUNT_HUNG
                && let Some(s) = steps
                    .iter()
                    .find(|s| !USER_MOUNT_ACTIONS.contains(&s.action))
            {
                v.push(format!(
                    "key `policy.ladders.{name}`: \"{s}\" is not allowed: a hung mount owned by an unprivileged user can be made by anyone on the node (or in a pod), so it may only cordon; allowed: {}",
                    USER_MOUNT_ACTIONS.map(|a| a.name()).join(", ")
                ));
            }
            if steps.windows(2).any(|w| w[1].after < w[0].after) {
                v.push(format!(
                    "key `policy.ladders.{name}`: step delays must not decrease (steps escalate in order); got [{}]",
                    steps.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_parse_and_print_round_trip() {
        let s = Step::parse("reboot@30m").unwrap();
        assert_eq!(
            s,
            Step {
                action: Remedy::Reboot,
                after: Duration::from_secs(1800)
            }
        );
        assert_eq!(s.to_string(), "reboot@30m");
        assert_eq!(Step::parse("cordon@0s").unwrap().to_string(), "cordon@0ms");
    }

    #[test]
    fn bad_steps_name_the_problem_and_the_allowed_actions() {
        let e = Step::parse("nuke@1m").unwrap_err();
        assert!(
            e.contains("unknown action \"nuke\"") && e.contains("restart_k3s"),
            "{e}"
        );
        assert!(Step::parse("reboot").unwrap_err().contains("action@delay"));
        assert!(Step::parse("reboot@soon").unwrap_err().contains("delay"));
        assert!(
            Step::parse("uncordon@0s").is_err(),
            "uncordon is not a ladder step"
        );
    }

    #[test]
    fn eviction_is_only_a_memory_pressure_step() {
        let l = Ladders {
            kernel_rcu_stall: vec![Step::parse("evict_besteffort@0s").unwrap()],
            ..Default::default()
        };
        let mut v = Vec::new();
        l.validate(&mut v);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].contains("policy.ladders.kernel_rcu_stall") && v[0].contains("memory_pressure"),
            "{v:?}"
        );
        let mut ok = Vec::new();
        Ladders::default().validate(&mut ok);
        assert!(ok.is_empty(), "{ok:?}");
    }

    #[test]
    fn disk_reclaim_is_only_a_disk_space_low_step() {
        let l = Ladders {
            inodes_low: vec![Step::parse("reclaim_disk@0s").unwrap()],
            disk_space_low: vec![Step::parse("reclaim_disk@0s").unwrap()],
            ..Default::default()
        };
        let mut v = Vec::new();
        l.validate(&mut v);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].contains("policy.ladders.inodes_low") && v[0].contains("disk_space_low"),
            "{v:?}"
        );
    }

    #[test]
    fn a_user_owned_mount_may_only_cordon_whatever_the_config_says() {
        for bad in ["restart_k3s@10m", "reboot@1h", "unmount@0s", "drain@5m"] {
            let l = Ladders {
                user_mount_hung: vec![Step::parse("cordon@0s").unwrap(), Step::parse(bad).unwrap()],
                ..Default::default()
            };
            let mut v = Vec::new();
            l.validate(&mut v);
            assert_eq!(v.len(), 1, "{bad}: {v:?}");
            assert!(
                v[0].contains("policy.ladders.user_mount_hung") && v[0].contains("only cordon"),
                "{v:?}"
            );
        }
        assert_eq!(
            Ladders::default().for_kind(ConditionKind::UserMountHung),
            &[Step::parse("cordon@0s").unwrap()]
        );
    }

    #[test]
    fn full_conntrack_and_no_pids_cordon_and_the_other_limits_only_report() {
        let l = Ladders::default();
        for k in [ConditionKind::PidsLow, ConditionKind::ConntrackTableFull] {
            assert_eq!(
                l.for_kind(k).iter().map(|s| s.action).collect::<Vec<_>>(),
                vec![Remedy::Cordon],
                "{k}"
            );
        }
        for k in [
            ConditionKind::DiskSpaceLow,
            ConditionKind::InodesLow,
            ConditionKind::FileHandlesLow,
            ConditionKind::ZombieProcesses,
        ] {
            assert!(l.for_kind(k).is_empty(), "{k}");
        }
    }

    #[test]
    fn decreasing_delays_are_rejected() {
        let l = Ladders {
            kernel_rcu_stall: vec![
                Step::parse("reboot@10m").unwrap(),
                Step::parse("cordon@1m").unwrap(),
            ],
            ..Default::default()
        };
        let mut v = Vec::new();
        l.validate(&mut v);
        assert_eq!(v.len(), 1);
        assert!(v[0].contains("policy.ladders.kernel_rcu_stall"));
    }

    #[test]
    fn warnings_have_no_ladder_and_memory_pressure_cordons_then_may_evict() {
        let l = Ladders::default();
        assert!(l.for_kind(ConditionKind::HardNfsMount).is_empty());
        assert_eq!(
            l.for_kind(ConditionKind::MemoryPressure)
                .iter()
                .map(|s| s.action)
                .collect::<Vec<_>>(),
            vec![Remedy::Cordon, Remedy::EvictBestEffort]
        );
        assert!(
            !l.for_kind(ConditionKind::NetworkMountHung)
                .iter()
                .any(|s| s.action == Remedy::Reboot)
        );
        assert_eq!(
            l.for_kind(ConditionKind::KernelHardLockup)[0].action,
            Remedy::Reboot
        );
    }
}
