//! The hardware watchdog: the last resort when the kernel itself wedges.
//!
//! A userspace daemon cannot act on a frozen node (an RCU stall that never recovers, a hung
//! NFS mount holding kernel locks), but a hardware timer that nobody feeds
//! resets the board. nodemedic feeds it every `timeout / 3` (as medik8s does) and only while
//! every daemon loop is alive, so a wedged daemon also ends in a reset; its reboot path
//! resets the board by simply no longer feeding.
//!
//! Only one process may hold `/dev/watchdog`. When systemd's `RuntimeWatchdogSec=` is set,
//! systemd holds it and a second opener gets `EBUSY`; then nodemedic must leave the device
//! alone (`Owner::Systemd`) and rely on its own service watchdog (`WatchdogSec=`).
//!
//! Closing the device without writing the magic character `V` does NOT stop the timer: the
//! kernel logs "watchdog did not stop!" and the board resets once the timeout passes. That
//! is the point of a watchdog, so dropping a device here is never a magic close; only a
//! deliberate clean stop disarms it.

pub mod device;
pub(crate) mod feeder;

use std::path::PathBuf;
use std::time::Duration;

use crate::config::WatchdogSection;
use crate::config::watchdog::Owner;
use crate::config::watchdog::{
    DEFAULT_DEVICE, DEFAULT_NO_WAY_OUT, DEFAULT_OWNER, DEFAULT_TIMEOUT, MIN_TIMEOUT,
};

#[cfg(any(test, feature = "fakes"))]
pub use device::{FakeEvent, FakeWatchdog, FakeWatchdogLog};
pub(crate) use device::{LinuxWatchdog, WatchdogDevice};
pub(crate) use feeder::{FeedPlan, Feeder, FeederHandle, METRIC_LAST_KEEPALIVE, METRIC_TIMEOUT};

/// bcm2835_wdt (Raspberry Pi) counts 20 bits of 1/65536 s ticks: at most ~15 s; the kernel
/// rejects larger values with EINVAL. The smallest maximum among the boards we target.
pub(crate) const PI_BCM2835_MAX_TIMEOUT: Duration = Duration::from_secs(15);

/// The watchdog part of nodemedic's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WatchdogConfig {
    pub(crate) owner: Owner,
    pub(crate) device: PathBuf,
    /// Requested timeout; clamped to what the driver supports (see [`clamp_timeout`]).
    pub(crate) timeout: Duration,
    /// Never disarm on a clean stop: a stopped nodemedic then also resets the board.
    pub(crate) no_way_out: bool,
}

impl WatchdogConfig {
    /// The watchdog `[watchdog]` describes.
    pub(crate) fn from_section(w: &WatchdogSection) -> WatchdogConfig {
        WatchdogConfig {
            owner: w.owner,
            device: PathBuf::from(&w.device),
            timeout: w.timeout.get(),
            no_way_out: w.no_way_out,
        }
    }
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        WatchdogConfig {
            owner: DEFAULT_OWNER,
            device: PathBuf::from(DEFAULT_DEVICE),
            timeout: DEFAULT_TIMEOUT,
            no_way_out: DEFAULT_NO_WAY_OUT,
        }
    }
}

/// Everything that can go wrong with the watchdog device, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WatchdogError {
    #[error(
        "cannot open {path}: device busy (EBUSY), another process holds the watchdog. Usually \
         systemd's RuntimeWatchdogSec= already holds /dev/watchdog: either unset it in \
         /etc/systemd/system.conf and reboot, or set watchdog.owner = \"systemd\" in \
         nodemedic's config (also check for a running `watchdog` daemon or a second nodemedic)"
    )]
    Busy { path: PathBuf },
    #[error(
        "cannot open {path}: {errno}, no watchdog driver is loaded. On a Raspberry Pi add \
         `dtparam=watchdog=on` to config.txt (/boot/firmware/config.txt) and reboot; elsewhere \
         load the board's watchdog driver module; or set watchdog.owner = \"none\""
    )]
    NoDriver {
        path: PathBuf,
        errno: nix::errno::Errno,
    },
    #[error(
        "cannot open {path}: permission denied; nodemedic must run as root to own the watchdog"
    )]
    Permission { path: PathBuf },
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{op} on {path} failed: {errno}")]
    Ioctl {
        path: PathBuf,
        op: &'static str,
        errno: nix::errno::Errno,
    },
    #[error(
        "writing the {what} to {path} failed: {source}; the watchdog stays armed and resets \
         the board unless it is fed again"
    )]
    Write {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("cannot start the watchdog feeder thread: {0}; is the node out of memory or tasks?")]
    Thread(std::io::Error),
    #[error("the watchdog feeder thread panicked; the device was closed without disarming it")]
    FeederPanicked,
}

/// Maps an `open(2)` failure on the watchdog device to an error that says what to do.
pub(crate) fn open_error(path: PathBuf, err: std::io::Error) -> WatchdogError {
    use nix::errno::Errno;
    match err.raw_os_error().map(Errno::from_raw) {
        Some(Errno::EBUSY) => WatchdogError::Busy { path },
        // ENODEV/ENXIO: a stale device node whose driver is gone.
        Some(e @ (Errno::ENOENT | Errno::ENODEV | Errno::ENXIO)) => {
            WatchdogError::NoDriver { path, errno: e }
        }
        Some(Errno::EACCES | Errno::EPERM) => WatchdogError::Permission { path },
        _ => WatchdogError::Open { path, source: err },
    }
}

/// The timeout to ask the driver for: whole seconds (the ioctl takes an int), at least
/// [`MIN_TIMEOUT`], at most the driver's maximum when known.
pub(crate) fn clamp_timeout(requested: Duration, driver_max: Option<Duration>) -> Duration {
    let secs = Duration::from_secs(requested.as_secs()).max(MIN_TIMEOUT);
    match driver_max {
        // A driver maximum below our minimum wins: the hardware cannot do more.
        Some(max) if !max.is_zero() => {
            secs.min(Duration::from_secs(max.as_secs()).max(Duration::from_secs(1)))
        }
        _ => secs,
    }
}

/// The timeout the feeder must work with, given what we asked for and what the driver
/// reported back after `WDIOC_SETTIMEOUT` (`None`: it could not say). Returns a note for
/// the log when the two differ.
pub(crate) fn settle_timeout(
    asked: Duration,
    reported: Option<Duration>,
) -> (Duration, Option<String>) {
    match reported {
        Some(r) if r.is_zero() => (
            asked,
            Some(format!(
                "the driver reported a 0 s timeout; assuming the requested {} s",
                asked.as_secs()
            )),
        ),
        Some(r) if r != asked => (
            r,
            Some(format!(
                "the driver uses a {} s timeout instead of the requested {} s; feeding for {} s",
                r.as_secs(),
                asked.as_secs(),
                r.as_secs()
            )),
        ),
        Some(r) => (r, None),
        None => (
            asked,
            Some(format!(
                "the device did not report its timeout (not a watchdog driver, e.g. a test file); \
                 assuming the requested {} s",
                asked.as_secs()
            )),
        ),
    }
}

/// The outcome of configuring an open device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Armed {
    /// The timeout the hardware runs with (feed every third of it).
    pub(crate) timeout: Duration,
    /// What was adjusted and why, for the log.
    pub(crate) notes: Vec<String>,
}

/// Sets the timeout on an open device: clamp to the driver maximum, ask, and believe what
/// the driver reports back. When the maximum is unknown and the driver rejects the value
/// (EINVAL), retries once with the Pi's maximum.
pub(crate) fn configure<D: WatchdogDevice>(
    dev: &mut D,
    requested: Duration,
) -> Result<Armed, WatchdogError> {
    let mut notes = Vec::new();
    let max = dev.max_timeout();
    let mut asked = clamp_timeout(requested, max);
    if asked != Duration::from_secs(requested.as_secs()) {
        notes.push(format!(
            "requested watchdog timeout {} s adjusted to {} s (driver maximum {}, minimum {} s)",
            requested.as_secs(),
            asked.as_secs(),
            max.map_or("unknown".to_string(), |m| format!("{} s", m.as_secs())),
            MIN_TIMEOUT.as_secs()
        ));
    }
    let reported = match dev.set_timeout(asked) {
        Ok(r) => r,
        Err(WatchdogError::Ioctl {
            errno: nix::errno::Errno::EINVAL,
            ..
        }) if max.is_none() && asked > PI_BCM2835_MAX_TIMEOUT => {
            notes.push(format!(
                "the driver rejected {} s (EINVAL); retrying with {} s, the Raspberry Pi maximum",
                asked.as_secs(),
                PI_BCM2835_MAX_TIMEOUT.as_secs()
            ));
            asked = PI_BCM2835_MAX_TIMEOUT;
            dev.set_timeout(asked)?
        }
        Err(e) => return Err(e),
    };
    let reported = match reported {
        Some(r) => Some(r),
        // Some drivers cannot set but can tell; a fixed shorter timeout must be known.
        None => dev.get_timeout().ok().flatten(),
    };
    let (timeout, note) = settle_timeout(asked, reported);
    notes.extend(note);
    Ok(Armed { timeout, notes })
}

/// Opens, configures and starts feeding the device when nodemedic owns it; `Ok(None)` when
/// the configuration gives the device to systemd or nobody.
pub(crate) fn start(
    config: &WatchdogConfig,
    healthy: impl Fn() -> bool + Send + 'static,
) -> Result<Option<Feeder>, WatchdogError> {
    if config.owner != Owner::Nodemedic {
        return Ok(None);
    }
    let dev = LinuxWatchdog::open(&config.device)?;
    start_device(dev, config, healthy, None)
}

/// Configures an open device and starts feeding it. Any error after the open disarms it
/// with a magic close: a device left armed with nobody feeding it resets the board, at
/// every boot (issue 17, point 5).
pub(crate) fn start_device<D: WatchdogDevice + 'static>(
    mut dev: D,
    config: &WatchdogConfig,
    healthy: impl Fn() -> bool + Send + 'static,
    feeder_stack: Option<usize>,
) -> Result<Option<Feeder>, WatchdogError> {
    let armed = match configure(&mut dev, config.timeout) {
        Ok(a) => a,
        Err(e) => {
            if let Err(c) = dev.magic_close() {
                log::error!("disarming the watchdog after {e} failed too: {c}");
            }
            return Err(e);
        }
    };
    for n in &armed.notes {
        log::warn!("watchdog {}: {n}", config.device.display());
    }
    let plan = FeedPlan::for_timeout(armed.timeout, config.no_way_out);
    log::info!(
        "feeding hardware watchdog {} every {} ms (timeout {} s{})",
        config.device.display(),
        plan.period.as_millis(),
        plan.timeout.as_secs(),
        if config.no_way_out {
            ", no way out"
        } else {
            ""
        }
    );
    Feeder::start_with_stack(dev, plan, healthy, feeder_stack).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn defaults_are_opt_in_on_dev_watchdog_with_the_pi_maximum() {
        let c = WatchdogConfig::default();
        assert_eq!(c.owner, Owner::None);
        assert_eq!(c.device, PathBuf::from("/dev/watchdog"));
        assert_eq!(c.timeout, S(15));
        assert!(!c.no_way_out);
    }

    fn owner_from(s: &str) -> Result<Owner, serde::de::value::Error> {
        use serde::Deserialize;
        use serde::de::IntoDeserializer;
        Owner::deserialize(s.into_deserializer())
    }

    #[test]
    fn owner_names_are_lowercase_in_config() {
        assert_eq!(owner_from("nodemedic").unwrap(), Owner::Nodemedic);
        assert_eq!(owner_from("systemd").unwrap(), Owner::Systemd);
        assert_eq!(owner_from("none").unwrap(), Owner::None);
        let err = owner_from("Systemd").unwrap_err().to_string();
        assert!(err.contains("nodemedic") && err.contains("none"), "{err}");
    }

    #[test]
    fn a_timeout_above_the_pi_maximum_is_clamped_to_fifteen_seconds() {
        assert_eq!(clamp_timeout(S(60), Some(PI_BCM2835_MAX_TIMEOUT)), S(15));
        assert_eq!(clamp_timeout(S(16), Some(S(15))), S(15));
    }

    #[test]
    fn a_timeout_within_the_maximum_is_kept_in_whole_seconds() {
        assert_eq!(clamp_timeout(S(10), Some(S(15))), S(10));
        assert_eq!(clamp_timeout(S(15), Some(S(15))), S(15));
        assert_eq!(
            clamp_timeout(Duration::from_millis(10_900), Some(S(15))),
            S(10)
        );
    }

    #[test]
    fn an_unknown_maximum_keeps_the_requested_timeout() {
        assert_eq!(clamp_timeout(S(60), None), S(60));
        assert_eq!(clamp_timeout(S(60), Some(Duration::ZERO)), S(60));
    }

    #[test]
    fn a_tiny_timeout_is_raised_to_the_minimum_unless_the_hardware_cannot() {
        assert_eq!(clamp_timeout(S(1), Some(S(15))), MIN_TIMEOUT);
        assert_eq!(clamp_timeout(Duration::ZERO, None), MIN_TIMEOUT);
        // A driver whose maximum is 2 s: the hardware wins over our minimum.
        assert_eq!(clamp_timeout(S(15), Some(S(2))), S(2));
    }

    proptest::proptest! {
        #[test]
        fn a_clamped_timeout_is_whole_seconds_within_the_driver_and_our_bounds(
            req_ms in 0u64..10_000_000,
            max_s in proptest::option::of(0u64..10_000),
        ) {
            let max = max_s.map(Duration::from_secs);
            let t = clamp_timeout(Duration::from_millis(req_ms), max);
            proptest::prop_assert_eq!(t.subsec_nanos(), 0);
            proptest::prop_assert!(t >= Duration::from_secs(1));
            match max_s {
                Some(m) if m > 0 => {
                    proptest::prop_assert!(t <= Duration::from_secs(m.max(1)));
                    proptest::prop_assert!(t >= MIN_TIMEOUT.min(Duration::from_secs(m)));
                }
                _ => proptest::prop_assert!(t >= MIN_TIMEOUT),
            }
            proptest::prop_assert!(t <= Duration::from_millis(req_ms).max(MIN_TIMEOUT));
        }
    }

    #[test]
    fn a_smaller_reported_timeout_is_used_and_said() {
        let (t, note) = settle_timeout(S(15), Some(S(10)));
        assert_eq!(t, S(10));
        let note = note.unwrap();
        assert!(
            note.contains("10 s timeout instead of the requested 15 s"),
            "{note}"
        );
    }

    #[test]
    fn a_matching_reported_timeout_needs_no_note() {
        assert_eq!(settle_timeout(S(15), Some(S(15))), (S(15), None));
    }

    #[test]
    fn an_unreported_timeout_falls_back_to_the_request_and_says_so() {
        let (t, note) = settle_timeout(S(12), None);
        assert_eq!(t, S(12));
        assert!(note.unwrap().contains("did not report"));
        let (t, note) = settle_timeout(S(12), Some(Duration::ZERO));
        assert_eq!(t, S(12));
        assert!(note.unwrap().contains("0 s"));
    }

    #[test]
    fn ebusy_explains_that_systemd_holds_the_device_and_both_fixes() {
        let e = open_error(
            "/dev/watchdog".into(),
            io::Error::from_raw_os_error(libc::EBUSY),
        );
        assert!(matches!(e, WatchdogError::Busy { .. }));
        let m = e.to_string();
        assert!(m.contains("RuntimeWatchdogSec="), "{m}");
        assert!(m.contains("/etc/systemd/system.conf"), "{m}");
        assert!(m.contains("watchdog.owner = \"systemd\""), "{m}");
    }

    #[test]
    fn enoent_and_enodev_explain_the_missing_driver() {
        for errno in [libc::ENOENT, libc::ENODEV, libc::ENXIO] {
            let e = open_error("/dev/watchdog".into(), io::Error::from_raw_os_error(errno));
            assert!(matches!(e, WatchdogError::NoDriver { .. }), "{errno}");
            let m = e.to_string();
            assert!(m.contains("dtparam=watchdog=on"), "{m}");
            assert!(m.contains("driver module"), "{m}");
        }
    }

    #[test]
    fn other_open_errors_keep_the_os_error() {
        let e = open_error("/x".into(), io::Error::from_raw_os_error(libc::EACCES));
        assert!(e.to_string().contains("run as root"));
        let e = open_error("/x".into(), io::Error::from_raw_os_error(libc::EMFILE));
        assert!(matches!(e, WatchdogError::Open { .. }));
        assert!(e.to_string().contains("/x"));
    }

    #[test]
    fn configure_clamps_to_the_driver_maximum_and_believes_the_driver() {
        let mut dev = FakeWatchdog::new().with_max_timeout(S(15));
        let log = dev.log();
        let armed = configure(&mut dev, S(60)).unwrap();
        assert_eq!(armed.timeout, S(15));
        assert_eq!(log.events(), vec![FakeEvent::SetTimeout(S(15))]);
        assert!(
            armed.notes[0].contains("60 s adjusted to 15 s"),
            "{:?}",
            armed.notes
        );
    }

    #[test]
    fn configure_uses_a_smaller_value_the_driver_reports_after_settimeout() {
        let mut dev = FakeWatchdog::new().with_reported_timeout(Some(S(8)));
        let armed = configure(&mut dev, S(15)).unwrap();
        assert_eq!(armed.timeout, S(8));
        assert!(
            armed
                .notes
                .iter()
                .any(|n| n.contains("8 s timeout instead"))
        );
    }

    #[test]
    fn configure_retries_with_the_pi_maximum_when_an_unknown_driver_rejects_the_value() {
        let mut dev = FakeWatchdog::new().with_reject_above(S(15));
        let log = dev.log();
        let armed = configure(&mut dev, S(30)).unwrap();
        assert_eq!(armed.timeout, S(15));
        assert_eq!(
            log.events(),
            vec![FakeEvent::SetTimeout(S(30)), FakeEvent::SetTimeout(S(15))]
        );
        assert!(armed.notes.iter().any(|n| n.contains("EINVAL")));
    }

    #[test]
    fn configure_asks_gettimeout_when_settimeout_cannot_tell() {
        let mut dev = FakeWatchdog::new()
            .with_reported_timeout(None)
            .with_get_timeout(Some(S(9)));
        let armed = configure(&mut dev, S(15)).unwrap();
        assert_eq!(armed.timeout, S(9));
    }

    #[test]
    fn start_does_not_touch_the_device_unless_nodemedic_owns_it() {
        for owner in [Owner::Systemd, Owner::None] {
            let c = WatchdogConfig {
                owner,
                // Would fail with ENOENT if it were opened.
                device: "/nonexistent/watchdog".into(),
                ..WatchdogConfig::default()
            };
            assert!(start(&c, || true).unwrap().is_none());
        }
        let c = WatchdogConfig {
            owner: Owner::Nodemedic,
            device: "/nonexistent/watchdog".into(),
            ..WatchdogConfig::default()
        };
        assert!(matches!(
            start(&c, || true),
            Err(WatchdogError::NoDriver { .. })
        ));
    }

    #[test]
    fn the_config_defaults_are_the_watchdog_defaults() {
        assert_eq!(
            WatchdogConfig::from_section(&crate::config::WatchdogSection::default()),
            WatchdogConfig::default()
        );
    }

    /// Issue 17, point 5: an error after open (EINVAL from SETTIMEOUT even at the Pi's
    /// maximum, a feeder thread that cannot start) disarms the device: left armed, the
    /// board would reset at every boot.
    #[test]
    fn any_error_after_open_disarms_the_device_with_a_magic_close() {
        use crate::watchdog::device::{FakeEvent, FakeWatchdog};
        let cfg = WatchdogConfig {
            owner: Owner::Nodemedic,
            ..WatchdogConfig::default()
        };
        let dev = FakeWatchdog::new().with_reject_above(S(5));
        let log = dev.log();
        assert!(start_device(dev, &cfg, || true, None).is_err());
        let ev = log.events();
        assert_eq!(ev.last(), Some(&FakeEvent::MagicClose), "{ev:?}");
        assert!(!ev.contains(&FakeEvent::DroppedArmed), "{ev:?}");

        let dev = FakeWatchdog::new();
        let log = dev.log();
        let r = start_device(dev, &cfg, || true, Some(usize::MAX / 2));
        assert!(matches!(r, Err(WatchdogError::Thread(_))), "{r:?}");
        let ev = log.events();
        assert_eq!(ev.last(), Some(&FakeEvent::MagicClose), "{ev:?}");
        assert!(!ev.contains(&FakeEvent::DroppedArmed), "{ev:?}");
    }
}
