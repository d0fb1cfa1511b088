//! `[kubernetes]`: whether and how the daemon talks to the API. Everything here is about
//! reporting (conditions, Events) and coordination (the reboot lease, cordon); the actions
//! themselves are switched in `[actions.*]` and gated by the policy.

use serde::{Deserialize, Serialize};

use std::time::Duration;

use super::checks::{dur_range, range};
use super::duration::ConfigDuration;

/// The annotation an operator sets on the Node to pause all automatic action
/// (`kubectl annotate node <n> nodemedic.io/pause=true`).
pub(crate) const DEFAULT_PAUSE_ANNOTATION: &str = "nodemedic.io/pause";

/// Every call nodemedic makes is one small object; on a healthy small cluster it takes
/// well under a second. 10 s bounds each call (kube-apiserver's own limit is 60 s).
pub(crate) const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The cluster reboot lock's Lease.
pub(crate) const DEFAULT_LEASE_NAMESPACE: &str = "kube-system";
pub(crate) const DEFAULT_LEASE_NAME: &str = "nodemedic-reboot";

/// A Pi reboot plus k3s start takes 2-5 minutes. 15 minutes lets the holder come back,
/// renew and release after a slow boot, and still frees the lock if it never returns.
pub(crate) const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15 * 60);

/// Whether a reboot needs the cluster reboot lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RebootLease {
    /// Never reboot without the lease: not while the API is unreachable, not with
    /// credentials that may not take it (such a node never reboots automatically).
    Required,
    /// Take the lease when the credentials may and the API answers; otherwise reboot
    /// without it (a k3s agent's kubelet identity may not write Leases, and a wedged
    /// control-plane node hosts the API itself).
    WhenPermitted,
    /// Never take it: reboots are coordinated some other way (or not at all).
    Off,
}

impl RebootLease {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RebootLease::Required => "required",
            RebootLease::WhenPermitted => "when_permitted",
            RebootLease::Off => "off",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct KubernetesSection {
    /// On by default: with no credentials on the node it logs once and stays off.
    pub(crate) enabled: bool,
    /// Explicit kubeconfig; empty = discover (k3s admin, k3s kubelet, in-cluster).
    pub(crate) kubeconfig: String,
    /// How often the Node is re-read and wishes written when nothing changes.
    pub(crate) sync_interval: ConfigDuration,
    pub(crate) request_timeout: ConfigDuration,
    /// Publish nodemedic conditions into the Node's status.
    pub(crate) conditions: bool,
    /// Post Events on the Node for detections and actions.
    pub(crate) events: bool,
    pub(crate) pause_annotation: String,
    pub(crate) lease_namespace: String,
    pub(crate) lease_name: String,
    pub(crate) lease_max_holders: u32,
    pub(crate) lease_duration: ConfigDuration,
    /// Whether a reboot needs the cluster reboot lease (`required`, `when_permitted`,
    /// `off`).
    pub(crate) reboot_lease: RebootLease,
    /// Never cordon when fewer schedulable Nodes than this would be left.
    pub(crate) min_schedulable_nodes: u32,
}

impl Default for KubernetesSection {
    fn default() -> Self {
        KubernetesSection {
            enabled: true,
            kubeconfig: String::new(),
            // Conditions are level-triggered and re-derived; 15 s is as fresh as a scrape.
            sync_interval: ConfigDuration::secs(15),
            request_timeout: ConfigDuration(DEFAULT_REQUEST_TIMEOUT),
            conditions: true,
            events: true,
            pause_annotation: DEFAULT_PAUSE_ANNOTATION.into(),
            lease_namespace: DEFAULT_LEASE_NAMESPACE.into(),
            lease_name: DEFAULT_LEASE_NAME.into(),
            // One reboot at a time protects etcd quorum on 1-3 server clusters.
            lease_max_holders: 1,
            lease_duration: ConfigDuration(DEFAULT_LEASE_DURATION),
            reboot_lease: RebootLease::WhenPermitted,
            // A cluster needs somewhere to schedule; more on larger clusters.
            min_schedulable_nodes: 1,
        }
    }
}

impl KubernetesSection {
    pub(crate) fn validate(&self, v: &mut Vec<String>) {
        if !self.kubeconfig.is_empty() && !self.kubeconfig.starts_with('/') {
            v.push(format!(
                "key `kubernetes.kubeconfig` = \"{}\" must be an absolute path (or empty to discover credentials)",
                self.kubeconfig
            ));
        }
        dur_range(
            v,
            "kubernetes.sync_interval",
            self.sync_interval,
            1_000,
            3_600_000,
        );
        dur_range(
            v,
            "kubernetes.request_timeout",
            self.request_timeout,
            500,
            120_000,
        );
        range(
            v,
            "kubernetes.lease_max_holders",
            self.lease_max_holders.into(),
            1,
            100,
        );
        // Shorter than a reboot plus k3s start and the lease would lapse mid-reboot.
        dur_range(
            v,
            "kubernetes.lease_duration",
            self.lease_duration,
            120_000,
            86_400_000,
        );
        for (key, val) in [
            ("kubernetes.lease_namespace", &self.lease_namespace),
            ("kubernetes.lease_name", &self.lease_name),
        ] {
            let ok = !val.is_empty()
                && val.len() <= 63
                && val
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !ok {
                v.push(format!(
                    "key `{key}` = \"{val}\" is not a valid Kubernetes name; expected 1-63 characters of a-z, 0-9 and '-'"
                ));
            }
        }
        if self.pause_annotation.is_empty() || self.pause_annotation.contains(char::is_whitespace) {
            v.push(format!(
                "key `kubernetes.pause_annotation` = \"{}\" is not an annotation key; expected e.g. \"{DEFAULT_PAUSE_ANNOTATION}\"",
                self.pause_annotation
            ));
        }
    }
}
