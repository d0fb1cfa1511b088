//! Subprocesses with a deadline: `systemctl` and the graceful reboot command must never
//! hang the caller (a wedged PID 1 or D-Bus answers nothing).

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How often a running graceful command is checked for exit.
const COMMAND_POLL: Duration = Duration::from_millis(10);
/// Kept from the graceful command's stderr for the error message.
const STDERR_KEEP: usize = 2048;

/// Runs `argv` with stdin/stdout closed; `Ok` on exit status 0. Kills it when it is still
/// running after `timeout`. The error says what happened and the start of its stderr.
pub(crate) fn run_with_deadline(argv: &[String], timeout: Duration) -> Result<(), String> {
    let Some((prog, args)) = argv.split_first() else {
        return Err("no graceful reboot command is configured".into());
    };
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start `{prog}`: {e}"))?;
    // Drained on a thread so a chatty command cannot fill the pipe and block.
    let (etx, erx) = mpsc::channel();
    if let Some(mut err) = child.stderr.take() {
        let _ = std::thread::Builder::new()
            .name("reboot-cmd-stderr".into())
            .spawn(move || {
                let mut buf = Vec::new();
                let _ = err.read_to_end(&mut buf);
                let _ = etx.send(buf);
            });
    }
    let end = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < end => std::thread::sleep(COMMAND_POLL),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "still running after {} ms; killed",
                    timeout.as_millis()
                ));
            }
            Err(e) => return Err(format!("cannot wait for `{prog}`: {e}")),
        }
    };
    if status.success() {
        return Ok(());
    }
    // A grandchild may keep stderr open: do not wait for EOF for long.
    let stderr = erx
        .recv_timeout(Duration::from_millis(500))
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&stderr[..stderr.len().min(STDERR_KEEP)]);
    let text = text.trim();
    if text.is_empty() {
        Err(status.to_string())
    } else {
        Err(format!("{status}: {text}"))
    }
}

/// Runs `argv` with stdin closed and returns its stdout (at most `max_bytes`; the rest is
/// drained and dropped) when it exits 0 within `timeout`; killed past it. The error says
/// what happened and the start of its stderr.
pub(crate) fn output_with_deadline(
    argv: &[String],
    timeout: Duration,
    max_bytes: usize,
) -> Result<Vec<u8>, String> {
    let Some((prog, args)) = argv.split_first() else {
        return Err("no command".into());
    };
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start `{prog}`: {e}"))?;
    // Both pipes drained on threads so a chatty command never blocks on a full pipe.
    let drain = |mut r: Box<dyn Read + Send>, keep: usize, name: &str| {
        let (tx, rx) = mpsc::channel();
        let _ = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut kept = Vec::new();
                let mut buf = [0u8; 8192];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let room = keep.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
                let _ = tx.send(kept);
            });
        rx
    };
    let out = child
        .stdout
        .take()
        .map(|o| drain(Box::new(o), max_bytes, "cmd-stdout"));
    let err = child
        .stderr
        .take()
        .map(|e| drain(Box::new(e), STDERR_KEEP, "cmd-stderr"));
    let end = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < end => std::thread::sleep(COMMAND_POLL),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`{prog}` still running after {} ms; killed",
                    timeout.as_millis()
                ));
            }
            Err(e) => return Err(format!("cannot wait for `{prog}`: {e}")),
        }
    };
    // A grandchild may keep the pipes open: do not wait for EOF for long.
    let collect = |rx: Option<mpsc::Receiver<Vec<u8>>>| {
        rx.and_then(|rx| rx.recv_timeout(Duration::from_millis(500)).ok())
            .unwrap_or_default()
    };
    let stdout = collect(out);
    if status.success() {
        return Ok(stdout);
    }
    let stderr = collect(err);
    let text = String::from_utf8_lossy(&stderr);
    let text = text.trim();
    if text.is_empty() {
        Err(format!("`{prog}`: {status}"))
    } else {
        Err(format!("`{prog}`: {status}: {text}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn output_is_returned_bounded_and_a_failure_or_a_hang_is_an_error() {
        let out =
            output_with_deadline(&argv(&["sh", "-c", "echo hello; echo world"]), S(10), 8).unwrap();
        assert_eq!(out, b"hello\nwo");
        let e = output_with_deadline(&argv(&["sh", "-c", "echo nope >&2; exit 1"]), S(10), 8)
            .unwrap_err();
        assert_eq!(e, "`sh`: exit status: 1: nope");
        let e = output_with_deadline(&argv(&["sleep", "30"]), Duration::from_millis(100), 8)
            .unwrap_err();
        assert!(e.contains("killed"), "{e}");
    }

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_successful_graceful_command_is_accepted() {
        assert_eq!(run_with_deadline(&argv(&["true"]), S(10)), Ok(()));
    }

    #[test]
    fn a_failing_graceful_command_reports_its_status_and_stderr() {
        let e = run_with_deadline(
            &argv(&["sh", "-c", "echo 'Failed to connect to bus' >&2; exit 3"]),
            S(10),
        )
        .unwrap_err();
        assert!(e.contains("exit status: 3"), "{e}");
        assert!(e.contains("Failed to connect to bus"), "{e}");
        let e = run_with_deadline(&argv(&["false"]), S(10)).unwrap_err();
        assert_eq!(e, "exit status: 1");
    }

    #[test]
    fn a_hanging_graceful_command_is_killed_at_its_deadline() {
        let t0 = Instant::now();
        let e = run_with_deadline(&argv(&["sleep", "30"]), Duration::from_millis(100)).unwrap_err();
        assert!(e.contains("killed"), "{e}");
        assert!(t0.elapsed() < S(5), "{:?}", t0.elapsed());
    }

    #[test]
    fn a_missing_or_empty_graceful_command_is_an_error_not_a_panic() {
        let e = run_with_deadline(&argv(&["/nonexistent/systemctl", "reboot"]), S(1)).unwrap_err();
        assert!(e.contains("cannot start `/nonexistent/systemctl`"), "{e}");
        let e = run_with_deadline(&[], S(1)).unwrap_err();
        assert!(e.contains("no graceful reboot command"), "{e}");
    }
}
