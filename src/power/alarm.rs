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

/// The notify contract on a real kernfs attribute. The `rpi_volt` chip exists only on a Pi,
/// so these tests use cgroup v2's `cgroup.events` (`populated 0|1`): the kernel notifies it
/// through the same kernfs_notify path that sysfs_notify takes. They create a cgroup, so
/// they need root and cgroup v2: skipped loudly elsewhere, never under CI.
#[cfg(test)]
mod kernfs_tests {
    use super::*;
    use crate::detect::{Detector, Sample, Wake, WakeOn, poll_wake};
    use crate::liveness::Shutdown;
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    /// A scratch cgroup, removed on drop; None (after a loud skip) where there is none.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Option<Scratch> {
            let mnt = std::fs::read_to_string("/proc/self/mountinfo")
                .ok()?
                .lines()
                .find(|l| l.contains(" - cgroup2 "))
                .and_then(|l| l.split(' ').nth(4).map(PathBuf::from));
            // SAFETY: geteuid has no preconditions.
            let root = unsafe { libc::geteuid() } == 0;
            let dir = mnt.filter(|_| root).and_then(|m| {
                let d = m.join(format!("nodemedic-{tag}-{}", std::process::id()));
                std::fs::create_dir(&d).ok().map(|_| d)
            });
            if dir.is_none() {
                let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
                assert!(
                    !ci,
                    "CI must not skip: root and a writable cgroup v2 are needed"
                );
                eprintln!(
                    "\n*** SKIP: no root or no writable cgroup v2; this test did NOT run ***\n"
                );
            }
            dir.map(Scratch)
        }

        fn events(&self) -> PathBuf {
            self.0.join("cgroup.events")
        }

        /// A `sleep` inside the cgroup: `populated` turns 1.
        fn populate(&self) -> std::process::Child {
            let c = std::process::Command::new("sleep")
                .arg("300")
                .spawn()
                .unwrap();
            std::fs::write(self.0.join("cgroup.procs"), c.id().to_string()).unwrap();
            c
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let end = Instant::now() + Duration::from_secs(10);
            while std::fs::remove_dir(&self.0).is_err() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn stop(mut c: std::process::Child) {
        let _ = c.kill();
        let _ = c.wait();
    }

    #[test]
    fn serial_a_kernfs_attribute_wakes_the_wait_once_per_change_after_each_reread() {
        let Some(cg) = Scratch::new("poll") else {
            return;
        };
        let a = AlarmFile::open(&cg.events()).unwrap();
        assert_eq!(a.watch(), Watch::Notify, "cgroup2 is kernfs");
        assert!(a.read().unwrap().contains("populated 0"));
        let sd = Shutdown::default();
        let wait = |ms| poll_wake(a.fd(), WakeOn::Notify, Duration::from_millis(ms), &sd);
        for _ in 0..3 {
            assert_eq!(wait(200), Wake::Timeout, "no change, no wake");
        }
        let child = cg.populate();
        assert_eq!(wait(10_000), Wake::Fd, "a change wakes the wait");
        assert_eq!(
            wait(0),
            Wake::Fd,
            "until it is read again, the change stays pending"
        );
        assert!(a.read().unwrap().contains("populated 1"));
        assert_eq!(wait(200), Wake::Timeout, "re-read from offset 0: re-armed");
        stop(child);
        assert_eq!(wait(10_000), Wake::Fd);
        assert!(a.read().unwrap().contains("populated 0"));
    }

    /// A detector over a kernfs file, as the power detector holds its alarm.
    struct Watcher {
        file: AlarmFile,
        passes: Arc<AtomicUsize>,
    }

    impl Detector for Watcher {
        fn name(&self) -> &'static str {
            "kernfs-watcher"
        }
        fn interval(&self) -> Duration {
            Duration::from_secs(3600)
        }
        fn sample(&mut self) -> Result<Sample, String> {
            self.file.read().map_err(|e| e.to_string())?;
            self.passes.fetch_add(1, Ordering::SeqCst);
            Ok(Sample::default())
        }
        fn wake_fd(&self) -> Option<(std::os::fd::RawFd, WakeOn)> {
            Some((self.file.fd(), WakeOn::Notify))
        }
    }

    #[test]
    fn serial_the_detector_thread_runs_a_pass_per_change_and_none_in_between() {
        use crate::edge::SystemClock;
        use crate::hub::Hub;
        use crate::liveness::Heartbeats;
        use crate::metrics::CoreMetrics;
        let Some(cg) = Scratch::new("detect") else {
            return;
        };
        let passes = Arc::new(AtomicUsize::new(0));
        let mut reg = prometheus_client::registry::Registry::default();
        let hub = Arc::new(Hub::new(CoreMetrics::register(&mut reg), None));
        let clock: Arc<dyn crate::edge::Clock> = Arc::new(SystemClock);
        let live = Heartbeats::new(clock.clone(), Duration::from_secs(30));
        let sd = Shutdown::default();
        let t = crate::detect::spawn(
            Box::new(Watcher {
                file: AlarmFile::open(&cg.events()).unwrap(),
                passes: passes.clone(),
            }),
            hub,
            live.register("kernfs-watcher"),
            sd.clone(),
            clock,
        )
        .unwrap();
        let reach = |n: usize| {
            let end = Instant::now() + Duration::from_secs(10);
            while passes.load(Ordering::SeqCst) < n && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(10));
            }
            passes.load(Ordering::SeqCst)
        };
        assert_eq!(reach(1), 1, "the first pass");
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(
            passes.load(Ordering::SeqCst),
            1,
            "idle: no pass without a change"
        );
        let child = cg.populate();
        assert_eq!(reach(2), 2, "one pass for the change");
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(passes.load(Ordering::SeqCst), 2, "and only one");
        stop(child);
        assert_eq!(reach(3), 3);
        sd.trigger();
        t.join().unwrap();
        assert_eq!(
            passes.load(Ordering::SeqCst),
            3,
            "shutdown ended the hour-long wait"
        );
    }
}
