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
//!
//! While automatic actions are paused ([`pause_reason`]: the pause file, or the pause
//! annotation as the daemon last saw it) every kind is withheld for that reason: preflight
//! reports what it would remove and removes nothing.

use std::time::Duration;

use crate::config::{ActionSection, Config, RunMode};
use crate::preflight::gate::Switch;
use crate::preflight::run::{self as rp, Outcome, PreflightConfig};
use crate::state::pause_annotation;

/// Why automatic actions are paused, if they are: the pause file (`policy.pause_file`)
/// exists, or the daemon last saw the pause annotation (`kubernetes.pause_annotation`) on
/// this node. Preflight runs before k3s, so no API answers; the daemon persists what it sees
/// in the state dir (`state::pause_annotation`). A state file that cannot be read counts as
/// paused: an operator's pause must not be lost to it (the daemon rewrites it at its next
/// look at the Node).
pub(crate) fn pause_reason(cfg: &Config) -> Option<String> {
    let file = std::path::Path::new(&cfg.policy.pause_file);
    if file.exists() {
        return Some(format!("paused by the pause file {}", file.display()));
    }
    match pause_annotation::read(&cfg.state_dir) {
        Ok(Some(s)) if s.paused && s.annotation == cfg.kubernetes.pause_annotation => {
            Some(format!(
                "paused by the node annotation {}={:?}, as the daemon last saw it at {}",
                s.annotation,
                s.value.unwrap_or_default(),
                crate::timefmt::rfc3339_utc(s.seen_unix as f64)
            ))
        }
        Ok(_) => None,
        Err(e) => Some(format!(
            "the last pause annotation state is unreadable ({e}): treated as paused until the daemon sees the Node again"
        )),
    }
}

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

/// The runtime layer's config from ours. A dry run when neither kind may be removed; while
/// `paused` (why, [`pause_reason`]) no kind may.
pub(crate) fn runtime_config(
    cfg: &Config,
    force_dry_run: bool,
    paused: Option<&str>,
) -> PreflightConfig {
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
    // A pause withholds every kind, unless the operator's --dry-run already does.
    let (records, cni, images) = match paused {
        Some(why) if !force_dry_run => (
            Switch::withheld(why, records.cap),
            Switch::withheld(why, cni.cap),
            Switch::withheld(why, images.cap),
        ),
        _ => (records, cni, images),
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
    let paused = pause_reason(cfg);
    let rc = runtime_config(cfg, force_dry_run, paused.as_deref());
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
    if let Some(why) = paused.as_deref().filter(|_| !force_dry_run) {
        // Said on stdout too: the unit's journal is where an operator looks after an outage.
        log::warn!("preflight: {why}: reporting what would be removed, removing nothing");
        println!("preflight {why}: reporting what would be removed, removing nothing");
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
        let r = runtime_config(&c, false, None);
        assert!(r.dry_run, "observe mode never removes anything");
        assert_eq!(r.records.withheld.as_deref(), Some("mode is \"observe\""));
        c.mode = RunMode::Act;
        let r = runtime_config(&c, false, None);
        assert!(!r.dry_run);
        assert_eq!(
            (r.records.withheld.clone(), r.cni.withheld.clone()),
            (None, None)
        );
        let r = runtime_config(&c, true, None);
        assert!(r.dry_run, "--dry-run wins");
        assert_eq!(r.cni.withheld.as_deref(), Some("--dry-run given"));
        assert_eq!(
            r.clock_wait,
            Duration::ZERO,
            "an operator's dry run reports the clock only"
        );
        c.mode = RunMode::Observe;
        assert_eq!(
            runtime_config(&c, false, None).clock_wait,
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
        let r = runtime_config(&c, false, None);
        assert!(!r.dry_run, "records may still go");
        assert_eq!(r.records, Switch::allowed(7));
        assert_eq!(
            r.cni.withheld.as_deref(),
            Some("actions.clean_cni.dry_run = true")
        );
        c.actions.clean_cni.dry_run = false;
        c.actions.remove_sandboxes.enabled = false;
        c.actions.clean_cni.max_per_day = 0;
        let r = runtime_config(&c, false, None);
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
        let r = runtime_config(&c, false, None);
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
        assert_eq!(runtime_config(&c, false, None).images, Switch::allowed(20));
        c.preflight.repair_snapshots = false;
        assert_eq!(
            runtime_config(&c, false, None).images.withheld.as_deref(),
            Some("preflight.repair_snapshots = false")
        );
        c.preflight.repair_snapshots = true;
        c.actions.remove_sandboxes.enabled = false;
        assert_eq!(
            runtime_config(&c, false, None).images.withheld.as_deref(),
            Some("actions.remove_sandboxes.enabled = false")
        );
    }

    #[test]
    fn while_paused_every_kind_is_withheld_and_the_run_is_a_dry_run() {
        let c = Config {
            mode: RunMode::Act,
            ..Default::default()
        };
        let why = "paused by the pause file /etc/nodemedic/pause";
        let r = runtime_config(&c, false, Some(why));
        assert!(r.dry_run);
        for s in [&r.records, &r.cni, &r.images] {
            assert_eq!(s.withheld.as_deref(), Some(why));
        }
        assert_eq!(
            r.clock_wait,
            c.preflight.clock_wait.get(),
            "waiting changes nothing"
        );
        let r = runtime_config(&c, true, Some(why));
        assert_eq!(r.records.withheld.as_deref(), Some("--dry-run given"));
    }

    #[test]
    fn the_pause_file_and_the_last_seen_annotation_pause_preflight() {
        let d = tempfile::tempdir().unwrap();
        let mut c = Config {
            mode: RunMode::Act,
            state_dir: d.path().join("state"),
            ..Default::default()
        };
        c.policy.pause_file = d.path().join("pause").display().to_string();
        assert_eq!(pause_reason(&c), None, "no file, no state: not paused");
        std::fs::write(&c.policy.pause_file, "").unwrap();
        assert!(pause_reason(&c).unwrap().contains("the pause file"));
        std::fs::remove_file(&c.policy.pause_file).unwrap();
        let mut seen = pause_annotation::SeenPause {
            annotation: c.kubernetes.pause_annotation.clone(),
            value: Some("maintenance".into()),
            paused: true,
            seen_unix: 1_700_000_000,
        };
        pause_annotation::write(&c.state_dir, &seen).unwrap();
        let why = pause_reason(&c).unwrap();
        assert!(
            why.contains("node annotation nodemedic.io/pause=\"maintenance\"")
                && why.contains("2023-11-14T22:13:20.000Z"),
            "{why}"
        );
        // A state about another key than the configured one says nothing about this one.
        c.kubernetes.pause_annotation = "example.com/hold".into();
        assert_eq!(pause_reason(&c), None);
        c.kubernetes.pause_annotation = seen.annotation.clone();
        seen.paused = false;
        pause_annotation::write(&c.state_dir, &seen).unwrap();
        assert_eq!(pause_reason(&c), None);
        std::fs::write(
            c.state_dir.join(pause_annotation::PAUSE_ANNOTATION_FILE),
            "{",
        )
        .unwrap();
        assert!(pause_reason(&c).unwrap().contains("treated as paused"));
    }
}
