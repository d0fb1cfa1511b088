//! What k3s's journal says, reduced to what the judge and the metrics need (pure): the last
//! fatal line, when the kubelet last said `PLEG is not healthy`, recent etcd slow-disk
//! warnings, and counts per kind.
//!
//! Lines from before nodemedic started (the backlog read at start) only set the last fatal
//! line: a PLEG warning from an hour ago is not a kubelet failing now, and counting them
//! again after every daemon restart would make the counters lie.

use std::collections::VecDeque;
use std::time::Duration;

use crate::formats::k3s_log::{self, EtcdSlowKind, K3sSignal};
use crate::formats::name_reservation::{self, ReservedKind};

/// The kubelet repeats `PLEG is not healthy` at least every 5 s while it lasts (its sync
/// loop backs off to 5 s); a line this old means it recovered.
pub(crate) const PLEG_FRESH: Duration = Duration::from_secs(30);
/// etcd warnings kept for messages.
pub(crate) const ETCD_RECENT: Duration = Duration::from_secs(300);
/// A fatal line is quoted up to this many characters.
const MAX_FATAL_CHARS: usize = 1000;

/// The kinds counted in `nodemedic_k3s_log_events_total{kind}`.
pub(crate) const KINDS: [&str; 5] = [
    "kubelet_pleg_unhealthy",
    "etcd_slow",
    "fatal",
    "sandbox_name_reserved",
    "container_name_reserved",
];

/// One journal line as the judge sees it.
pub(crate) struct LogLine<'a> {
    pub(crate) text: &'a str,
    /// Logged after nodemedic started (not backlog).
    pub(crate) fresh: bool,
}

#[derive(Debug, Default)]
pub(crate) struct LogSignals {
    pub(crate) last_fatal: Option<String>,
    /// Monotonic time of the pass that last read a PLEG line.
    pub(crate) pleg_seen: Option<Duration>,
    pub(crate) etcd_slow: VecDeque<(Duration, EtcdSlowKind)>,
}

impl LogSignals {
    /// Takes a pass's lines; returns how many of each kind were fresh (for the counter).
    pub(crate) fn ingest<'a>(
        &mut self,
        now: Duration,
        lines: impl IntoIterator<Item = LogLine<'a>>,
    ) -> [u64; KINDS.len()] {
        let mut counts = [0u64; KINDS.len()];
        for l in lines {
            let text = l.text.trim_end();
            if k3s_log::is_fatal(text) {
                self.last_fatal = Some(text.chars().take(MAX_FATAL_CHARS).collect());
                if l.fresh {
                    counts[2] += 1;
                }
                continue;
            }
            if !l.fresh {
                continue;
            }
            match k3s_log::signal(text) {
                Some(K3sSignal::PlegUnhealthy) => {
                    counts[0] += 1;
                    self.pleg_seen = Some(now);
                }
                Some(K3sSignal::EtcdSlow(k)) => {
                    counts[1] += 1;
                    self.etcd_slow.push_back((now, k));
                }
                None => match name_reservation::parse(text).map(|r| r.kind) {
                    Some(ReservedKind::Sandbox) => counts[3] += 1,
                    Some(ReservedKind::Container) => counts[4] += 1,
                    None => {}
                },
            }
        }
        while self
            .etcd_slow
            .front()
            .is_some_and(|(t, _)| now.saturating_sub(*t) > ETCD_RECENT)
        {
            self.etcd_slow.pop_front();
        }
        counts
    }

    /// The kubelet said PLEG is unhealthy within [`PLEG_FRESH`]: how long ago.
    pub(crate) fn pleg_unhealthy(&self, now: Duration) -> Option<Duration> {
        self.pleg_seen
            .map(|t| now.saturating_sub(t))
            .filter(|ago| *ago <= PLEG_FRESH)
    }

    /// "etcd: 3 slow-disk warnings in the last 5 min (fdatasync 2, apply 1)", if any.
    pub(crate) fn etcd_summary(&self) -> Option<String> {
        if self.etcd_slow.is_empty() {
            return None;
        }
        let n = |k: EtcdSlowKind| self.etcd_slow.iter().filter(|(_, x)| *x == k).count();
        let parts: Vec<String> = [
            EtcdSlowKind::Fdatasync,
            EtcdSlowKind::Apply,
            EtcdSlowKind::Heartbeat,
        ]
        .into_iter()
        .filter(|k| n(*k) > 0)
        .map(|k| format!("{} {}", k.as_str(), n(k)))
        .collect();
        Some(format!(
            "etcd logged {} slow-disk warning(s) in the last {} min ({})",
            self.etcd_slow.len(),
            ETCD_RECENT.as_secs() / 60,
            parts.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;
    const PLEG: &str = r#"E1121 17:35:41.123456     812 kubelet.go:2412] "Skipping pod synchronization" err="PLEG is not healthy: pleg was last seen active 3m5s ago; threshold is 3m0s""#;
    const FATAL: &str = r#"time="2025-11-21T17:35:41Z" level=fatal msg="starting kubernetes: preparing server: init cluster datastore and https: listen tcp :6443: bind: address already in use""#;
    const FSYNC: &str = r#"{"level":"warn","ts":"2025-11-21T17:35:41.123Z","caller":"wal/wal.go:805","msg":"slow fdatasync","took":"1.51s","expected-duration":"1s"}"#;

    fn fresh(text: &str) -> LogLine<'_> {
        LogLine { text, fresh: true }
    }

    #[test]
    fn backlog_lines_only_set_the_last_fatal_line() {
        let mut s = LogSignals::default();
        let c = s.ingest(
            S(100),
            [
                LogLine {
                    text: PLEG,
                    fresh: false,
                },
                LogLine {
                    text: FATAL,
                    fresh: false,
                },
                LogLine {
                    text: FSYNC,
                    fresh: false,
                },
            ],
        );
        assert_eq!(c, [0; 5]);
        assert_eq!(s.last_fatal.as_deref(), Some(FATAL));
        assert!(s.pleg_unhealthy(S(100)).is_none());
        assert!(s.etcd_summary().is_none());
    }

    #[test]
    fn fresh_lines_are_counted_and_pleg_goes_stale_after_30_s() {
        let mut s = LogSignals::default();
        let reserved = r#"time="x" level=error msg="RunPodSandbox for &PodSandboxMetadata{Name:web-0,} failed" error="failed to reserve sandbox name \"web-0_default_u_0\": name \"web-0_default_u_0\" is reserved for \"abc\"""#;
        let c = s.ingest(
            S(100),
            [
                fresh(PLEG),
                fresh(FSYNC),
                fresh(FSYNC),
                fresh(FATAL),
                fresh(reserved),
                fresh("I0101 00:00:00.0 1 x.go:1] fine"),
            ],
        );
        assert_eq!(c, [1, 2, 1, 1, 0]);
        assert_eq!(s.pleg_unhealthy(S(110)), Some(S(10)));
        assert_eq!(s.pleg_unhealthy(S(131)), None);
        assert_eq!(
            s.etcd_summary().unwrap(),
            "etcd logged 2 slow-disk warning(s) in the last 5 min (fdatasync 2)"
        );
        s.ingest(S(500), []);
        assert!(s.etcd_summary().is_none(), "older than 5 min");
    }
}
