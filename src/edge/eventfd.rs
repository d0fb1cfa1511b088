//! A counter that one thread signals and another waits on in poll(2) (eventfd(2)): how a
//! loop that sleeps on kernel events is also woken by the daemon itself, without a timer.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

#[derive(Debug)]
pub(crate) struct EventFd(OwnedFd);

/// Adds one to the eventfd `fd`, making it readable. A full counter (EAGAIN) means it is
/// readable already, which is all a waiter needs.
pub(crate) fn signal(fd: &OwnedFd) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes 8 bytes from a live buffer to an fd the caller owns.
    unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
}

impl EventFd {
    /// None only when the kernel refuses an eventfd: callers then fall back to a timer.
    pub(crate) fn new() -> Option<EventFd> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new fd we own.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        // SAFETY: `raw` was just returned by eventfd and is owned by nobody else.
        (raw >= 0).then(|| EventFd(unsafe { OwnedFd::from_raw_fd(raw) }))
    }

    /// Makes the fd readable until [`Self::drain`].
    pub(crate) fn signal(&self) {
        signal(&self.0);
    }

    /// The fd itself, for holders that share it as a plain `OwnedFd`.
    pub(crate) fn into_fd(self) -> OwnedFd {
        self.0
    }

    /// Resets the counter; true when it had been signalled.
    pub(crate) fn drain(&self) -> bool {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live buffer from a non-blocking fd we own.
        let n = unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        n == 8
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Tests: whether `fd` is readable now.
#[cfg(test)]
pub(crate) fn readable(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, 0) == 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_from_the_first_signal_until_drained() {
        let e = EventFd::new().expect("eventfd");
        assert!(!readable(e.raw()));
        assert!(!e.drain());
        e.signal();
        e.signal();
        assert!(readable(e.raw()));
        assert!(e.drain());
        assert!(!readable(e.raw()), "one drain resets every signal");
    }
}
