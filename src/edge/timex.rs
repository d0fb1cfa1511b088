//! The kernel's NTP state, read with `adjtimex(2)` (`modes = 0`: read only). Shared by the
//! pre-start clock check (`preflight::clock_sanity`) and the running clock health detector
//! (`clock`): one reading, one meaning of "synchronised".
//!
//! The kernel sets `STA_UNSYNC` at boot and whenever `maxerror` grows past 16 s
//! (`NTP_PHASE_LIMIT` in kernel/time/ntp.c: it grows by 500 us each second without an NTP
//! update, so about 9 hours after the time daemon went quiet). systemd-timesyncd clears it
//! on every update; chrony only with `rtcsync` (chrony's sys_timex.c), which Debian's,
//! Ubuntu's and RHEL's chrony.conf enable.

use serde::Serialize;

/// One `adjtimex(2)` reading, in plain units.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct NtpReading {
    /// `STA_UNSYNC` is clear (and the call did not return `TIME_ERROR`).
    pub synced: bool,
    /// Maximum error the kernel assumes, seconds (`maxerror`, microseconds in the ABI).
    pub maxerror_secs: f64,
    /// Estimated error, seconds (`esterror`).
    pub esterror_secs: f64,
    /// The PLL's remaining offset, seconds (`offset`: ns with `STA_NANO`, else us).
    pub offset_secs: f64,
    /// The raw `status` bits, for `nodemedic check`.
    pub status: i32,
}

impl NtpReading {
    /// Pure: the reading from what `adjtimex` returned and filled in.
    pub(crate) fn from_raw(
        state: i32,
        status: i32,
        maxerror_us: i64,
        esterror_us: i64,
        offset: i64,
    ) -> Self {
        let offset_secs = if status & libc::STA_NANO != 0 {
            offset as f64 / 1e9
        } else {
            offset as f64 / 1e6
        };
        NtpReading {
            synced: state != libc::TIME_ERROR && status & libc::STA_UNSYNC == 0,
            maxerror_secs: maxerror_us as f64 / 1e6,
            esterror_secs: esterror_us as f64 / 1e6,
            offset_secs,
            status,
        }
    }
}

/// The kernel's NTP state as an edge.
pub trait NtpSource: Send + Sync {
    fn read(&self) -> Result<NtpReading, String>;
}

/// `adjtimex(3)` with `modes = 0` (glibc issues `clock_adjtime(CLOCK_REALTIME)`). Needs no
/// capability; a seccomp filter that denies `@clock` (systemd's `ProtectClock=`, nspawn
/// without CAP_SYS_TIME) makes it fail with EPERM.
pub struct KernelNtp;

impl NtpSource for KernelNtp {
    fn read(&self) -> Result<NtpReading, String> {
        // SAFETY: an all-zero timex is a valid argument; modes = 0 only reads the state.
        let mut tx: libc::timex = unsafe { std::mem::zeroed() };
        // SAFETY: tx is a valid, exclusively borrowed timex.
        let state = unsafe { libc::adjtimex(&mut tx) };
        if state < 0 {
            return Err(format!(
                "adjtimex(2) failed: {} (a seccomp filter denying @clock, such as ProtectClock=yes, blocks even reading)",
                std::io::Error::last_os_error()
            ));
        }
        Ok(NtpReading::from_raw(
            state,
            tx.status,
            tx.maxerror as i64,
            tx.esterror as i64,
            tx.offset as i64,
        ))
    }
}

#[cfg(any(test, feature = "fakes"))]
/// Answers a scripted reading; tests change it between passes.
#[derive(Default)]
pub struct FakeNtp(pub std::sync::Mutex<Option<Result<NtpReading, String>>>);

#[cfg(any(test, feature = "fakes"))]
impl FakeNtp {
    pub fn set(&self, r: Result<NtpReading, String>) {
        *self.0.lock().unwrap() = Some(r);
    }
    /// A reading with only the interesting fields set.
    pub fn reading(synced: bool, maxerror_secs: f64) -> NtpReading {
        NtpReading {
            synced,
            maxerror_secs,
            esterror_secs: 0.0,
            offset_secs: 0.0,
            status: if synced { 0 } else { libc::STA_UNSYNC },
        }
    }
}

#[cfg(any(test, feature = "fakes"))]
impl NtpSource for FakeNtp {
    fn read(&self) -> Result<NtpReading, String> {
        self.0
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| Err("no reading scripted".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reading_follows_the_status_bits_and_units() {
        let r = NtpReading::from_raw(libc::TIME_OK, libc::STA_PLL, 16_000_000, 1_500, 250);
        assert!(r.synced);
        assert_eq!(r.maxerror_secs, 16.0);
        assert_eq!(r.esterror_secs, 0.0015);
        assert_eq!(r.offset_secs, 0.000_25, "microseconds without STA_NANO");
        let r = NtpReading::from_raw(
            libc::TIME_OK,
            libc::STA_PLL | libc::STA_NANO | libc::STA_UNSYNC,
            0,
            0,
            -2_000_000,
        );
        assert!(!r.synced);
        assert_eq!(r.offset_secs, -0.002, "nanoseconds with STA_NANO");
        let r = NtpReading::from_raw(libc::TIME_ERROR, 0, 0, 0, 0);
        assert!(!r.synced, "TIME_ERROR is never synchronised");
    }

    #[test]
    fn the_kernel_reading_works_without_privileges_and_changes_nothing() {
        let r = KernelNtp.read().expect("adjtimex with modes = 0");
        assert!(r.maxerror_secs >= 0.0);
    }
}
