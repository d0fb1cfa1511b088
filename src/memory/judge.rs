//! Memory-pressure assessment with hysteresis: decides whether the node's memory-pressure
//! condition holds, why, who is stalling (pods or the rest of the system), and whether the
//! precise signal (PSI) or the coarse fallback (MemAvailable/SwapFree) is in use.
//!
//! Pure: the caller reads `/proc/pressure/memory`, the pods' and a watched cgroup's
//! `memory.pressure`, `/proc/meminfo` and `/proc/vmstat`, parses them with the sibling
//! modules and passes them in with a monotonic timestamp. Nothing here reads a file or
//! a clock.
//!
//! # Why stall totals, not avg10
//! The kernel's `avg10` is an exponential average refreshed every 2 s. Each tick this module
//! instead takes the `total=` counters from the newest sample and from the newest sample at
//! least [`AssessConfig::window`] older, so the ratio is the exact share of that span spent
//! stalled, whatever the tick rate. A counter that goes backwards or a series that was
//! missing for a tick (cgroup recreated, file unreadable) restarts that series: no ratio
//! is reported for it until it has a full window again, never a huge bogus one.
//!
//! # Why these defaults
//! systemd-oomd kills when PSI `full` avg10 stays above 60% for 30 s; earlyoom kills when
//! MemAvailable and SwapFree are both below 10%. Both are last resorts before the kernel's
//! OOM killer. nodemedic only cordons (stops new pods landing here), which is cheap and
//! reversible, so it raises much earlier than oomd and clears slowly so a node does not
//! flap between cordoned and schedulable while pods are rescheduled onto it.
//!
//! Time to raise after pressure starts is about half a window (for the ratio to cross)
//! plus `sustain`; time to clear is up to a window plus `calm`.

use super::meminfo::MemInfo;
use super::psi::{PsiSample, stall_ratio};
use super::vmstat::{SwapRate, VmStat, counter_rate, oom_kills_between, swap_rate};
use serde::Serialize;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::Duration;

use crate::config::memory::{
    DEFAULT_CALM, DEFAULT_RAISE_FULL, DEFAULT_RAISE_MEM_AVAILABLE, DEFAULT_RAISE_SOME,
    DEFAULT_RAISE_SWAP_FREE, DEFAULT_SUSTAIN, DEFAULT_WINDOW,
};

/// Clear below half the raise threshold: a hysteresis band wide enough to absorb noise.
pub(crate) const DEFAULT_CLEAR_FULL: f64 = DEFAULT_RAISE_FULL / 2.0;
/// Clear below half the raise threshold, as for `full`.
pub(crate) const DEFAULT_CLEAR_SOME: f64 = DEFAULT_RAISE_SOME / 2.0;
/// Fallback clears at twice the raise level of free memory (the mirror of "half the stall").
pub(crate) const DEFAULT_CLEAR_MEM_AVAILABLE: f64 = 0.20;
/// Fallback clears when swap is at least 20% free, mirroring MemAvailable.
pub(crate) const DEFAULT_CLEAR_SWAP_FREE: f64 = 0.20;
/// Samples kept. A 10 s window needs ~11 at a 1 s tick; faster ticks are thinned (see
/// `MemoryAssessor::push`), so this only bounds memory (~20 KiB) whatever the caller does.
pub(crate) const DEFAULT_MAX_SAMPLES: usize = 256;
/// Fewest samples allowed: thinning keeps one per `window / (max_samples / 2)`, plus the
/// window's base and the newest sample, which needs a little headroom.
const MIN_MAX_SAMPLES: usize = 8;
/// Pods stalled during at least this share of the system's stall time: the pods did it.
pub(crate) const PODS_DOMINANT_SHARE: f64 = 0.7;
/// Pods stalled during at most this share: the rest of the system (k3s itself, etcd,
/// system services) did it, and cordoning will not help much.
pub(crate) const SYSTEM_DOMINANT_SHARE: f64 = 0.3;

/// How to get PSI on a node that lacks it; shown whenever the fallback is in use.
pub(crate) const PSI_FIX_HINT: &str = "add psi=1 to the kernel command line (Raspberry Pi: the single \
line in /boot/firmware/cmdline.txt, /boot/cmdline.txt on older releases) and reboot; PSI \
needs Linux 4.20+ built with CONFIG_PSI";

/// Thresholds and durations. Stall thresholds are shares of wall time (0.10 = 10%);
/// memory thresholds are shares of MemTotal / SwapTotal.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AssessConfig {
    pub(crate) window: Duration,
    pub(crate) sustain: Duration,
    pub(crate) calm: Duration,
    pub(crate) raise_full: f64,
    pub(crate) raise_some: f64,
    pub(crate) clear_full: f64,
    pub(crate) clear_some: f64,
    pub(crate) raise_mem_available: f64,
    pub(crate) raise_swap_free: f64,
    pub(crate) clear_mem_available: f64,
    pub(crate) clear_swap_free: f64,
    pub(crate) max_samples: usize,
}

impl Default for AssessConfig {
    fn default() -> Self {
        Self {
            window: DEFAULT_WINDOW,
            sustain: DEFAULT_SUSTAIN,
            calm: DEFAULT_CALM,
            raise_full: DEFAULT_RAISE_FULL,
            raise_some: DEFAULT_RAISE_SOME,
            clear_full: DEFAULT_CLEAR_FULL,
            clear_some: DEFAULT_CLEAR_SOME,
            raise_mem_available: DEFAULT_RAISE_MEM_AVAILABLE,
            raise_swap_free: DEFAULT_RAISE_SWAP_FREE,
            clear_mem_available: DEFAULT_CLEAR_MEM_AVAILABLE,
            clear_swap_free: DEFAULT_CLEAR_SWAP_FREE,
            max_samples: DEFAULT_MAX_SAMPLES,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum AssessConfigError {
    #[error("memory assessment: `{field}` = {value} must be a share between 0.0 and 1.0")]
    OutOfRange { field: &'static str, value: f64 },
    #[error(
        "memory assessment: stall threshold `{field}` must be above 0, or the condition \
         could never clear"
    )]
    ZeroStallThreshold { field: &'static str },
    #[error(
        "memory assessment: `{clear}` = {clear_value} must not be beyond `{raise}` = \
         {raise_value}; the clear threshold has to be the calmer one"
    )]
    ClearBeyondRaise {
        clear: &'static str,
        clear_value: f64,
        raise: &'static str,
        raise_value: f64,
    },
    #[error("memory assessment: `window` must be longer than zero")]
    ZeroWindow,
    #[error("memory assessment: `max_samples` = {0} must be at least 8")]
    TooFewSamples(usize),
    #[error("memory assessment: page size 0 given; pass sysconf(_SC_PAGESIZE)")]
    ZeroPageSize,
}

impl AssessConfig {
    /// Checks ranges and that every clear threshold is on the calm side of its raise one.
    pub(crate) fn validate(&self) -> Result<(), AssessConfigError> {
        let shares = [
            ("raise_full", self.raise_full),
            ("raise_some", self.raise_some),
            ("clear_full", self.clear_full),
            ("clear_some", self.clear_some),
            ("raise_mem_available", self.raise_mem_available),
            ("raise_swap_free", self.raise_swap_free),
            ("clear_mem_available", self.clear_mem_available),
            ("clear_swap_free", self.clear_swap_free),
        ];
        for (field, value) in shares {
            if !(0.0..=1.0).contains(&value) {
                return Err(AssessConfigError::OutOfRange { field, value });
            }
        }
        for (field, value) in [
            ("clear_full", self.clear_full),
            ("clear_some", self.clear_some),
        ] {
            if value == 0.0 {
                return Err(AssessConfigError::ZeroStallThreshold { field });
            }
        }
        // Stall: clear <= raise. Free memory: clear >= raise.
        let pairs = [
            (
                "clear_full",
                self.clear_full,
                "raise_full",
                self.raise_full,
                true,
            ),
            (
                "clear_some",
                self.clear_some,
                "raise_some",
                self.raise_some,
                true,
            ),
            (
                "clear_mem_available",
                self.clear_mem_available,
                "raise_mem_available",
                self.raise_mem_available,
                false,
            ),
            (
                "clear_swap_free",
                self.clear_swap_free,
                "raise_swap_free",
                self.raise_swap_free,
                false,
            ),
        ];
        for (clear, clear_value, raise, raise_value, lower_is_calmer) in pairs {
            let beyond = if lower_is_calmer {
                clear_value > raise_value
            } else {
                clear_value < raise_value
            };
            if beyond {
                return Err(AssessConfigError::ClearBeyondRaise {
                    clear,
                    clear_value,
                    raise,
                    raise_value,
                });
            }
        }
        if self.window.is_zero() {
            return Err(AssessConfigError::ZeroWindow);
        }
        if self.max_samples < MIN_MAX_SAMPLES {
            return Err(AssessConfigError::TooFewSamples(self.max_samples));
        }
        Ok(())
    }
}

/// What the caller read this tick. A `None` means the file was absent or unreadable;
/// meminfo and vmstat are optional too so that one bad read degrades the assessment
/// instead of stopping it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Observation {
    /// Monotonic time since any fixed origin (e.g. daemon start). Never wall-clock time:
    /// a Pi has no RTC and its clock jumps at boot.
    pub(crate) now: Duration,
    /// `/proc/pressure/memory`.
    pub(crate) system_psi: Option<PsiSample>,
    /// `memory.pressure` of the pods' parent cgroup (`kubepods.slice` or `kubepods`).
    pub(crate) pods_psi: Option<PsiSample>,
    /// `memory.pressure` of one more cgroup the operator cares about (e.g. k3s.service).
    pub(crate) watched_psi: Option<PsiSample>,
    pub(crate) meminfo: Option<MemInfo>,
    pub(crate) vmstat: Option<VmStat>,
}

/// Why the condition was raised. The strings are valid Kubernetes condition reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PressureReason {
    PsiFull,
    PsiSome,
    MemAvailableLow,
    SwapExhausted,
}

impl PressureReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PressureReason::PsiFull => "psi_full",
            PressureReason::PsiSome => "psi_some",
            PressureReason::MemAvailableLow => "mem_available_low",
            PressureReason::SwapExhausted => "swap_exhausted",
        }
    }
}

impl std::fmt::Display for PressureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which signal the decision rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SignalSource {
    /// System-wide PSI stall totals.
    Psi,
    /// PSI unavailable: MemAvailable and SwapFree, as earlyoom does.
    Fallback,
    /// Neither PSI nor MemAvailable: no judgement possible; the condition keeps its state.
    Unavailable,
}

/// A change of the condition on this tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Transition {
    Raised,
    Cleared,
}

/// Who the stall time belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Scope {
    Pods,
    System,
    Mixed,
}

/// Stall shares of one PSI series over its window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct StallWindow {
    pub(crate) some: f64,
    /// `None` when the file has no `full` line.
    pub(crate) full: Option<f64>,
    /// Actual span between the two samples used (at least the configured window).
    pub(crate) span: Duration,
}

/// The worse of two stall windows, signal by signal.
fn worst(a: Option<StallWindow>, b: Option<StallWindow>) -> Option<StallWindow> {
    match (a, b) {
        (Some(a), Some(b)) => Some(StallWindow {
            some: a.some.max(b.some),
            full: match (a.full, b.full) {
                (Some(x), Some(y)) => Some(x.max(y)),
                (x, y) => x.or(y),
            },
            span: a.span.max(b.span),
        }),
        (a, b) => a.or(b),
    }
}

/// Pods' share of the system's `some` stall time over a window.
///
/// Every moment a pod task stalls, some task on the system stalls, so pods' `some` time is
/// (up to per-CPU weighting in the kernel's aggregation) a subset of the system's; the
/// share is clamped to 1.0 for that imprecision. The remainder is time only non-pod tasks
/// (k3s, etcd, system services) were stalled.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Attribution {
    pub(crate) pods_share: f64,
    pub(crate) scope: Scope,
    pub(crate) span: Duration,
}

/// Numbers behind the decision, for the message, /status and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub(crate) struct Readings {
    pub(crate) system: Option<StallWindow>,
    pub(crate) pods: Option<StallWindow>,
    pub(crate) watched: Option<StallWindow>,
    pub(crate) meminfo: Option<MemInfo>,
    pub(crate) mem_available_fraction: Option<f64>,
    /// `None` when the node has no swap.
    pub(crate) swap_free_fraction: Option<f64>,
    pub(crate) swap: Option<SwapRate>,
    pub(crate) major_faults_per_s: Option<f64>,
    pub(crate) oom_kills_in_window: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Assessment {
    /// Whether the memory-pressure condition holds after this tick.
    pub(crate) pressure: bool,
    /// Why it was raised; `None` while it does not hold.
    pub(crate) reason: Option<PressureReason>,
    pub(crate) transition: Option<Transition>,
    pub(crate) source: SignalSource,
    /// How to enable PSI, when it is missing.
    pub(crate) fix_hint: Option<&'static str>,
    /// One line for humans (Node condition message, log), with the numbers.
    pub(crate) message: String,
    pub(crate) readings: Readings,
    pub(crate) attribution: Option<Attribution>,
}

/// Stall counters of one PSI file.
#[derive(Debug, Clone, Copy, PartialEq)]
struct PsiTotals {
    some_us: u64,
    full_us: Option<u64>,
}

impl PsiTotals {
    fn of(s: &PsiSample) -> Self {
        Self {
            some_us: s.some.total_us,
            full_us: s.full.map(|f| f.total_us),
        }
    }

    fn continues_from(&self, earlier: &Self) -> bool {
        self.some_us >= earlier.some_us
            && match (earlier.full_us, self.full_us) {
                (Some(a), Some(b)) => b >= a,
                (None, None) => true,
                _ => false,
            }
    }
}

fn vm_continues_from(later: &VmStat, earlier: &VmStat) -> bool {
    later.pswpin >= earlier.pswpin
        && later.pswpout >= earlier.pswpout
        && later.pgmajfault >= earlier.pgmajfault
        && match (earlier.oom_kill, later.oom_kill) {
            (Some(a), Some(b)) => b >= a,
            (None, None) => true,
            _ => false,
        }
}

#[derive(Debug, Clone, Copy)]
struct Snapshot {
    at: Duration,
    system: Option<PsiTotals>,
    pods: Option<PsiTotals>,
    watched: Option<PsiTotals>,
    vm: Option<VmStat>,
}

/// Per-tick standing of one signal against its thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    /// At or past the raise threshold.
    Over,
    /// Between the clear and raise thresholds: keeps whatever state holds.
    Between,
    /// Below the clear threshold.
    Calm,
    /// Part of the active source but not measurable yet: neither raises nor counts as calm.
    Unknown,
    /// Not part of the active source.
    Inactive,
}

/// Signals in priority order: when several have been over long enough, the first wins.
const SIGNALS: usize = 3;
const FULL: usize = 0;
const SOME: usize = 1;
const MEMORY: usize = 2;

/// The stateful assessor: feed it one [`Observation`] per tick.
#[derive(Debug, Clone)]
pub(crate) struct MemoryAssessor {
    config: AssessConfig,
    page_size: u64,
    ring: VecDeque<Snapshot>,
    raised: Option<(PressureReason, Duration)>,
    over_since: [Option<Duration>; SIGNALS],
    calm_since: Option<Duration>,
    /// After [`MemoryAssessor::restart_window`]: ratios over less than a window are used
    /// until a full window has passed.
    ramp: bool,
    /// The kernel's word, from a PSI trigger, that the `full` / `some` stall was at or over
    /// its raise threshold during `lookback` before the trigger: used once, by the first
    /// ratio after it.
    evidence: Option<([bool; SIGNALS], Duration)>,
}

impl MemoryAssessor {
    /// `page_size` is the running kernel's (sysconf(_SC_PAGESIZE)); the Pi 5's default
    /// kernel uses 16 KiB pages, so it must never be assumed.
    pub fn new(config: AssessConfig, page_size: u64) -> Result<Self, AssessConfigError> {
        config.validate()?;
        if page_size == 0 {
            return Err(AssessConfigError::ZeroPageSize);
        }
        Ok(Self {
            ring: VecDeque::with_capacity(config.max_samples.min(64)),
            config,
            page_size,
            raised: None,
            over_since: [None; SIGNALS],
            calm_since: None,
            ramp: false,
            evidence: None,
        })
    }

    /// Nothing held, nothing over a threshold, every signal calm: the detector may wait
    /// for a PSI trigger instead of sampling.
    pub(crate) fn quiet(&self) -> bool {
        self.raised.is_none()
            && self.over_since.iter().all(Option::is_none)
            && self.calm_since.is_some()
    }

    /// A PSI trigger woke the detector after a calm wait: the last sample may be a minute
    /// old, and a ratio over that minute would dilute the stall that just began. The next
    /// sample starts the history afresh, and until a full window has passed the ratios
    /// cover what there is (at least one sample interval): the stall counts from its start.
    ///
    /// `some` / `full`: which line's trigger fired (each armed at its raise threshold over
    /// `lookback`). When the first ratio after it is over the same threshold too, the
    /// streak starts `lookback` before the trigger: the kernel measured that window, so the
    /// sustain counts from the stall the kernel saw, as sampling would have, not from the
    /// first sample after the wake-up.
    pub(crate) fn restart_window(&mut self, some: bool, full: bool, lookback: Duration) {
        self.ring.clear();
        self.ramp = true;
        let mut e = [false; SIGNALS];
        e[SOME] = some;
        e[FULL] = full;
        self.evidence = Some((e, lookback));
    }

    #[cfg(test)]
    /// Whether the condition currently holds.
    pub(crate) fn pressure(&self) -> bool {
        self.raised.is_some()
    }

    /// Takes one tick's observation and returns the assessment after it.
    pub(crate) fn observe(&mut self, obs: &Observation) -> Assessment {
        let time_went_back = self.ring.back().is_some_and(|last| obs.now <= last.at);
        if time_went_back {
            // Monotonic time cannot do this; a caller bug must not yield a bogus ratio.
            // Start every window and streak afresh, keep the condition itself.
            self.ring.clear();
            self.over_since = [None; SIGNALS];
            self.calm_since = None;
        }
        self.push(obs);

        let readings = self.readings(obs);
        let source = if obs.system_psi.is_some() {
            SignalSource::Psi
        } else if obs.meminfo.is_some_and(|m| m.mem_available_bytes.is_some()) {
            SignalSource::Fallback
        } else {
            SignalSource::Unavailable
        };
        let (levels, reasons) = self.levels(source, &readings, obs.meminfo.as_ref());
        let transition = self.step(obs.now, levels, reasons);
        let attribution = self.attribution();

        let mut message = self.headline(obs.now, levels);
        self.describe(&mut message, source, &readings, attribution.as_ref(), obs);
        Assessment {
            pressure: self.raised.is_some(),
            reason: self.raised.map(|(r, _)| r),
            transition,
            source,
            fix_hint: (source != SignalSource::Psi).then_some(PSI_FIX_HINT),
            message,
            readings,
            attribution,
        }
    }

    fn push(&mut self, obs: &Observation) {
        let sample = Snapshot {
            at: obs.now,
            system: obs.system_psi.as_ref().map(PsiTotals::of),
            pods: obs.pods_psi.as_ref().map(PsiTotals::of),
            watched: obs.watched_psi.as_ref().map(PsiTotals::of),
            vm: obs.vmstat,
        };
        let ring = &mut self.ring;
        let continues = PsiTotals::continues_from;
        restart_if_broken(ring, sample.system, |s| &mut s.system, continues);
        restart_if_broken(ring, sample.pods, |s| &mut s.pods, continues);
        restart_if_broken(ring, sample.watched, |s| &mut s.watched, continues);
        restart_if_broken(ring, sample.vm, |s| &mut s.vm, vm_continues_from);

        // At fast tick rates, thin the history instead of losing the window's start: the
        // newest sample is replaced while it is closer than `spacing` to the one before,
        // so a full window never needs more than about half of `max_samples`. Only after
        // the continuity checks above, so a reset in the replaced sample is not missed.
        let spacing = self.config.window / (self.config.max_samples / 2) as u32;
        let len = ring.len();
        if len >= 2 && ring[len - 1].at - ring[len - 2].at < spacing {
            ring.pop_back();
        }
        ring.push_back(sample);

        if self.ramp
            && ring
                .front()
                .is_some_and(|f| obs.now.saturating_sub(f.at) >= self.config.window)
        {
            self.ramp = false;
        }
        // Keep exactly one sample at or before the window's start: it is the base of the
        // next ratio; anything older is never used again.
        if let Some(cut) = obs.now.checked_sub(self.config.window) {
            while ring.len() >= 2 && ring[1].at <= cut {
                ring.pop_front();
            }
        }
        // Cannot trigger given the spacing above; a hard bound whatever the arithmetic.
        while ring.len() > self.config.max_samples {
            ring.pop_front();
        }
    }

    /// The newest sample's value and the value at the newest sample at least a window
    /// older, with the span between them. `None` if the series has no full window.
    fn window_pair<T>(&self, get: impl Fn(&Snapshot) -> Option<T>) -> Option<(T, T, Duration)> {
        let newest = self.ring.back()?;
        let later = get(newest)?;
        let cut = newest.at.checked_sub(self.config.window);
        // A series is valid only over an unbroken run ending at the newest sample
        // (see `restart_if_broken`), so the first sample before the cut decides.
        let full = cut.and_then(|cut| self.ring.iter().rev().skip(1).find(|s| s.at <= cut));
        let base = match full {
            Some(b) => b,
            // Ramping up after a trigger: the oldest sample since, if it is older.
            None if self.ramp => self.ring.front().filter(|s| s.at < newest.at)?,
            None => return None,
        };
        Some((get(base)?, later, newest.at - base.at))
    }

    fn stall_window(&self, get: impl Fn(&Snapshot) -> Option<PsiTotals>) -> Option<StallWindow> {
        let (earlier, later, span) = self.window_pair(get)?;
        let some = stall_ratio(earlier.some_us, later.some_us, span).ok()?;
        let full = match (earlier.full_us, later.full_us) {
            (Some(a), Some(b)) => stall_ratio(a, b, span).ok(),
            _ => None,
        };
        Some(StallWindow { some, full, span })
    }

    fn readings(&self, obs: &Observation) -> Readings {
        let vm = self.window_pair(|s| s.vm);
        Readings {
            system: self.stall_window(|s| s.system),
            pods: self.stall_window(|s| s.pods),
            watched: self.stall_window(|s| s.watched),
            meminfo: obs.meminfo,
            mem_available_fraction: obs.meminfo.and_then(|m| m.mem_available_fraction()),
            swap_free_fraction: obs.meminfo.and_then(|m| m.swap_free_fraction()),
            swap: vm.and_then(|(a, b, span)| swap_rate(&a, &b, span, self.page_size).ok()),
            major_faults_per_s: vm.and_then(|(a, b, span)| {
                counter_rate("pgmajfault", a.pgmajfault, b.pgmajfault, span).ok()
            }),
            oom_kills_in_window: vm.and_then(|(a, b, _)| oom_kills_between(&a, &b)),
        }
    }

    fn attribution(&self) -> Option<Attribution> {
        let pair = |s: &Snapshot| Some((s.pods?.some_us, s.system?.some_us));
        let ((pods_a, sys_a), (pods_b, sys_b), span) = self.window_pair(pair)?;
        let system_stall = sys_b.checked_sub(sys_a)?;
        let pods_stall = pods_b.checked_sub(pods_a)?;
        if system_stall == 0 {
            return None; // Nothing stalled: nothing to attribute.
        }
        let pods_share = (pods_stall as f64 / system_stall as f64).min(1.0);
        let scope = if pods_share >= PODS_DOMINANT_SHARE {
            Scope::Pods
        } else if pods_share <= SYSTEM_DOMINANT_SHARE {
            Scope::System
        } else {
            Scope::Mixed
        };
        Some(Attribution {
            pods_share,
            scope,
            span,
        })
    }

    fn levels(
        &self,
        source: SignalSource,
        readings: &Readings,
        meminfo: Option<&MemInfo>,
    ) -> ([Level; SIGNALS], [PressureReason; SIGNALS]) {
        let c = &self.config;
        let memory_reason = if meminfo.is_some_and(MemInfo::has_swap) {
            PressureReason::SwapExhausted
        } else {
            PressureReason::MemAvailableLow
        };
        let mut reasons = [PressureReason::PsiFull; SIGNALS];
        reasons[SOME] = PressureReason::PsiSome;
        reasons[MEMORY] = memory_reason;
        let mut levels = [Level::Inactive; SIGNALS];
        match source {
            SignalSource::Psi => {
                // The watched cgroup (e.g. k3s.service, or a test's cgroup) can raise the
                // condition on its own: pressure there matters even on a calm node.
                let system = worst(readings.system, readings.watched);
                // A file without a `full` line (never for memory on 4.20+) drops that
                // signal instead of blocking the clear forever.
                levels[FULL] = match system {
                    None => Level::Unknown,
                    Some(w) => w.full.map_or(Level::Inactive, |f| {
                        stall_level(f, c.raise_full, c.clear_full)
                    }),
                };
                levels[SOME] = system.map_or(Level::Unknown, |w| {
                    stall_level(w.some, c.raise_some, c.clear_some)
                });
            }
            SignalSource::Fallback => {
                levels[MEMORY] = meminfo.map_or(Level::Unknown, |m| self.memory_level(m));
            }
            SignalSource::Unavailable => levels[MEMORY] = Level::Unknown,
        }
        (levels, reasons)
    }

    /// earlyoom's rule: low on MemAvailable and, if there is swap, low on SwapFree too.
    fn memory_level(&self, m: &MemInfo) -> Level {
        let c = &self.config;
        let Some(available) = m.mem_available_fraction() else {
            return Level::Unknown;
        };
        let swap_free = m.swap_free_fraction();
        let low = |avail_limit: f64, swap_limit: f64| {
            available < avail_limit && swap_free.is_none_or(|f| f < swap_limit)
        };
        if low(c.raise_mem_available, c.raise_swap_free) {
            Level::Over
        } else if !low(c.clear_mem_available, c.clear_swap_free) {
            Level::Calm
        } else {
            Level::Between
        }
    }

    /// Advances the streaks and the condition.
    fn step(
        &mut self,
        now: Duration,
        levels: [Level; SIGNALS],
        reasons: [PressureReason; SIGNALS],
    ) -> Option<Transition> {
        // The trigger's evidence is spent on the first pass with a ratio.
        let evidence = if levels[FULL] != Level::Unknown || levels[SOME] != Level::Unknown {
            self.evidence.take()
        } else {
            None
        };
        for (i, (since, level)) in self.over_since.iter_mut().zip(levels).enumerate() {
            if level == Level::Over {
                // The trigger's window ends at the first sample after it, the oldest now.
                let from = match (evidence, self.ring.front()) {
                    (Some((e, lookback)), Some(first)) if e[i] => {
                        first.at.saturating_sub(lookback).min(now)
                    }
                    _ => now,
                };
                since.get_or_insert(from);
            } else {
                *since = None;
            }
        }
        let all_calm = levels
            .iter()
            .all(|l| matches!(l, Level::Calm | Level::Inactive))
            && levels.contains(&Level::Calm);
        if all_calm {
            self.calm_since.get_or_insert(now);
        } else {
            self.calm_since = None;
        }

        match self.raised {
            None => {
                let sustained = (0..SIGNALS).find(|&i| {
                    self.over_since[i].is_some_and(|t| now.saturating_sub(t) >= self.config.sustain)
                })?;
                self.raised = Some((reasons[sustained], now));
                Some(Transition::Raised)
            }
            Some(_) => {
                let calm_for = now.saturating_sub(self.calm_since?);
                if calm_for < self.config.calm {
                    return None;
                }
                self.raised = None;
                Some(Transition::Cleared)
            }
        }
    }

    fn headline(&self, now: Duration, levels: [Level; SIGNALS]) -> String {
        let c = &self.config;
        match (self.raised, self.calm_since) {
            (Some((reason, since)), Some(calm)) => format!(
                "memory pressure ({reason}) for {}, easing: calm for {} of the {} needed to clear",
                secs(now.saturating_sub(since)),
                secs(now.saturating_sub(calm)),
                secs(c.calm)
            ),
            (Some((reason, since)), None) => {
                format!(
                    "memory pressure ({reason}) for {}",
                    secs(now.saturating_sub(since))
                )
            }
            (None, _) => {
                let building = (0..SIGNALS)
                    .filter(|&i| levels[i] == Level::Over)
                    .filter_map(|i| self.over_since[i])
                    .min();
                match building {
                    Some(t) => format!(
                        "no memory pressure yet: over threshold for {} of the {} needed",
                        secs(now.saturating_sub(t)),
                        secs(c.sustain)
                    ),
                    None => "no memory pressure".to_owned(),
                }
            }
        }
    }

    fn describe(
        &self,
        out: &mut String,
        source: SignalSource,
        r: &Readings,
        attribution: Option<&Attribution>,
        obs: &Observation,
    ) {
        let c = &self.config;
        match source {
            SignalSource::Psi => match r.system {
                Some(w) => {
                    let _ = write!(
                        out,
                        "; PSI over the last {}: some {}",
                        secs(w.span),
                        pct(w.some)
                    );
                    if let Some(full) = w.full {
                        let _ = write!(out, ", full {}", pct(full));
                    }
                    let _ = write!(
                        out,
                        " (raise at full {} or some {} for {})",
                        pct(c.raise_full),
                        pct(c.raise_some),
                        secs(c.sustain)
                    );
                }
                None => {
                    let _ = write!(out, "; PSI collecting its first {} window", secs(c.window));
                }
            },
            SignalSource::Fallback => {
                let _ = write!(
                    out,
                    "; PSI unavailable, judging by MemAvailable/SwapFree (raise below {} \
                     available with swap absent or under {} free, for {}); to fix, {}",
                    pct(c.raise_mem_available),
                    pct(c.raise_swap_free),
                    secs(c.sustain),
                    PSI_FIX_HINT
                );
            }
            SignalSource::Unavailable => {
                let why = if obs.meminfo.is_some() {
                    "/proc/meminfo has no MemAvailable (kernel older than 3.14)"
                } else {
                    "/proc/meminfo was not readable"
                };
                let _ = write!(
                    out,
                    "; cannot assess memory: no PSI and {why}; condition left as it was; \
                     {PSI_FIX_HINT}"
                );
            }
        }
        if let Some(a) = attribution {
            let _ = write!(out, "; pods stalled during {} of it", pct(a.pods_share));
        }
        if let Some(w) = r.watched {
            let _ = write!(out, "; watched cgroup some {}", pct(w.some));
        }
        if let Some(m) = &r.meminfo {
            match m.mem_available_bytes {
                Some(avail) => {
                    let _ = write!(
                        out,
                        "; MemAvailable {} of {} ({})",
                        bytes(avail),
                        bytes(m.mem_total_bytes),
                        pct(r.mem_available_fraction.unwrap_or(0.0))
                    );
                }
                None => {
                    let _ = write!(out, "; MemTotal {}", bytes(m.mem_total_bytes));
                }
            }
            match r.swap_free_fraction {
                Some(f) => {
                    let _ = write!(
                        out,
                        ", swap {} free of {} ({})",
                        bytes(m.swap_free_bytes),
                        bytes(m.swap_total_bytes),
                        pct(f)
                    );
                }
                None => out.push_str(", no swap"),
            }
        }
        if let Some(s) = r
            .swap
            .filter(|s| s.in_pages_per_s > 0.0 || s.out_pages_per_s > 0.0)
        {
            let _ = write!(
                out,
                "; swap-in {}/s, swap-out {}/s",
                bytes(s.in_bytes_per_s as u64),
                bytes(s.out_bytes_per_s as u64)
            );
        }
        if let Some(f) = r.major_faults_per_s.filter(|f| *f > 0.0) {
            let _ = write!(out, "; {f:.0} major faults/s");
        }
        if let Some(k) = r.oom_kills_in_window.filter(|k| *k > 0) {
            let _ = write!(out, "; {k} OOM kill(s) in the last {}", secs(c.window));
        }
    }
}

/// Keeps a series valid only over an unbroken, non-decreasing run ending at the newest
/// sample. If the new value does not continue the previous one (counter went backwards:
/// cgroup recreated; or the series was missing last tick, so a reset may have been
/// missed), every older value of the series is dropped.
fn restart_if_broken<T: Copy>(
    ring: &mut VecDeque<Snapshot>,
    next: Option<T>,
    field: fn(&mut Snapshot) -> &mut Option<T>,
    continues: fn(&T, &T) -> bool,
) {
    let Some(next) = next else {
        return; // A gap breaks nothing yet; the value after it will be checked.
    };
    let previous = ring.back_mut().and_then(|s| *field(s));
    if ring.is_empty() || previous.is_some_and(|p| continues(&next, &p)) {
        return;
    }
    for sample in ring.iter_mut() {
        *field(sample) = None;
    }
}

fn stall_level(ratio: f64, raise: f64, clear: f64) -> Level {
    if ratio >= raise {
        Level::Over
    } else if ratio < clear {
        Level::Calm
    } else {
        Level::Between
    }
}

fn pct(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

fn secs(d: Duration) -> String {
    format!("{:.0}s", d.as_secs_f64())
}

fn bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if n >= size {
            return format!("{:.1} {unit}", n as f64 / size as f64);
        }
    }
    format!("{n} B")
}

/// Bounded label for an OOM-killed task's cgroup, so a Prometheus counter labelled by it
/// keeps at most [`OomScope::ALL`]`.len()` series however many pods come and go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub(crate) enum OomScope {
    KubepodsGuaranteed,
    KubepodsBurstable,
    KubepodsBesteffort,
    /// The pods' parent itself or a child of unknown QoS.
    Kubepods,
    /// `system.slice/*` and `init.scope`: k3s, containerd, system services.
    System,
    /// `user.slice/*`: login sessions.
    User,
    Other,
}

impl OomScope {
    pub(crate) const ALL: [OomScope; 7] = [
        OomScope::KubepodsGuaranteed,
        OomScope::KubepodsBurstable,
        OomScope::KubepodsBesteffort,
        OomScope::Kubepods,
        OomScope::System,
        OomScope::User,
        OomScope::Other,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            OomScope::KubepodsGuaranteed => "kubepods-guaranteed",
            OomScope::KubepodsBurstable => "kubepods-burstable",
            OomScope::KubepodsBesteffort => "kubepods-besteffort",
            OomScope::Kubepods => "kubepods",
            OomScope::System => "system",
            OomScope::User => "user",
            OomScope::Other => "other",
        }
    }

    /// Classifies a cgroup path as the kernel prints it in `oom-kill:...,task_memcg=<path>`.
    /// Both kubelet cgroup drivers are understood:
    /// cgroupfs `/kubepods/burstable/pod<uid>/<ctr>` (guaranteed pods sit directly under
    /// `/kubepods/pod<uid>`) and systemd
    /// `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/...`
    /// (guaranteed: `/kubepods.slice/kubepods-pod<uid>.slice`). The pods' root may sit
    /// under a prefix (k3s in Docker without a cgroup namespace).
    pub(crate) fn of_cgroup(path: &str) -> OomScope {
        let mut parts = path.trim().split('/').filter(|p| !p.is_empty());
        let first = parts.clone().next();
        while let Some(part) = parts.next() {
            if part == "kubepods" || part == "kubepods.slice" {
                return match parts.next() {
                    Some("burstable" | "kubepods-burstable.slice") => OomScope::KubepodsBurstable,
                    Some("besteffort" | "kubepods-besteffort.slice") => {
                        OomScope::KubepodsBesteffort
                    }
                    Some(p) if p.starts_with("pod") || p.starts_with("kubepods-pod") => {
                        OomScope::KubepodsGuaranteed
                    }
                    _ => OomScope::Kubepods,
                };
            }
        }
        match first {
            Some("system.slice" | "init.scope") => OomScope::System,
            Some("user.slice") => OomScope::User,
            _ => OomScope::Other,
        }
    }
}

/// OOM kills counted per bounded cgroup label.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OomKillCounts {
    counts: [u64; OomScope::ALL.len()],
}

impl OomKillCounts {
    /// Counts one OOM kill of a task in `cgroup` and returns the label it was counted under.
    pub(crate) fn record_oom(&mut self, cgroup: &str) -> OomScope {
        let scope = OomScope::of_cgroup(cgroup);
        let slot = &mut self.counts[scope as usize];
        *slot = slot.saturating_add(1);
        scope
    }

    #[cfg(test)]
    pub(crate) fn get(&self, scope: OomScope) -> u64 {
        self.counts[scope as usize]
    }

    #[cfg(test)]
    /// Every label with its count, zeros included, in a fixed order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (OomScope, u64)> + '_ {
        OomScope::ALL.into_iter().map(|s| (s, self.get(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::psi::PsiLine;
    use super::*;
    use proptest::prelude::*;

    const GIB_KB: u64 = 1024 * 1024;
    const PAGE: u64 = 4096;
    const TICK: Duration = Duration::from_secs(2);

    fn mem(total_kb: u64, avail_kb: Option<u64>, swap_total_kb: u64, swap_free_kb: u64) -> MemInfo {
        MemInfo {
            mem_total_bytes: total_kb * 1024,
            mem_free_bytes: avail_kb.unwrap_or(0) * 1024 / 3,
            mem_available_bytes: avail_kb.map(|a| a * 1024),
            swap_total_bytes: swap_total_kb * 1024,
            swap_free_bytes: swap_free_kb * 1024,
        }
    }

    /// 8 GB Pi 5, no swap, comfortable.
    fn healthy_pi5() -> MemInfo {
        mem(8 * GIB_KB, Some(5 * GIB_KB), 0, 0)
    }

    fn psi_line(total_us: u64) -> PsiLine {
        PsiLine {
            avg10: 0.0,
            avg60: 0.0,
            avg300: 0.0,
            total_us,
        }
    }

    fn psi(some_us: u64, full_us: u64) -> PsiSample {
        PsiSample {
            some: psi_line(some_us),
            full: Some(psi_line(full_us)),
        }
    }

    /// A simulated node: stall counters grow by the given shares of each tick.
    struct Node {
        now: Duration,
        sys: (u64, u64),
        pods: (u64, u64),
        vm: VmStat,
        meminfo: Option<MemInfo>,
        psi: bool,
        pods_psi: bool,
    }

    impl Node {
        fn new() -> Self {
            Self {
                now: Duration::ZERO,
                // Counters from a node that has been up for a while.
                sys: (48_123_991, 11_020_415),
                pods: (30_000_000, 2_000_000),
                vm: VmStat {
                    pswpin: 1_000,
                    pswpout: 2_000,
                    pgmajfault: 50_000,
                    oom_kill: Some(0),
                },
                meminfo: Some(healthy_pi5()),
                psi: true,
                pods_psi: true,
            }
        }

        /// Advances one tick with the system stalled `some`/`full` of the time and the
        /// pods stalled `pods_some` of the time.
        fn tick(&mut self, some: f64, full: f64, pods_some: f64) -> Observation {
            let us = TICK.as_micros() as f64;
            self.now += TICK;
            self.sys.0 += (some * us) as u64;
            self.sys.1 += (full * us) as u64;
            self.pods.0 += (pods_some * us) as u64;
            self.pods.1 += (full * us) as u64;
            self.observation()
        }

        fn observation(&self) -> Observation {
            Observation {
                now: self.now,
                system_psi: self.psi.then(|| psi(self.sys.0, self.sys.1)),
                pods_psi: self.pods_psi.then(|| psi(self.pods.0, self.pods.1)),
                watched_psi: None,
                meminfo: self.meminfo,
                vmstat: Some(self.vm),
            }
        }
    }

    fn assessor() -> MemoryAssessor {
        MemoryAssessor::new(AssessConfig::default(), PAGE).unwrap()
    }

    /// Runs `ticks` ticks, returning each assessment.
    fn run(
        a: &mut MemoryAssessor,
        node: &mut Node,
        ticks: usize,
        some: f64,
        full: f64,
        pods_some: f64,
    ) -> Vec<Assessment> {
        (0..ticks)
            .map(|_| a.observe(&node.tick(some, full, pods_some)))
            .collect()
    }

    fn transitions(v: &[Assessment]) -> Vec<(usize, Transition)> {
        v.iter()
            .enumerate()
            .filter_map(|(i, a)| a.transition.map(|t| (i, t)))
            .collect()
    }

    #[test]
    fn default_config_is_valid_and_matches_the_documented_defaults() {
        let c = AssessConfig::default();
        c.validate().unwrap();
        assert_eq!(c.raise_full, 0.10);
        assert_eq!(c.clear_full, 0.05);
        assert_eq!(c.raise_some, 0.40);
        assert_eq!(c.clear_some, 0.20);
        assert_eq!(c.sustain, Duration::from_secs(30));
        assert_eq!(c.calm, Duration::from_secs(120));
    }

    #[test]
    fn sustained_full_stall_raises_exactly_once_after_the_sustain_window() {
        let mut a = assessor();
        let mut node = Node::new();
        let calm = run(&mut a, &mut node, 20, 0.02, 0.0, 0.02);
        assert!(calm.iter().all(|x| !x.pressure && x.transition.is_none()));
        let start = node.now;

        // 20% full, 45% some from here on.
        let hot = run(&mut a, &mut node, 60, 0.45, 0.20, 0.40);
        let t = transitions(&hot);
        assert_eq!(t.len(), 1, "{t:?}");
        let (i, kind) = t[0];
        assert_eq!(kind, Transition::Raised);
        // The 10 s ratio first reaches 10% once 6 s of 20% stall are in it (12%); the
        // sustain of 30 s then ends 36 s after the stall began.
        let raised_at = start + TICK * (i as u32 + 1);
        assert_eq!(raised_at - start, Duration::from_secs(36));
        assert!(hot[..i].iter().all(|x| !x.pressure));
        assert!(hot[i..].iter().all(|x| x.pressure));

        let first = &hot[i];
        assert_eq!(first.reason, Some(PressureReason::PsiFull));
        assert_eq!(first.source, SignalSource::Psi);
        assert_eq!(first.fix_hint, None);
        let sys = first.readings.system.unwrap();
        assert!((sys.full.unwrap() - 0.20).abs() < 1e-9, "{sys:?}");
        assert!((sys.some - 0.45).abs() < 1e-9, "{sys:?}");
        assert_eq!(sys.span, Duration::from_secs(10));
        assert!(
            first.message.starts_with("memory pressure (psi_full)"),
            "{}",
            first.message
        );
        assert!(first.message.contains("full 20.0%"), "{}", first.message);
        assert!(first.message.contains("some 45.0%"), "{}", first.message);
    }

    #[test]
    fn some_stall_alone_raises_with_reason_psi_some() {
        let mut a = assessor();
        let mut node = Node::new();
        run(&mut a, &mut node, 10, 0.0, 0.0, 0.0);
        let hot = run(&mut a, &mut node, 40, 0.60, 0.04, 0.55);
        let t = transitions(&hot);
        assert_eq!(t.len(), 1);
        assert_eq!(hot[t[0].0].reason, Some(PressureReason::PsiSome));
    }

    #[test]
    fn a_spike_shorter_than_sustain_does_not_raise() {
        let mut a = assessor();
        let mut node = Node::new();
        run(&mut a, &mut node, 10, 0.0, 0.0, 0.0);
        // 16 s of total stall, far above every threshold, then nothing.
        let spike = run(&mut a, &mut node, 8, 1.0, 1.0, 1.0);
        let after = run(&mut a, &mut node, 60, 0.0, 0.0, 0.0);
        assert!(spike.iter().chain(&after).all(|x| !x.pressure));
        // It was seen building, though.
        assert!(
            spike[4].message.contains("over threshold for"),
            "{}",
            spike[4].message
        );
    }

    #[test]
    fn a_gap_below_threshold_restarts_the_sustain_streak() {
        let mut a = assessor();
        let mut node = Node::new();
        run(&mut a, &mut node, 10, 0.0, 0.0, 0.0);
        // 24 s hot, 12 s calm (empties the 10 s window), 24 s hot: never 30 s in a row.
        let mut all = run(&mut a, &mut node, 12, 0.5, 0.3, 0.5);
        all.extend(run(&mut a, &mut node, 6, 0.0, 0.0, 0.0));
        all.extend(run(&mut a, &mut node, 12, 0.5, 0.3, 0.5));
        assert!(all.iter().all(|x| !x.pressure));
    }

    #[test]
    fn clears_only_after_the_calm_period_and_a_relapse_restarts_it() {
        let mut a = assessor();
        let mut node = Node::new();
        run(&mut a, &mut node, 5, 0.0, 0.0, 0.0);
        let hot = run(&mut a, &mut node, 30, 0.5, 0.3, 0.5);
        assert!(hot.last().unwrap().pressure);

        // Calm for 60 s: still raised, and says it is easing.
        let calm = run(&mut a, &mut node, 30, 0.01, 0.0, 0.01);
        assert!(calm.iter().all(|x| x.pressure && x.transition.is_none()));
        assert!(
            calm.last().unwrap().message.contains("easing"),
            "{}",
            calm.last().unwrap().message
        );

        // A 4 s relapse to 30% full puts the 10 s ratio above the clear line again.
        let relapse = run(&mut a, &mut node, 2, 0.3, 0.3, 0.3);
        assert!(relapse.iter().all(|x| x.pressure));

        // Calm again: the window forgets the relapse after 10 s, then 120 s must pass.
        let start = node.now;
        let calm = run(&mut a, &mut node, 100, 0.01, 0.0, 0.01);
        let t = transitions(&calm);
        assert_eq!(t.len(), 1, "{t:?}");
        assert_eq!(t[0].1, Transition::Cleared);
        let cleared_at = start + TICK * (t[0].0 as u32 + 1);
        // Calm starts once no relapse tick is left in the 10 s window: a single 2 s tick
        // of 30% full is still 6% of the window, above the 5% clear line.
        let calm_start = start + Duration::from_secs(10);
        assert_eq!(cleared_at - calm_start, Duration::from_secs(120));
        assert!(!calm[t[0].0].pressure);
        assert_eq!(calm[t[0].0].reason, None);
        assert!(calm[t[0].0].message.starts_with("no memory pressure"));
        assert!(calm[t[0].0..].iter().all(|x| !x.pressure));
    }

    #[test]
    fn pressure_between_clear_and_raise_neither_raises_nor_clears() {
        let mut a = assessor();
        let mut node = Node::new();
        // 7% full, 25% some: above the clear lines, below the raise lines.
        let between = run(&mut a, &mut node, 100, 0.25, 0.07, 0.2);
        assert!(between.iter().all(|x| !x.pressure));

        run(&mut a, &mut node, 30, 0.5, 0.3, 0.5);
        assert!(a.pressure());
        let held = run(&mut a, &mut node, 200, 0.25, 0.07, 0.2);
        assert!(held.iter().all(|x| x.pressure && x.transition.is_none()));
    }

    #[test]
    fn fallback_raises_on_low_memavailable_without_swap_when_psi_is_absent() {
        let mut a = assessor();
        let mut node = Node::new();
        node.psi = false;
        node.pods_psi = false;
        // 1 GB Pi 3, no swap, 60 MB available.
        node.meminfo = Some(mem(926_060, Some(61_440), 0, 0));
        let v = run(&mut a, &mut node, 20, 0.0, 0.0, 0.0);
        let t = transitions(&v);
        assert_eq!(t.len(), 1);
        // No window needed: over from the first tick, raised 30 s later.
        assert_eq!(TICK * (t[0].0 as u32), Duration::from_secs(30));
        let x = &v[t[0].0];
        assert_eq!(x.reason, Some(PressureReason::MemAvailableLow));
        assert_eq!(x.source, SignalSource::Fallback);
        assert_eq!(x.fix_hint, Some(PSI_FIX_HINT));
        assert!(x.message.contains("psi=1"), "{}", x.message);
        assert!(
            x.message.contains("/boot/firmware/cmdline.txt"),
            "{}",
            x.message
        );
        assert!(
            x.message
                .contains("MemAvailable 60.0 MiB of 904.4 MiB (6.6%)"),
            "{}",
            x.message
        );
        assert!(x.message.contains("no swap"), "{}", x.message);
        assert_eq!(x.readings.system, None);
        assert_eq!(x.attribution, None);
    }

    #[test]
    fn fallback_with_swap_raises_only_once_swap_is_exhausted_too() {
        let mut a = assessor();
        let mut node = Node::new();
        node.psi = false;
        // Low MemAvailable but half the swap free: earlyoom would wait, so do we.
        node.meminfo = Some(mem(926_060, Some(38_432), 102_396, 51_200));
        assert!(
            run(&mut a, &mut node, 30, 0.0, 0.0, 0.0)
                .iter()
                .all(|x| !x.pressure)
        );

        node.meminfo = Some(mem(926_060, Some(38_432), 102_396, 2_112));
        let v = run(&mut a, &mut node, 20, 0.0, 0.0, 0.0);
        let t = transitions(&v);
        assert_eq!(t.len(), 1);
        assert_eq!(v[t[0].0].reason, Some(PressureReason::SwapExhausted));
        assert!(
            v[t[0].0]
                .message
                .contains("swap 2.1 MiB free of 100.0 MiB (2.1%)"),
            "{}",
            v[t[0].0].message
        );

        // Swap frees up to 30%: calm, clears after 120 s.
        node.meminfo = Some(mem(926_060, Some(38_432), 102_396, 30_720));
        let v = run(&mut a, &mut node, 61, 0.0, 0.0, 0.0);
        let t = transitions(&v);
        assert_eq!(t, vec![(60, Transition::Cleared)]);
    }

    #[test]
    fn fallback_is_not_used_while_psi_is_available() {
        let mut a = assessor();
        let mut node = Node::new();
        // Little available memory but no stall: the page cache is doing its job.
        node.meminfo = Some(mem(8 * GIB_KB, Some(400_000), 0, 0));
        let v = run(&mut a, &mut node, 60, 0.01, 0.0, 0.01);
        assert!(
            v.iter()
                .all(|x| !x.pressure && x.source == SignalSource::Psi)
        );
    }

    #[test]
    fn no_psi_and_no_memavailable_is_reported_unassessable_and_never_raises() {
        let mut a = assessor();
        let mut node = Node::new();
        node.psi = false;
        node.pods_psi = false;
        node.meminfo = Some(mem(1_015_424, None, 524_284, 0));
        let v = run(&mut a, &mut node, 40, 0.0, 0.0, 0.0);
        assert!(
            v.iter()
                .all(|x| !x.pressure && x.source == SignalSource::Unavailable)
        );
        let m = &v[0].message;
        assert!(
            m.contains("no MemAvailable (kernel older than 3.14)"),
            "{m}"
        );
        assert!(m.contains("psi=1"), "{m}");

        node.meminfo = None;
        let x = a.observe(&node.tick(0.0, 0.0, 0.0));
        assert!(
            x.message.contains("/proc/meminfo was not readable"),
            "{}",
            x.message
        );
    }

    #[test]
    fn losing_every_signal_keeps_a_raised_condition_raised() {
        let mut a = assessor();
        let mut node = Node::new();
        run(&mut a, &mut node, 30, 0.5, 0.3, 0.5);
        assert!(a.pressure());
        node.psi = false;
        node.meminfo = None;
        let v = run(&mut a, &mut node, 100, 0.0, 0.0, 0.0);
        assert!(
            v.iter()
                .all(|x| x.pressure && x.source == SignalSource::Unavailable)
        );
    }

    #[test]
    fn stall_caused_by_pods_is_attributed_to_pods() {
        let mut a = assessor();
        let mut node = Node::new();
        let v = run(&mut a, &mut node, 10, 0.50, 0.2, 0.45);
        let at = v.last().unwrap().attribution.unwrap();
        assert!((at.pods_share - 0.9).abs() < 1e-9, "{at:?}");
        assert_eq!(at.scope, Scope::Pods);
        assert_eq!(at.span, Duration::from_secs(10));
        assert!(
            v.last()
                .unwrap()
                .message
                .contains("pods stalled during 90.0% of it")
        );
    }

    #[test]
    fn stall_outside_the_pods_is_attributed_to_the_system() {
        let mut a = assessor();
        let mut node = Node::new();
        let v = run(&mut a, &mut node, 10, 0.50, 0.2, 0.05);
        let at = v.last().unwrap().attribution.unwrap();
        assert!((at.pods_share - 0.1).abs() < 1e-9, "{at:?}");
        assert_eq!(at.scope, Scope::System);

        let v = run(&mut a, &mut node, 10, 0.50, 0.2, 0.25);
        assert_eq!(v.last().unwrap().attribution.unwrap().scope, Scope::Mixed);
    }

    #[test]
    fn no_attribution_without_pods_psi_or_without_any_stall() {
        let mut a = assessor();
        let mut node = Node::new();
        let v = run(&mut a, &mut node, 10, 0.0, 0.0, 0.0);
        assert_eq!(v.last().unwrap().attribution, None);
        node.pods_psi = false;
        let v = run(&mut a, &mut node, 10, 0.5, 0.2, 0.5);
        assert_eq!(v.last().unwrap().attribution, None);
        assert_eq!(v.last().unwrap().readings.pods, None);
    }

    #[test]
    fn recreated_pods_cgroup_gives_no_ratio_until_a_full_window_then_the_true_one() {
        let mut a = assessor();
        let mut node = Node::new();
        run(&mut a, &mut node, 10, 0.3, 0.1, 0.3);
        // k3s restarted with a different cgroup driver or the cgroup was recreated:
        // the counters start again from near zero.
        node.pods = (1_200, 0);
        let after = run(&mut a, &mut node, 8, 0.3, 0.1, 0.2);
        // The first post-reset sample is the new base: until 10 s after it there is no
        // pods ratio and no attribution.
        for x in &after[..5] {
            assert_eq!(x.readings.pods, None);
            assert_eq!(x.attribution, None);
        }
        let pods = after[5].readings.pods.unwrap();
        assert!((pods.some - 0.2).abs() < 1e-9, "{pods:?}");
        let at = after[5].attribution.unwrap();
        assert!((at.pods_share - 0.2 / 0.3).abs() < 1e-9, "{at:?}");
        // The system series was never broken.
        assert!(after.iter().all(|x| x.readings.system.is_some()));
    }

    #[test]
    fn a_counter_that_resets_and_regrows_past_its_old_value_is_still_a_restart() {
        let mut a = assessor();
        let mut node = Node::new();
        node.pods = (5_000, 0);
        run(&mut a, &mut node, 6, 0.0, 0.0, 0.0);
        // Reset to zero, then within the window grow beyond the old base: comparing
        // with the pre-reset base would report stall that did not happen.
        node.pods = (0, 0);
        let x = a.observe(&node.tick(0.0, 0.0, 0.0));
        assert_eq!(x.readings.pods, None);
        node.pods.0 = 9_000;
        let v = run(&mut a, &mut node, 5, 0.0, 0.0, 0.0);
        assert!(v[..4].iter().all(|x| x.readings.pods.is_none()));
        let pods = v[4].readings.pods.unwrap();
        // Exact: 9 ms of stall observed after the reset, over the 10 s since.
        assert!(
            (pods.some - 9_000.0 / 10_000_000.0).abs() < 1e-12,
            "{pods:?}"
        );
    }

    #[test]
    fn a_missing_tick_restarts_the_series_and_breaks_the_streak() {
        let mut a = assessor();
        let mut node = Node::new();
        run(&mut a, &mut node, 12, 0.5, 0.3, 0.5);
        node.psi = false;
        node.meminfo = None; // fallback unavailable too
        let x = a.observe(&node.tick(0.5, 0.3, 0.5));
        assert_eq!(x.source, SignalSource::Unavailable);
        node.psi = true;
        node.meminfo = Some(healthy_pi5());
        // 26 s of renewed stall: 5 s for the new window plus 30 s sustain not yet met.
        let v = run(&mut a, &mut node, 13, 0.5, 0.3, 0.5);
        assert!(v.iter().all(|x| !x.pressure));
        assert!(v[..4].iter().all(|x| x.readings.system.is_none()));
        let v = run(&mut a, &mut node, 10, 0.5, 0.3, 0.5);
        assert!(v.last().unwrap().pressure);
    }

    #[test]
    fn time_going_backwards_restarts_windows_without_a_bogus_ratio() {
        let mut a = assessor();
        let mut node = Node::new();
        run(&mut a, &mut node, 10, 0.2, 0.0, 0.1);
        node.now = Duration::from_secs(3);
        let x = a.observe(&node.tick(0.2, 0.0, 0.1));
        assert_eq!(x.readings.system, None);
        let v = run(&mut a, &mut node, 5, 0.2, 0.0, 0.1);
        let sys = v[4].readings.system.unwrap();
        assert!((sys.some - 0.2).abs() < 1e-9, "{sys:?}");
    }

    #[test]
    fn a_long_pause_between_ticks_gives_the_exact_ratio_over_the_real_span() {
        let mut a = assessor();
        let mut node = Node::new();
        run(&mut a, &mut node, 3, 0.0, 0.0, 0.0);
        // The daemon was descheduled for 40 s, during which 8 s were stalled.
        node.now += Duration::from_secs(40);
        node.sys.0 += 8_000_000;
        let x = a.observe(&node.observation());
        let sys = x.readings.system.unwrap();
        assert_eq!(sys.span, Duration::from_secs(40));
        assert!((sys.some - 0.2).abs() < 1e-12);
    }

    #[test]
    fn vmstat_evidence_is_reported_over_the_window() {
        let mut a = MemoryAssessor::new(AssessConfig::default(), 16_384).unwrap();
        let mut node = Node::new();
        let mut last = None;
        for _ in 0..6 {
            node.vm.pswpin += 200; // 100 pages/s at a 2 s tick
            node.vm.pswpout += 50;
            node.vm.pgmajfault += 600;
            node.vm.oom_kill = node.vm.oom_kill.map(|k| k + 1);
            last = Some(a.observe(&node.tick(0.1, 0.0, 0.1)));
        }
        let x = last.unwrap();
        let swap = x.readings.swap.unwrap();
        assert_eq!(swap.in_pages_per_s, 100.0);
        assert_eq!(swap.out_pages_per_s, 25.0);
        assert_eq!(swap.in_bytes_per_s, 100.0 * 16_384.0);
        assert_eq!(x.readings.major_faults_per_s, Some(300.0));
        assert_eq!(x.readings.oom_kills_in_window, Some(5));
        assert!(
            x.message
                .contains("swap-in 1.6 MiB/s, swap-out 400.0 KiB/s"),
            "{}",
            x.message
        );
        assert!(x.message.contains("300 major faults/s"), "{}", x.message);
        assert!(
            x.message.contains("5 OOM kill(s) in the last 10s"),
            "{}",
            x.message
        );
    }

    #[test]
    fn watched_cgroup_is_measured_and_mentioned() {
        let mut a = assessor();
        let mut node = Node::new();
        let mut watched = 0u64;
        let mut last = None;
        for _ in 0..6 {
            watched += 600_000; // 30% of a 2 s tick
            let mut obs = node.tick(0.4, 0.0, 0.1);
            obs.watched_psi = Some(psi(watched, 0));
            last = Some(a.observe(&obs));
        }
        let x = last.unwrap();
        assert!((x.readings.watched.unwrap().some - 0.3).abs() < 1e-9);
        assert!(
            x.message.contains("watched cgroup some 30.0%"),
            "{}",
            x.message
        );
    }

    #[test]
    fn a_thrashing_watched_cgroup_raises_the_condition_while_the_node_is_calm() {
        let mut a = assessor();
        let mut node = Node::new();
        let mut watched = (5_000u64, 1_000u64);
        let mut raised_at = None;
        for i in 0..40 {
            watched.0 += 1_000_000; // 50% some of a 2 s tick
            // No full stall: only "some" crosses its threshold.
            let mut obs = node.tick(0.01, 0.0, 0.0);
            obs.watched_psi = Some(psi(watched.0, watched.1));
            let x = a.observe(&obs);
            if x.transition == Some(Transition::Raised) {
                raised_at = Some(i);
                assert_eq!(x.reason, Some(PressureReason::PsiSome), "{}", x.message);
            }
        }
        let at = raised_at.expect("the watched cgroup alone must raise the condition");
        assert!(
            (15..=20).contains(&at),
            "raised after the sustain period, at tick {at}"
        );
        assert!(a.pressure());
    }

    #[test]
    fn the_sample_ring_stays_bounded_and_still_spans_the_window_at_any_tick_rate() {
        let mut a = assessor();
        let mut node = Node::new();
        let mut last = None;
        // 1 ms ticks for 12 s, 5% some throughout.
        for _ in 0..12_000 {
            node.now += Duration::from_millis(1);
            node.sys.0 += 50;
            last = Some(a.observe(&node.observation()));
            assert!(a.ring.len() <= DEFAULT_MAX_SAMPLES);
        }
        let sys = last.unwrap().readings.system.unwrap();
        assert!((sys.some - 0.05).abs() < 1e-9, "{sys:?}");
        assert!(sys.span >= DEFAULT_WINDOW);
        assert!(
            sys.span <= DEFAULT_WINDOW + Duration::from_millis(100),
            "{sys:?}"
        );

        let mut b = assessor();
        for _ in 0..1_000 {
            node.now += Duration::from_secs(1);
            b.observe(&node.observation());
        }
        // The window's base (10 s back) plus the ten samples after it.
        assert_eq!(b.ring.len(), 11);
    }

    #[test]
    fn a_reset_in_a_thinned_out_sample_is_not_missed() {
        let cfg = AssessConfig {
            max_samples: 8, // spacing 2.5 s
            ..AssessConfig::default()
        };
        let mut a = MemoryAssessor::new(cfg, PAGE).unwrap();
        let mut node = Node::new();
        node.pods = (5_000_000, 0);
        run(&mut a, &mut node, 10, 0.0, 0.0, 0.0);
        // Reset, then 1 s later a value above the old one: thinning replaces the reset
        // sample itself, yet the series must still count as restarted.
        node.pods = (0, 0);
        node.now += Duration::from_secs(1);
        a.observe(&node.observation());
        node.pods = (6_000_000, 0);
        node.now += Duration::from_secs(1);
        let x = a.observe(&node.observation());
        assert_eq!(x.readings.pods, None);
        assert!(x.readings.system.is_some());
    }

    #[test]
    fn invalid_configs_are_rejected_with_the_key_named() {
        let bad = |f: fn(&mut AssessConfig)| {
            let mut c = AssessConfig::default();
            f(&mut c);
            MemoryAssessor::new(c, PAGE).unwrap_err()
        };
        assert_eq!(
            bad(|c| c.raise_full = 1.5),
            AssessConfigError::OutOfRange {
                field: "raise_full",
                value: 1.5
            }
        );
        assert!(matches!(
            bad(|c| c.clear_some = f64::NAN),
            AssessConfigError::OutOfRange {
                field: "clear_some",
                ..
            }
        ));
        assert_eq!(
            bad(|c| c.clear_full = 0.0),
            AssessConfigError::ZeroStallThreshold {
                field: "clear_full"
            }
        );
        let e = bad(|c| c.clear_some = 0.5);
        assert!(matches!(
            e,
            AssessConfigError::ClearBeyondRaise {
                clear: "clear_some",
                raise: "raise_some",
                ..
            }
        ));
        assert!(e.to_string().contains("`clear_some` = 0.5"), "{e}");
        assert!(matches!(
            bad(|c| c.clear_mem_available = 0.05),
            AssessConfigError::ClearBeyondRaise {
                clear: "clear_mem_available",
                ..
            }
        ));
        assert_eq!(
            bad(|c| c.window = Duration::ZERO),
            AssessConfigError::ZeroWindow
        );
        assert_eq!(
            bad(|c| c.max_samples = 7),
            AssessConfigError::TooFewSamples(7)
        );
        assert_eq!(
            MemoryAssessor::new(AssessConfig::default(), 0).unwrap_err(),
            AssessConfigError::ZeroPageSize
        );
    }

    #[test]
    fn reasons_are_the_documented_condition_strings() {
        let all = [
            (PressureReason::PsiFull, "psi_full"),
            (PressureReason::PsiSome, "psi_some"),
            (PressureReason::MemAvailableLow, "mem_available_low"),
            (PressureReason::SwapExhausted, "swap_exhausted"),
        ];
        for (r, s) in all {
            assert_eq!(r.as_str(), s);
            assert_eq!(r.to_string(), s);
        }
    }

    #[test]
    fn bytes_are_formatted_with_binary_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
        assert_eq!(bytes(8 * (1 << 30)), "8.0 GiB");
    }

    #[test]
    fn oom_cgroups_map_to_bounded_labels() {
        let cases = [
            (
                "/kubepods/burstable/pod5f1c2a3e-8b0d-4c1e-9f2a-1b2c3d4e5f60/0a1b2c3d4e5f",
                "kubepods-burstable",
            ),
            (
                "/kubepods/besteffort/pod0d2f6e1a-7c3b-4a5d-8e9f-a0b1c2d3e4f5/9f8e7d",
                "kubepods-besteffort",
            ),
            (
                "/kubepods/pod7e3a1c9b-2d4f-4e6a-b8c0-d1e2f3a4b5c6/3c4d5e",
                "kubepods-guaranteed",
            ),
            (
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod5f1c2a3e_8b0d_4c1e_9f2a_1b2c3d4e5f60.slice/cri-containerd-0a1b2c.scope",
                "kubepods-burstable",
            ),
            (
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0d2f6e1a_7c3b.slice/cri-containerd-9f8e.scope",
                "kubepods-besteffort",
            ),
            (
                "/kubepods.slice/kubepods-pod7e3a1c9b_2d4f_4e6a_b8c0_d1e2f3a4b5c6.slice/cri-containerd-3c4d.scope",
                "kubepods-guaranteed",
            ),
            ("/kubepods", "kubepods"),
            ("/kubepods.slice/", "kubepods"),
            (
                "/docker/4f3e2d1c/kubepods/burstable/pod1/ctr",
                "kubepods-burstable",
            ),
            ("/system.slice/k3s.service", "system"),
            ("/system.slice/containerd.service", "system"),
            ("/init.scope", "system"),
            ("/user.slice/user-1000.slice/session-3.scope", "user"),
            ("/", "other"),
            ("", "other"),
            ("/machine.slice/libpod-1.scope", "other"),
            ("/kubepodsX/burstable/pod1", "other"),
        ];
        for (path, label) in cases {
            assert_eq!(OomScope::of_cgroup(path).label(), label, "{path}");
        }
    }

    #[test]
    fn oom_counts_accumulate_per_label_and_list_every_label() {
        let mut c = OomKillCounts::default();
        assert_eq!(
            c.record_oom("/kubepods/burstable/podA/ctr1"),
            OomScope::KubepodsBurstable
        );
        c.record_oom("/kubepods/burstable/podB/ctr2");
        c.record_oom("/system.slice/k3s.service");
        assert_eq!(c.get(OomScope::KubepodsBurstable), 2);
        assert_eq!(c.get(OomScope::System), 1);
        assert_eq!(c.get(OomScope::User), 0);
        let listed: Vec<_> = c.iter().collect();
        assert_eq!(listed.len(), OomScope::ALL.len());
        assert_eq!(listed.iter().map(|(_, n)| n).sum::<u64>(), 3);
    }

    proptest! {
        #[test]
        fn oom_labels_stay_within_the_fixed_set(path in "\\PC{0,120}") {
            let label = OomScope::of_cgroup(&path).label();
            prop_assert!(OomScope::ALL.iter().any(|s| s.label() == label));
        }

        /// Arbitrary (even hostile) inputs: no panic, ratios stay shares, and the
        /// condition only ever alternates raised/cleared.
        #[test]
        fn assessor_never_panics_and_transitions_alternate(
            steps in proptest::collection::vec(
                (0u64..20_000, any::<Option<(u64, u64)>>(), any::<Option<(u64, u64)>>(),
                 any::<Option<(u32, Option<u32>, u32, u32)>>(), any::<Option<(u64, u64, u64)>>()),
                1..120,
            )
        ) {
            let mut a = assessor();
            let mut now = Duration::ZERO;
            let mut raised = false;
            for (dt_ms, sys, pods, m, vm) in steps {
                // Mostly forward, sometimes equal or backwards.
                now = if dt_ms < 19_000 {
                    now + Duration::from_millis(dt_ms)
                } else {
                    Duration::from_millis(dt_ms - 19_000)
                };
                let obs = Observation {
                    now,
                    system_psi: sys.map(|(s, f)| psi(s, f)),
                    pods_psi: pods.map(|(s, f)| psi(s, f)),
                    watched_psi: None,
                    meminfo: m.map(|(t, av, st, sf)| {
                        mem(u64::from(t) + 1, av.map(u64::from), u64::from(st), u64::from(sf))
                    }),
                    vmstat: vm.map(|(i, o, k)| VmStat {
                        pswpin: i,
                        pswpout: o,
                        pgmajfault: 0,
                        oom_kill: Some(k),
                    }),
                };
                let x = a.observe(&obs);
                for w in [x.readings.system, x.readings.pods].into_iter().flatten() {
                    prop_assert!((0.0..=1.0).contains(&w.some));
                    prop_assert!(w.full.is_none_or(|f| (0.0..=1.0).contains(&f)));
                }
                if let Some(at) = x.attribution {
                    prop_assert!((0.0..=1.0).contains(&at.pods_share));
                }
                match x.transition {
                    Some(Transition::Raised) => {
                        prop_assert!(!raised);
                        raised = true;
                    }
                    Some(Transition::Cleared) => {
                        prop_assert!(raised);
                        raised = false;
                    }
                    None => {}
                }
                prop_assert_eq!(x.pressure, raised);
                prop_assert_eq!(x.reason.is_some(), raised);
            }
        }
    }
}
