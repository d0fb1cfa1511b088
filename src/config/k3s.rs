//! `[k3s]`: k3s's own liveness while it runs (probes, the unit's state, its journal) and
//! the reboot-readiness check. The unit watched is `remedy.k3s_unit`, the one restart_k3s
//! restarts.

use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::checks::{dur_range, range};
use super::duration::ConfigDuration;

/// The kubelet's healthz on k3s (`--healthz-port` default 10248, bound to 127.0.0.1).
pub(crate) const KUBELET_HEALTHZ: &str = "http://127.0.0.1:10248/healthz";
/// The apiserver's readiness on a k3s server (`--https-listen-port` default 6443).
pub(crate) const APISERVER_READYZ: &str = "https://127.0.0.1:6443/readyz";
/// Embedded etcd's health on its metrics listener (k3s sets listen-metrics-urls to
/// http://127.0.0.1:2381).
pub(crate) const ETCD_HEALTH: &str = "http://127.0.0.1:2381/health";
/// k3s issue 14479: a wedged kubelet answers nothing for minutes; 90 s rides out a
/// garbage-collection pause or a slow SD card, and is half the kubelet's own node-status
/// grace (40 s x 4 retries in the node lifecycle controller is well above it).
pub(crate) const DEFAULT_UNRESPONSIVE_AFTER: Duration = Duration::from_secs(90);
/// The EKS node monitoring agent's RepeatedRestart and node-problem-detector's
/// FrequentKubeletRestart both count restarts in a window; 5 in 20 min is k3s's
/// RestartSec=5s loop well past a one-off crash.
pub(crate) const DEFAULT_CRASHLOOP_RESTARTS: u32 = 5;
pub(crate) const DEFAULT_CRASHLOOP_WINDOW: Duration = Duration::from_secs(20 * 60);

/// Which probes apply: a server runs the apiserver (and maybe etcd), an agent only the
/// kubelet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub(crate) enum K3sRole {
    /// From the unit: `k3s.service` is a server, anything else an agent.
    #[default]
    Auto,
    Server,
    Agent,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct K3sSection {
    pub(crate) enabled: bool,
    pub(crate) interval: ConfigDuration,
    pub(crate) role: K3sRole,
    /// "" disables the probe.
    pub(crate) kubelet_url: String,
    pub(crate) apiserver_url: String,
    pub(crate) etcd_url: String,
    pub(crate) probe_timeout: ConfigDuration,
    /// Deadline of each D-Bus call to systemd and logind.
    pub(crate) call_timeout: ConfigDuration,
    pub(crate) unresponsive_after: ConfigDuration,
    pub(crate) crashloop_restarts: u32,
    pub(crate) crashloop_window: ConfigDuration,
    /// Follow the unit's journal (kubelet PLEG, etcd slow disk, the last fatal line).
    pub(crate) journal: bool,
    /// Check that the kubelet's graceful node shutdown would work.
    pub(crate) reboot_readiness: bool,
    /// How long k3s must have been active before that check (the kubelet takes its
    /// inhibitor as it starts).
    pub(crate) readiness_after: ConfigDuration,
}

impl Default for K3sSection {
    fn default() -> Self {
        K3sSection {
            enabled: true,
            // Six probes a minute keep a 90 s streak accurate to 10 s at ~1 ms CPU each.
            interval: ConfigDuration::secs(10),
            role: K3sRole::Auto,
            kubelet_url: KUBELET_HEALTHZ.into(),
            apiserver_url: APISERVER_READYZ.into(),
            etcd_url: ETCD_HEALTH.into(),
            // Local endpoints answer in milliseconds; a Pi under load in well under 5 s.
            probe_timeout: ConfigDuration::secs(5),
            // PID 1 answers property reads in microseconds; 2 s means it is wedged.
            call_timeout: ConfigDuration::secs(2),
            unresponsive_after: ConfigDuration(DEFAULT_UNRESPONSIVE_AFTER),
            crashloop_restarts: DEFAULT_CRASHLOOP_RESTARTS,
            crashloop_window: ConfigDuration(DEFAULT_CRASHLOOP_WINDOW),
            journal: true,
            reboot_readiness: true,
            // The kubelet's node shutdown manager starts within seconds of the kubelet; a
            // slow Pi start (image pulls, a big etcd) is well inside 2 min.
            readiness_after: ConfigDuration::secs(120),
        }
    }
}

impl K3sSection {
    pub(crate) fn validate(&self, v: &mut Vec<String>) {
        dur_range(v, "k3s.interval", self.interval, 1_000, 600_000);
        dur_range(v, "k3s.probe_timeout", self.probe_timeout, 100, 30_000);
        dur_range(v, "k3s.call_timeout", self.call_timeout, 100, 10_000);
        dur_range(v, "k3s.readiness_after", self.readiness_after, 0, 3_600_000);
        dur_range(
            v,
            "k3s.unresponsive_after",
            self.unresponsive_after,
            5_000,
            3_600_000,
        );
        range(
            v,
            "k3s.crashloop_restarts",
            self.crashloop_restarts.into(),
            2,
            1_000,
        );
        dur_range(
            v,
            "k3s.crashloop_window",
            self.crashloop_window,
            60_000,
            86_400_000,
        );
        for (key, url, scheme) in [
            ("k3s.kubelet_url", &self.kubelet_url, "http://"),
            ("k3s.etcd_url", &self.etcd_url, "http://"),
        ] {
            if !url.is_empty() && !url.starts_with(scheme) {
                v.push(format!(
                    "key `{key}` = \"{url}\" must be an {scheme} URL such as \"{}\", or \"\" to disable the probe",
                    if key == "k3s.kubelet_url" {
                        KUBELET_HEALTHZ
                    } else {
                        ETCD_HEALTH
                    }
                ));
            }
        }
        let api = &self.apiserver_url;
        if !(api.is_empty() || api.starts_with("https://") || api.starts_with("http://")) {
            v.push(format!(
                "key `k3s.apiserver_url` = \"{}\" must be a URL such as \"{APISERVER_READYZ}\", or \"\" to disable the probe",
                self.apiserver_url
            ));
        }
    }
}
