//! The memory-pressure detector: reads PSI (`/proc/pressure/memory`, the pods' and a watched
//! cgroup's `memory.pressure`), `/proc/meminfo` and `/proc/vmstat` through [`HostFiles`],
//! feeds them to the pure [`super::judge`] and raises `MemoryPressure`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::judge::{AssessConfig, MemoryAssessor, Observation, PressureReason, SignalSource};
use super::metrics::{MemoryMetrics, PressureLabels, StallLabels};
use super::psi::{self, PsiSample};
use super::trigger::{
    PressureWait, PsiTriggers, TRIGGER_WINDOW, Thresholds, TriggerWait, trigger_line,
};
use super::{meminfo, vmstat};
use crate::config::MemorySection;
use crate::detect::{CheckNote, Detector, NoteLevel, Sample};
use crate::edge::{Clock, HostFiles};
use crate::liveness::StopFd;
use crate::model::{Condition, ConditionKind};

/// Clear thresholds are half the raise thresholds for stalls and double for free
/// memory, as in the assessor's defaults: a gap wide enough that a node hovering at
/// the line does not flap between cordoned and schedulable.
pub(crate) fn assess_config(s: &MemorySection) -> AssessConfig {
    let f = |p: u32| f64::from(p) / 100.0;
    AssessConfig {
        window: s.window.get(),
        sustain: s.sustain.get(),
        calm: s.calm.get(),
        raise_full: f(s.raise_full_percent),
        raise_some: f(s.raise_some_percent),
        clear_full: f(s.raise_full_percent) / 2.0,
        clear_some: f(s.raise_some_percent) / 2.0,
        raise_mem_available: f(s.raise_mem_available_percent),
        raise_swap_free: f(s.raise_swap_free_percent),
        clear_mem_available: (f(s.raise_mem_available_percent) * 2.0).min(0.99),
        clear_swap_free: (f(s.raise_swap_free_percent) * 2.0).min(0.99),
        ..AssessConfig::default()
    }
}

pub(crate) const FIX_PSI: &str =
    "add psi=1 to the kernel command line (Raspberry Pi: /boot/firmware/cmdline.txt) and reboot";

/// While calm with PSI triggers armed, the detector still samples this often: the
/// gauges on `/metrics` stay at most a minute old, and a trigger lost without an error
/// is noticed.
pub(crate) const CALM_REFRESH: Duration = Duration::from_secs(60);

pub(crate) struct MemoryDetector {
    cfg: MemorySection,
    files: Arc<dyn HostFiles>,
    clock: Arc<dyn Clock>,
    assessor: MemoryAssessor,
    metrics: Option<MemoryMetrics>,
    /// Last PSI totals per (scope, kind), to turn absolute totals into counter increments.
    last_totals: HashMap<(&'static str, &'static str), u64>,
    pods_file: Option<Option<String>>,
    /// PSI triggers; `None` once arming failed (then the detector samples every interval).
    triggers: Option<Box<dyn PressureWait>>,
    /// Triggers are armed (first pass tries).
    armed: bool,
    /// Why they could not be, for `check`.
    trigger_error: Option<String>,
    /// Calm and armed: the next pass first waits for a trigger, up to [`CALM_REFRESH`].
    waiting: bool,
    /// Passes woken by a trigger (for `/status` and tests).
    pub(crate) trigger_wakeups: u64,
}

impl MemoryDetector {
    pub fn new(
        cfg: MemorySection,
        files: Arc<dyn HostFiles>,
        clock: Arc<dyn Clock>,
        metrics: Option<MemoryMetrics>,
    ) -> Self {
        // SAFETY: sysconf has no preconditions. Pi 5 kernels use 16 KiB pages, so never assume 4096.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let page = if page > 0 { page as u64 } else { 4096 };
        let assessor = MemoryAssessor::new(assess_config(&cfg), page)
            .expect("validated by MemorySection::validate");
        MemoryDetector {
            cfg,
            files,
            clock,
            assessor,
            metrics,
            last_totals: HashMap::new(),
            pods_file: None,
            triggers: Some(Box::new(PsiTriggers::default())),
            armed: false,
            trigger_error: None,
            waiting: false,
            trigger_wakeups: 0,
        }
    }

    /// Replaces the PSI trigger edge (tests); `None` samples every interval.
    #[cfg(test)]
    pub(crate) fn with_triggers(mut self, t: Option<Box<dyn PressureWait>>) -> Self {
        self.triggers = t;
        self
    }

    /// Arms triggers on the system's PSI and the watched cgroup's, each line at its raise
    /// threshold over the trigger's window: any stall that could raise the condition
    /// crosses one first. Tried once; failing, the detector samples as before.
    fn arm(&mut self) {
        let Some(t) = &mut self.triggers else { return };
        if self.files.read("proc/pressure/memory").is_err() {
            // No PSI: the MemAvailable fallback has nothing to wait on.
            self.triggers = None;
            return;
        }
        let mut files = vec![self.files.path("proc/pressure/memory")];
        if let Some(w) = &self.cfg.watched_cgroup {
            files.push(
                self.files
                    .path(&format!("{}/memory.pressure", w.trim_end_matches('/'))),
            );
        }
        let at = Thresholds {
            some: TRIGGER_WINDOW * self.cfg.raise_some_percent / 100,
            full: TRIGGER_WINDOW * self.cfg.raise_full_percent / 100,
        };
        match t.arm(&files, at) {
            Ok(()) => {
                self.armed = true;
                log::info!(detector = "memory"; "PSI triggers armed ({}, {}): waiting for memory stalls instead of sampling every {}", trigger_line("some", at.some), trigger_line("full", at.full), self.cfg.interval);
            }
            Err(e) => {
                log::info!(detector = "memory"; "{e}; sampling every {} instead", self.cfg.interval);
                self.trigger_error = Some(e.to_string());
                self.triggers = None;
            }
        }
    }

    /// Calm and armed: waits for a trigger before reading. A trigger restarts the stall
    /// windows from now (the last sample may be a minute old, which would dilute the
    /// first ratios), so the condition builds from the stall's start.
    fn wait_for_pressure(&mut self) {
        if !self.waiting {
            return;
        }
        let Some(t) = &mut self.triggers else { return };
        match t.wait(CALM_REFRESH) {
            TriggerWait::Fired { some, full } => {
                self.trigger_wakeups += 1;
                self.assessor.restart_window(some, full, TRIGGER_WINDOW);
            }
            TriggerWait::Quiet => {}
            TriggerWait::Lost => {
                // The watched cgroup was removed (and maybe recreated): arm afresh.
                self.armed = false;
            }
        }
    }

    fn read_psi(&self, rel: &str) -> Option<PsiSample> {
        // With PSI compiled in but disabled, reading fails (EOPNOTSUPP): that is "absent".
        self.files
            .read_string(rel)
            .ok()
            .and_then(|t| psi::parse_psi(&t).ok())
    }

    /// The pods' cgroup `memory.pressure`, found once (kubepods.slice or kubepods under the
    /// cgroup2 mount).
    fn pods_file(&mut self) -> Option<String> {
        if self.pods_file.is_none() {
            let mountinfo = self
                .files
                .read_string("proc/self/mountinfo")
                .unwrap_or_default();
            let found = cgroup2_mount(&mountinfo).and_then(|mnt| {
                let files = self.files.clone();
                psi::find_pods_memory_pressure(Path::new(&mnt), &psi::PODS_CGROUP_CANDIDATES, |p| {
                    files.read(&p.to_string_lossy()).is_ok()
                })
                .map(|p| p.to_string_lossy().into_owned())
            });
            self.pods_file = Some(found);
        }
        self.pods_file.clone().flatten()
    }

    fn export(&mut self, scope: &'static str, s: &PsiSample) {
        let Some(m) = self.metrics.clone() else {
            return;
        };
        let lines = [("some", Some(&s.some)), ("full", s.full.as_ref())];
        for (kind, line) in lines {
            let Some(l) = line else { continue };
            for (window, v) in [("10s", l.avg10), ("60s", l.avg60), ("300s", l.avg300)] {
                m.pressure_ratio
                    .get_or_create(&PressureLabels {
                        scope: scope.into(),
                        kind: kind.into(),
                        window: window.into(),
                    })
                    .set(v / 100.0);
            }
            let c = m.stall_seconds.get_or_create(&StallLabels {
                scope: scope.into(),
                kind: kind.into(),
            });
            let prev = self.last_totals.insert((scope, kind), l.total_us);
            // First sample starts the counter at the kernel's total; a reset (cgroup
            // recreated) restarts counting rather than going backwards.
            let delta = match prev {
                Some(p) if l.total_us >= p => l.total_us - p,
                _ => l.total_us,
            };
            c.inc_by(delta as f64 / 1e6);
        }
    }
}

/// The cgroup2 mount point from mountinfo text (`... - cgroup2 cgroup2 rw`).
pub fn cgroup2_mount(mountinfo: &str) -> Option<String> {
    crate::formats::mountinfo::parse_mountinfo(mountinfo.as_bytes())
        .entries
        .into_iter()
        .find(|e| e.fstype == "cgroup2")
        .map(|e| e.mount_point.to_string_lossy().into_owned())
}

fn reason_word(r: PressureReason) -> &'static str {
    match r {
        PressureReason::PsiFull => "MemoryStallFull",
        PressureReason::PsiSome => "MemoryStallSome",
        PressureReason::MemAvailableLow => "MemAvailableLow",
        PressureReason::SwapExhausted => "SwapExhausted",
    }
}

impl Detector for MemoryDetector {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn interval(&self) -> Duration {
        if self.waiting {
            Duration::ZERO
        } else {
            self.cfg.interval.get()
        }
    }

    fn blocks_for(&self) -> Duration {
        if self.waiting {
            CALM_REFRESH
        } else {
            Duration::ZERO
        }
    }

    fn stop_on(&mut self, stop: StopFd) {
        if let Some(t) = &mut self.triggers {
            t.set_stop(stop);
        }
    }

    fn sample(&mut self) -> Result<Sample, String> {
        if !self.armed && self.triggers.is_some() {
            self.arm();
        }
        self.wait_for_pressure();
        let system_psi = self.read_psi("proc/pressure/memory");
        let pods_psi = self.pods_file().and_then(|f| self.read_psi(&f));
        let watched_psi =
            self.cfg.watched_cgroup.clone().and_then(|w| {
                self.read_psi(&format!("{}/memory.pressure", w.trim_end_matches('/')))
            });
        let meminfo = self
            .files
            .read_string("proc/meminfo")
            .ok()
            .and_then(|t| meminfo::parse_meminfo(&t).ok());
        let vmstat = self
            .files
            .read_string("proc/vmstat")
            .ok()
            .and_then(|t| vmstat::parse_vmstat(&t).ok());
        if system_psi.is_none() && meminfo.is_none() {
            return Err("neither /proc/pressure/memory nor /proc/meminfo could be read".into());
        }
        for (scope, s) in [
            ("system", &system_psi),
            ("pods", &pods_psi),
            ("watched", &watched_psi),
        ] {
            if let Some(s) = s {
                self.export(scope, s);
            }
        }
        if let (Some(m), Some(mi)) = (&self.metrics, &meminfo) {
            if let Some(a) = mi.mem_available_bytes {
                m.available_bytes.set(a as i64);
            }
            m.swap_free_bytes.set(mi.swap_free_bytes as i64);
        }
        let obs = Observation {
            now: self.clock.monotonic(),
            system_psi,
            pods_psi,
            watched_psi,
            meminfo,
            vmstat,
        };
        let a = self.assessor.observe(&obs);
        // Nothing building, nothing held: wait for the kernel to say memory stalls.
        self.waiting = self.armed && self.triggers.is_some() && self.assessor.quiet();
        let mut conditions = Vec::new();
        if a.pressure {
            let reason = a.reason.map(reason_word).unwrap_or("MemoryPressure");
            conditions.push(Condition::new(
                ConditionKind::MemoryPressure,
                "",
                reason,
                a.message.clone(),
            ));
        }
        let mut notes = Vec::new();
        match a.source {
            SignalSource::Psi => notes.push(CheckNote::new(
                NoteLevel::Ok,
                "signal",
                "PSI (/proc/pressure/memory)",
            )),
            SignalSource::Fallback => notes.push(CheckNote::new(
                NoteLevel::Warn,
                "signal",
                format!(
                    "PSI unavailable: using the MemAvailable/SwapFree fallback; to fix, {FIX_PSI}"
                ),
            )),
            SignalSource::Unavailable => notes.push(CheckNote::new(
                NoteLevel::Warn,
                "signal",
                "no memory signal could be read",
            )),
        }
        if let (Some(s), false) = (&system_psi, a.pressure) {
            let full = s.full.as_ref().map_or(0.0, |f| f.avg10);
            if full >= f64::from(self.cfg.raise_full_percent)
                || s.some.avg10 >= f64::from(self.cfg.raise_some_percent)
            {
                notes.push(CheckNote::new(
                    NoteLevel::Warn,
                    "pressure now",
                    format!("PSI avg10 some {:.1}% full {full:.1}%: over the raise threshold, not yet sustained", s.some.avg10),
                ));
            }
        }
        notes.push(match (&self.trigger_error, self.armed) {
            (_, true) => CheckNote::new(
                NoteLevel::Ok,
                "wake-ups",
                format!(
                    "PSI trigger: sampled every {} only while memory stalls",
                    self.cfg.interval
                ),
            ),
            (Some(e), false) => CheckNote::new(
                NoteLevel::Info,
                "wake-ups",
                format!("no PSI trigger ({e}): sampling every {}", self.cfg.interval),
            ),
            (None, false) => CheckNote::new(
                NoteLevel::Info,
                "wake-ups",
                format!("sampling every {}", self.cfg.interval),
            ),
        });
        if let Some(f) = meminfo.as_ref().and_then(|m| m.mem_available_fraction()) {
            notes.push(CheckNote::new(
                NoteLevel::Info,
                "MemAvailable",
                format!("{:.0}% of MemTotal", f * 100.0),
            ));
        }
        Ok(Sample {
            conditions,
            info: serde_json::json!({
                "source": a.source,
                "pressure": a.pressure,
                "message": a.message,
                "readings": a.readings,
                "attribution": a.attribution,
                "fix": a.fix_hint,
                "psi_trigger": self.armed,
                "waiting_for_trigger": self.waiting,
                "trigger_wakeups": self.trigger_wakeups,
            }),
            notes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::{FakeClock, FakeFiles};
    use std::path::PathBuf;

    const MEMINFO_LOW: &str = "MemTotal:        8000000 kB\nMemFree:          100000 kB\nMemAvailable:     400000 kB\nSwapTotal:             0 kB\nSwapFree:              0 kB\n";
    const VMSTAT: &str = "pswpin 0\npswpout 0\npgmajfault 10\noom_kill 0\n";

    #[test]
    fn without_psi_low_mem_available_raises_memory_pressure_after_the_sustain_period() {
        let files = Arc::new(FakeFiles::with(&[
            ("proc/meminfo", MEMINFO_LOW),
            ("proc/vmstat", VMSTAT),
        ]));
        let clock = Arc::new(FakeClock::new(1_000, Duration::from_secs(100)));
        let mut d = MemoryDetector::new(MemorySection::default(), files, clock.clone(), None);
        let first = d.sample().unwrap();
        assert!(
            first.conditions.is_empty(),
            "one sample is not sustained pressure"
        );
        assert!(
            first
                .notes
                .iter()
                .any(|n| n.level == NoteLevel::Warn && n.detail.contains("psi=1"))
        );
        let mut raised = None;
        for i in 0..40 {
            clock.advance(Duration::from_secs(2));
            let s = d.sample().unwrap();
            if !s.conditions.is_empty() {
                raised = Some((i, s.conditions[0].clone()));
                break;
            }
        }
        let (i, c) = raised.expect("fallback must raise from MemAvailable");
        assert!(
            i >= 13,
            "not before 30 s of sustained low memory (tick {i})"
        );
        assert_eq!(c.kind, ConditionKind::MemoryPressure);
        assert_eq!(c.reason, "MemAvailableLow");
        assert!(c.message.contains("psi=1"), "{}", c.message);
    }

    #[test]
    fn cgroup2_mount_is_found_in_mountinfo() {
        let mi = "30 23 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n31 23 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(cgroup2_mount(mi).as_deref(), Some("/sys/fs/cgroup/unified"));
        assert_eq!(
            cgroup2_mount("31 23 0:27 / /x rw - cgroup cgroup rw\n"),
            None
        );
    }

    fn psi(some_us: u64, full_us: u64) -> String {
        format!(
            "some avg10=0.00 avg60=0.00 avg300=0.00 total={some_us}\nfull avg10=0.00 avg60=0.00 avg300=0.00 total={full_us}\n"
        )
    }

    const MEMINFO_OK: &str = "MemTotal:        8000000 kB\nMemFree:         5000000 kB\nMemAvailable:    6000000 kB\nSwapTotal:             0 kB\nSwapFree:              0 kB\n";

    #[test]
    fn calm_with_psi_it_waits_on_a_trigger_and_a_stall_raises_from_its_start() {
        use super::super::trigger::{ScriptedTriggers, TriggerWait};
        let files = Arc::new(FakeFiles::with(&[
            ("proc/pressure/memory", &psi(0, 0)),
            ("proc/meminfo", MEMINFO_OK),
            ("proc/vmstat", VMSTAT),
        ]));
        let clock = Arc::new(FakeClock::new(1_000, Duration::from_secs(100)));
        let t = ScriptedTriggers::default();
        let (armed, waits, timeouts) = (t.armed.clone(), t.waits.clone(), t.timeouts.clone());
        let mut d =
            MemoryDetector::new(MemorySection::default(), files.clone(), clock.clone(), None)
                .with_triggers(Some(Box::new(t)));
        // Calm: sampled every 2 s until a full window shows it, then waiting.
        let mut samples = 0;
        while d.blocks_for().is_zero() {
            assert!(d.sample().unwrap().conditions.is_empty());
            clock.advance(Duration::from_secs(2));
            samples += 1;
            assert!(samples < 10, "a calm full window takes 10 s");
        }
        assert!(
            timeouts.lock().unwrap().is_empty(),
            "no wait before calm is known"
        );
        assert_eq!(
            *armed.lock().unwrap(),
            vec![(
                vec![PathBuf::from("/fake/proc/pressure/memory")],
                super::super::trigger::Thresholds {
                    some: Duration::from_millis(800),
                    full: Duration::from_millis(200)
                }
            )],
            "each line at its raise threshold (some 40%, full 10%) over 2 s"
        );
        assert_eq!(
            (d.interval(), d.blocks_for()),
            (Duration::ZERO, CALM_REFRESH)
        );
        // A quiet minute: one wait, one refresh.
        clock.advance(CALM_REFRESH);
        d.sample().unwrap();
        assert_eq!(*timeouts.lock().unwrap(), vec![CALM_REFRESH]);
        assert_eq!(d.trigger_wakeups, 0);
        // Memory stalls completely from `start`; the kernel fires 1 s later.
        let start = clock.monotonic();
        waits.lock().unwrap().push_back(TriggerWait::Fired {
            some: true,
            full: true,
        });
        let mut stalled = Duration::ZERO;
        let mut step = Duration::from_secs(1);
        let raised_at = loop {
            clock.advance(step);
            stalled += step;
            let us = stalled.as_micros() as u64;
            files.put("proc/pressure/memory", &psi(us, us));
            if !d.sample().unwrap().conditions.is_empty() {
                break clock.monotonic() - start;
            }
            assert_eq!(d.blocks_for(), Duration::ZERO, "sampling while it builds");
            step = d.interval();
            assert!(stalled < Duration::from_secs(120), "never raised");
        };
        assert_eq!(d.trigger_wakeups, 1);
        // The 30 s sustain counts from the trigger's window (the 2 s before it fired, which
        // the kernel measured over the threshold), not from a full window after the wake.
        assert!(
            raised_at >= Duration::from_secs(28) && raised_at <= Duration::from_secs(32),
            "raised {raised_at:?} after the stall began"
        );
    }

    #[test]
    fn without_psi_triggers_it_samples_every_interval() {
        let files = Arc::new(FakeFiles::with(&[
            ("proc/meminfo", MEMINFO_OK),
            ("proc/vmstat", VMSTAT),
        ]));
        let clock = Arc::new(FakeClock::new(1_000, Duration::from_secs(100)));
        let mut d = MemoryDetector::new(MemorySection::default(), files, clock.clone(), None)
            .with_triggers(Some(Box::new(
                super::super::trigger::ScriptedTriggers::default(),
            )));
        for _ in 0..20 {
            d.sample().unwrap();
            clock.advance(Duration::from_secs(2));
        }
        assert_eq!(
            (d.interval(), d.blocks_for()),
            (Duration::from_secs(2), Duration::ZERO)
        );
    }

    #[test]
    fn config_ranges_and_watched_cgroup_are_validated() {
        let mut v = Vec::new();
        let c = MemorySection {
            raise_some_percent: 0,
            watched_cgroup: Some("relative/path".into()),
            ..Default::default()
        };
        c.validate(&mut v);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].contains("memory.raise_some_percent"));
        assert!(v[1].contains("memory.watched_cgroup"));
    }

    #[test]
    fn an_eviction_minimum_beyond_any_board_is_rejected_by_name() {
        let mut v = Vec::new();
        MemorySection {
            evict_min_working_set_mib: (1 << 20) + 1,
            ..Default::default()
        }
        .validate(&mut v);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].contains("memory.evict_min_working_set_mib") && v[0].contains("allowed 0 to"),
            "{v:?}"
        );
    }

    #[test]
    fn the_config_defaults_are_the_assessor_defaults() {
        assert_eq!(
            assess_config(&MemorySection::default()),
            AssessConfig::default()
        );
    }
}
