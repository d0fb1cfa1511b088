//! PSI triggers (Documentation/accounting/psi.rst, "Monitoring for pressure thresholds"):
//! write `some <stall µs> <window µs>` to `/proc/pressure/memory` (or a cgroup's
//! `memory.pressure`) and poll(2) the fd for POLLPRI; the kernel wakes the poller when
//! that much stall accrues within a window. The memory detector waits on these instead of
//! sampling every 2 s while the node is calm (issue 24): no wake-up at all until memory
//! stalls, and the wake-up comes within the trigger's window of the stall starting.
//!
//! Without CAP_SYS_RESOURCE (the systemd unit drops it) the kernel accepts only windows
//! that are a multiple of 2 s (kernel/sched/psi.c, since 6.5 for unprivileged triggers),
//! so [`TRIGGER_WINDOW`] is 2 s.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::stat::Mode;

use crate::liveness::StopFd;

/// The trigger's window: the shortest an unprivileged trigger may have.
pub(crate) const TRIGGER_WINDOW: Duration = Duration::from_secs(2);

/// What one wait saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TriggerWait {
    /// A trigger fired: memory stalled past its threshold within the last window. `some`
    /// and `full` say which line's trigger (each armed at that line's raise threshold).
    Fired { some: bool, full: bool },
    /// The timeout passed (or the daemon is stopping).
    Quiet,
    /// A trigger's file went away (its cgroup was removed): re-arm.
    Lost,
}

/// The trigger edge, injectable so the detector's state machine is tested without PSI.
/// The stall each line's trigger fires at, within [`TRIGGER_WINDOW`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Thresholds {
    pub(crate) some: Duration,
    pub(crate) full: Duration,
}

pub(crate) trait PressureWait: Send {
    /// Arms a `some` and a `full` trigger on each file (host paths); Err says which and
    /// why.
    fn arm(&mut self, files: &[PathBuf], at: Thresholds) -> io::Result<()>;
    fn wait(&mut self, timeout: Duration) -> TriggerWait;
    fn set_stop(&mut self, _stop: StopFd) {}
}

/// The trigger line for `stall` of `line` (`some` or `full`) within [`TRIGGER_WINDOW`].
pub(crate) fn trigger_line(line: &str, stall: Duration) -> String {
    format!(
        "{line} {} {}",
        stall.as_micros().clamp(1, TRIGGER_WINDOW.as_micros() - 1),
        TRIGGER_WINDOW.as_micros()
    )
}

/// Real: one fd per file and line (a file takes one trigger per open), polled together
/// with the stop fd.
#[derive(Default)]
pub(crate) struct PsiTriggers {
    /// (fd, is the `full` line's).
    fds: Vec<(OwnedFd, bool)>,
    stop: Option<StopFd>,
}

fn arm_one(path: &Path, line: &str) -> io::Result<OwnedFd> {
    let err = |e: Errno, what: &str| {
        let hint = match e {
            Errno::EINVAL => {
                "; this kernel refuses the trigger (window not a multiple of 2 s without CAP_SYS_RESOURCE, or PSI triggers unsupported)"
            }
            Errno::EOPNOTSUPP | Errno::ENOENT => "; PSI is off (psi=0) or absent",
            _ => "",
        };
        io::Error::new(
            io::Error::from(e).kind(),
            format!("{what} {}: {e}{hint}", path.display()),
        )
    };
    let fd = open(
        path,
        OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| err(e, "cannot open"))?;
    // Only the kernel's own PSI files take a trigger; anything else (a test's fixture
    // tree) would just have the line written into it.
    let fs = nix::sys::statfs::fstatfs(&fd).map_err(|e| err(e, "cannot statfs"))?;
    let t = fs.filesystem_type();
    if t != nix::sys::statfs::PROC_SUPER_MAGIC && t != nix::sys::statfs::CGROUP2_SUPER_MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "{} is not on procfs or cgroup2: no PSI trigger there",
                path.display()
            ),
        ));
    }
    // The kernel wants the line and its terminating NUL in one write.
    let mut buf = line.as_bytes().to_vec();
    buf.push(0);
    nix::unistd::write(&fd, &buf).map_err(|e| err(e, &format!("cannot write \"{line}\" to")))?;
    Ok(fd)
}

impl PressureWait for PsiTriggers {
    fn arm(&mut self, files: &[PathBuf], at: Thresholds) -> io::Result<()> {
        let mut fds = Vec::new();
        for p in files {
            fds.push((arm_one(p, &trigger_line("some", at.some))?, false));
            fds.push((arm_one(p, &trigger_line("full", at.full))?, true));
        }
        self.fds = fds;
        Ok(())
    }

    fn wait(&mut self, timeout: Duration) -> TriggerWait {
        let t = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        let mut fds: Vec<PollFd> = self
            .fds
            .iter()
            .map(|(f, _)| PollFd::new(f.as_fd(), PollFlags::POLLPRI))
            .collect();
        if let Some(s) = &self.stop {
            fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, t) {
            Ok(0) | Err(_) => TriggerWait::Quiet,
            Ok(_) => {
                let triggers = &fds[..self.fds.len()];
                if triggers
                    .iter()
                    .any(|f| f.revents().is_some_and(|r| r.contains(PollFlags::POLLERR)))
                {
                    TriggerWait::Lost
                } else if let Some((some, full)) = {
                    let fired = |want_full: bool| {
                        triggers.iter().zip(&self.fds).any(|(f, (_, is_full))| {
                            *is_full == want_full
                                && f.revents().is_some_and(|r| r.contains(PollFlags::POLLPRI))
                        })
                    };
                    let (some, full) = (fired(false), fired(true));
                    (some || full).then_some((some, full))
                } {
                    TriggerWait::Fired { some, full }
                } else {
                    TriggerWait::Quiet // the stop fd
                }
            }
        }
    }

    fn set_stop(&mut self, stop: StopFd) {
        self.stop = Some(stop);
    }
}

#[cfg(test)]
/// What a fake trigger was armed with: the files and the stall.
pub(crate) type ArmedWith = std::sync::Arc<std::sync::Mutex<Vec<(Vec<PathBuf>, Thresholds)>>>;

#[cfg(test)]
/// Fake: plays back scripted waits (then `Quiet`), records what was armed.
#[derive(Default)]
pub(crate) struct ScriptedTriggers {
    pub(crate) arm_result: Option<io::ErrorKind>,
    pub(crate) armed: ArmedWith,
    pub(crate) waits: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<TriggerWait>>>,
    pub(crate) timeouts: std::sync::Arc<std::sync::Mutex<Vec<Duration>>>,
}

#[cfg(test)]
impl PressureWait for ScriptedTriggers {
    fn arm(&mut self, files: &[PathBuf], at: Thresholds) -> io::Result<()> {
        if let Some(k) = self.arm_result {
            return Err(io::Error::new(k, "refused by the script"));
        }
        self.armed.lock().unwrap().push((files.to_vec(), at));
        Ok(())
    }
    fn wait(&mut self, timeout: Duration) -> TriggerWait {
        self.timeouts.lock().unwrap().push(timeout);
        self.waits
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(TriggerWait::Quiet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN_PERCENT: Thresholds = Thresholds {
        some: Duration::from_millis(200),
        full: Duration::from_millis(200),
    };

    #[test]
    fn the_trigger_line_is_the_stall_within_a_two_second_window() {
        assert_eq!(
            trigger_line("full", Duration::from_millis(200)),
            "full 200000 2000000"
        );
        assert_eq!(trigger_line("some", Duration::ZERO), "some 1 2000000");
        assert_eq!(
            trigger_line("some", Duration::from_secs(5)),
            "some 1999999 2000000"
        );
    }

    #[test]
    fn a_plain_file_is_never_armed_or_written() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("memory");
        std::fs::write(&p, "some avg10=0.00 avg60=0.00 avg300=0.00 total=1\n").unwrap();
        let e = PsiTriggers::default()
            .arm(std::slice::from_ref(&p), TEN_PERCENT)
            .unwrap_err();
        assert!(e.to_string().contains("not on procfs or cgroup2"), "{e}");
        assert!(
            std::fs::read_to_string(&p)
                .unwrap()
                .starts_with("some avg10")
        );
    }

    #[test]
    fn a_real_trigger_arms_on_this_kernel_or_says_why_not() {
        let p = PathBuf::from("/proc/pressure/memory");
        if !p.exists() {
            eprintln!("SKIP: no PSI on this kernel");
            return;
        }
        let mut t = PsiTriggers::default();
        match t.arm(&[p], TEN_PERCENT) {
            // ArmedWith: nothing stalls memory here, so a short wait is quiet.
            Ok(()) => assert_eq!(t.wait(Duration::from_millis(50)), TriggerWait::Quiet),
            Err(e) => assert!(e.to_string().contains("/proc/pressure/memory"), "{e}"),
        }
    }
}
