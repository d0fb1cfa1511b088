//! The kernel log edge: `/dev/kmsg` read one record at a time.
//!
//! Rules learnt from the kernel (Documentation/ABI/testing/dev-kmsg) and tried here:
//! each `read(2)` returns exactly one record and needs a buffer of at least 8 KiB (a
//! smaller one fails with EINVAL and the record is lost); a new fd starts at the oldest
//! record still in the ring; EPIPE means records were overwritten before we read them
//! (count, keep going); with `kernel.printk_devkmsg=off` every open fails.

#[cfg(any(test, feature = "fakes"))]
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::stat::Mode;

use crate::liveness::StopFd;

/// The kernel rejects reads into smaller buffers (EINVAL).
pub(crate) const RECORD_BUF: usize = 8192;

#[derive(Debug, PartialEq, Eq)]
pub enum KmsgRead {
    Record(Vec<u8>),
    /// Records were overwritten before they were read (EPIPE).
    Lost,
    /// Nothing new within the timeout.
    Idle,
}

pub(crate) trait KmsgSource: Send {
    /// The next record, waiting up to `timeout` for one (Idle at once if the daemon is
    /// stopping).
    fn read(&mut self, timeout: Duration) -> io::Result<KmsgRead>;
    /// An fd that becomes readable when the daemon stops: it ends any wait.
    fn set_stop(&mut self, _stop: StopFd) {}
}

pub(crate) struct DevKmsg {
    fd: OwnedFd,
    buf: Vec<u8>,
    stop: Option<StopFd>,
}

impl DevKmsg {
    /// Opens `path` (normally `/dev/kmsg`) at the oldest record in the ring.
    pub(crate) fn open(path: &Path) -> io::Result<DevKmsg> {
        let fd = open(path, OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC, Mode::empty()).map_err(|e| {
            let hint = match e {
                Errno::EPERM | Errno::EACCES => {
                    "; with kernel.printk_devkmsg=off every open fails: set it to \"ratelimit\" or \"on\" (or run as root)"
                }
                Errno::ENOENT => "; no such device here",
                _ => "",
            };
            io::Error::new(io::Error::from(e).kind(), format!("cannot open {}: {e}{hint}", path.display()))
        })?;
        Ok(DevKmsg {
            fd,
            buf: vec![0; RECORD_BUF],
            stop: None,
        })
    }
}

impl KmsgSource for DevKmsg {
    fn read(&mut self, timeout: Duration) -> io::Result<KmsgRead> {
        let mut waited = false;
        loop {
            match nix::unistd::read(self.fd.as_fd(), &mut self.buf) {
                Ok(n) => return Ok(KmsgRead::Record(self.buf[..n].to_vec())),
                Err(Errno::EPIPE) => return Ok(KmsgRead::Lost),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) if !waited => {
                    // The read blocks (in poll) until a record or the stop: no timer
                    // wakes it before `timeout`, however long.
                    let t = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
                    let kmsg = PollFd::new(self.fd.as_fd(), PollFlags::POLLIN);
                    let polled = match &self.stop {
                        Some(stop) => {
                            let mut fds = [kmsg, PollFd::new(stop.as_fd(), PollFlags::POLLIN)];
                            let r = poll(&mut fds, t);
                            let stopping = fds[1].revents().is_some_and(|r| !r.is_empty());
                            r.map(|n| if stopping { 0 } else { n })
                        }
                        None => poll(&mut [kmsg], t),
                    };
                    match polled {
                        Ok(0) => return Ok(KmsgRead::Idle),
                        Ok(_) | Err(Errno::EINTR) => waited = true,
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(Errno::EAGAIN) => return Ok(KmsgRead::Idle),
                Err(e) => {
                    return Err(io::Error::other(format!(
                        "reading /dev/kmsg (fd {}): {e}",
                        self.fd.as_raw_fd()
                    )));
                }
            }
        }
    }

    fn set_stop(&mut self, stop: StopFd) {
        self.stop = Some(stop);
    }
}

#[cfg(any(test, feature = "fakes"))]
/// Fake: plays back scripted reads, then reports idle; counts how often it was read.
#[derive(Default)]
pub struct ScriptedKmsg {
    pub script: VecDeque<io::Result<KmsgRead>>,
    pub reads: usize,
}

#[cfg(any(test, feature = "fakes"))]
impl ScriptedKmsg {
    pub fn records(lines: &[&str]) -> Self {
        ScriptedKmsg {
            script: lines
                .iter()
                .map(|l| Ok(KmsgRead::Record(l.as_bytes().to_vec())))
                .collect(),
            reads: 0,
        }
    }
}

#[cfg(any(test, feature = "fakes"))]
impl KmsgSource for ScriptedKmsg {
    fn read(&mut self, _timeout: Duration) -> io::Result<KmsgRead> {
        self.reads += 1;
        self.script.pop_front().unwrap_or(Ok(KmsgRead::Idle))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_dev_kmsg_opens_at_the_oldest_record_and_reads_whole_records() {
        let Ok(mut k) = DevKmsg::open(Path::new("/dev/kmsg")) else {
            eprintln!("SKIP: /dev/kmsg not readable here");
            return;
        };
        let mut got = 0;
        while let Ok(KmsgRead::Record(r)) = k.read(Duration::from_millis(10)) {
            let s = String::from_utf8_lossy(&r);
            assert!(s.contains(';'), "a record has PRI,SEQ,TS,FLAGS;TEXT: {s}");
            got += 1;
            if got > 5 {
                break;
            }
        }
        assert!(got > 0, "a booted kernel has records in its ring");
    }

    #[test]
    fn a_long_wait_on_the_real_log_ends_at_once_when_the_daemon_stops() {
        let Ok(mut k) = DevKmsg::open(Path::new("/dev/kmsg")) else {
            eprintln!("SKIP: /dev/kmsg not readable here");
            return;
        };
        let shutdown = crate::liveness::Shutdown::default();
        k.set_stop(shutdown.poll_fd().unwrap());
        // Drain the ring first: the wait below must be on an empty log.
        while let Ok(KmsgRead::Record(_) | KmsgRead::Lost) = k.read(Duration::ZERO) {}
        let s = shutdown.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            s.trigger();
        });
        let started = std::time::Instant::now();
        // A record written by another test in between may end the wait first; only the
        // hour-long timeout must not be what ends it.
        while started.elapsed() < Duration::from_secs(60) {
            if let Ok(KmsgRead::Idle) = k.read(Duration::from_secs(3600)) {
                break;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(60));
        t.join().unwrap();
    }

    #[test]
    fn a_missing_device_is_a_clear_error() {
        let e = DevKmsg::open(Path::new("/nonexistent/kmsg")).err().unwrap();
        assert!(
            e.to_string().contains("cannot open /nonexistent/kmsg"),
            "{e}"
        );
    }
}
