//! The power detector: the I/O around [`super::judge`]. It finds the sensors once (and
//! again every [`RESCAN`] while one is missing), waits on the under-voltage alarm with
//! poll(2) through [`Detector::wake_fd`], reads the thermal zones and the firmware's flags
//! every `power.interval`, and persists counts in `power-state.json`.
//!
//! Idle cost on a Pi: no wake-up for the alarm until it changes; one pass per
//! `power.interval` for the temperatures, on the shared periodic thread (which polls the
//! alarm's fd with the other detectors' timers). On a machine with none of the sensors,
//! one look every [`RESCAN`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::alarm::{AlarmFile, Watch};
use super::hwmon;
use super::judge::{Edge, JudgeConfig, PowerJudge, UnderVoltage};
use super::mailbox::{self, Mailbox, Throttled, Vcio};
use super::metrics::{PowerMetrics, ZoneLabels};
use super::store::{self, PowerRecord};
use super::thermal::{self, Zone, celsius};
use crate::config::PowerSection;
use crate::detect::{CheckNote, Detector, NoteLevel, Sample, WakeOn};
use crate::edge::{Clock, HostFiles};

/// How often sensors that were not found are looked for again (a driver loaded late).
pub(crate) const RESCAN: Duration = Duration::from_secs(600);
/// A rise of the alarm is saved at once, unless the last save is more recent than this:
/// a flapping supply must not turn into a write every two seconds on an SD card.
const SAVE_RISE_MIN_GAP: Duration = Duration::from_secs(10);
/// Other changes (falls, the thermal state) are saved at most this often.
const SAVE_OTHER_GAP: Duration = Duration::from_secs(60);

/// What the detector needs beside its config.
pub(crate) struct PowerDeps {
    pub(crate) files: Arc<dyn HostFiles>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) metrics: Option<PowerMetrics>,
    pub(crate) boot_id: String,
    /// None: nothing persisted (`check`).
    pub(crate) state_dir: Option<PathBuf>,
    /// None: open `/dev/vcio` under the host root when `power.mailbox` is on.
    pub(crate) mailbox: Option<Box<dyn Mailbox>>,
}

/// How the alarm is read.
enum AlarmSource {
    /// Held open: poll(2) when on kernfs, else read on a timer.
    File(AlarmFile),
    /// Through [`HostFiles`] on every pass (a fixture that cannot be opened as a file).
    Host(String),
}

pub(crate) struct PowerDetector {
    cfg: PowerSection,
    d: PowerDeps,
    judge: PowerJudge,
    alarm: Option<(String, AlarmSource)>,
    zones: Vec<Zone>,
    mailbox: Option<Box<dyn Mailbox>>,
    /// Why there is no mailbox (said once), or None while it works.
    mailbox_off: Option<String>,
    mailbox_failing: bool,
    last_firmware: Option<Throttled>,
    scanned_at: Option<Duration>,
    record: PowerRecord,
    dirty: bool,
    saved_at: Option<Duration>,
}

impl PowerDetector {
    pub fn new(cfg: PowerSection, mut d: PowerDeps) -> Self {
        let now_unix = d.clock.unix_secs();
        let now = d.clock.monotonic();
        let persisted = d.state_dir.as_deref().map(store::read);
        let mut record = match persisted {
            Some(Ok(Some(r))) => r,
            Some(Err(e)) => {
                log::warn!("power: {e}");
                PowerRecord::default()
            }
            _ => PowerRecord::default(),
        };
        let same_boot = record.boot_id == d.boot_id;
        let mut uv = UnderVoltage {
            episodes_total: record.episodes_total,
            ..Default::default()
        };
        if same_boot {
            // A restart within the boot: the alarm as last seen, so a set alarm is not a
            // new episode, and the times of the last episode on this boot's clock.
            let mono =
                |unix: u64| now.checked_sub(Duration::from_secs(now_unix.saturating_sub(unix)));
            uv.alarm = record.alarm;
            uv.episodes_boot = record.episodes_boot;
            uv.since = record
                .alarm
                .then(|| record.last_rise_unix.and_then(mono))
                .flatten();
            uv.cleared_at = record.last_fall_unix.and_then(mono);
        } else {
            record = PowerRecord {
                boot_id: d.boot_id.clone(),
                episodes_total: record.episodes_total,
                ..Default::default()
            };
        }
        if let Some(m) = &d.metrics {
            m.episodes_total.inc_by(uv.episodes_total);
            m.episodes_boot.set(uv.episodes_boot as i64);
        }
        let mailbox = d.mailbox.take();
        PowerDetector {
            judge: PowerJudge::new(JudgeConfig::from_section(&cfg), uv),
            cfg,
            d,
            alarm: None,
            zones: Vec::new(),
            mailbox,
            mailbox_off: None,
            mailbox_failing: false,
            last_firmware: None,
            scanned_at: None,
            record,
            dirty: false,
            saved_at: None,
        }
    }

    /// Looks for the sensors; says once what it found.
    fn scan(&mut self, now: Duration) {
        let first = self.scanned_at.is_none();
        self.scanned_at = Some(now);
        if self.alarm.is_none()
            && let Some(rel) = hwmon::find_alarm(self.d.files.as_ref())
        {
            let source = match AlarmFile::open(&self.d.files.path(&rel)) {
                Ok(f) => AlarmSource::File(f),
                Err(_) => AlarmSource::Host(rel.clone()),
            };
            log::info!(
                "power: under-voltage alarm {rel}, {}",
                match &source {
                    AlarmSource::File(f) if f.watch() == Watch::Notify =>
                        "waited on with poll(2)".to_string(),
                    _ => format!(
                        "read every {} (not on sysfs, so it cannot be waited on)",
                        crate::config::ConfigDuration(self.cfg.alarm_fallback_interval.get())
                    ),
                }
            );
            self.alarm = Some((rel, source));
        } else if first && self.alarm.is_none() {
            log::info!(
                "power: no hwmon chip named {} (not a Raspberry Pi, or raspberrypi-hwmon is not loaded): under-voltage is not watched",
                hwmon::CHIP_NAME
            );
        }
        if self.zones.is_empty() {
            self.zones = thermal::scan(self.d.files.as_ref());
            if first || !self.zones.is_empty() {
                log::info!(
                    "power: {} thermal zone(s){}",
                    self.zones.len(),
                    self.zones
                        .iter()
                        .map(|z| format!(
                            " {} ({}, first passive trip {})",
                            z.name,
                            z.kind,
                            z.first_passive()
                                .map(|t| format!("{:.1} C", celsius(t)))
                                .unwrap_or_else(|| "none".into())
                        ))
                        .collect::<Vec<_>>()
                        .join(",")
                );
            }
        }
        if self.mailbox.is_none() && self.mailbox_off.is_none() {
            if !self.cfg.mailbox {
                self.mailbox_off = Some("off (power.mailbox = false)".into());
            } else {
                let path = self.d.files.path(mailbox::VCIO);
                match Vcio::open(&path) {
                    Ok(v) => {
                        log::info!(
                            "power: firmware throttle flags read through {}",
                            path.display()
                        );
                        self.mailbox = Some(Box::new(v));
                    }
                    Err(e) => {
                        let why = if e.kind() == std::io::ErrorKind::NotFound {
                            format!(
                                "no {}: not a Raspberry Pi, or the device is not given to the service",
                                path.display()
                            )
                        } else {
                            format!("cannot open {}: {e}", path.display())
                        };
                        // Once, as info: a missing optional device is not an error.
                        log::info!("power: the firmware's throttle flags are not read ({why})");
                        self.mailbox_off = Some(why);
                    }
                }
            }
        }
    }

    fn read_alarm(&mut self) -> Option<Result<bool, String>> {
        let (rel, source) = self.alarm.as_ref()?;
        let text = match source {
            AlarmSource::File(f) => f.read().map_err(|e| format!("{rel}: {e}")),
            AlarmSource::Host(rel) => self
                .d
                .files
                .read_string(rel)
                .map_err(|e| format!("{rel}: {e}")),
        };
        let r = text.and_then(|t| hwmon::parse_alarm(&t));
        if r.is_err() {
            // A vanished chip (driver unloaded): look for it again next time, and never
            // poll a stale fd.
            self.alarm = None;
        }
        Some(r)
    }

    /// This pass's thermal finding: why it is hot, if it is.
    fn heat(
        &mut self,
        errors: &mut Vec<String>,
    ) -> (Option<(&'static str, String)>, Vec<serde_json::Value>) {
        let mut hottest: Option<(&'static str, String, i64)> = None;
        let mut seen = Vec::new();
        for z in &self.zones {
            let t = match self
                .d
                .files
                .read_string(&z.temp_path())
                .map_err(|e| e.to_string())
                .and_then(|t| thermal::parse_temp(&t))
            {
                Ok(t) => t,
                Err(e) => {
                    errors.push(format!("{}: {e}", z.name));
                    continue;
                }
            };
            let passive = z.first_passive();
            if let Some(m) = &self.d.metrics {
                let l = ZoneLabels {
                    zone: z.name.clone(),
                    r#type: z.kind.clone(),
                };
                m.zone_temperature.get_or_create(&l).set(celsius(t));
                if let Some(p) = passive {
                    m.zone_passive_trip.get_or_create(&l).set(celsius(p));
                }
            }
            seen.push(serde_json::json!({
                "zone": z.name, "type": z.kind, "celsius": celsius(t),
                "passive_trip_celsius": passive.map(celsius),
                "critical_celsius": z.critical().map(celsius),
            }));
            if let Some(p) = passive
                && t >= p
                && hottest.as_ref().is_none_or(|h| t - p > h.2)
            {
                hottest = Some((
                    "AbovePassiveTrip",
                    format!(
                        "{} ({}) at {:.1} C, at or above its passive trip point {:.1} C: the kernel throttles the CPU",
                        z.kind,
                        z.name,
                        celsius(t),
                        celsius(p)
                    ),
                    t - p,
                ));
            }
        }
        let firmware = self.last_firmware.filter(|f| f.thermal()).map(|f| {
            (
                "FirmwareThrottling",
                format!("the firmware throttles the CPU for heat: {}", f.describe()),
            )
        });
        (hottest.map(|(r, w, _)| (r, w)).or(firmware), seen)
    }

    fn read_firmware(&mut self) {
        let Some(mb) = self.mailbox.as_mut() else {
            return;
        };
        match mb.throttled() {
            Ok(t) => {
                if self.mailbox_failing {
                    log::info!("power: /dev/vcio answers again");
                    self.mailbox_failing = false;
                }
                if let Some(m) = &self.d.metrics {
                    m.firmware_flags(t);
                }
                self.last_firmware = Some(t);
            }
            Err(e) => {
                if !self.mailbox_failing {
                    log::warn!("power: {e}");
                    self.mailbox_failing = true;
                }
                self.last_firmware = None;
            }
        }
    }

    fn save(&mut self, now: Duration, rose: bool) {
        let Some(dir) = self.d.state_dir.clone() else {
            return;
        };
        let gap = if rose {
            SAVE_RISE_MIN_GAP
        } else {
            SAVE_OTHER_GAP
        };
        if !self.dirty || self.saved_at.is_some_and(|s| now.saturating_sub(s) < gap) {
            return;
        }
        self.flush(&dir, now);
    }

    fn flush(&mut self, dir: &std::path::Path, now: Duration) {
        self.record.saved_unix = self.d.clock.unix_secs();
        match store::write(dir, &self.record) {
            Ok(()) => {
                self.dirty = false;
                self.saved_at = Some(now);
            }
            Err(e) => log::warn!("power: cannot save {}: {e}", store::POWER_FILE),
        }
    }

    fn notes(&self) -> Vec<CheckNote> {
        let mut v = Vec::new();
        v.push(match &self.alarm {
            Some((rel, AlarmSource::File(f))) if f.watch() == Watch::Notify => {
                CheckNote::new(NoteLevel::Ok, "under-voltage sensor", format!("{rel}, waited on with poll(2)"))
            }
            Some((rel, _)) => CheckNote::new(
                NoteLevel::Ok,
                "under-voltage sensor",
                format!("{rel}, read every {}", crate::config::ConfigDuration(self.cfg.alarm_fallback_interval.get())),
            ),
            None => CheckNote::new(
                NoteLevel::Info,
                "under-voltage sensor",
                format!("no hwmon chip named {}: not a Raspberry Pi, or raspberrypi-hwmon is not loaded", hwmon::CHIP_NAME),
            ),
        });
        v.push(CheckNote::new(
            NoteLevel::Info,
            "thermal zones",
            if self.zones.is_empty() {
                "none".to_string()
            } else {
                self.zones
                    .iter()
                    .map(|z| match z.first_passive() {
                        Some(p) => {
                            format!("{} ({}) passive trip {:.1} C", z.name, z.kind, celsius(p))
                        }
                        None => format!("{} ({}) no passive trip", z.name, z.kind),
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            },
        ));
        v.push(match (&self.mailbox, &self.mailbox_off) {
            (Some(_), _) => CheckNote::new(
                NoteLevel::Ok,
                "firmware throttle flags",
                match self.last_firmware {
                    Some(t) => format!("read through /dev/vcio: {}", t.describe()),
                    None => "/dev/vcio does not answer".to_string(),
                },
            ),
            (None, Some(why)) => {
                CheckNote::new(NoteLevel::Info, "firmware throttle flags", why.clone())
            }
            (None, None) => CheckNote::new(NoteLevel::Info, "firmware throttle flags", "not read"),
        });
        if self.zones.iter().all(|z| z.first_passive().is_none())
            && self.mailbox.is_none()
            && self.alarm.is_some()
        {
            v.push(CheckNote::new(
                NoteLevel::Warn,
                "thermal throttling",
                "no passive trip point and no /dev/vcio: a Pi 4 or 5 throttling for heat (which it does silently, in firmware) cannot be seen; give the service /dev/vcio",
            ));
        }
        v
    }
}

impl Detector for PowerDetector {
    fn name(&self) -> &'static str {
        "power"
    }

    /// Sysfs reads and one mailbox call, each answered by a driver with its own timeout:
    /// bounded, so it runs on the shared periodic thread, which waits on the alarm's fd
    /// too (issue 21: the temperatures then cost no wake-up of their own).
    fn shares_timer(&self) -> bool {
        true
    }

    fn interval(&self) -> Duration {
        let periodic_alarm = matches!(self.alarm, Some((_, AlarmSource::Host(_))))
            || matches!(&self.alarm, Some((_, AlarmSource::File(f))) if f.watch() == Watch::Periodic);
        let mut i = if periodic_alarm {
            self.cfg
                .interval
                .get()
                .min(self.cfg.alarm_fallback_interval.get())
        } else if !self.zones.is_empty() || self.mailbox.is_some() {
            self.cfg.interval.get()
        } else {
            RESCAN
        };
        // A recent episode clears when its quiet time is up: wake for that.
        let now = self.d.clock.monotonic();
        if !self.judge.uv.alarm
            && let Some(at) = self.judge.uv.cleared_at
        {
            let left = (at + self.cfg.under_voltage_quiet.get()).saturating_sub(now);
            if !left.is_zero() {
                i = i.min(left + Duration::from_millis(100));
            }
        }
        if self.dirty {
            i = i.min(SAVE_OTHER_GAP);
        }
        i.max(Duration::from_millis(100))
    }

    fn wake_fd(&self) -> Option<(std::os::fd::RawFd, WakeOn)> {
        match &self.alarm {
            Some((_, AlarmSource::File(f))) if f.watch() == Watch::Notify => {
                Some((f.fd(), WakeOn::Notify))
            }
            _ => None,
        }
    }

    fn sample(&mut self) -> Result<Sample, String> {
        let now = self.d.clock.monotonic();
        let missing = self.alarm.is_none() || self.zones.is_empty();
        if self
            .scanned_at
            .is_none_or(|s| missing && now.saturating_sub(s) >= RESCAN)
        {
            self.scan(now);
        }
        let mut errors = Vec::new();
        let mut rose = false;
        match self.read_alarm() {
            Some(Ok(a)) => {
                if let Some(m) = &self.d.metrics {
                    m.under_voltage.set(i64::from(a));
                }
                match self.judge.uv.observe(a, now) {
                    Some(Edge::Rose) => {
                        rose = true;
                        log::warn!(
                            "power: the firmware reports UNDER-VOLTAGE (episode {} this boot, {} in total): check the power supply and cable",
                            self.judge.uv.episodes_boot,
                            self.judge.uv.episodes_total
                        );
                        if let Some(m) = &self.d.metrics {
                            m.episodes_total.inc();
                            m.episodes_boot.set(self.judge.uv.episodes_boot as i64);
                        }
                        let unix = self.d.clock.unix_secs();
                        self.record.alarm = true;
                        self.record.episodes_boot = self.judge.uv.episodes_boot;
                        self.record.episodes_total = self.judge.uv.episodes_total;
                        self.record.last_rise_unix = Some(unix);
                        self.dirty = true;
                    }
                    Some(Edge::Fell) => {
                        log::info!("power: voltage back to normal");
                        self.record.alarm = false;
                        self.record.last_fall_unix = Some(self.d.clock.unix_secs());
                        self.dirty = true;
                    }
                    None => {}
                }
            }
            Some(Err(e)) => {
                if let Some(m) = &self.d.metrics {
                    m.under_voltage.set(-1);
                }
                errors.push(e);
            }
            None => {}
        }
        self.read_firmware();
        let (hot, zones) = self.heat(&mut errors);
        let was = self.judge.heat.held;
        self.judge.heat.observe(hot, now);
        let conditions = self.judge.conditions(now);
        if self.judge.heat.held != was {
            self.record.throttling = self.judge.heat.held;
            self.record.throttling_why = conditions
                .iter()
                .find(|c| c.kind == crate::model::ConditionKind::ThermalThrottling)
                .map(|c| c.message.clone())
                .unwrap_or_default();
            self.dirty = true;
        }
        if let Some(f) = self.last_firmware
            && self.record.firmware_flags != Some(f.0)
        {
            self.record.firmware_flags = Some(f.0);
            self.dirty = true;
        }
        self.save(now, rose);
        let info = serde_json::json!({
            "under_voltage_alarm": self.alarm.as_ref().map(|(rel, _)| rel),
            "watch": match &self.alarm {
                Some((_, AlarmSource::File(f))) => Some(f.watch()),
                Some((_, AlarmSource::Host(_))) => Some(Watch::Periodic),
                None => None,
            },
            "under_voltage": self.judge.uv.alarm,
            "episodes_this_boot": self.judge.uv.episodes_boot,
            "episodes_total": self.judge.uv.episodes_total,
            "thermal_zones": zones,
            "firmware_flags": self.last_firmware.map(|f| f.describe()),
            "firmware_flags_off": self.mailbox_off,
            "errors": errors,
        });
        Ok(Sample {
            conditions,
            info,
            notes: self.notes(),
        })
    }
}

impl Drop for PowerDetector {
    fn drop(&mut self) {
        if self.dirty
            && let Some(dir) = self.d.state_dir.clone()
        {
            let now = self.d.clock.monotonic();
            self.flush(&dir, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::mailbox::ScriptedMailbox;
    use super::*;
    use crate::edge::{FakeClock, FakeFiles};
    use crate::model::ConditionKind;
    use std::collections::VecDeque;
    use std::sync::atomic::AtomicUsize;

    const ALARM: &str = "sys/class/hwmon/hwmon2/in0_lcrit_alarm";

    /// A Pi 4's tree: rpi_volt as hwmon2 beside the SoC's sensor, one zone with only a
    /// critical trip (the firmware throttles on its own).
    fn pi4() -> Arc<FakeFiles> {
        Arc::new(FakeFiles::with(&[
            ("sys/class/hwmon/hwmon0/name", "cpu_thermal\n"),
            ("sys/class/hwmon/hwmon2/name", "rpi_volt\n"),
            (ALARM, "0\n"),
            ("sys/class/thermal/thermal_zone0/type", "cpu-thermal\n"),
            ("sys/class/thermal/thermal_zone0/temp", "51000\n"),
            (
                "sys/class/thermal/thermal_zone0/trip_point_0_type",
                "critical\n",
            ),
            (
                "sys/class/thermal/thermal_zone0/trip_point_0_temp",
                "110000\n",
            ),
        ]))
    }

    fn detector(
        files: Arc<FakeFiles>,
        clock: Arc<FakeClock>,
        state: Option<PathBuf>,
        mailbox: Option<Box<dyn Mailbox>>,
    ) -> PowerDetector {
        PowerDetector::new(
            PowerSection::default(),
            PowerDeps {
                files,
                clock,
                metrics: None,
                boot_id: "boot-1".into(),
                state_dir: state,
                mailbox,
            },
        )
    }

    fn held(s: &Sample, k: ConditionKind) -> Option<&crate::model::Condition> {
        s.conditions.iter().find(|c| c.kind == k)
    }

    #[test]
    fn episodes_are_counted_from_alarm_transitions_and_the_deprecated_file_is_never_read() {
        let files = pi4();
        let clock = Arc::new(FakeClock::new(1_700_000_000, Duration::from_secs(100)));
        let mut d = detector(files.clone(), clock.clone(), None, None);
        let script = ["0", "1", "1", "0", "1", "0", "0", "1", "1", "0"];
        let mut last = None;
        for v in script {
            files.put(ALARM, &format!("{v}\n"));
            last = Some(d.sample().unwrap());
            clock.advance(Duration::from_secs(5));
        }
        assert_eq!(d.judge.uv.episodes_boot, 3, "three rises");
        let s = last.unwrap();
        assert_eq!(s.info["episodes_this_boot"], 3);
        assert_eq!(
            held(&s, ConditionKind::UnderVoltage).unwrap().reason,
            "UnderVoltageRecently"
        );
        let reads = files.reads.lock().unwrap();
        assert!(reads.iter().any(|r| r == ALARM));
        assert!(
            !reads.iter().any(|r| r.contains("get_throttled")),
            "{reads:?}"
        );
        assert!(!reads.iter().any(|r| r == hwmon::DEPRECATED_GET_THROTTLED));
        // The fake's alarm cannot be opened as a file: read through HostFiles on a timer.
        assert!(d.wake_fd().is_none());
        assert_eq!(d.interval(), Duration::from_secs(5));
    }

    #[test]
    fn a_pi4_throttling_silently_is_seen_through_the_firmware_flags_only() {
        let files = pi4();
        let clock = Arc::new(FakeClock::new(1_700_000_000, Duration::from_secs(100)));
        let calls = Arc::new(AtomicUsize::new(0));
        // Soft temperature limit active (bit 3): the zone itself is far from any trip.
        let mb = ScriptedMailbox {
            answers: VecDeque::from([Ok(0), Ok(0x8_0008)]),
            calls: calls.clone(),
        };
        let mut d = detector(files, clock.clone(), None, Some(Box::new(mb)));
        assert!(held(&d.sample().unwrap(), ConditionKind::ThermalThrottling).is_none());
        for _ in 0..4 {
            clock.advance(Duration::from_secs(15));
            let s = d.sample().unwrap();
            assert!(
                held(&s, ConditionKind::ThermalThrottling).is_none(),
                "{:?}",
                s.conditions
            );
        }
        clock.advance(Duration::from_secs(15));
        let s = d.sample().unwrap();
        let c = held(&s, ConditionKind::ThermalThrottling).expect("held after 60 s");
        assert_eq!(c.reason, "FirmwareThrottling");
        assert!(c.message.contains("soft_temp_limit"), "{}", c.message);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 6);
    }

    #[test]
    fn a_zone_over_its_passive_trip_for_the_sustain_raises_thermal_throttling() {
        let files = pi4();
        files.put(
            "sys/class/thermal/thermal_zone0/trip_point_1_type",
            "passive\n",
        );
        files.put(
            "sys/class/thermal/thermal_zone0/trip_point_1_temp",
            "80000\n",
        );
        files.put("sys/class/thermal/thermal_zone0/temp", "80500\n");
        let clock = Arc::new(FakeClock::new(1_700_000_000, Duration::from_secs(100)));
        let mut d = detector(files, clock.clone(), None, None);
        d.sample().unwrap();
        clock.advance(Duration::from_secs(60));
        let s = d.sample().unwrap();
        let c = held(&s, ConditionKind::ThermalThrottling).unwrap();
        assert_eq!(c.reason, "AbovePassiveTrip");
        assert!(
            c.message.contains("80.5 C") && c.message.contains("80.0 C"),
            "{}",
            c.message
        );
    }

    #[test]
    fn a_restart_in_the_same_boot_counts_no_episode_twice_and_a_new_boot_keeps_the_total() {
        let dir = tempfile::tempdir().unwrap();
        let files = pi4();
        let clock = Arc::new(FakeClock::new(1_700_000_000, Duration::from_secs(100)));
        files.put(ALARM, "1\n");
        {
            let mut d = detector(files.clone(), clock.clone(), Some(dir.path().into()), None);
            d.sample().unwrap();
        } // dropped: saved
        let r = store::read(dir.path()).unwrap().unwrap();
        assert_eq!((r.alarm, r.episodes_boot, r.episodes_total), (true, 1, 1));
        clock.advance(Duration::from_secs(30));
        let mut d = detector(files.clone(), clock.clone(), Some(dir.path().into()), None);
        let s = d.sample().unwrap();
        assert_eq!(s.info["episodes_this_boot"], 1, "still the same episode");
        let c = held(&s, ConditionKind::UnderVoltage).unwrap();
        assert!(c.message.contains("for 30s"), "{}", c.message);
        drop(d);
        let mut d = PowerDetector::new(
            PowerSection::default(),
            PowerDeps {
                files: files.clone(),
                clock: clock.clone(),
                metrics: None,
                boot_id: "boot-2".into(),
                state_dir: Some(dir.path().into()),
                mailbox: None,
            },
        );
        let s = d.sample().unwrap();
        assert_eq!(
            (
                s.info["episodes_this_boot"].as_u64(),
                s.info["episodes_total"].as_u64()
            ),
            (Some(1), Some(2)),
            "a new boot with the alarm set is a new episode"
        );
    }

    #[test]
    fn without_any_sensor_the_detector_idles_and_says_so_once() {
        let files = Arc::new(FakeFiles::with(&[("proc/meminfo", "x")]));
        let clock = Arc::new(FakeClock::new(1_700_000_000, Duration::from_secs(100)));
        let mut d = detector(files, clock, None, None);
        let s = d.sample().unwrap();
        assert!(s.conditions.is_empty());
        assert_eq!(d.interval(), RESCAN);
        assert!(d.wake_fd().is_none());
        assert!(
            s.notes
                .iter()
                .any(|n| n.item == "firmware throttle flags"
                    && n.detail.contains("no /fake/dev/vcio")),
            "{:?}",
            s.notes
        );
    }
}
