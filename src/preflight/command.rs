//! `nodemedic preflight`: the one-shot repair of containerd and CNI state that runs as
//! `ExecStartPre=-/usr/bin/nodemedic preflight` before k3s starts. The work is in
//! [`crate::preflight::run`]; this maps the config onto it and prints the outcome. It
//! never blocks k3s: the run has a time budget, failures are logged, and the command
//! exits 0 whatever happened (the unit's `-` prefix is a second guard).
//!
//! Each kind of removal has its own switch: containerd records need `actions.remove_sandboxes`
//! live, CNI files `actions.clean_cni` (act mode, `enabled`, not `dry_run`, `max_per_day` not
//! 0), and each has a per-run cap (`max_sandbox_records`, `max_cni_files`). With neither kind
//! allowed (observe mode, `--dry-run`) it is a dry run that prints what it would do.

use std::time::Duration;

use crate::config::{ActionSection, Config, RunMode};
use crate::preflight::gate::Switch;
use crate::preflight::run::{self as rp, Outcome, PreflightConfig};

/// The switch for one kind: allowed only in act mode with the action enabled, not in
/// dry-run, not forbidden by `max_per_day = 0`, and without `--dry-run`.
fn switch(cfg: &Config, name: &str, a: &ActionSection, cap: u32, force_dry_run: bool) -> Switch {
    let why = if force_dry_run {
        Some("--dry-run given".to_string())
    } else if cfg.mode != RunMode::Act {
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
pub(crate) fn runtime_config(cfg: &Config, force_dry_run: bool) -> PreflightConfig {
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
    crate::preflight::hard_deadline::arm(std::time::Instant::now(), rc.budget);
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
        c.mode = RunMode::Act;
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
        c.mode = RunMode::Observe;
        assert_eq!(
            runtime_config(&c, false).clock_wait,
            c.preflight.clock_wait.get(),
            "waiting changes nothing: observe mode waits too"
        );
    }

    #[test]
    fn each_kind_follows_its_own_action_switch_and_cap() {
        let mut c = Config {
            mode: RunMode::Act,
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
    fn the_config_defaults_are_the_repair_defaults() {
        // The config declares what an operator sees; the repair keeps its own defaults for
        // callers without a config (tests). They must agree.
        let c = Config {
            mode: RunMode::Act,
            ..Default::default()
        };
        let r = runtime_config(&c, false);
        let d = PreflightConfig::default();
        assert_eq!(
            (
                &r.containerd_binary,
                &r.containerd_config,
                &r.containerd_root
            ),
            (
                &d.containerd_binary,
                &d.containerd_config,
                &d.containerd_root
            )
        );
        assert_eq!(
            (&r.containerd_state, &r.containerd_socket, &r.namespace),
            (&d.containerd_state, &d.containerd_socket, &d.namespace)
        );
        assert_eq!(
            (&r.cni_results_dir, &r.cni_networks_dir),
            (&d.cni_results_dir, &d.cni_networks_dir)
        );
        assert_eq!((r.budget, r.clock_wait), (d.budget, d.clock_wait));
        assert_eq!((r.records.cap, r.cni.cap), (d.records.cap, d.cni.cap));
        assert_eq!(
            (&r.cni_networks, &r.cni_conf_dir, r.images.cap),
            (&d.cni_networks, &d.cni_conf_dir, d.images.cap)
        );
        assert_eq!(
            crate::config::preflight::MIN_REPAIR_SHARE,
            rp::MIN_REPAIR_SHARE
        );
    }

    #[test]
    fn the_image_switch_follows_remove_sandboxes_and_repair_snapshots() {
        let mut c = Config {
            mode: RunMode::Act,
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
