//! The etcd detector (`[etcd]`): on a k3s server, scrapes its etcd member's metrics and
//! `/health` every interval on the [`ScrapeWorker`] (never waiting for it), and feeds each
//! answer to the [`EtcdJudge`]. Publishes `EtcdSlowDisk` and `EtcdNearQuota`, asks for an
//! `EtcdLeaderChanges` Event through the [`EventOutbox`], and shares what the member says
//! about its peers ([`LocalEtcdView`]) for the quorum rail.
//!
//! Only on servers: with no `/var/lib/rancher/k3s/server` under the host root the pass is
//! a stat and nothing else (no thread, no socket). A server whose etcd does not answer
//! (a sqlite server, k3s stopped) is "etcd not answering": `nodemedic_etcd_up 0`, no
//! condition. Conditions from the last answer are held for three intervals of silence
//! (k3s restarting), then dropped: stale numbers must not drive a restart.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::etcd_judge::{EtcdAssessment, EtcdJudge, EtcdJudgeConfig};
use super::etcd_text;
use super::metrics::{AlarmLabels, EtcdMetrics, set_opt};
use super::scrape::{EtcdEndpoint, HttpEndpoint, ScrapeError, ScrapeWorker, Scraped, Started};
use crate::config::EtcdSection;
use crate::detect::{CheckNote, Detector, NoteLevel, Sample};
use crate::edge::{Clock, HostFiles};
use crate::model::{Condition, DetectorEvent, EventOutbox, LocalEtcd, LocalEtcdView};

/// A k3s server has this directory (k3s's data dir, server side).
pub(crate) const SERVER_DIR: &str = "var/lib/rancher/k3s/server";
/// Silence (in intervals) after which the last answer's conditions are dropped.
const STALE_INTERVALS: u32 = 3;

/// What the detector is handed at the wiring.
pub(crate) struct EtcdDeps {
    pub(crate) files: Arc<dyn HostFiles>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) metrics: Option<EtcdMetrics>,
    pub(crate) local: LocalEtcdView,
    pub(crate) events: Option<EventOutbox>,
    /// None: the real HTTP endpoint at `metrics_url`.
    pub(crate) endpoint: Option<Box<dyn EtcdEndpoint>>,
}

pub(crate) struct EtcdDetector {
    cfg: EtcdSection,
    deps: EtcdDeps,
    worker: Option<ScrapeWorker>,
    judge: EtcdJudge,
    /// Monotonic time the scrape in flight was started: the time its answer describes.
    started_at: Duration,
    last_good: Option<Duration>,
    held: Vec<Condition>,
    last_error: Option<String>,
    last_info: serde_json::Value,
    resets_counted: u64,
}

impl EtcdDetector {
    pub(crate) fn new(cfg: EtcdSection, deps: EtcdDeps) -> Self {
        EtcdDetector {
            judge: EtcdJudge::new(EtcdJudgeConfig::from_section(&cfg)),
            cfg,
            deps,
            worker: None,
            started_at: Duration::ZERO,
            last_good: None,
            held: Vec::new(),
            last_error: None,
            last_info: json!({}),
            resets_counted: 0,
        }
    }

    fn worker(&mut self) -> Result<&mut ScrapeWorker, String> {
        if self.worker.is_none() {
            let ep = match self.deps.endpoint.take() {
                Some(e) => e,
                None => Box::new(HttpEndpoint::new(&self.cfg.metrics_url)?),
            };
            self.worker = Some(
                ScrapeWorker::spawn(ep)
                    .map_err(|e| format!("cannot start the etcd scrape thread: {e}"))?,
            );
        }
        Ok(self.worker.as_mut().expect("set above"))
    }

    fn on_answer(&mut self, s: Scraped) -> Result<(), String> {
        let at = self.started_at;
        let r = etcd_text::parse(&s.metrics)?;
        let alarms = s
            .health
            .as_ref()
            .ok()
            .and_then(|b| super::scrape::alarms_in_health(b));
        let a = self.judge.observe(at, &r, alarms.as_deref());
        self.deps.local.set(LocalEtcd {
            at_unix: self.deps.clock.unix_secs(),
            answering: true,
            peers_known: r.peers_known,
            peers_active: r.peers_active,
        });
        if let Some(e) = &a.event {
            log::warn!("{}", e.message);
            if let Some(out) = &self.deps.events {
                out.push(DetectorEvent {
                    reason: e.reason.into(),
                    message: e.message.clone(),
                });
            }
        }
        self.update_metrics(&r, &a, alarms.as_deref());
        self.last_info = json!({
            "wal_fsync_p99_ms": a.wal_p99.map(|s| (s * 1000.0 * 10.0).round() / 10.0),
            "backend_commit_p99_ms": a.commit_p99.map(|s| (s * 1000.0 * 10.0).round() / 10.0),
            "db_size_bytes": r.db_size,
            "db_in_use_bytes": r.db_in_use,
            "quota_bytes": r.quota,
            "quota_used_ratio": a.quota_ratio,
            "leader_changes_in_window": a.leader_changes_in_window,
            "has_leader": r.has_leader,
            "peers_known": r.peers_known,
            "peers_active": r.peers_active,
            "alarms": alarms,
            "health_error": s.health.as_ref().err(),
            "missing_series": r.missing(),
            "malformed": r.problems,
        });
        self.held = a.conditions;
        self.last_good = Some(at);
        Ok(())
    }

    fn update_metrics(
        &mut self,
        r: &etcd_text::EtcdReadings,
        a: &EtcdAssessment,
        alarms: Option<&[String]>,
    ) {
        let Some(m) = &self.deps.metrics else {
            return;
        };
        set_opt(&m.wal_fsync_p99, a.wal_p99);
        set_opt(&m.backend_commit_p99, a.commit_p99);
        set_opt(&m.db_size, r.db_size);
        set_opt(&m.db_in_use, r.db_in_use);
        set_opt(&m.quota, r.quota);
        set_opt(&m.quota_ratio, a.quota_ratio);
        m.leader_changes.set(i64::from(a.leader_changes_in_window));
        if let Some(al) = alarms {
            for name in super::metrics::ALARMS {
                m.alarm
                    .get_or_create(&AlarmLabels { alarm: name.into() })
                    .set(i64::from(al.iter().any(|x| x == name)));
            }
        }
        let resets = self.judge.resets();
        if resets > self.resets_counted {
            m.counter_resets.inc_by(resets - self.resets_counted);
            self.resets_counted = resets;
        }
    }
}

impl Detector for EtcdDetector {
    fn name(&self) -> &'static str {
        "etcd"
    }

    /// The scrape runs on its worker; a pass only picks up its answer (shared periodic
    /// thread, issue 22: one thread fewer on every node).
    fn shares_timer(&self) -> bool {
        true
    }

    fn interval(&self) -> Duration {
        self.cfg.interval.get()
    }

    fn sample(&mut self) -> Result<Sample, String> {
        if !self.deps.files.exists(SERVER_DIR) {
            return Ok(Sample {
                info: json!({"server": false}),
                ..Default::default()
            });
        }
        let now = self.deps.clock.monotonic();
        let timeout = self.cfg.timeout.get();
        let answer = self.worker()?.poll();
        let mut result = None;
        match answer {
            Some(Ok(s)) => match self.on_answer(s) {
                Ok(()) => {
                    self.last_error = None;
                    result = Some("ok");
                }
                Err(e) => {
                    self.last_error = Some(e);
                    result = Some("failed");
                }
            },
            Some(Err(e)) => {
                result = Some(if matches!(e, ScrapeError::Timeout(_)) {
                    "timeout"
                } else {
                    "failed"
                });
                self.last_error = Some(e.to_string());
            }
            None => {}
        }
        if let Some(r) = result {
            if let Some(m) = &self.deps.metrics {
                m.scrape(r);
                m.up.set(i64::from(r == "ok"));
            }
            if r != "ok" {
                self.deps.local.set(LocalEtcd {
                    at_unix: self.deps.clock.unix_secs(),
                    answering: false,
                    peers_known: 0,
                    peers_active: 0,
                });
            }
        }
        let start = self.worker()?.start(timeout);
        match start {
            Started::Yes => self.started_at = now,
            Started::Busy => {
                // The deadline is shorter than the interval, so this means a wedged
                // scrape thread: report it, never stack a second scrape.
                self.last_error = Some(format!(
                    "the previous scrape has not finished after {}",
                    crate::config::ConfigDuration(now.saturating_sub(self.started_at))
                ));
                if let Some(m) = &self.deps.metrics {
                    m.scrape("busy");
                }
            }
            Started::Gone => return Err("the etcd scrape thread is gone".into()),
        }
        let stale = self.cfg.interval.get() * STALE_INTERVALS;
        let fresh = self
            .last_good
            .is_some_and(|t| now.saturating_sub(t) <= stale);
        if !fresh {
            self.held.clear();
        }
        let mut notes = Vec::new();
        let endpoint = self
            .worker
            .as_ref()
            .map(|w| w.describe.clone())
            .unwrap_or_default();
        match (&self.last_error, self.last_good) {
            (Some(e), None) => notes.push(CheckNote::new(
                NoteLevel::Info,
                "etcd",
                format!(
                    "not answering at {endpoint} ({e}): a sqlite server, or k3s is not running"
                ),
            )),
            (Some(e), Some(_)) => notes.push(CheckNote::new(
                NoteLevel::Warn,
                "etcd",
                format!("last scrape of {endpoint} failed: {e}"),
            )),
            (None, _) => {}
        }
        if let Some(missing) = self
            .last_info
            .get("missing_series")
            .and_then(|m| m.as_array())
            && !missing.is_empty()
        {
            notes.push(CheckNote::new(
                NoteLevel::Warn,
                "etcd metrics",
                format!("series missing from {endpoint}: {missing:?}; what they feed is unknown"),
            ));
        }
        let mut info = self.last_info.clone();
        if let Some(o) = info.as_object_mut() {
            o.insert("server".into(), json!(true));
            o.insert("endpoint".into(), json!(endpoint));
            o.insert("answering".into(), json!(fresh));
            o.insert("last_error".into(), json!(self.last_error));
        }
        Ok(Sample {
            conditions: self.held.clone(),
            info,
            notes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::etcd_text::tests::{FAST, page};
    use super::super::scrape::FakeEndpoint;
    use super::*;
    use crate::edge::{FakeClock, FakeFiles};
    use crate::model::ConditionKind;
    use std::collections::VecDeque;
    use std::sync::atomic::AtomicU32;
    use std::sync::{Mutex, mpsc};

    struct EtcdBed {
        det: EtcdDetector,
        clock: Arc<FakeClock>,
        answers: Arc<Mutex<VecDeque<Result<Scraped, ScrapeError>>>>,
        go: mpsc::Sender<()>,
        calls: Arc<AtomicU32>,
        events: EventOutbox,
        local: LocalEtcdView,
    }

    fn bed(server: bool) -> EtcdBed {
        let files = FakeFiles::default();
        if server {
            files.put("var/lib/rancher/k3s/server/token", "x");
        }
        let clock = Arc::new(FakeClock::new(1_800_000_000, Duration::from_secs(100)));
        let answers = Arc::new(Mutex::new(VecDeque::new()));
        let (go, gate) = mpsc::channel();
        let calls = Arc::new(AtomicU32::new(0));
        let events = EventOutbox::default();
        let local = LocalEtcdView::default();
        let det = EtcdDetector::new(
            EtcdSection::default(),
            EtcdDeps {
                files: Arc::new(files),
                clock: clock.clone(),
                metrics: None,
                local: local.clone(),
                events: Some(events.clone()),
                endpoint: Some(Box::new(FakeEndpoint {
                    answers: answers.clone(),
                    gate: Some(gate),
                    calls: calls.clone(),
                })),
            },
        );
        EtcdBed {
            det,
            clock,
            answers,
            go,
            calls,
            events,
            local,
        }
    }

    impl EtcdBed {
        /// One pass whose previous scrape answered `text` (the endpoint is let go and
        /// the answer waited for, as the 30 s between passes would).
        fn pass_after(&mut self, text: Option<String>) -> Sample {
            if let Some(t) = text {
                self.answers.lock().unwrap().push_back(Ok(Scraped {
                    metrics: t,
                    health: Ok(r#"{"health":"true","reason":""}"#.into()),
                }));
            }
            if self.det.worker.as_ref().is_some_and(|w| w.in_flight()) {
                self.go.send(()).unwrap();
                while !self.det.worker.as_mut().unwrap().answered() {
                    std::thread::yield_now();
                }
            }
            let s = self.det.sample().unwrap();
            self.clock.advance(Duration::from_secs(30));
            s
        }
    }

    #[test]
    fn an_agent_never_scrapes() {
        let mut b = bed(false);
        let s = b.det.sample().unwrap();
        assert_eq!(s.info["server"], false);
        assert!(b.det.worker.is_none(), "no thread on an agent");
        assert_eq!(b.calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[test]
    fn a_full_db_raises_near_quota_and_the_local_view_follows_the_answers() {
        let mut b = bed(true);
        b.pass_after(None);
        let s = b.pass_after(Some(page(&FAST, &FAST, 1, 1_900_000_000)));
        assert_eq!(s.conditions.len(), 1);
        assert_eq!(s.conditions[0].kind, ConditionKind::EtcdNearQuota);
        let l = b.local.get().unwrap();
        assert!(l.answering);
        assert_eq!((l.peers_known, l.peers_active), (2, 1));
    }

    #[test]
    fn a_silent_etcd_never_blocks_a_pass_and_stale_conditions_are_dropped() {
        let mut b = bed(true);
        b.pass_after(None);
        let s = b.pass_after(Some(page(&FAST, &FAST, 1, 1_900_000_000)));
        assert_eq!(s.conditions.len(), 1);
        // Now the endpoint holds the scrape it was just given: passes go on, none waits
        // for it (this test would hang if one did), none stacks another on it.
        while b.calls.load(std::sync::atomic::Ordering::SeqCst) < 2 {
            std::thread::yield_now();
        }
        for i in 0..6 {
            let s = b.det.sample().unwrap();
            b.clock.advance(Duration::from_secs(30));
            assert_eq!(
                b.calls.load(std::sync::atomic::Ordering::SeqCst),
                2,
                "pass {i}: one scrape in flight"
            );
            assert!(
                s.info["last_error"]
                    .as_str()
                    .unwrap()
                    .contains("has not finished"),
                "{}",
                s.info
            );
            if i >= 3 {
                assert!(
                    s.conditions.is_empty(),
                    "pass {i}: stale after three intervals"
                );
            }
        }
        b.go.send(()).unwrap();
    }

    #[test]
    fn leader_churn_is_handed_to_the_event_outbox_once() {
        let mut b = bed(true);
        b.pass_after(None);
        for c in [1, 2, 3, 4, 5, 5, 5] {
            b.pass_after(Some(page(&FAST, &FAST, c, 1 << 20)));
        }
        let ev = b.events.take();
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert_eq!(ev[0].reason, "EtcdLeaderChanges");
    }

    #[test]
    fn an_error_page_is_a_failed_scrape_not_a_panic() {
        let mut b = bed(true);
        b.pass_after(None);
        let s = b.pass_after(Some("<html>502 Bad Gateway</html>".into()));
        assert!(s.conditions.is_empty());
        assert!(
            s.info["last_error"]
                .as_str()
                .unwrap()
                .contains("no metric samples"),
            "{}",
            s.info
        );
        assert!(!b.local.get().unwrap().answering);
    }
}
