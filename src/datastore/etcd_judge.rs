//! The etcd judge: pure. Each scrape's readings and the monotonic time in; the conditions
//! to hold, an Event to post, and the figures for the metrics out.
//!
//! - `EtcdSlowDisk` (warning): the WAL fsync p99 over `quantile_window` above
//!   `slow_wal_fsync` on every scrape for `slow_for`. etcd's docs: a member whose fsyncs
//!   take longer than its heartbeat interval (100 ms) makes followers call elections.
//!   Restarting or rebooting a member for this only adds elections, so it is a warning
//!   whose message tells the operator to move etcd to a faster disk.
//! - `EtcdNearQuota` (problem): the db file at `near_quota_percent` of
//!   `etcd_server_quota_backend_bytes` or more, or a NOSPACE alarm in `/health`. It clears
//!   five points below the threshold, so a db hovering at the line does not flap. k3s
//!   defragments and disarms alarms at start: a k3s restart is the remedy.
//! - An Event when more than `leader_changes` leader changes fall within
//!   `leader_changes_window`, once per crossing.
//!
//! A p99 is "unknown" (None) until a window holds two snapshots, and after a counter reset
//! (see [`super::histogram`]); unknown neither raises nor clears `EtcdSlowDisk` until it
//! has lasted a whole window.

use std::collections::VecDeque;
use std::time::Duration;

use super::etcd_text::EtcdReadings;
use super::histogram::{HistogramWindow, Pushed};
use crate::model::{Condition, ConditionKind};

/// etcd's default `--quota-backend-bytes` (2 GiB), which k3s keeps: the ratio's
/// denominator when the quota series is missing.
pub(crate) const DEFAULT_QUOTA_BYTES: f64 = 2_147_483_648.0;
/// `EtcdNearQuota` clears this many percentage points below the raise threshold.
const QUOTA_HYSTERESIS_PERCENT: f64 = 5.0;

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct EtcdJudgeConfig {
    pub(crate) quantile_window: Duration,
    /// Seconds.
    pub(crate) slow_wal_fsync: f64,
    pub(crate) slow_for: Duration,
    pub(crate) near_quota_percent: f64,
    pub(crate) leader_changes: u32,
    pub(crate) leader_changes_window: Duration,
}

impl EtcdJudgeConfig {
    pub(crate) fn from_section(s: &crate::config::EtcdSection) -> Self {
        EtcdJudgeConfig {
            quantile_window: s.quantile_window.get(),
            slow_wal_fsync: s.slow_wal_fsync.get().as_secs_f64(),
            slow_for: s.slow_for.get(),
            near_quota_percent: f64::from(s.near_quota_percent),
            leader_changes: s.leader_changes,
            leader_changes_window: s.leader_changes_window.get(),
        }
    }
}

/// An Event for the Node (reason, message).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct EtcdEvent {
    pub(crate) reason: &'static str,
    pub(crate) message: String,
}

/// What one scrape amounts to.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct EtcdAssessment {
    pub(crate) conditions: Vec<Condition>,
    pub(crate) event: Option<EtcdEvent>,
    /// Seconds; None while unknown.
    pub(crate) wal_p99: Option<f64>,
    pub(crate) commit_p99: Option<f64>,
    /// db size / quota, 0-1.
    pub(crate) quota_ratio: Option<f64>,
    pub(crate) leader_changes_in_window: u32,
    /// The histograms' counters went backwards in this scrape (etcd restarted).
    pub(crate) reset: bool,
}

pub(crate) struct EtcdJudge {
    cfg: EtcdJudgeConfig,
    wal: HistogramWindow,
    commit: HistogramWindow,
    /// Since when every known WAL p99 has been above the threshold.
    slow_since: Option<Duration>,
    /// When the WAL p99 was last known.
    wal_known_at: Option<Duration>,
    near_quota: bool,
    /// (time, changes) for each scrape that saw the counter grow.
    leader_steps: VecDeque<(Duration, u32)>,
    last_leader_count: Option<f64>,
    leader_event_armed: bool,
}

impl EtcdJudge {
    pub(crate) fn new(cfg: EtcdJudgeConfig) -> Self {
        EtcdJudge {
            wal: HistogramWindow::new(cfg.quantile_window),
            commit: HistogramWindow::new(cfg.quantile_window),
            cfg,
            slow_since: None,
            wal_known_at: None,
            near_quota: false,
            leader_steps: VecDeque::new(),
            last_leader_count: None,
            leader_event_armed: true,
        }
    }

    /// Counter resets seen so far (WAL and commit histograms).
    pub(crate) fn resets(&self) -> u64 {
        self.wal.resets + self.commit.resets
    }

    /// One successful scrape at monotonic `now`. `alarms`: the alarms `/health` named
    /// ("NOSPACE", "CORRUPT"), None when `/health` could not be read.
    pub(crate) fn observe(
        &mut self,
        now: Duration,
        r: &EtcdReadings,
        alarms: Option<&[String]>,
    ) -> EtcdAssessment {
        let mut a = EtcdAssessment::default();
        if let Some(h) = &r.wal_fsync {
            a.reset |= self.wal.push(now, h.clone()) == Pushed::Reset;
        }
        if let Some(h) = &r.backend_commit {
            a.reset |= self.commit.push(now, h.clone()) == Pushed::Reset;
        }
        a.wal_p99 = r.wal_fsync.as_ref().and(self.wal.quantile(0.99));
        a.commit_p99 = r.backend_commit.as_ref().and(self.commit.quantile(0.99));

        self.judge_slow_disk(now, &mut a);
        self.judge_quota(r, alarms, &mut a);
        self.count_leader_changes(now, r, &mut a);
        a
    }

    fn judge_slow_disk(&mut self, now: Duration, a: &mut EtcdAssessment) {
        match a.wal_p99 {
            Some(p) => {
                self.wal_known_at = Some(now);
                if p > self.cfg.slow_wal_fsync {
                    self.slow_since.get_or_insert(now);
                } else {
                    self.slow_since = None;
                }
            }
            // Unknown for a whole window (series gone, etcd idle): stop claiming slowness.
            None if self
                .wal_known_at
                .is_none_or(|t| now.saturating_sub(t) > self.cfg.quantile_window) =>
            {
                self.slow_since = None;
            }
            None => {}
        }
        let Some(since) = self.slow_since else {
            return;
        };
        let held = now.saturating_sub(since);
        if held < self.cfg.slow_for {
            return;
        }
        let ms = |s: f64| format!("{:.0} ms", s * 1000.0);
        let window = crate::config::ConfigDuration(self.cfg.quantile_window);
        a.conditions.push(Condition::new(
            ConditionKind::EtcdSlowDisk,
            "",
            "SlowWALFsync",
            format!(
                "etcd's WAL fsync p99 is {} over the last {window} (threshold {}), above it for {}{}; \
                 leader elections follow. A restart or reboot does not make the disk faster, so nodemedic \
                 takes no action: move etcd's data (/var/lib/rancher/k3s/server/db) off the SD card to an SSD \
                 or a faster disk (NeedsHuman)",
                a.wal_p99.map(ms).unwrap_or_else(|| "unknown".into()),
                ms(self.cfg.slow_wal_fsync),
                crate::config::ConfigDuration(Duration::from_secs(held.as_secs())),
                a.commit_p99
                    .map(|c| format!("; backend commit p99 {}", ms(c)))
                    .unwrap_or_default(),
            ),
        ));
    }

    fn judge_quota(&mut self, r: &EtcdReadings, alarms: Option<&[String]>, a: &mut EtcdAssessment) {
        let nospace = alarms.is_some_and(|l| l.iter().any(|x| x == "NOSPACE"));
        let quota = r.quota.filter(|q| *q > 0.0);
        a.quota_ratio = r
            .db_size
            .map(|db| db / quota.unwrap_or(DEFAULT_QUOTA_BYTES));
        let pct = a.quota_ratio.map(|x| x * 100.0);
        let raise = self.cfg.near_quota_percent;
        self.near_quota = nospace
            || match pct {
                Some(p) if self.near_quota => p >= raise - QUOTA_HYSTERESIS_PERCENT,
                Some(p) => p >= raise,
                // Size unknown this scrape: keep what we had.
                None => self.near_quota,
            };
        if !self.near_quota {
            return;
        }
        let mib = |b: f64| format!("{:.0} MiB", b / 1_048_576.0);
        let size = match (r.db_size, pct) {
            (Some(db), Some(p)) => format!(
                "the etcd db is {} ({p:.0}% of the {} quota{})",
                mib(db),
                mib(quota.unwrap_or(DEFAULT_QUOTA_BYTES)),
                if quota.is_none() {
                    ", etcd's default; the quota series is missing"
                } else {
                    ""
                }
            ),
            _ => "the etcd db size is unknown".into(),
        };
        let helps = match (r.db_in_use, r.db_size) {
            (Some(used), Some(db)) if used <= db * 0.5 => format!(
                "; only {} of it is in use, so the defragmentation k3s does at start frees most of it",
                mib(used)
            ),
            (Some(used), Some(_)) => format!(
                "; {} of it is in use, so defragmenting frees little: find what fills etcd (Events, large ConfigMaps or Secrets)",
                mib(used)
            ),
            _ => String::new(),
        };
        let (reason, what) = if nospace {
            (
                "NoSpaceAlarm",
                "etcd raised the NOSPACE alarm and refuses writes; ",
            )
        } else {
            ("DbNearQuota", "")
        };
        a.conditions.push(Condition::new(
            ConditionKind::EtcdNearQuota,
            "",
            reason,
            format!("{what}{size}{helps}"),
        ));
    }

    fn count_leader_changes(&mut self, now: Duration, r: &EtcdReadings, a: &mut EtcdAssessment) {
        if let Some(c) = r.leader_changes {
            // A counter that went down began again (etcd restarted): what it counted before
            // is unknown, so nothing is added for this step.
            if let Some(prev) = self.last_leader_count
                && c > prev
            {
                self.leader_steps
                    .push_back((now, (c - prev).round() as u32));
            }
            self.last_leader_count = Some(c);
        }
        let start = now.saturating_sub(self.cfg.leader_changes_window);
        while self.leader_steps.front().is_some_and(|s| s.0 < start) {
            self.leader_steps.pop_front();
        }
        let n: u32 = self.leader_steps.iter().map(|s| s.1).sum();
        a.leader_changes_in_window = n;
        if n > self.cfg.leader_changes {
            if self.leader_event_armed {
                self.leader_event_armed = false;
                a.event = Some(EtcdEvent {
                    reason: "EtcdLeaderChanges",
                    message: format!(
                        "etcd saw {n} leader changes in the last {} (more than {}): members miss heartbeats; \
                         look for a slow disk (EtcdSlowDisk), CPU starvation or a flaky network between servers",
                        crate::config::ConfigDuration(self.cfg.leader_changes_window),
                        self.cfg.leader_changes
                    ),
                });
            }
        } else {
            self.leader_event_armed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::etcd_text::{parse, tests::FAST, tests::page};
    use super::*;
    use crate::edge::{Clock, FakeClock};

    fn cfg() -> EtcdJudgeConfig {
        EtcdJudgeConfig::from_section(&crate::config::EtcdSection::default())
    }

    /// Cumulative WAL counts after `fast` fsyncs under 1 ms and `slow` ones in
    /// (256, 512] ms, in the etcd bucket layout of `page`.
    fn wal(fast: u64, slow: u64) -> [u64; 15] {
        let mut b = [0u64; 15];
        for (i, x) in b.iter_mut().enumerate() {
            *x = fast + if i >= 9 { slow } else { 0 };
        }
        b
    }

    const S30: Duration = Duration::from_secs(30);

    fn kinds(a: &EtcdAssessment) -> Vec<ConditionKind> {
        a.conditions.iter().map(|c| c.kind).collect()
    }

    #[test]
    fn slow_fsyncs_raise_etcd_slow_disk_only_after_ten_minutes_on_the_fake_clock() {
        let clock = FakeClock::new(1_700_000_000, Duration::from_secs(1000));
        let mut j = EtcdJudge::new(cfg());
        let (mut fast, mut slow) = (0, 0);
        let mut raised_at = None;
        for scrape in 0..40 {
            // From scrape 4 on, 5% of fsyncs take ~400 ms.
            fast += 95;
            if scrape >= 4 {
                slow += 5;
            } else {
                fast += 5;
            }
            let r = parse(&page(&wal(fast, slow), &FAST, 1, 1 << 20)).unwrap();
            let a = j.observe(clock.monotonic(), &r, Some(&[]));
            if raised_at.is_none() && kinds(&a) == [ConditionKind::EtcdSlowDisk] {
                raised_at = Some(scrape);
                let m = &a.conditions[0].message;
                assert!(
                    m.contains("off the SD card") && m.contains("no action"),
                    "{m}"
                );
                assert!(a.wal_p99.unwrap() > 0.256, "{a:?}");
            }
            clock.advance(S30);
        }
        // Slow from scrape 4 (its delta already has 1.25% slow fsyncs), raised 10 min (20
        // scrapes) later.
        assert_eq!(raised_at, Some(24));
    }

    #[test]
    fn a_counter_reset_mid_episode_restarts_the_window_without_garbage() {
        let clock = FakeClock::new(0, Duration::from_secs(50));
        let mut j = EtcdJudge::new(cfg());
        for i in 1..=4u64 {
            let r = parse(&page(&wal(10_000 * i, 0), &FAST, 5, 1 << 20)).unwrap();
            let a = j.observe(clock.monotonic(), &r, Some(&[]));
            assert!(a.conditions.is_empty());
            clock.advance(S30);
        }
        // k3s restarted: counts small again.
        let r = parse(&page(&wal(10, 0), &FAST, 1, 1 << 20)).unwrap();
        let a = j.observe(clock.monotonic(), &r, Some(&[]));
        assert!(a.reset);
        assert_eq!(a.wal_p99, None, "no garbage from a negative delta");
        assert_eq!(
            a.leader_changes_in_window, 0,
            "a falling counter adds nothing"
        );
        clock.advance(S30);
        let r = parse(&page(&wal(200, 0), &FAST, 1, 1 << 20)).unwrap();
        let a = j.observe(clock.monotonic(), &r, Some(&[]));
        assert!(!a.reset);
        assert!(a.wal_p99.unwrap() <= 0.001, "{a:?}");
        assert_eq!(j.resets(), 1);
    }

    #[test]
    fn missing_series_neither_raise_nor_hold_a_condition_forever() {
        let clock = FakeClock::new(0, Duration::ZERO);
        let mut c = cfg();
        c.slow_for = Duration::ZERO;
        let mut j = EtcdJudge::new(c);
        for i in 0..3u64 {
            let r = parse(&page(&wal(100 * i, 100 * i), &FAST, 1, 1 << 20)).unwrap();
            j.observe(clock.monotonic(), &r, Some(&[]));
            clock.advance(S30);
        }
        let only_leader = "# TYPE etcd_server_has_leader gauge\netcd_server_has_leader 1\n";
        let r = parse(only_leader).unwrap();
        let a = j.observe(clock.monotonic(), &r, None);
        assert_eq!(
            kinds(&a),
            [ConditionKind::EtcdSlowDisk],
            "unknown keeps it a while"
        );
        assert_eq!((a.wal_p99, a.quota_ratio), (None, None));
        clock.advance(Duration::from_secs(301));
        let a = j.observe(clock.monotonic(), &r, None);
        assert!(
            a.conditions.is_empty(),
            "unknown for a whole window: dropped"
        );
    }

    #[test]
    fn near_quota_raises_at_eighty_percent_and_clears_five_points_lower() {
        let mut j = EtcdJudge::new(cfg());
        let t = Duration::ZERO;
        let gib = 1u64 << 30;
        let at = |j: &mut EtcdJudge, db: u64| {
            let r = parse(&page(&FAST, &FAST, 1, db)).unwrap();
            j.observe(t, &r, Some(&[]))
        };
        assert!(at(&mut j, gib).conditions.is_empty());
        let a = at(&mut j, gib * 17 / 10); // 85%
        assert_eq!(kinds(&a), [ConditionKind::EtcdNearQuota]);
        assert_eq!(a.conditions[0].reason, "DbNearQuota");
        assert!(
            a.conditions[0]
                .message
                .contains("85% of the 2048 MiB quota"),
            "{a:?}"
        );
        // Half in use: the restart's defragmentation helps, and the message says so.
        assert!(
            a.conditions[0]
                .message
                .contains("defragmentation k3s does at start"),
            "{a:?}"
        );
        assert_eq!(
            kinds(&at(&mut j, gib * 158 / 100)),
            [ConditionKind::EtcdNearQuota],
            "79%: held"
        );
        assert!(
            at(&mut j, gib * 14 / 10).conditions.is_empty(),
            "70%: cleared"
        );
    }

    #[test]
    fn a_nospace_alarm_raises_near_quota_whatever_the_size() {
        let mut j = EtcdJudge::new(cfg());
        let r = parse(&page(&FAST, &FAST, 1, 1 << 20)).unwrap();
        let a = j.observe(Duration::ZERO, &r, Some(&["NOSPACE".to_string()]));
        assert_eq!(kinds(&a), [ConditionKind::EtcdNearQuota]);
        assert_eq!(a.conditions[0].reason, "NoSpaceAlarm");
        let a = j.observe(Duration::ZERO, &r, Some(&[]));
        assert!(a.conditions.is_empty(), "alarm disarmed, db small");
    }

    #[test]
    fn a_missing_quota_series_falls_back_to_etcds_two_gib_default() {
        let mut j = EtcdJudge::new(cfg());
        let r = EtcdReadings {
            db_size: Some(1_900_000_000.0),
            ..Default::default()
        };
        let a = j.observe(Duration::ZERO, &r, None);
        assert!(a.conditions[0].message.contains("etcd's default"), "{a:?}");
    }

    #[test]
    fn more_than_three_leader_changes_in_fifteen_minutes_post_one_event() {
        let clock = FakeClock::new(0, Duration::ZERO);
        let mut j = EtcdJudge::new(cfg());
        let mut events = Vec::new();
        // Counter: 10, then +1 every scrape for 4 scrapes, then steady for 20 minutes.
        let counts = [
            10, 11, 12, 13, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14,
            14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14, 14,
        ];
        for (i, c) in counts.iter().enumerate() {
            let r = EtcdReadings {
                leader_changes: Some(f64::from(*c)),
                ..Default::default()
            };
            let a = j.observe(clock.monotonic(), &r, None);
            if let Some(e) = a.event {
                events.push((i, e));
            }
            if i == 4 {
                assert_eq!(a.leader_changes_in_window, 4);
            }
            clock.advance(S30);
        }
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].0, 4);
        assert_eq!(events[0].1.reason, "EtcdLeaderChanges");
        // Three changes alone are not enough.
        let mut j = EtcdJudge::new(cfg());
        for c in [1, 2, 3, 4] {
            let r = EtcdReadings {
                leader_changes: Some(f64::from(c)),
                ..Default::default()
            };
            assert!(j.observe(Duration::ZERO, &r, None).event.is_none());
        }
    }
}
