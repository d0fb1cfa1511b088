//! `nodemedic preflight`: the one-shot repair of containerd and CNI state that runs as
//! `ExecStartPre=-/usr/bin/nodemedic preflight` before k3s starts. The work is in
//! [`crate::runtime::preflight`]; this maps the config onto it and prints the outcome. It
//! never blocks k3s: the run has a time budget, failures are logged, and the command
//! exits 0 whatever happened (the unit's `-` prefix is a second guard).
//!
//! Each kind of removal has its own switch: containerd records need `actions.remove_sandboxes`
//! live, CNI files `actions.clean_cni` (act mode, `enabled`, not `dry_run`, `max_per_day` not
//! 0), and each has a per-run cap (`max_sandbox_records`, `max_cni_files`). With neither kind
//! allowed (observe mode, `--dry-run`) it is a dry run that prints what it would do.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{ActionConfig, Config, ConfigDuration, Mode, dur_range, range};
use crate::runtime::gate::Switch;
use crate::runtime::preflight::{self as rp, MIN_REPAIR_SHARE, Outcome, PreflightConfig};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreflightSection {
    /// Whole-run budget, clock wait included: on timeout preflight logs and lets k3s start.
    pub budget: ConfigDuration,
    /// Longest wait for time sync when the clock is behind the daemon's last-seen time.
    pub clock_wait: ConfigDuration,
    /// Most containerd records (sandboxes and containers) one run may remove.
    pub max_sandbox_records: u32,
    /// Most CNI files (result cache files, IP reservations) one run may remove.
    pub max_cni_files: u32,
    /// k3s's bundled containerd, so the metadata schema matches what k3s runs.
    pub containerd_binary: PathBuf,
    pub containerd_config: PathBuf,
    pub containerd_root: PathBuf,
    pub containerd_state: PathBuf,
    pub containerd_socket: PathBuf,
    pub namespace: String,
    pub cni_results_dir: PathBuf,
    pub cni_networks_dir: PathBuf,
    /// Networks whose host-local IP reservations preflight may release (with the names in
    /// `cni_conf_dir`); reservations on any other network are never touched.
    pub cni_networks: Vec<String>,
    /// k3s's CNI config directory: each config's `name` is one of k3s's networks.
    pub cni_conf_dir: PathBuf,
    /// Check for image layer snapshots that lost their directory and remove the broken chain
    /// with its images (with `actions.remove_sandboxes` live), so they are pulled again.
    pub repair_snapshots: bool,
    /// Most broken images (distinct image targets) one run may remove.
    pub max_broken_images: u32,
}

impl Default for PreflightSection {
    fn default() -> Self {
        let d = PreflightConfig::default();
        PreflightSection {
            budget: ConfigDuration(d.budget),
            clock_wait: ConfigDuration(d.clock_wait),
            max_sandbox_records: d.records.cap,
            max_cni_files: d.cni.cap,
            containerd_binary: d.containerd_binary,
            containerd_config: d.containerd_config,
            containerd_root: d.containerd_root,
            containerd_state: d.containerd_state,
            containerd_socket: d.containerd_socket,
            namespace: d.namespace,
            cni_results_dir: d.cni_results_dir,
            cni_networks_dir: d.cni_networks_dir,
            cni_networks: d.cni_networks,
            cni_conf_dir: d.cni_conf_dir,
            repair_snapshots: true,
            max_broken_images: d.images.cap,
        }
    }
}

impl PreflightSection {
    pub fn validate(&self, v: &mut Vec<String>) {
        // systemd's default start timeout is 90 s; k3s must never wait that long on us.
        dur_range(v, "preflight.budget", self.budget, 1_000, 60_000);
        dur_range(v, "preflight.clock_wait", self.clock_wait, 0, 59_000);
        if self.budget.get().saturating_sub(self.clock_wait.get()) < MIN_REPAIR_SHARE {
            v.push(format!(
                "key `preflight.clock_wait` = \"{}\" leaves the repair less than {} of `preflight.budget` = \"{}\"; lower clock_wait or raise budget",
                self.clock_wait,
                ConfigDuration(MIN_REPAIR_SHARE),
                self.budget
            ));
        }
        // Per run: a full node (k3s max-pods 110) is a few hundred; 0 would be a switch,
        // and the actions' `enabled` already is one.
        range(
            v,
            "preflight.max_sandbox_records",
            self.max_sandbox_records.into(),
            1,
            100_000,
        );
        range(
            v,
            "preflight.max_cni_files",
            self.max_cni_files.into(),
            1,
            100_000,
        );
        range(
            v,
            "preflight.max_broken_images",
            self.max_broken_images.into(),
            1,
            10_000,
        );
        for (k, p) in [
            ("containerd_binary", &self.containerd_binary),
            ("containerd_config", &self.containerd_config),
            ("containerd_root", &self.containerd_root),
            ("containerd_state", &self.containerd_state),
            ("containerd_socket", &self.containerd_socket),
            ("cni_results_dir", &self.cni_results_dir),
            ("cni_networks_dir", &self.cni_networks_dir),
            ("cni_conf_dir", &self.cni_conf_dir),
        ] {
            if !p.is_absolute() {
                v.push(format!(
                    "key `preflight.{k}` = \"{}\" must be an absolute path",
                    p.display()
                ));
            }
        }
        for n in &self.cni_networks {
            if n.is_empty() || n.contains('/') || n.starts_with('.') {
                v.push(format!(
                    "key `preflight.cni_networks` holds {n:?}: a CNI network name (a directory name under cni_networks_dir, like \"cbr0\") is expected"
                ));
            }
        }
        if self.namespace.is_empty() {
            v.push("key `preflight.namespace` must not be empty (k3s uses \"k8s.io\")".into());
        }
    }
}

/// The switch for one kind: allowed only in act mode with the action enabled, not in
/// dry-run, not forbidden by `max_per_day = 0`, and without `--dry-run`.
fn switch(cfg: &Config, name: &str, a: &ActionConfig, cap: u32, force_dry_run: bool) -> Switch {
    let why = if force_dry_run {
        Some("--dry-run given".to_string())
    } else if cfg.mode != Mode::Act {
        Some("mode is \"observe\"".into())
    } else if !a.enabled {
        Some(format!("actions.{name}.enabled = false"))
    } else if a.dry_run {
        Some(format!("actions.{name}.dry_run = true"))
    } else if a.max_per_day == 0 {
        Some(format!("actions.{name}.max_per_day = 0"))
    } else {
        None
    };
    match why {
        Some(w) => Switch::withheld(w, cap),
        None => Switch::allowed(cap),
    }
}

/// The runtime layer's config from ours. A dry run when neither kind may be removed.
pub fn runtime_config(cfg: &Config, force_dry_run: bool) -> PreflightConfig {
    let p = &cfg.preflight;
    let records = switch(
        cfg,
        "remove_sandboxes",
        &cfg.actions.remove_sandboxes,
        p.max_sandbox_records,
        force_dry_run,
    );
    let cni = switch(
        cfg,
        "clean_cni",
        &cfg.actions.clean_cni,
        p.max_cni_files,
        force_dry_run,
    );
    // Broken images are containerd records too: the same switch as sandboxes, and their own.
    let images = match switch(
        cfg,
        "remove_sandboxes",
        &cfg.actions.remove_sandboxes,
        p.max_broken_images,
        force_dry_run,
    ) {
        s if s.withheld.is_none() && !p.repair_snapshots => {
            Switch::withheld("preflight.repair_snapshots = false", p.max_broken_images)
        }
        s => s,
    };
    PreflightConfig {
        containerd_binary: p.containerd_binary.clone(),
        containerd_config: p.containerd_config.clone(),
        containerd_root: p.containerd_root.clone(),
        containerd_state: p.containerd_state.clone(),
        containerd_socket: p.containerd_socket.clone(),
        namespace: p.namespace.clone(),
        cni_results_dir: p.cni_results_dir.clone(),
        cni_networks_dir: p.cni_networks_dir.clone(),
        cni_networks: p.cni_networks.clone(),
        cni_conf_dir: p.cni_conf_dir.clone(),
        images,
        state_dir: cfg.state_dir.clone(),
        budget: p.budget.get(),
        // Waiting changes nothing on the node, so observe mode waits too; an operator's
        // --dry-run at a shell only wants the report.
        clock_wait: if force_dry_run {
            Duration::ZERO
        } else {
            p.clock_wait.get()
        },
        dry_run: records.withheld.is_some() && cni.withheld.is_some(),
        records,
        cni,
        ..PreflightConfig::default()
    }
}

/// Runs preflight and reports; the caller exits 0 regardless.
pub fn run(cfg: &Config, force_dry_run: bool) {
    let rc = runtime_config(cfg, force_dry_run);
    // Whatever blocks (a private containerd in D state, a full stdout pipe), the process
    // ends at the budget with exit code 0.
    crate::runtime::deadline::arm(std::time::Instant::now(), rc.budget);
    if rc.dry_run && !force_dry_run {
        log::info!(
            "preflight: dry run: sandbox records: {}; CNI files: {}",
            rc.records.withheld.as_deref().unwrap_or("allowed"),
            rc.cni.withheld.as_deref().unwrap_or("allowed")
        );
    }
    let s = rp::run(&rc);
    if !s.plan_text.trim().is_empty() {
        // The plan is what an operator needs after an outage: print it whole.
        println!("{}", s.plan_text.trim_end());
    }
    if let Some(sn) = &s.report.snapshots {
        for m in &sn.plan.missing {
            println!(
                "image layer snapshot {} has no directory: {}",
                m.key, m.detail
            );
        }
        let done = sn.withheld.is_none() && !rc.dry_run;
        for i in &sn.plan.images {
            println!(
                "{} image {} (layer {} broken; pulled or imported again when next needed)",
                if done { "removed" } else { "would remove" },
                i.names.join(", "),
                i.top
            );
        }
        for b in &sn.plan.blocked {
            println!("left alone: {b}");
        }
    }
    for d in s.report.decisions.iter().filter(|d| d.planned > 0) {
        println!(
            "{}: {}",
            d.kind.label(),
            if d.allowed {
                d.reason.clone()
            } else {
                format!("not removed: {}", d.reason)
            }
        );
    }
    if let Some(c) = &s.report.clock {
        println!("{}", c.message);
    }
    let summary = format!(
        "preflight: {:?} in {} ms: {} planned, {} done, {} failed, {} withheld{}",
        s.outcome,
        s.elapsed.as_millis(),
        s.planned,
        s.done,
        s.failed,
        s.withheld,
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

    #[test]
    fn observe_mode_or_dry_run_flag_means_a_dry_run_of_both_kinds() {
        let mut c = Config::default();
        let r = runtime_config(&c, false);
        assert!(r.dry_run, "observe mode never removes anything");
        assert_eq!(r.records.withheld.as_deref(), Some("mode is \"observe\""));
        c.mode = Mode::Act;
        let r = runtime_config(&c, false);
        assert!(!r.dry_run);
        assert_eq!(
            (r.records.withheld.clone(), r.cni.withheld.clone()),
            (None, None)
        );
        let r = runtime_config(&c, true);
        assert!(r.dry_run, "--dry-run wins");
        assert_eq!(r.cni.withheld.as_deref(), Some("--dry-run given"));
        assert_eq!(
            r.clock_wait,
            Duration::ZERO,
            "an operator's dry run reports the clock only"
        );
        c.mode = Mode::Observe;
        assert_eq!(
            runtime_config(&c, false).clock_wait,
            c.preflight.clock_wait.get(),
            "waiting changes nothing: observe mode waits too"
        );
    }

    #[test]
    fn each_kind_follows_its_own_action_switch_and_cap() {
        let mut c = Config {
            mode: Mode::Act,
            ..Default::default()
        };
        c.actions.clean_cni.dry_run = true;
        c.preflight.max_sandbox_records = 7;
        let r = runtime_config(&c, false);
        assert!(!r.dry_run, "records may still go");
        assert_eq!(r.records, Switch::allowed(7));
        assert_eq!(
            r.cni.withheld.as_deref(),
            Some("actions.clean_cni.dry_run = true")
        );
        c.actions.clean_cni.dry_run = false;
        c.actions.remove_sandboxes.enabled = false;
        c.actions.clean_cni.max_per_day = 0;
        let r = runtime_config(&c, false);
        assert!(r.dry_run);
        assert_eq!(
            r.records.withheld.as_deref(),
            Some("actions.remove_sandboxes.enabled = false")
        );
        assert_eq!(
            r.cni.withheld.as_deref(),
            Some("actions.clean_cni.max_per_day = 0")
        );
    }

    #[test]
    fn clock_wait_must_leave_the_repair_its_share_of_the_budget() {
        let mut v = Vec::new();
        PreflightSection::default().validate(&mut v);
        assert!(v.is_empty(), "{v:?}");
        let s = PreflightSection {
            budget: ConfigDuration::secs(10),
            clock_wait: ConfigDuration::secs(30),
            max_cni_files: 0,
            ..Default::default()
        };
        s.validate(&mut v);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(
            v[0].contains("preflight.clock_wait") && v[0].contains("raise budget"),
            "{v:?}"
        );
        assert!(v[1].contains("preflight.max_cni_files"), "{v:?}");
    }

    #[test]
    fn new_keys_are_validated_and_the_image_switch_follows_remove_sandboxes() {
        let s = PreflightSection {
            cni_networks: vec!["cbr0".into(), "../etc".into(), String::new()],
            cni_conf_dir: "relative/net.d".into(),
            max_broken_images: 0,
            ..Default::default()
        };
        let mut v = Vec::new();
        s.validate(&mut v);
        assert_eq!(v.len(), 4, "{v:?}");
        assert!(v.iter().any(|e| e.contains("preflight.max_broken_images")));
        assert!(v.iter().any(|e| e.contains("preflight.cni_conf_dir")));
        assert_eq!(
            v.iter()
                .filter(|e| e.contains("preflight.cni_networks"))
                .count(),
            2
        );
        let mut c = Config {
            mode: Mode::Act,
            ..Default::default()
        };
        assert_eq!(runtime_config(&c, false).images, Switch::allowed(20));
        c.preflight.repair_snapshots = false;
        assert_eq!(
            runtime_config(&c, false).images.withheld.as_deref(),
            Some("preflight.repair_snapshots = false")
        );
        c.preflight.repair_snapshots = true;
        c.actions.remove_sandboxes.enabled = false;
        assert_eq!(
            runtime_config(&c, false).images.withheld.as_deref(),
            Some("actions.remove_sandboxes.enabled = false")
        );
    }
}
