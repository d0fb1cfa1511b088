//! The firmware's throttle flags through the VideoCore mailbox: `/dev/vcio`, ioctl
//! `_IOWR(100, 0, char *)` with a property-tag buffer holding tag `0x00030046`
//! (GET_THROTTLED, what the kernel's own raspberrypi-hwmon driver asks for). This is the
//! only way to see the other throttle bits: the sysfs file `get_throttled` is deprecated and
//! logs a kernel WARNING when read, so nodemedic never opens it.
//!
//! The request value is a mask of sticky bits for the firmware to clear. The hwmon driver
//! clears them every 2 s (value 0xffff) to detect new under-voltage; nodemedic asks with 0
//! so it never takes an event away from the driver.
//!
//! Without `/dev/vcio` (not a Pi, or the device not exposed to the service) the feature is
//! off: one info line, no error per pass.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

pub(crate) const VCIO: &str = "dev/vcio";
pub(crate) const TAG_GET_THROTTLED: u32 = 0x0003_0046;
/// Buffer-level status the firmware writes back: request processed.
const RESPONSE_OK: u32 = 0x8000_0000;
/// Tag-level: bit 31 set on a response, the low bits are the value's length.
const TAG_RESPONSE: u32 = 0x8000_0000;

/// The documented bits of GET_THROTTLED (the same as `vcgencmd get_throttled`), with the
/// `flag` label of `nodemedic_firmware_throttled`.
pub(crate) const FLAGS: [(u32, &str); 8] = [
    (0, "under_voltage"),
    (1, "arm_frequency_capped"),
    (2, "throttled"),
    (3, "soft_temp_limit"),
    (16, "under_voltage_occurred"),
    (17, "arm_frequency_capped_occurred"),
    (18, "throttled_occurred"),
    (19, "soft_temp_limit_occurred"),
];

/// One answer of GET_THROTTLED.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Throttled(pub(crate) u32);

impl Throttled {
    pub(crate) fn bit(self, n: u32) -> bool {
        self.0 & (1 << n) != 0
    }

    /// Throttling for heat right now: the soft temperature limit is active, or the clocks
    /// are throttled while the supply is fine (the firmware throttles for under-voltage too,
    /// which `UnderVoltage` already reports).
    pub(crate) fn thermal(self) -> bool {
        self.bit(3) || (self.bit(2) && !self.bit(0))
    }

    /// The active flags' names, for messages.
    pub(crate) fn describe(self) -> String {
        let on: Vec<&str> = FLAGS
            .iter()
            .filter(|(b, _)| *b < 16 && self.bit(*b))
            .map(|(_, n)| *n)
            .collect();
        if on.is_empty() {
            format!("0x{:08x}", self.0)
        } else {
            format!("{} (0x{:08x})", on.join(", "), self.0)
        }
    }
}

/// The property buffer for one GET_THROTTLED request: size, request code, then the tag
/// (id, value buffer size, request indicator, value) and the end tag.
pub(crate) fn request() -> [u32; 7] {
    [7 * 4, 0, TAG_GET_THROTTLED, 4, 0, 0, 0]
}

/// The flags from the buffer the firmware filled in, or why it is not an answer.
pub(crate) fn parse_response(buf: &[u32; 7]) -> Result<Throttled, String> {
    if buf[1] != RESPONSE_OK {
        return Err(format!(
            "the firmware did not process the request (status 0x{:08x})",
            buf[1]
        ));
    }
    if buf[2] != TAG_GET_THROTTLED || buf[4] & TAG_RESPONSE == 0 || buf[4] & !TAG_RESPONSE < 4 {
        return Err(format!(
            "the firmware does not know tag 0x{TAG_GET_THROTTLED:08x} (tag answer 0x{:08x})",
            buf[4]
        ));
    }
    Ok(Throttled(buf[5]))
}

/// The mailbox edge.
pub(crate) trait Mailbox: Send {
    fn throttled(&mut self) -> Result<Throttled, String>;
}

/// Real: `/dev/vcio`.
pub(crate) struct Vcio {
    file: File,
}

impl Vcio {
    pub(crate) fn open(path: &Path) -> io::Result<Vcio> {
        Ok(Vcio {
            file: OpenOptions::new().read(true).write(true).open(path)?,
        })
    }
}

/// `_IOWR(100, 0, char *)`: the size field is the pointer size of this build, which is what
/// the driver expects from a native caller (it has a separate compat number for 32-bit).
const IOCTL_MBOX_PROPERTY: libc::c_ulong =
    nix::request_code_readwrite!(100, 0, std::mem::size_of::<*mut u8>()) as libc::c_ulong;

impl Mailbox for Vcio {
    fn throttled(&mut self) -> Result<Throttled, String> {
        // 16-byte aligned, as the mailbox requires of the buffers it is handed.
        #[repr(C, align(16))]
        struct Buf([u32; 7]);
        let mut buf = Buf(request());
        // SAFETY: the fd is open, and the driver reads then writes at most buf[0] = 28
        // bytes at the pointer, which is valid, aligned and lives across the call.
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                IOCTL_MBOX_PROPERTY as _,
                buf.0.as_mut_ptr(),
            )
        };
        if rc < 0 {
            return Err(format!(
                "/dev/vcio property call failed: {}",
                io::Error::last_os_error()
            ));
        }
        parse_response(&buf.0)
    }
}

#[cfg(test)]
/// Answers from a script, the last one repeated; records how often it was asked.
pub(crate) struct ScriptedMailbox {
    pub(crate) answers: std::collections::VecDeque<Result<u32, String>>,
    pub(crate) calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

#[cfg(test)]
impl Mailbox for ScriptedMailbox {
    fn throttled(&mut self) -> Result<Throttled, String> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let a = if self.answers.len() > 1 {
            self.answers.pop_front()
        } else {
            self.answers.front().cloned()
        };
        a.unwrap_or_else(|| Err("no answer scripted".into()))
            .map(Throttled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_asks_for_the_throttle_tag_without_clearing_sticky_bits() {
        let r = request();
        assert_eq!(r[0], 28, "buffer size in bytes");
        assert_eq!(r[2], 0x0003_0046);
        assert_eq!(
            r[5], 0,
            "a zero mask clears no sticky bit the hwmon driver needs"
        );
        assert_eq!(r[6], 0, "end tag");
    }

    #[test]
    fn a_filled_in_buffer_gives_the_flags_and_anything_else_an_error() {
        let mut b = request();
        b[1] = RESPONSE_OK;
        b[4] = TAG_RESPONSE | 4;
        b[5] = 0x0005_0005;
        let t = parse_response(&b).unwrap();
        assert!(t.bit(0) && t.bit(2) && t.bit(16) && t.bit(18));
        assert!(!t.thermal(), "throttled for under-voltage, not heat");
        assert_eq!(t.describe(), "under_voltage, throttled (0x00050005)");
        assert!(Throttled(0b1000).thermal());
        assert!(Throttled(0b0100).thermal());
        let mut bad = b;
        bad[1] = 0x8000_0001;
        assert!(
            parse_response(&bad)
                .unwrap_err()
                .contains("did not process")
        );
        let mut unknown = b;
        unknown[4] = 0;
        assert!(
            parse_response(&unknown)
                .unwrap_err()
                .contains("does not know tag")
        );
    }

    #[test]
    fn the_ioctl_number_is_iowr_100_0_of_a_pointer() {
        let size = std::mem::size_of::<*mut u8>() as libc::c_ulong;
        assert_eq!(IOCTL_MBOX_PROPERTY, (3 << 30) | (size << 16) | (100 << 8));
    }
}
