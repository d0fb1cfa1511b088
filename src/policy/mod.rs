//! The escalation policy: `ladder` (what to do for each problem, and when), `engine` (the
//! pure state machine with its safety rails). The daemon's policy loop feeds the engine
//! the hub's conditions every tick, carries out its decisions through the actuators and
//! records each one in the audit trail, the journal and the metrics.

pub mod engine;
pub mod ladder;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::config::{ActionConfig, Config, ConfigDuration, dur_range};
use engine::{ActionRule, PolicyConfig};
use ladder::{Action, Ladders};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySection {
    pub boot_grace: ConfigDuration,
    pub cooldown: ConfigDuration,
    pub reboot_min_interval: ConfigDuration,
    pub needs_human_after: ConfigDuration,
    pub reboot_verify_window: ConfigDuration,
    /// While this file exists nodemedic takes no action (it still detects and reports).
    pub pause_file: String,
    pub ladders: Ladders,
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
            pause_file: "/etc/nodemedic/pause".into(),
            ladders: Ladders::default(),
        }
    }
}

impl PolicySection {
    pub fn validate(&self, v: &mut Vec<String>) {
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
        if !self.pause_file.starts_with('/') {
            v.push(format!(
                "key `policy.pause_file` = \"{}\" must be an absolute path",
                self.pause_file
            ));
        }
        self.ladders.validate(v);
    }
}

fn rule(a: &ActionConfig) -> ActionRule {
    ActionRule {
        enabled: a.enabled,
        dry_run: a.dry_run,
        max_per_day: a.max_per_day,
    }
}

/// The engine's view of the config.
pub fn policy_config(cfg: &Config) -> PolicyConfig {
    let a = &cfg.actions;
    let mut rules = BTreeMap::new();
    rules.insert(Action::Cordon, rule(&a.cordon));
    rules.insert(Action::Uncordon, rule(&a.cordon));
    rules.insert(Action::Drain, rule(&a.drain));
    rules.insert(Action::Unmount, rule(&a.unmount));
    rules.insert(Action::RemoveSandboxes, rule(&a.remove_sandboxes));
    rules.insert(Action::RestartK3s, rule(&a.restart_k3s));
    rules.insert(Action::Reboot, rule(&a.reboot));
    rules.insert(Action::EvictBestEffort, rule(&a.evict_besteffort));
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
    }
}

#[cfg(test)]
mod tests;
