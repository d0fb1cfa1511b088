//! The hard end of `nodemedic preflight`: a watchdog thread that ends the process with exit
//! code 0 when the budget is spent, whatever the main thread is blocked on.
//!
//! Every step of a run has its own deadline, but two waits cannot have one: reaping a
//! private containerd stuck in uninterruptible sleep (D state, e.g. on a hung disk: SIGKILL
//! stays pending and `waitpid` never returns) and a write to a full stdout or stderr pipe
//! (nobody reads the unit's output). k3s's `ExecStartPre=` waits for preflight without a
//! timeout of its own (`TimeoutStartSec=0` in k3s's unit), so either would hold k3s back for
//! ever. At the budget the watchdog SIGKILLs the private containerd's process group, writes
//! one line to stderr without blocking, and calls `_exit(0)`: no destructor, no flush, no
//! lock taken, so nothing it could wait on. What the run finished is on disk already (every
//! removal and the report are written as they happen); what it did not is left for the next
//! run.

use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// The private containerd's pid (its own process group), 0 when none runs.
static PRIVATE_CONTAINERD: AtomicI32 = AtomicI32::new(0);

/// Registers the private containerd (spawned as the leader of its own process group) so the
/// watchdog can kill it; 0 clears it.
pub(crate) fn set_private_containerd(pid: u32) {
    PRIVATE_CONTAINERD.store(pid as i32, Ordering::SeqCst);
}

/// Starts the watchdog: at `start + budget` the process ends with exit code 0.
pub(crate) fn arm(start: Instant, budget: Duration) {
    let spawned = std::thread::Builder::new()
        .name("preflight-deadline".into())
        .spawn(move || {
            let end = start + budget;
            // sleep() may wake early on some platforms; loop until the end really passed.
            loop {
                let left = end.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                std::thread::sleep(left);
            }
            expire(budget);
        });
    if let Err(e) = spawned {
        log::warn!("preflight: cannot start the deadline watchdog: {e}");
    }
}

/// What the watchdog does at the end of the budget. Never returns.
fn expire(budget: Duration) -> ! {
    let pid = PRIVATE_CONTAINERD.load(Ordering::SeqCst);
    if pid > 0 {
        // The whole group: containerd and anything it started that did not move out.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(-pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let msg = format!(
        "nodemedic preflight: budget of {} s spent while blocked (private containerd pid {pid}, or a write); exiting 0 so k3s starts\n",
        budget.as_secs_f64()
    );
    write_nonblocking(2, msg.as_bytes());
    // SAFETY: _exit only ends the process; it runs no Rust code and takes no lock.
    unsafe { libc::_exit(0) }
}

/// One write attempt that never blocks: on a full pipe the line is dropped.
fn write_nonblocking(fd: i32, bytes: &[u8]) {
    // SAFETY: plain fcntl/write on a borrowed fd; the process exits right after, so the
    // O_NONBLOCK left on the shared file description cannot surprise anyone.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        let _ = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
    }
}
