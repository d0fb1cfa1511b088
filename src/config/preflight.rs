//! `[preflight]`: the one-shot repair before k3s starts (`nodemedic preflight`). The defaults
//! are k3s's paths; `preflight::command` checks they agree with the repair's own defaults.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

use super::checks::{dur_range, range};
use super::duration::ConfigDuration;

/// Total budget, clock wait included: k3s waits for us, and the next boot (or the runtime
/// repair) finishes what is left. The repair's share is 10 s (100 dead sandboxes take well
/// under 1 s here; a Pi 4 is roughly 4x slower); the clock may take up to 30 s more.
pub(crate) const DEFAULT_BUDGET: Duration = Duration::from_secs(40);
/// NTP on a Pi syncs a few seconds after the network is up (k3s.service is ordered after
/// network-online.target); 30 s covers a slow Wi-Fi association without holding k3s long.
pub(crate) const DEFAULT_CLOCK_WAIT: Duration = Duration::from_secs(30);
/// The repair always gets at least this much of the budget, whatever `clock_wait` says.
pub(crate) const MIN_REPAIR_SHARE: Duration = Duration::from_secs(1);
/// k3s's default `max-pods` is 110: after a reboot a full node leaves ~110 dead sandboxes
/// plus their containers (a few hundred records). More than this is not a node's worth.
pub(crate) const DEFAULT_MAX_SANDBOX_RECORDS: u32 = 500;
/// About three CNI files per pod (network result, loopback result, IP reservation).
pub(crate) const DEFAULT_MAX_CNI_FILES: u32 = 500;
/// Broken images (distinct image targets) per run: a lost snapshot directory takes the few
/// images stacked on that layer; dozens means the root itself is damaged, for an operator.
pub(crate) const DEFAULT_MAX_BROKEN_IMAGES: u32 = 20;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreflightSection {
    /// Whole-run budget, clock wait included: on timeout preflight logs and lets k3s start.
    pub(crate) budget: ConfigDuration,
    /// Longest wait for time sync when the clock is behind the daemon's last-seen time.
    pub(crate) clock_wait: ConfigDuration,
    /// Most containerd records (sandboxes and containers) one run may remove.
    pub(crate) max_sandbox_records: u32,
    /// Most CNI files (result cache files, IP reservations) one run may remove.
    pub(crate) max_cni_files: u32,
    /// k3s's bundled containerd, so the metadata schema matches what k3s runs.
    pub(crate) containerd_binary: PathBuf,
    pub(crate) containerd_config: PathBuf,
    pub(crate) containerd_root: PathBuf,
    pub(crate) containerd_state: PathBuf,
    pub(crate) containerd_socket: PathBuf,
    pub(crate) namespace: String,
    pub(crate) cni_results_dir: PathBuf,
    pub(crate) cni_networks_dir: PathBuf,
    /// Networks whose host-local IP reservations preflight may release (with the names in
    /// `cni_conf_dir`); reservations on any other network are never touched.
    pub(crate) cni_networks: Vec<String>,
    /// k3s's CNI config directory: each config's `name` is one of k3s's networks.
    pub(crate) cni_conf_dir: PathBuf,
    /// Check for image layer snapshots that lost their directory and remove the broken chain
    /// with its images (with `actions.remove_sandboxes` live), so they are pulled again.
    pub(crate) repair_snapshots: bool,
    /// Most broken images (distinct image targets) one run may remove.
    pub(crate) max_broken_images: u32,
}

impl Default for PreflightSection {
    fn default() -> Self {
        PreflightSection {
            budget: ConfigDuration(DEFAULT_BUDGET),
            clock_wait: ConfigDuration(DEFAULT_CLOCK_WAIT),
            max_sandbox_records: DEFAULT_MAX_SANDBOX_RECORDS,
            max_cni_files: DEFAULT_MAX_CNI_FILES,
            containerd_binary: "/var/lib/rancher/k3s/data/current/bin/containerd".into(),
            containerd_config: "/var/lib/rancher/k3s/agent/etc/containerd/config.toml".into(),
            containerd_root: "/var/lib/rancher/k3s/agent/containerd".into(),
            containerd_state: "/run/k3s/containerd".into(),
            containerd_socket: "/run/k3s/containerd/containerd.sock".into(),
            namespace: "k8s.io".into(),
            cni_results_dir: "/var/lib/cni/results".into(),
            cni_networks_dir: "/var/lib/cni/networks".into(),
            // flannel's network in k3s's CNI config (`10-flannel.conflist`, "name": "cbr0").
            cni_networks: vec!["cbr0".into()],
            cni_conf_dir: "/var/lib/rancher/k3s/agent/etc/cni/net.d".into(),
            repair_snapshots: true,
            max_broken_images: DEFAULT_MAX_BROKEN_IMAGES,
        }
    }
}

impl PreflightSection {
    pub(crate) fn validate(&self, v: &mut Vec<String>) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn new_keys_are_validated() {
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
    }
}
