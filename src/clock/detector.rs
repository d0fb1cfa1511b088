//! The clock detector (`[clock]`): one `adjtimex(2)` read and two clock reads per pass.

use std::sync::Arc;
use std::time::Duration;

use super::judge::{ClockJudge, ClockJudgeConfig};
use super::metrics::ClockMetrics;
use crate::config::ClockSection;
use crate::detect::{CheckNote, Detector, NoteLevel, Sample};
use crate::edge::Clock;
use crate::edge::timex::NtpSource;

pub struct ClockDetector {
    cfg: ClockSection,
    clock: Arc<dyn Clock>,
    ntp: Arc<dyn NtpSource>,
    metrics: Option<ClockMetrics>,
    judge: ClockJudge,
    read_error: Option<String>,
}

impl ClockDetector {
    pub fn new(
        cfg: ClockSection,
        clock: Arc<dyn Clock>,
        ntp: Arc<dyn NtpSource>,
        metrics: Option<ClockMetrics>,
    ) -> Self {
        ClockDetector {
            cfg,
            clock,
            ntp,
            metrics,
            judge: ClockJudge::default(),
            read_error: None,
        }
    }
}

impl Detector for ClockDetector {
    fn name(&self) -> &'static str {
        "clock"
    }

    /// One adjtimex(2) and two clock reads: the pass cannot block (shared periodic thread).
    fn shares_timer(&self) -> bool {
        true
    }

    fn interval(&self) -> Duration {
        self.cfg.interval.get()
    }

    fn sample(&mut self) -> Result<Sample, String> {
        let mono = self.clock.monotonic();
        let wall = self.clock.unix_secs_f64();
        let reading = self.ntp.read();
        match &reading {
            Ok(r) => {
                self.read_error = None;
                if let Some(m) = &self.metrics {
                    m.set_reading(r);
                }
            }
            Err(e) => {
                if self.read_error.as_ref() != Some(e) {
                    log::warn!(detector = "clock"; "{e}");
                }
                self.read_error = Some(e.clone());
            }
        }
        let cfg = ClockJudgeConfig {
            unsynced_after: self.cfg.unsynced_after.get(),
            step_threshold: self.cfg.step_threshold.get(),
        };
        let v = self.judge.observe(&cfg, mono, wall, reading.clone());
        if let Some(s) = v.step {
            log::warn!(detector = "clock"; "the wall clock stepped by {:+.3} s against CLOCK_MONOTONIC", s.secs);
            if let Some(m) = &self.metrics {
                m.steps.inc();
                m.last_step.set(s.secs);
            }
        }
        let mut notes = Vec::new();
        match (&reading, v.unsynced_for) {
            (Err(e), _) => notes.push(CheckNote::new(NoteLevel::Warn, "clock", e.clone())),
            (Ok(r), None) => notes.push(CheckNote::new(
                NoteLevel::Ok,
                "clock",
                format!(
                    "synchronised (maximum error {:.3} s, offset {:+.6} s)",
                    r.maxerror_secs, r.offset_secs
                ),
            )),
            (Ok(r), Some(d)) => notes.push(CheckNote::new(
                if v.conditions.is_empty() {
                    NoteLevel::Info
                } else {
                    NoteLevel::Warn
                },
                "clock",
                format!(
                    "not synchronised for {} s (STA_UNSYNC; maximum error {:.1} s): is a time daemon running?",
                    d.as_secs(),
                    r.maxerror_secs
                ),
            )),
        }
        if self.judge.steps > 0 {
            notes.push(CheckNote::new(
                NoteLevel::Info,
                "clock steps",
                format!(
                    "{} step(s) of the wall clock seen, the last {:+.3} s",
                    self.judge.steps,
                    self.judge.last_step.map_or(0.0, |s| s.secs)
                ),
            ));
        }
        Ok(Sample {
            conditions: v.conditions,
            info: serde_json::json!({
                "reading": reading.as_ref().ok(),
                "error": reading.as_ref().err(),
                "unsynced_for_secs": v.unsynced_for.map(|d| d.as_secs()),
                "steps": self.judge.steps,
                "last_step": self.judge.last_step,
            }),
            notes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::FakeClock;
    use crate::edge::timex::FakeNtp;
    use crate::model::ConditionKind;
    use prometheus_client::registry::Registry;

    #[test]
    fn the_detector_exports_the_reading_counts_steps_and_raises_the_warning() {
        let mut reg = Registry::default();
        let clock = Arc::new(FakeClock::new(1_763_700_000, Duration::from_secs(50)));
        let ntp = Arc::new(FakeNtp::default());
        ntp.set(Ok(FakeNtp::reading(false, 16.0)));
        let cfg = ClockSection::default();
        let mut d = ClockDetector::new(
            cfg.clone(),
            clock.clone(),
            ntp.clone(),
            Some(ClockMetrics::register(&mut reg)),
        );
        assert!(d.sample().unwrap().conditions.is_empty());
        clock.advance(cfg.unsynced_after.get());
        clock.set_wall(1_763_700_000 + 600 - 3);
        let s = d.sample().unwrap();
        assert_eq!(s.conditions[0].kind, ConditionKind::ClockUnsynchronized);
        let text = crate::metrics::encode(&reg);
        assert!(text.contains("nodemedic_clock_synchronized 0"), "{text}");
        assert!(
            text.contains("nodemedic_clock_maxerror_seconds 16.0"),
            "{text}"
        );
        assert!(text.contains("nodemedic_clock_steps_total 1"), "{text}");
        assert!(
            text.contains("nodemedic_clock_last_step_seconds -3.0"),
            "{text}"
        );
        ntp.set(Ok(FakeNtp::reading(true, 0.02)));
        clock.advance(Duration::from_secs(30));
        assert!(d.sample().unwrap().conditions.is_empty());
        assert!(crate::metrics::encode(&reg).contains("nodemedic_clock_synchronized 1"));
    }
}
