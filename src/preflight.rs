//! `nodemedic preflight`: the one-shot repair of containerd and CNI state that runs as
//! `ExecStartPre=-/usr/bin/nodemedic preflight` before k3s starts. The work is in
//! [`crate::runtime::preflight`]; this maps the config onto it and prints the outcome. It
//! never blocks k3s: the run has a time budget, failures are logged, and the command
//! exits 0 whatever happened (the unit's `-` prefix is a second guard).
//!
//! It removes things only in act mode with both `actions.remove_sandboxes` and
//! `actions.clean_cni` live; otherwise it runs as a dry run and prints what it would do.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use crate::config::{Config, ConfigDuration, dur_range};
use crate::runtime::preflight::{self as rp, Outcome, PreflightConfig};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreflightSection {
    /// Whole-run budget: on timeout preflight logs and lets k3s start.
    pub budget: ConfigDuration,
    /// k3s's bundled containerd, so the metadata schema matches what k3s runs.
    pub containerd_binary: PathBuf,
    pub containerd_config: PathBuf,
    pub containerd_root: PathBuf,
    pub containerd_state: PathBuf,
    pub containerd_socket: PathBuf,
    pub namespace: String,
    pub cni_results_dir: PathBuf,
    pub cni_networks_dir: PathBuf,
}

impl Default for PreflightSection {
    fn default() -> Self {
        let d = PreflightConfig::default();
        PreflightSection {
            budget: ConfigDuration(d.budget),
            containerd_binary: d.containerd_binary,
            containerd_config: d.containerd_config,
            containerd_root: d.containerd_root,
            containerd_state: d.containerd_state,
            containerd_socket: d.containerd_socket,
            namespace: d.namespace,
            cni_results_dir: d.cni_results_dir,
            cni_networks_dir: d.cni_networks_dir,
        }
    }
}

impl PreflightSection {
    pub fn validate(&self, v: &mut Vec<String>) {
        // systemd's default start timeout is 90 s; k3s must never wait that long on us.
        dur_range(v, "preflight.budget", self.budget, 1_000, 60_000);
        for (k, p) in [
            ("containerd_binary", &self.containerd_binary),
            ("containerd_config", &self.containerd_config),
            ("containerd_root", &self.containerd_root),
            ("containerd_state", &self.containerd_state),
            ("containerd_socket", &self.containerd_socket),
            ("cni_results_dir", &self.cni_results_dir),
            ("cni_networks_dir", &self.cni_networks_dir),
        ] {
            if !p.is_absolute() {
                v.push(format!(
                    "key `preflight.{k}` = \"{}\" must be an absolute path",
                    p.display()
                ));
            }
        }
        if self.namespace.is_empty() {
            v.push("key `preflight.namespace` must not be empty (k3s uses \"k8s.io\")".into());
        }
    }
}

/// The runtime layer's config from ours. Dry-run unless removals are really allowed.
pub fn runtime_config(cfg: &Config, force_dry_run: bool) -> PreflightConfig {
    let p = &cfg.preflight;
    let live =
        cfg.action_live(&cfg.actions.remove_sandboxes) && cfg.action_live(&cfg.actions.clean_cni);
    PreflightConfig {
        containerd_binary: p.containerd_binary.clone(),
        containerd_config: p.containerd_config.clone(),
        containerd_root: p.containerd_root.clone(),
        containerd_state: p.containerd_state.clone(),
        containerd_socket: p.containerd_socket.clone(),
        namespace: p.namespace.clone(),
        cni_results_dir: p.cni_results_dir.clone(),
        cni_networks_dir: p.cni_networks_dir.clone(),
        state_dir: cfg.state_dir.clone(),
        budget: p.budget.get(),
        dry_run: force_dry_run || !live,
        ..PreflightConfig::default()
    }
}

/// Runs preflight and reports; the caller exits 0 regardless.
pub fn run(cfg: &Config, force_dry_run: bool) {
    let rc = runtime_config(cfg, force_dry_run);
    if rc.dry_run && !force_dry_run {
        log::info!(
            "preflight: dry run (mode is not \"act\", or actions.remove_sandboxes / actions.clean_cni is not live)"
        );
    }
    let s = rp::run(&rc);
    if !s.plan_text.trim().is_empty() {
        // The plan is what an operator needs after an outage: print it whole.
        println!("{}", s.plan_text.trim_end());
    }
    let summary = format!(
        "preflight: {:?} in {} ms: {} planned, {} done, {} failed{}",
        s.outcome,
        s.elapsed.as_millis(),
        s.planned,
        s.done,
        s.failed,
        s.report_path
            .as_ref()
            .map(|p| format!("; report {}", p.display()))
            .unwrap_or_default()
    );
    match s.outcome {
        Outcome::Completed | Outcome::DryRun if s.failed == 0 => log::info!("{summary}"),
        _ => log::warn!("{summary}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;

    #[test]
    fn observe_mode_or_a_switched_off_action_means_a_dry_run() {
        let mut c = Config::default();
        assert!(
            runtime_config(&c, false).dry_run,
            "observe mode never removes anything"
        );
        c.mode = Mode::Act;
        assert!(!runtime_config(&c, false).dry_run);
        assert!(runtime_config(&c, true).dry_run, "--dry-run wins");
        c.actions.clean_cni.dry_run = true;
        assert!(runtime_config(&c, false).dry_run);
    }
}
