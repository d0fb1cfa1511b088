//! The power detector's judgement, pure: alarm readings and thermal readings in, with `now`
//! (CLOCK_MONOTONIC) passed in; conditions and counts out.
//!
//! - **Under-voltage** is counted from the alarm's transitions, not from kernel lines: one
//!   downstream driver rate-limits its lines to three per five minutes, so the log
//!   undercounts a flapping supply. A rise 0 -> 1 is one episode. `UnderVoltage` holds
//!   while the alarm is set and for `under_voltage_quiet` after it clears.
//! - **Thermal throttling** holds once a zone has stayed at or above its first passive trip
//!   point, or the firmware has reported throttling for heat, for `thermal_sustain`; it
//!   clears after `thermal_calm` with neither.

use std::time::Duration;

use crate::config::PowerSection;
use crate::model::{Condition, ConditionKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct JudgeConfig {
    pub(crate) under_voltage_quiet: Duration,
    pub(crate) thermal_sustain: Duration,
    pub(crate) thermal_calm: Duration,
}

impl JudgeConfig {
    pub(crate) fn from_section(s: &PowerSection) -> Self {
        JudgeConfig {
            under_voltage_quiet: s.under_voltage_quiet.get(),
            thermal_sustain: s.thermal_sustain.get(),
            thermal_calm: s.thermal_calm.get(),
        }
    }
}

/// A change of the alarm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Edge {
    Rose,
    Fell,
}

/// What the judge knows of the under-voltage alarm; restored from `power-state.json` after a
/// restart in the same boot, so no episode is counted twice.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct UnderVoltage {
    pub(crate) alarm: bool,
    pub(crate) episodes_boot: u64,
    pub(crate) episodes_total: u64,
    /// Start of the current episode.
    pub(crate) since: Option<Duration>,
    /// End of the last episode.
    pub(crate) cleared_at: Option<Duration>,
}

impl UnderVoltage {
    pub(crate) fn observe(&mut self, alarm: bool, now: Duration) -> Option<Edge> {
        if alarm == self.alarm {
            return None;
        }
        self.alarm = alarm;
        if alarm {
            self.episodes_boot += 1;
            self.episodes_total += 1;
            self.since = Some(now);
            Some(Edge::Rose)
        } else {
            self.since = None;
            self.cleared_at = Some(now);
            Some(Edge::Fell)
        }
    }
}

/// Sustain and calm of the thermal condition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Heat {
    hot_since: Option<Duration>,
    cool_since: Option<Duration>,
    pub(crate) held: bool,
    /// Why it is (or was last) hot: the zone and its trip, or the firmware's flags.
    why: String,
    /// `AbovePassiveTrip` or `FirmwareThrottling`.
    reason: &'static str,
    sustain: Duration,
    calm: Duration,
}

impl Heat {
    /// `hot`: this pass's finding, with its reason and message; None when cool.
    pub(crate) fn observe(&mut self, hot: Option<(&'static str, String)>, now: Duration) {
        match hot {
            Some((reason, why)) => {
                self.cool_since = None;
                let since = *self.hot_since.get_or_insert(now);
                self.reason = reason;
                self.why = why;
                self.held |= now.saturating_sub(since) >= self.sustain;
            }
            None => {
                self.hot_since = None;
                if self.held {
                    let since = *self.cool_since.get_or_insert(now);
                    if now.saturating_sub(since) >= self.calm {
                        self.held = false;
                        self.cool_since = None;
                    }
                }
            }
        }
    }

    pub(crate) fn new(cfg: &JudgeConfig) -> Heat {
        Heat {
            sustain: cfg.thermal_sustain,
            calm: cfg.thermal_calm,
            ..Default::default()
        }
    }
}

pub(crate) struct PowerJudge {
    cfg: JudgeConfig,
    pub(crate) uv: UnderVoltage,
    pub(crate) heat: Heat,
}

impl PowerJudge {
    pub(crate) fn new(cfg: JudgeConfig, uv: UnderVoltage) -> Self {
        PowerJudge {
            cfg,
            uv,
            heat: Heat::new(&cfg),
        }
    }

    /// The conditions held at `now`.
    pub(crate) fn conditions(&self, now: Duration) -> Vec<Condition> {
        let mut v = Vec::new();
        let counts = format!(
            "{} episode(s) this boot, {} in total",
            self.uv.episodes_boot, self.uv.episodes_total
        );
        if self.uv.alarm {
            let for_s = self
                .uv
                .since
                .map(|s| now.saturating_sub(s).as_secs())
                .unwrap_or(0);
            v.push(Condition::new(
                ConditionKind::UnderVoltage,
                "",
                "UnderVoltageDetected",
                format!(
                    "the firmware reports under-voltage now (for {for_s}s): the power supply sags; {counts}"
                ),
            ));
        } else if let Some(at) = self.uv.cleared_at
            && now.saturating_sub(at) < self.cfg.under_voltage_quiet
        {
            v.push(Condition::new(
                ConditionKind::UnderVoltage,
                "",
                "UnderVoltageRecently",
                format!(
                    "under-voltage ended {}s ago; {counts}",
                    now.saturating_sub(at).as_secs()
                ),
            ));
        }
        if self.heat.held {
            v.push(Condition::new(
                ConditionKind::ThermalThrottling,
                "",
                self.heat.reason,
                self.heat.why.clone(),
            ));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> JudgeConfig {
        JudgeConfig {
            under_voltage_quiet: Duration::from_secs(600),
            thermal_sustain: Duration::from_secs(60),
            thermal_calm: Duration::from_secs(60),
        }
    }

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn every_rise_of_the_alarm_is_one_episode_and_repeats_are_not() {
        let mut uv = UnderVoltage::default();
        let script = [false, true, true, false, true, false, false, true];
        let edges: Vec<_> = script
            .iter()
            .enumerate()
            .filter_map(|(i, a)| uv.observe(*a, s(i as u64)))
            .collect();
        assert_eq!(
            edges,
            [Edge::Rose, Edge::Fell, Edge::Rose, Edge::Fell, Edge::Rose]
        );
        assert_eq!((uv.episodes_boot, uv.episodes_total), (3, 3));
        assert_eq!(uv.since, Some(s(7)));
        assert_eq!(uv.cleared_at, Some(s(5)));
    }

    #[test]
    fn under_voltage_holds_while_set_and_for_the_quiet_time_after() {
        let mut j = PowerJudge::new(cfg(), UnderVoltage::default());
        assert!(j.conditions(s(0)).is_empty());
        j.uv.observe(true, s(10));
        let c = j.conditions(s(13));
        assert_eq!(c[0].reason, "UnderVoltageDetected");
        assert!(
            c[0].message.contains("for 3s") && c[0].message.contains("1 episode(s) this boot"),
            "{}",
            c[0].message
        );
        j.uv.observe(false, s(14));
        assert_eq!(j.conditions(s(14 + 599))[0].reason, "UnderVoltageRecently");
        assert!(j.conditions(s(14 + 600)).is_empty());
    }

    #[test]
    fn heat_must_last_the_sustain_to_raise_and_the_calm_to_clear() {
        let mut j = PowerJudge::new(cfg(), UnderVoltage::default());
        let hot = || Some(("AbovePassiveTrip", "cpu at 86 C".to_string()));
        j.heat.observe(hot(), s(0));
        j.heat.observe(hot(), s(59));
        assert!(j.conditions(s(59)).is_empty(), "59 s is not a minute");
        j.heat.observe(None, s(60));
        j.heat.observe(hot(), s(61));
        j.heat.observe(hot(), s(120));
        assert!(
            j.conditions(s(120)).is_empty(),
            "a cool pass restarts the sustain"
        );
        j.heat.observe(hot(), s(121));
        let c = j.conditions(s(121));
        assert_eq!(
            (c[0].kind, c[0].reason.as_str()),
            (ConditionKind::ThermalThrottling, "AbovePassiveTrip")
        );
        j.heat.observe(None, s(130));
        j.heat.observe(None, s(189));
        assert_eq!(j.conditions(s(189)).len(), 1, "calm not yet over");
        j.heat.observe(None, s(190));
        assert!(j.conditions(s(190)).is_empty());
    }
}
