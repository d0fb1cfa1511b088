//! `[etcd]`: the embedded-etcd detector of k3s servers. The judgement that applies these
//! thresholds, and why they are what they are, is `datastore::etcd_judge`.

use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::checks::{dur_range, range};
use super::duration::ConfigDuration;

/// k3s serves etcd's metrics (and `/health`) on the loopback only, port 2381
/// (`--etcd-expose-metrics` off, the default).
pub(crate) const DEFAULT_METRICS_URL: &str = "http://127.0.0.1:2381/metrics";
/// etcd's own tuning guide: a WAL fsync p99 above 10 ms already hurts; above 100 ms the
/// leader misses heartbeats (100 ms is etcd's default heartbeat interval) and elections
/// follow. A healthy SSD is ~2-10 ms, an SD card hundreds.
pub(crate) const DEFAULT_SLOW_WAL_FSYNC: Duration = Duration::from_millis(100);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct EtcdSection {
    pub(crate) enabled: bool,
    /// etcd's metrics endpoint; `/health` on the same host and port is read for alarms.
    pub(crate) metrics_url: String,
    pub(crate) interval: ConfigDuration,
    /// Deadline of one scrape (metrics and health together).
    pub(crate) timeout: ConfigDuration,
    /// Span of the histogram deltas the p99 is computed over.
    pub(crate) quantile_window: ConfigDuration,
    pub(crate) slow_wal_fsync: ConfigDuration,
    /// WAL p99 above `slow_wal_fsync` this long raises `EtcdSlowDisk`.
    pub(crate) slow_for: ConfigDuration,
    pub(crate) near_quota_percent: u32,
    /// More leader changes than this within `leader_changes_window` posts an Event.
    pub(crate) leader_changes: u32,
    pub(crate) leader_changes_window: ConfigDuration,
}

impl Default for EtcdSection {
    fn default() -> Self {
        EtcdSection {
            enabled: true,
            metrics_url: DEFAULT_METRICS_URL.into(),
            // A scrape parses ~150 KB of text: 30 s keeps it far below the idle-CPU budget
            // and still gives ten points per 5-minute window.
            interval: ConfigDuration::secs(30),
            timeout: ConfigDuration::secs(2),
            // The window the etcd dashboards use (`rate(...[5m])`).
            quantile_window: ConfigDuration::secs(300),
            slow_wal_fsync: ConfigDuration(DEFAULT_SLOW_WAL_FSYNC),
            slow_for: ConfigDuration::secs(600),
            // etcd raises NOSPACE at 100%; 80% leaves days of headroom on a small cluster.
            near_quota_percent: 80,
            leader_changes: 3,
            leader_changes_window: ConfigDuration::secs(900),
        }
    }
}

impl EtcdSection {
    pub(crate) fn validate(&self, v: &mut Vec<String>) {
        let u = &self.metrics_url;
        let ok = u
            .strip_prefix("http://")
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(hostport, _)| {
                hostport
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
            });
        if !ok {
            v.push(format!(
                "key `etcd.metrics_url` = \"{u}\" is not a plain-HTTP URL with host, port and path; expected e.g. \"{DEFAULT_METRICS_URL}\" (k3s serves etcd metrics without TLS on the loopback)"
            ));
        }
        dur_range(v, "etcd.interval", self.interval, 1_000, 600_000);
        dur_range(v, "etcd.timeout", self.timeout, 100, 10_000);
        if self.timeout.get() >= self.interval.get() {
            v.push(format!(
                "key `etcd.timeout` = \"{}\" must be shorter than `etcd.interval` = \"{}\"",
                self.timeout, self.interval
            ));
        }
        dur_range(
            v,
            "etcd.quantile_window",
            self.quantile_window,
            60_000,
            3_600_000,
        );
        if self.quantile_window.get() < self.interval.get() * 2 {
            v.push(format!(
                "key `etcd.quantile_window` = \"{}\" must span at least two scrapes (2 x `etcd.interval` = \"{}\")",
                self.quantile_window,
                ConfigDuration(self.interval.get() * 2)
            ));
        }
        dur_range(v, "etcd.slow_wal_fsync", self.slow_wal_fsync, 1, 10_000);
        dur_range(v, "etcd.slow_for", self.slow_for, 0, 86_400_000);
        range(
            v,
            "etcd.near_quota_percent",
            self.near_quota_percent.into(),
            1,
            100,
        );
        range(
            v,
            "etcd.leader_changes",
            self.leader_changes.into(),
            1,
            1000,
        );
        dur_range(
            v,
            "etcd.leader_changes_window",
            self.leader_changes_window,
            60_000,
            86_400_000,
        );
    }
}
