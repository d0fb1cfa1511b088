//! The clock judge (pure): readings in, `ClockUnsynchronized` and steps out.
//!
//! - Unsynchronised: the kernel's `STA_UNSYNC` for `unsynced_after` in a row. A reading
//!   that fails changes nothing (no evidence either way).
//! - A step: between two passes the wall clock moved by at least `step_threshold` more or
//!   less than CLOCK_MONOTONIC (an NTP step, `date -s`, or a resume from suspend, which
//!   stops CLOCK_MONOTONIC). Slewing, at most 500 ppm (0.5 ms a second), never adds up to
//!   a step between passes.

use std::time::Duration;

use serde::Serialize;

use crate::edge::timex::NtpReading;
use crate::model::{Condition, ConditionKind};

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct ClockJudgeConfig {
    pub(crate) unsynced_after: Duration,
    pub(crate) step_threshold: Duration,
}

/// A step seen between two passes.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub(crate) struct ClockStep {
    /// Positive: the wall clock jumped forward.
    pub(crate) secs: f64,
}

#[derive(Debug, Default)]
pub(crate) struct ClockJudge {
    /// (monotonic, wall seconds) of the last pass.
    last: Option<(Duration, f64)>,
    unsynced_since: Option<Duration>,
    pub(crate) steps: u64,
    pub(crate) last_step: Option<ClockStep>,
    last_reading: Option<NtpReading>,
}

/// One pass's verdict.
#[derive(Debug)]
pub(crate) struct ClockFindings {
    pub(crate) conditions: Vec<Condition>,
    /// A step seen this pass.
    pub(crate) step: Option<ClockStep>,
    /// How long the kernel has said "unsynchronised" (None: synchronised or unknown).
    pub(crate) unsynced_for: Option<Duration>,
}

impl ClockJudge {
    pub(crate) fn observe(
        &mut self,
        cfg: &ClockJudgeConfig,
        mono: Duration,
        wall_secs: f64,
        reading: Result<NtpReading, String>,
    ) -> ClockFindings {
        let mut step = None;
        if let Some((m0, w0)) = self.last {
            let drift = (wall_secs - w0) - mono.saturating_sub(m0).as_secs_f64();
            if drift.abs() >= cfg.step_threshold.as_secs_f64() {
                step = Some(ClockStep { secs: drift });
                self.steps += 1;
                self.last_step = step;
            }
        }
        self.last = Some((mono, wall_secs));
        if let Ok(r) = reading {
            if r.synced {
                self.unsynced_since = None;
            } else {
                self.unsynced_since.get_or_insert(mono);
            }
            self.last_reading = Some(r);
        }
        let unsynced_for = self.unsynced_since.map(|t| mono.saturating_sub(t));
        let mut conditions = Vec::new();
        if let (Some(d), Some(r)) = (unsynced_for, &self.last_reading)
            && d >= cfg.unsynced_after
        {
            conditions.push(Condition::new(
                ConditionKind::ClockUnsynchronized,
                "",
                "KernelClockUnsynchronized",
                format!(
                    "the kernel has reported the clock unsynchronised (STA_UNSYNC) for {} s, maximum error {:.1} s{}; certificates, leases and etcd depend on it: check the time daemon (timedatectl timesync-status; chronyc tracking, and chrony needs `rtcsync` to tell the kernel)",
                    d.as_secs(),
                    r.maxerror_secs,
                    self.last_step
                        .map(|s| format!("; last step {:+.1} s", s.secs))
                        .unwrap_or_default()
                ),
            ));
        }
        ClockFindings {
            conditions,
            step,
            unsynced_for,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::timex::FakeNtp;

    const S: fn(u64) -> Duration = Duration::from_secs;
    const CFG: ClockJudgeConfig = ClockJudgeConfig {
        unsynced_after: Duration::from_secs(600),
        step_threshold: Duration::from_secs(1),
    };
    const WALL: f64 = 1_763_700_000.0;

    #[test]
    fn unsynchronised_for_ten_minutes_raises_the_warning_and_sync_clears_it() {
        let mut j = ClockJudge::default();
        let unsynced = || Ok(FakeNtp::reading(false, 16.0));
        for t in [0, 300, 599] {
            let v = j.observe(&CFG, S(t), WALL + t as f64, unsynced());
            assert!(v.conditions.is_empty(), "at {t}");
        }
        let v = j.observe(&CFG, S(600), WALL + 600.0, unsynced());
        assert_eq!(v.conditions.len(), 1);
        assert_eq!(v.conditions[0].kind, ConditionKind::ClockUnsynchronized);
        assert!(
            v.conditions[0].message.contains("600 s"),
            "{}",
            v.conditions[0].message
        );
        // A failed read keeps it; a synchronised one clears it.
        let v = j.observe(&CFG, S(630), WALL + 630.0, Err("EPERM".into()));
        assert_eq!(v.conditions.len(), 1);
        let v = j.observe(&CFG, S(660), WALL + 660.0, Ok(FakeNtp::reading(true, 0.01)));
        assert!(v.conditions.is_empty());
        assert_eq!(v.unsynced_for, None);
    }

    #[test]
    fn steps_are_wall_clock_jumps_against_monotonic_time_in_either_direction() {
        let mut j = ClockJudge::default();
        let ok = || Ok(FakeNtp::reading(true, 0.0));
        assert!(j.observe(&CFG, S(0), WALL, ok()).step.is_none());
        // 30 s of monotonic time, 30.0004 s of wall time: slewing, no step.
        assert!(j.observe(&CFG, S(30), WALL + 30.0004, ok()).step.is_none());
        // NTP steps a board that booted in 1970 forward by years.
        let v = j.observe(&CFG, S(60), WALL + 60.0 + 86_400.0, ok());
        assert_eq!(v.step.unwrap().secs.round(), 86_400.0);
        let v = j.observe(&CFG, S(90), WALL + 90.0 + 86_400.0 - 2.5, ok());
        assert_eq!(v.step.unwrap().secs, -2.5);
        assert_eq!(j.steps, 2);
        assert_eq!(j.last_step.unwrap().secs, -2.5);
    }
}
