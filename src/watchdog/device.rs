//! The watchdog device edge: the Linux character device and a recording fake.
//!
//! The Linux API (Documentation/watchdog/watchdog-api.rst): opening starts the timer;
//! `WDIOC_KEEPALIVE` or any write resets it; `WDIOC_SETTIMEOUT` takes seconds and writes back
//! what the driver really uses; writing `V` right before close ("magic close") stops it.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
#[cfg(any(test, feature = "fakes"))]
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
#[cfg(any(test, feature = "fakes"))]
use std::time::Instant;

use nix::errno::Errno;

use super::{WatchdogError, open_error};

/// Written as a keep-alive when the keep-alive ioctl is unsupported (ENOTTY: a plain file
/// standing in for the device). Any byte but `V` resets the timer; NUL as the `watchdog`
/// daemon writes.
pub(crate) const KEEPALIVE_BYTE: u8 = b'\0';
/// The magic-close character of the Linux watchdog API.
pub(crate) const MAGIC_CLOSE_BYTE: u8 = b'V';
/// Where the watchdog class lives in sysfs (`<sysfs>/class/watchdog/watchdogN/max_timeout`).
pub(crate) const DEFAULT_SYSFS: &str = "/sys";

/// An open watchdog device. Dropping it is NOT a magic close: the timer keeps running and
/// the board resets unless someone feeds it again.
pub(crate) trait WatchdogDevice: Send {
    /// Opens the device, which starts the timer on a real driver.
    fn open(path: &Path) -> Result<Self, WatchdogError>
    where
        Self: Sized;
    fn path(&self) -> &Path;
    /// The driver's largest timeout, when it can be learnt.
    fn max_timeout(&self) -> Option<Duration>;
    /// Asks for `timeout` (whole seconds); returns the timeout the driver reports it now
    /// uses, or `None` when the device cannot say.
    fn set_timeout(&mut self, timeout: Duration) -> Result<Option<Duration>, WatchdogError>;
    fn get_timeout(&mut self) -> Result<Option<Duration>, WatchdogError>;
    /// Resets the timer.
    fn keepalive(&mut self) -> Result<(), WatchdogError>;
    /// Writes `V` and closes: the driver stops the timer (unless built with nowayout).
    fn magic_close(self) -> Result<(), WatchdogError>
    where
        Self: Sized;
}

/// The watchdog ioctls from <linux/watchdog.h> (`WATCHDOG_IOCTL_BASE` is 'W').
mod ioctls {
    nix::ioctl_read!(keepalive, b'W', 5, libc::c_int);
    nix::ioctl_readwrite!(set_timeout, b'W', 6, libc::c_int);
    nix::ioctl_read!(get_timeout, b'W', 7, libc::c_int);
}

/// A Linux watchdog character device (or a plain file standing in for one in tests).
#[derive(Debug)]
pub(crate) struct LinuxWatchdog {
    file: File,
    path: PathBuf,
    sysfs: PathBuf,
    /// Set after the keep-alive ioctl gave ENOTTY: write bytes from then on.
    keepalive_by_write: bool,
}

impl LinuxWatchdog {
    /// Opens `path` write-only with close-on-exec (a forked repair command must not inherit
    /// the device: its exit would close it without a magic close).
    pub(crate) fn open_with_sysfs(path: &Path, sysfs: &Path) -> Result<Self, WatchdogError> {
        // std opens with O_CLOEXEC; no O_CREAT: a missing device must stay an error.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| open_error(path.to_path_buf(), e))?;
        Ok(LinuxWatchdog {
            file,
            path: path.to_path_buf(),
            sysfs: sysfs.to_path_buf(),
            keepalive_by_write: false,
        })
    }

    fn ioctl_err(&self, op: &'static str, errno: Errno) -> WatchdogError {
        WatchdogError::Ioctl {
            path: self.path.clone(),
            op,
            errno,
        }
    }

    fn write_byte(&mut self, byte: u8, what: &'static str) -> Result<(), WatchdogError> {
        self.file
            .write_all(&[byte])
            .map_err(|source| WatchdogError::Write {
                path: self.path.clone(),
                what,
                source,
            })
    }
}

/// ENOTTY: not a watchdog driver (a plain file); EOPNOTSUPP: the driver cannot set or does
/// not know its timeout. Both mean "unknown", not failure. EINVAL (out of range) is an error.
fn unsupported(e: Errno) -> bool {
    matches!(e, Errno::ENOTTY | Errno::EOPNOTSUPP)
}

impl WatchdogDevice for LinuxWatchdog {
    fn open(path: &Path) -> Result<Self, WatchdogError> {
        Self::open_with_sysfs(path, Path::new(DEFAULT_SYSFS))
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn max_timeout(&self) -> Option<Duration> {
        let p = max_timeout_path(&self.sysfs, &self.path)?;
        parse_max_timeout(&std::fs::read_to_string(p).ok()?)
    }

    fn set_timeout(&mut self, timeout: Duration) -> Result<Option<Duration>, WatchdogError> {
        let mut secs = libc::c_int::try_from(timeout.as_secs()).unwrap_or(libc::c_int::MAX);
        // SAFETY: the fd is open for the lifetime of self and `secs` outlives the call.
        match unsafe { ioctls::set_timeout(self.file.as_raw_fd(), &mut secs) } {
            Ok(_) => Ok(reported(secs)),
            Err(e) if unsupported(e) => Ok(None),
            Err(e) => Err(self.ioctl_err("WDIOC_SETTIMEOUT", e)),
        }
    }

    fn get_timeout(&mut self) -> Result<Option<Duration>, WatchdogError> {
        let mut secs: libc::c_int = 0;
        // SAFETY: as in set_timeout.
        match unsafe { ioctls::get_timeout(self.file.as_raw_fd(), &mut secs) } {
            Ok(_) => Ok(reported(secs)),
            Err(e) if unsupported(e) => Ok(None),
            Err(e) => Err(self.ioctl_err("WDIOC_GETTIMEOUT", e)),
        }
    }

    fn keepalive(&mut self) -> Result<(), WatchdogError> {
        if self.keepalive_by_write {
            return self.write_byte(KEEPALIVE_BYTE, "keep-alive byte");
        }
        let mut dummy: libc::c_int = 0;
        // SAFETY: as in set_timeout; the kernel ignores the argument.
        match unsafe { ioctls::keepalive(self.file.as_raw_fd(), &mut dummy) } {
            Ok(_) => Ok(()),
            Err(Errno::ENOTTY) => {
                log::debug!(
                    "{}: WDIOC_KEEPALIVE gives ENOTTY; feeding by writing bytes",
                    self.path.display()
                );
                self.keepalive_by_write = true;
                self.write_byte(KEEPALIVE_BYTE, "keep-alive byte")
            }
            Err(e) => Err(self.ioctl_err("WDIOC_KEEPALIVE", e)),
        }
    }

    fn magic_close(mut self) -> Result<(), WatchdogError> {
        self.write_byte(MAGIC_CLOSE_BYTE, "magic close character 'V'")
        // The file closes when `self` drops here.
    }
}

fn reported(secs: libc::c_int) -> Option<Duration> {
    u64::try_from(secs)
        .ok()
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
}

/// `<sysfs>/class/watchdog/watchdogN/max_timeout` for `/dev/watchdogN`; `/dev/watchdog` is
/// the legacy name of watchdog0. `None` for any other name.
pub(crate) fn max_timeout_path(sysfs: &Path, device: &Path) -> Option<PathBuf> {
    let name = device.file_name()?.to_str()?;
    let index = name.strip_prefix("watchdog")?;
    let node = match index {
        "" => "watchdog0".to_string(),
        d if d.bytes().all(|b| b.is_ascii_digit()) => name.to_string(),
        _ => return None,
    };
    Some(sysfs.join("class/watchdog").join(node).join("max_timeout"))
}

/// Parses sysfs `max_timeout` (decimal seconds and a newline); zero means unknown.
pub(crate) fn parse_max_timeout(text: &str) -> Option<Duration> {
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
}

#[cfg(any(test, feature = "fakes"))]
/// What the fake device saw, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeEvent {
    SetTimeout(Duration),
    Keepalive,
    MagicClose,
    /// Dropped without a magic close: a real board would reset after the timeout.
    DroppedArmed,
}

#[cfg(any(test, feature = "fakes"))]
/// The shared record of a [`FakeWatchdog`], readable after the device moved into a feeder.
#[derive(Debug, Clone, Default)]
pub struct FakeWatchdogLog(Arc<(Mutex<Vec<FakeEvent>>, Condvar)>);

#[cfg(any(test, feature = "fakes"))]
impl FakeWatchdogLog {
    fn push(&self, e: FakeEvent) {
        self.0.0.lock().unwrap_or_else(|p| p.into_inner()).push(e);
        self.0.1.notify_all();
    }

    pub fn events(&self) -> Vec<FakeEvent> {
        self.0.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn keepalives(&self) -> usize {
        self.events()
            .iter()
            .filter(|e| **e == FakeEvent::Keepalive)
            .count()
    }

    /// Blocks until `pred` holds for the events so far, or `timeout` passes.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&[FakeEvent]) -> bool) -> bool {
        let end = Instant::now() + timeout;
        let mut g = self.0.0.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if pred(&g) {
                return true;
            }
            let Some(left) = end.checked_duration_since(Instant::now()) else {
                return false;
            };
            g = self
                .0
                .1
                .wait_timeout(g, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

#[cfg(any(test, feature = "fakes"))]
/// A recording fake that behaves like a driver as configured.
#[derive(Debug)]
pub struct FakeWatchdog {
    log: FakeWatchdogLog,
    path: PathBuf,
    max_timeout: Option<Duration>,
    /// `None`: reports back what was asked; `Some(r)`: reports `r`.
    reported: Option<Option<Duration>>,
    get_timeout: Option<Duration>,
    reject_above: Option<Duration>,
    failing_keepalive: bool,
    closed: bool,
}

#[cfg(any(test, feature = "fakes"))]
impl FakeWatchdog {
    pub fn new() -> Self {
        FakeWatchdog {
            log: FakeWatchdogLog::default(),
            path: PathBuf::from("fake-watchdog"),
            max_timeout: None,
            reported: None,
            get_timeout: None,
            reject_above: None,
            failing_keepalive: false,
            closed: false,
        }
    }

    /// The record; clone it before handing the device to a feeder.
    pub fn log(&self) -> FakeWatchdogLog {
        self.log.clone()
    }

    /// A driver that publishes its maximum (in sysfs on a real system).
    pub fn with_max_timeout(mut self, max: Duration) -> Self {
        self.max_timeout = Some(max);
        self
    }

    /// A driver that reports `r` after SETTIMEOUT whatever was asked.
    pub fn with_reported_timeout(mut self, r: Option<Duration>) -> Self {
        self.reported = Some(r);
        self
    }

    pub fn with_get_timeout(mut self, t: Option<Duration>) -> Self {
        self.get_timeout = t;
        self
    }

    /// A driver that rejects larger timeouts with EINVAL and does not publish its maximum.
    pub fn with_reject_above(mut self, max: Duration) -> Self {
        self.reject_above = Some(max);
        self
    }

    /// Every keep-alive fails (and is still recorded as attempted).
    pub fn with_failing_keepalive(mut self) -> Self {
        self.failing_keepalive = true;
        self
    }
}

#[cfg(any(test, feature = "fakes"))]
impl Default for FakeWatchdog {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(any(test, feature = "fakes"))]
impl WatchdogDevice for FakeWatchdog {
    fn open(path: &Path) -> Result<Self, WatchdogError> {
        let mut f = FakeWatchdog::new();
        f.path = path.to_path_buf();
        Ok(f)
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn max_timeout(&self) -> Option<Duration> {
        self.max_timeout
    }

    fn set_timeout(&mut self, timeout: Duration) -> Result<Option<Duration>, WatchdogError> {
        self.log.push(FakeEvent::SetTimeout(timeout));
        if self.reject_above.is_some_and(|m| timeout > m) {
            return Err(WatchdogError::Ioctl {
                path: self.path.clone(),
                op: "WDIOC_SETTIMEOUT",
                errno: Errno::EINVAL,
            });
        }
        Ok(self.reported.unwrap_or(Some(timeout)))
    }

    fn get_timeout(&mut self) -> Result<Option<Duration>, WatchdogError> {
        Ok(self.get_timeout)
    }

    fn keepalive(&mut self) -> Result<(), WatchdogError> {
        self.log.push(FakeEvent::Keepalive);
        if self.failing_keepalive {
            return Err(WatchdogError::Write {
                path: self.path.clone(),
                what: "keep-alive byte",
                source: std::io::Error::from_raw_os_error(libc::EIO),
            });
        }
        Ok(())
    }

    fn magic_close(mut self) -> Result<(), WatchdogError> {
        self.closed = true;
        self.log.push(FakeEvent::MagicClose);
        Ok(())
    }
}

#[cfg(any(test, feature = "fakes"))]
impl Drop for FakeWatchdog {
    fn drop(&mut self) {
        if !self.closed {
            self.log.push(FakeEvent::DroppedArmed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_device_file() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("watchdog");
        std::fs::write(&path, b"").unwrap();
        (dir, path)
    }

    #[test]
    fn keepalive_on_a_plain_file_falls_back_to_writing_a_byte() {
        let (_d, path) = fake_device_file();
        let mut dev = LinuxWatchdog::open(&path).unwrap();
        dev.keepalive().unwrap();
        dev.keepalive().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), vec![KEEPALIVE_BYTE; 2]);
    }

    #[test]
    fn magic_close_writes_v_last() {
        let (_d, path) = fake_device_file();
        let mut dev = LinuxWatchdog::open(&path).unwrap();
        dev.keepalive().unwrap();
        dev.magic_close().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), vec![KEEPALIVE_BYTE, b'V']);
    }

    #[test]
    fn dropping_the_device_is_not_a_magic_close() {
        let (_d, path) = fake_device_file();
        let mut dev = LinuxWatchdog::open(&path).unwrap();
        dev.keepalive().unwrap();
        drop(dev);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes, vec![KEEPALIVE_BYTE]);
        assert!(!bytes.contains(&b'V'));
    }

    #[test]
    fn timeout_ioctls_on_a_plain_file_report_unknown_instead_of_failing() {
        let (_d, path) = fake_device_file();
        let mut dev = LinuxWatchdog::open(&path).unwrap();
        assert_eq!(dev.set_timeout(Duration::from_secs(15)).unwrap(), None);
        assert_eq!(dev.get_timeout().unwrap(), None);
        // Nothing was written by the timeout calls.
        assert!(std::fs::read(&path).unwrap().is_empty());
    }

    #[test]
    fn opening_a_missing_device_explains_the_missing_driver() {
        let dir = tempfile::tempdir().unwrap();
        let err = LinuxWatchdog::open(&dir.path().join("watchdog")).unwrap_err();
        assert!(
            matches!(
                err,
                WatchdogError::NoDriver {
                    errno: Errno::ENOENT,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("dtparam=watchdog=on"));
    }

    #[test]
    fn opening_never_creates_the_device_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("watchdog");
        let _ = LinuxWatchdog::open(&p);
        assert!(!p.exists());
    }

    #[test]
    fn the_device_is_close_on_exec() {
        let (_d, path) = fake_device_file();
        let dev = LinuxWatchdog::open(&path).unwrap();
        let flags = nix::fcntl::fcntl(&dev.file, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
        let fl = nix::fcntl::fcntl(&dev.file, nix::fcntl::FcntlArg::F_GETFL).unwrap();
        assert_eq!(fl & libc::O_ACCMODE, libc::O_WRONLY);
    }

    #[test]
    fn max_timeout_is_read_from_the_watchdog_class_in_sysfs() {
        let (_d, path) = fake_device_file();
        let sysfs = tempfile::tempdir().unwrap();
        let node = sysfs.path().join("class/watchdog/watchdog0");
        std::fs::create_dir_all(&node).unwrap();
        std::fs::write(node.join("max_timeout"), "15\n").unwrap();
        let dev = LinuxWatchdog::open_with_sysfs(&path, sysfs.path()).unwrap();
        assert_eq!(dev.max_timeout(), Some(Duration::from_secs(15)));
        let bare = LinuxWatchdog::open_with_sysfs(&path, &sysfs.path().join("none")).unwrap();
        assert_eq!(bare.max_timeout(), None);
    }

    #[test]
    fn sysfs_names_follow_the_device_name() {
        let s = Path::new("/sys");
        assert_eq!(
            max_timeout_path(s, Path::new("/dev/watchdog")).unwrap(),
            Path::new("/sys/class/watchdog/watchdog0/max_timeout")
        );
        assert_eq!(
            max_timeout_path(s, Path::new("/dev/watchdog1")).unwrap(),
            Path::new("/sys/class/watchdog/watchdog1/max_timeout")
        );
        assert_eq!(max_timeout_path(s, Path::new("/dev/watchdogx")), None);
        assert_eq!(max_timeout_path(s, Path::new("/dev/wdt")), None);
        assert_eq!(max_timeout_path(s, Path::new("/")), None);
    }

    #[test]
    fn max_timeout_text_parses_decimal_seconds_and_rejects_the_rest() {
        assert_eq!(parse_max_timeout("15\n"), Some(Duration::from_secs(15)));
        assert_eq!(parse_max_timeout(" 60 "), Some(Duration::from_secs(60)));
        assert_eq!(parse_max_timeout("0\n"), None);
        assert_eq!(parse_max_timeout("-1"), None);
        assert_eq!(parse_max_timeout(""), None);
        assert_eq!(parse_max_timeout("15s"), None);
    }

    proptest::proptest! {
        #[test]
        fn max_timeout_parsing_never_panics(text in ".{0,40}") {
            let _ = parse_max_timeout(&text);
        }
    }

    #[test]
    fn the_fake_records_in_order_and_flags_a_drop_without_magic_close() {
        let mut dev = FakeWatchdog::open(Path::new("/dev/watchdog")).unwrap();
        assert_eq!(dev.path(), Path::new("/dev/watchdog"));
        let log = dev.log();
        assert_eq!(
            dev.set_timeout(Duration::from_secs(15)).unwrap(),
            Some(Duration::from_secs(15))
        );
        dev.keepalive().unwrap();
        drop(dev);
        assert_eq!(
            log.events(),
            vec![
                FakeEvent::SetTimeout(Duration::from_secs(15)),
                FakeEvent::Keepalive,
                FakeEvent::DroppedArmed
            ]
        );
    }

    #[test]
    fn the_fake_magic_close_is_not_also_a_drop() {
        let dev = FakeWatchdog::new();
        let log = dev.log();
        dev.magic_close().unwrap();
        assert_eq!(log.events(), vec![FakeEvent::MagicClose]);
    }
}
