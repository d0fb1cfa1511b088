//! `[runtime]`: the online container-runtime detector (CRI listing and containerd's log).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

use super::checks::{dur_range, range};
use super::duration::ConfigDuration;

/// k3s's containerd socket, where CRI is served.
pub(crate) const K3S_CRI_SOCKET: &str = "/run/k3s/containerd/containerd.sock";
/// k3s's containerd log.
pub(crate) const K3S_CONTAINERD_LOG: &str = "/var/lib/rancher/k3s/agent/containerd/containerd.log";
/// A listing costs containerd a few ms; every 10 s raises a conflict within one kubelet
/// retry (the pod worker retries a failed sandbox every 10-15 s).
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// A healthy ListPodSandbox answers in milliseconds, a loaded Pi's in tens.
pub(crate) const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Three passes (30 s): a k3s restart brings its containerd back in 5-10 s.
pub(crate) const DEFAULT_DOWN_AFTER: u32 = 3;
/// The kubelet repeats a failed RunPodSandbox every 10-15 s; a conflict not logged again
/// for this long is one the kubelet stopped trying (pod deleted).
pub(crate) const DEFAULT_CONFLICT_FORGET: Duration = Duration::from_secs(300);
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSection {
    pub enabled: bool,
    /// CRI socket of the runtime k3s uses.
    pub socket: PathBuf,
    pub interval: ConfigDuration,
    pub call_timeout: ConfigDuration,
    /// Failed passes in a row that raise `ContainerRuntimeDown`.
    pub down_after: u32,
    /// containerd's log, where the kubelet's failed RunPodSandbox calls appear; "" disables.
    pub log_file: PathBuf,
    pub conflict_forget: ConfigDuration,
}

impl Default for RuntimeSection {
    fn default() -> Self {
        RuntimeSection {
            enabled: true,
            socket: K3S_CRI_SOCKET.into(),
            interval: ConfigDuration(DEFAULT_INTERVAL),
            call_timeout: ConfigDuration(DEFAULT_CALL_TIMEOUT),
            down_after: DEFAULT_DOWN_AFTER,
            log_file: K3S_CONTAINERD_LOG.into(),
            conflict_forget: ConfigDuration(DEFAULT_CONFLICT_FORGET),
        }
    }
}

impl RuntimeSection {
    pub(crate) fn validate(&self, v: &mut Vec<String>) {
        dur_range(v, "runtime.interval", self.interval, 1_000, 600_000);
        // Two calls per pass must stay well inside health.stuck_after (30 s by default).
        dur_range(v, "runtime.call_timeout", self.call_timeout, 100, 10_000);
        range(v, "runtime.down_after", self.down_after.into(), 1, 100);
        dur_range(
            v,
            "runtime.conflict_forget",
            self.conflict_forget,
            30_000,
            86_400_000,
        );
        if !self.socket.is_absolute() {
            v.push(format!(
                "key `runtime.socket` = \"{}\" must be an absolute path (k3s: \"{K3S_CRI_SOCKET}\")",
                self.socket.display()
            ));
        }
        if !self.log_file.as_os_str().is_empty() && !self.log_file.is_absolute() {
            v.push(format!(
                "key `runtime.log_file` = \"{}\" must be an absolute path, or \"\" to disable",
                self.log_file.display()
            ));
        }
    }
}
