//! Signals other than SIGTERM/SIGINT (issue 18, point 7). By default SIGHUP, SIGUSR1,
//! SIGUSR2 and SIGALRM end a process, so a stray `kill -HUP` (a habit for "reload") or a
//! `logrotate`-style script would stop the node's self-healing. nodemedic does not reload
//! its config live (a config change needs a restart, `systemctl restart nodemedic`), so it
//! ignores these four.
//!
//! They are *blocked* in every thread rather than set to `SIG_IGN`: a blocked signal stays
//! pending and is never delivered, so it interrupts no syscall (a handler would make a probe
//! parked in `statfs` on a hung FUSE mount return `EINTR`, which must not read as "the mount
//! answered"), and unlike `SIG_IGN` the mask is not inherited by the commands nodemedic runs:
//! the standard library clears the signal mask in every child it spawns.

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

/// The signals nodemedic ignores (documented in the README's "Signals").
pub(crate) const IGNORED: [Signal; 4] = [
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
];

/// Blocks [`IGNORED`] in the calling thread, and so in every thread it spawns afterwards.
/// Call first thing in the daemon, before any thread exists.
pub(crate) fn ignore_nuisance_signals() -> nix::Result<()> {
    let mut set = SigSet::empty();
    for s in IGNORED {
        set.add(s);
    }
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_started_after_the_block_has_the_four_signals_blocked_and_term_open() {
        // On its own thread: the test harness's threads keep their masks.
        std::thread::spawn(|| {
            ignore_nuisance_signals().unwrap();
            std::thread::spawn(|| {
                let mut cur = SigSet::empty();
                pthread_sigmask(SigmaskHow::SIG_BLOCK, None, Some(&mut cur)).unwrap();
                for s in IGNORED {
                    assert!(cur.contains(s), "{s:?} not blocked");
                }
                assert!(!cur.contains(Signal::SIGTERM));
                assert!(!cur.contains(Signal::SIGINT));
                // The commands it runs (systemctl, the graceful reboot) start unmasked.
                let out = std::process::Command::new("sh")
                    .args(["-c", "grep SigBlk /proc/self/status"])
                    .output()
                    .unwrap();
                let line = String::from_utf8(out.stdout).unwrap();
                let mask =
                    u64::from_str_radix(line.trim().trim_start_matches("SigBlk:").trim(), 16)
                        .unwrap();
                for s in IGNORED {
                    assert_eq!(mask & (1 << (s as i32 - 1)), 0, "{s:?} blocked in a child");
                }
            })
            .join()
            .unwrap();
        })
        .join()
        .unwrap();
    }
}
