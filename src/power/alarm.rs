//! The under-voltage alarm file, held open. On sysfs (kernfs) the driver's `sysfs_notify`
//! makes poll(2) report POLLPRI|POLLERR once per change, and reading the attribute again
//! from offset 0 re-arms it (fs/kernfs/file.c), so the detector sleeps until the alarm
//! changes. On any other filesystem (a fixture tree, a bind-mounted copy) poll never
//! signals a change, so the alarm is read on a timer instead: the filesystem type decides.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// `SYSFS_MAGIC` and `CGROUP2_SUPER_MAGIC` (include/uapi/linux/magic.h): kernfs
/// filesystems, whose attributes implement the notify contract.
const KERNFS_MAGICS: [i64; 2] = [0x6265_6572, 0x6367_7270];

/// How the alarm is watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Watch {
    /// poll(2) on the attribute: no wake-up until it changes.
    Notify,
    /// Not a kernfs file: read every `power.alarm_fallback_interval`.
    Periodic,
}

pub(crate) struct AlarmFile {
    file: File,
    watch: Watch,
}

impl AlarmFile {
    pub(crate) fn open(path: &Path) -> io::Result<AlarmFile> {
        let file = File::open(path)?;
        // `__fsword_t` is i32 on 32-bit targets (armhf), i64 on 64-bit ones.
        #[allow(clippy::unnecessary_cast)]
        let watch = match nix::sys::statfs::fstatfs(file.as_fd()) {
            Ok(s) if KERNFS_MAGICS.contains(&(s.filesystem_type().0 as i64)) => Watch::Notify,
            _ => Watch::Periodic,
        };
        Ok(AlarmFile { file, watch })
    }

    pub(crate) fn watch(&self) -> Watch {
        self.watch
    }

    /// The attribute's text, read from offset 0 (which also re-arms the notification).
    pub(crate) fn read(&self) -> io::Result<String> {
        let mut buf = [0u8; 64];
        let n = self.file.read_at(&mut buf, 0)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_file_is_read_on_a_timer_and_sysfs_is_waited_on() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("in0_lcrit_alarm");
        std::fs::write(&p, "1\n").unwrap();
        let a = AlarmFile::open(&p).unwrap();
        assert_eq!(a.watch(), Watch::Periodic);
        assert_eq!(a.read().unwrap(), "1\n");
        std::fs::write(&p, "0\n").unwrap();
        assert_eq!(a.read().unwrap(), "0\n", "read again from offset 0");
        // Any sysfs attribute is on kernfs.
        if let Ok(k) = AlarmFile::open(Path::new("/sys/kernel/mm/transparent_hugepage/enabled"))
            .or_else(|_| AlarmFile::open(Path::new("/sys/power/state")))
        {
            assert_eq!(k.watch(), Watch::Notify);
        }
    }
}
