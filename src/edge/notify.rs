//! The systemd notification edge: readiness, status lines, watchdog keep-alives, stopping.

use std::io;
#[cfg(any(test, feature = "fakes"))]
use std::sync::Mutex;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    Ready,
    Status(String),
    Watchdog,
    Stopping,
    /// While stopping: "give me this much more time" (`EXTEND_TIMEOUT_USEC`, from now).
    ExtendTimeout(Duration),
}

pub trait Notifier: Send + Sync {
    fn send(&self, n: &Notice) -> io::Result<()>;
    /// `WatchdogSec=` as passed by systemd, if any.
    fn watchdog_interval(&self) -> Option<Duration>;
}

/// Real: `$NOTIFY_SOCKET` via sd-notify. Without the variable every send is a no-op.
pub struct SdNotifier;

impl Notifier for SdNotifier {
    fn send(&self, n: &Notice) -> io::Result<()> {
        use sd_notify::NotifyState as S;
        match n {
            Notice::Ready => sd_notify::notify(&[S::Ready]),
            Notice::Status(s) => sd_notify::notify(&[S::Status(s)]),
            Notice::Watchdog => sd_notify::notify(&[S::Watchdog]),
            Notice::Stopping => sd_notify::notify(&[S::Stopping]),
            Notice::ExtendTimeout(d) => sd_notify::notify(&[S::ExtendTimeoutUsec(
                u32::try_from(d.as_micros()).unwrap_or(u32::MAX),
            )]),
        }
    }
    fn watchdog_interval(&self) -> Option<Duration> {
        sd_notify::watchdog_enabled()
    }
}

#[cfg(any(test, feature = "fakes"))]
/// Fake: records every notice.
#[derive(Default)]
pub struct RecordingNotifier {
    pub sent: Mutex<Vec<Notice>>,
    pub interval: Option<Duration>,
}

#[cfg(any(test, feature = "fakes"))]
impl Notifier for RecordingNotifier {
    fn send(&self, n: &Notice) -> io::Result<()> {
        self.sent.lock().unwrap().push(n.clone());
        Ok(())
    }
    fn watchdog_interval(&self) -> Option<Duration> {
        self.interval
    }
}
