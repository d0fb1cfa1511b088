//! The escalation policy: `engine`, the pure state machine with its safety rails, applying
//! the ladders of `config::ladder` (what to do for each problem, and when). The daemon's policy loop feeds the engine
//! the hub's conditions every tick, carries out its decisions through the actuators and
//! records each one in the audit trail, the journal and the metrics.

pub(crate) mod boot;
pub(crate) mod clock;
pub(crate) mod cluster;
pub(crate) mod engine;
pub(crate) mod power_cause;
pub(crate) mod quorum;
pub(crate) mod rails;
pub(crate) mod readonly_root;
pub(crate) mod repairs;
pub(crate) mod reset;
pub(crate) mod unplanned;
pub(crate) mod wake;

use std::collections::BTreeMap;

use crate::config::{ActionSection, Config};
use crate::model::Remedy;
use engine::{ActionRule, PolicyConfig};

fn rule(a: &ActionSection) -> ActionRule {
    ActionRule {
        enabled: a.enabled,
        dry_run: a.dry_run,
        max_per_day: a.max_per_day,
        max_per_subject: a.per_subject_cap(),
    }
}

/// The engine's view of the config.
pub(crate) fn policy_config(cfg: &Config) -> PolicyConfig {
    let a = &cfg.actions;
    let mut rules = BTreeMap::new();
    rules.insert(Remedy::Cordon, rule(&a.cordon));
    rules.insert(Remedy::Uncordon, rule(&a.cordon));
    rules.insert(Remedy::Drain, rule(&a.drain));
    rules.insert(Remedy::Unmount, rule(&a.unmount));
    rules.insert(Remedy::RemoveSandboxes, rule(&a.remove_sandboxes));
    rules.insert(Remedy::RestartK3s, rule(&a.restart_k3s));
    rules.insert(Remedy::Reboot, rule(&a.reboot));
    rules.insert(Remedy::EvictBestEffort, rule(&a.evict_besteffort));
    rules.insert(Remedy::ReclaimDisk, rule(&a.reclaim_disk));
    rules.insert(Remedy::ResetFailedK3s, rule(&a.reset_failed_k3s));
    let p = &cfg.policy;
    PolicyConfig {
        mode: cfg.mode,
        ladders: p.ladders.clone(),
        rules,
        boot_grace: p.boot_grace.get(),
        cooldown: p.cooldown.get(),
        reboot_min_interval: p.reboot_min_interval.get(),
        needs_human_after: p.needs_human_after.get(),
        reboot_verify_window: p.reboot_verify_window.get(),
        allow_reboot_with_peer_down: cfg.servers.allow_reboot_with_peer_down,
        repair_verify_window: p.repair_verify_window.get(),
        max_ineffective_repairs: p.max_ineffective_repairs,
        restart_grace: p.restart_grace.get(),
        min_schedulable_nodes: cfg.kubernetes.min_schedulable_nodes,
        power_cause_window: p.power_cause_window.get(),
        allow_reboot_on_power_cause: p.allow_reboot_on_power_cause,
    }
}

#[cfg(test)]
mod tests;
