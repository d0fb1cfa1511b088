//! Runs a closure on its own thread and waits for it only until a deadline. A call stuck
//! in the kernel (statfs on a dead NFS server, a read from a wedged driver) cannot be
//! cancelled, but the caller can stop waiting and say so; the thread is detached and ends
//! whenever the call returns (or with the process).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Instant;

/// What became of a closure by the deadline.
#[derive(Debug)]
pub enum Waited<T> {
    Done(T),
    /// Still running at the deadline; its result, if any, is dropped.
    TimedOut,
    /// It panicked (the message), or its thread could not be started.
    Failed(String),
}

/// A closure running on its own thread.
pub struct Pending<T> {
    rx: Result<mpsc::Receiver<Result<T, String>>, String>,
}

/// Starts `f` on a new thread named `name`.
pub fn spawn<T, F>(name: &str, f: F) -> Pending<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    let started = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let r = catch_unwind(AssertUnwindSafe(f)).map_err(|p| panic_message(p.as_ref()));
            // The caller may have stopped waiting: nobody to tell then.
            let _ = tx.send(r);
        });
    Pending {
        rx: match started {
            Ok(_) => Ok(rx),
            Err(e) => Err(format!("cannot start thread {name}: {e}")),
        },
    }
}

impl<T> Pending<T> {
    /// Waits for the result until `deadline` (an instant, so several closures started
    /// together share one deadline instead of adding up their waits).
    pub fn wait_until(self, deadline: Instant) -> Waited<T> {
        let rx = match self.rx {
            Ok(rx) => rx,
            Err(e) => return Waited::Failed(e),
        };
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Ok(v)) => Waited::Done(v),
            Ok(Err(panic)) => Waited::Failed(format!("panicked: {panic}")),
            Err(RecvTimeoutError::Timeout) => Waited::TimedOut,
            // catch_unwind sends even on panic; a lost sender means the thread died anyway.
            Err(RecvTimeoutError::Disconnected) => {
                Waited::Failed("thread ended without a result".into())
            }
        }
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_closure_that_returns_in_time_gives_its_value() {
        let p = spawn("t-quick", || 6 * 7);
        match p.wait_until(Instant::now() + Duration::from_secs(30)) {
            Waited::Done(v) => assert_eq!(v, 42),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn a_closure_blocked_past_the_deadline_is_timed_out_and_the_wait_ends() {
        // Blocks until the test releases it, long after the deadline.
        let (release, blocked) = mpsc::channel::<()>();
        let p = spawn("t-blocked", move || blocked.recv().is_ok());
        let o = p.wait_until(Instant::now() + Duration::from_millis(100));
        assert!(matches!(o, Waited::TimedOut), "{o:?}");
        drop(release);
    }

    #[test]
    fn a_panic_is_reported_with_its_message() {
        let p = spawn("t-panic", || -> u8 { panic!("probe exploded") });
        match p.wait_until(Instant::now() + Duration::from_secs(30)) {
            Waited::Failed(m) => assert_eq!(m, "panicked: probe exploded"),
            o => panic!("{o:?}"),
        }
    }
}
