//! Subprocesses with a deadline: `systemctl` and the graceful reboot command must never
//! hang the caller (a wedged PID 1 or D-Bus answers nothing).

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How often a running command is checked for exit.
const COMMAND_POLL: Duration = Duration::from_millis(10);
/// Kept from a command's stderr (and stdout) for messages and answers.
const OUTPUT_KEEP: usize = 2048;
/// Kept from stderr (and from stdout by [`run_for_output`]).
const STDERR_KEEP: usize = OUTPUT_KEEP;

/// Why a command did not succeed. Callers tell "it answered no" ([`CommandError::Exit`])
/// from "it could not be run or did not answer" by the variant, never by the text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CommandError {
    #[error("no command is configured")]
    Empty,
    #[error("cannot start `{prog}`: {error}")]
    Spawn { prog: String, error: String },
    #[error("cannot wait for `{prog}`: {error}")]
    Wait { prog: String, error: String },
    #[error("still running after {} ms; killed", after.as_millis())]
    TimedOut { after: Duration },
    /// It ran and exited non-zero (or was killed by a signal: `code` None).
    #[error("{}", exit_text(*code, stderr))]
    Exit { code: Option<i32>, stderr: String },
}

fn exit_text(code: Option<i32>, stderr: &str) -> String {
    let status = match code {
        Some(c) => format!("exit status: {c}"),
        None => "killed by a signal".to_string(),
    };
    if stderr.is_empty() {
        status
    } else {
        format!("{status}: {stderr}")
    }
}

/// Runs `argv` with stdin closed; `Ok` on exit status 0. Kills it when it is still running
/// after `timeout`. The error carries the start of its stderr.
pub(crate) fn run_with_deadline(argv: &[String], timeout: Duration) -> Result<(), CommandError> {
    run(argv, timeout, false).map(|_| ())
}

/// As [`run_with_deadline`], returning the start of stdout (trimmed) on success.
pub(crate) fn stdout_with_deadline(
    argv: &[String],
    timeout: Duration,
) -> Result<String, CommandError> {
    run(argv, timeout, true)
}

/// Reads `pipe` to its end on a thread (so a chatty command never blocks on a full pipe),
/// keeping its first `keep` bytes.
fn drain(
    name: &str,
    pipe: Option<impl Read + Send + 'static>,
    keep: usize,
) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    if let Some(mut p) = pipe {
        let _ = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut kept = Vec::new();
                let mut buf = [0u8; 8192];
                while let Ok(n) = p.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let room = keep.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
                let _ = tx.send(kept);
            });
    }
    rx
}

/// What is kept of a pipe. A grandchild may keep it open: do not wait for EOF for long.
fn collect(rx: &mpsc::Receiver<Vec<u8>>) -> Vec<u8> {
    rx.recv_timeout(Duration::from_millis(500))
        .unwrap_or_default()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_string()
}

/// A command that ran to its end: its status and the kept starts of its output.
struct Exited {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// The one way nodemedic runs a command: stdin closed, stdout kept up to `keep_out` bytes
/// (`None`: not captured), stderr up to [`STDERR_KEEP`], killed when still running after
/// `timeout`.
fn run_to_end(
    argv: &[String],
    timeout: Duration,
    keep_out: Option<usize>,
) -> Result<Exited, CommandError> {
    let Some((prog, args)) = argv.split_first() else {
        return Err(CommandError::Empty);
    };
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(if keep_out.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CommandError::Spawn {
            prog: prog.clone(),
            error: e.to_string(),
        })?;
    let out = drain("cmd-stdout", child.stdout.take(), keep_out.unwrap_or(0));
    let err = drain("cmd-stderr", child.stderr.take(), STDERR_KEEP);
    let end = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < end => std::thread::sleep(COMMAND_POLL),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CommandError::TimedOut { after: timeout });
            }
            Err(e) => {
                return Err(CommandError::Wait {
                    prog: prog.clone(),
                    error: e.to_string(),
                });
            }
        }
    };
    Ok(Exited {
        status,
        stdout: if keep_out.is_some() {
            collect(&out)
        } else {
            Vec::new()
        },
        stderr: collect(&err),
    })
}

fn run(argv: &[String], timeout: Duration, want_stdout: bool) -> Result<String, CommandError> {
    let f = run_to_end(argv, timeout, want_stdout.then_some(OUTPUT_KEEP))?;
    if f.status.success() {
        return Ok(text(&f.stdout));
    }
    Err(CommandError::Exit {
        code: f.status.code(),
        stderr: text(&f.stderr),
    })
}

/// A [`CommandError`] as the string-error helpers below say it: with the program's name.
fn said(argv: &[String], e: CommandError) -> String {
    let prog = argv.first().map_or("", String::as_str);
    match e {
        CommandError::TimedOut { .. } | CommandError::Exit { .. } => format!("`{prog}` {e}"),
        e => e.to_string(),
    }
}

/// Runs `argv` with a deadline like [`run_with_deadline`] and returns what it printed
/// (stdout then stderr, at most [`STDERR_KEEP`] bytes of each, trimmed): for commands
/// whose report is the result (`journalctl --vacuum-size=` says what it freed on stderr).
pub(crate) fn run_for_output(argv: &[String], timeout: Duration) -> Result<String, String> {
    let f = run_to_end(argv, timeout, Some(STDERR_KEEP)).map_err(|e| said(argv, e))?;
    let both: Vec<String> = [text(&f.stdout), text(&f.stderr)]
        .into_iter()
        .filter(|t| !t.is_empty())
        .collect();
    let both = both.join("; ");
    let prog = &argv[0];
    if f.status.success() {
        Ok(both)
    } else if both.is_empty() {
        Err(format!("`{prog}`: {}", f.status))
    } else {
        Err(format!("`{prog}`: {}: {both}", f.status))
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
    let f = run_to_end(argv, timeout, Some(max_bytes)).map_err(|e| said(argv, e))?;
    if f.status.success() {
        return Ok(f.stdout);
    }
    let prog = &argv[0];
    let err = text(&f.stderr);
    if err.is_empty() {
        Err(format!("`{prog}`: {}", f.status))
    } else {
        Err(format!("`{prog}`: {}: {err}", f.status))
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
        assert_eq!(
            stdout_with_deadline(&argv(&["echo", " activating "]), S(10)),
            Ok("activating".into())
        );
    }

    #[test]
    fn a_failing_graceful_command_reports_its_status_and_stderr() {
        let e = run_with_deadline(
            &argv(&["sh", "-c", "echo 'Failed to connect to bus' >&2; exit 3"]),
            S(10),
        )
        .unwrap_err();
        assert_eq!(
            e,
            CommandError::Exit {
                code: Some(3),
                stderr: "Failed to connect to bus".into()
            }
        );
        assert_eq!(e.to_string(), "exit status: 3: Failed to connect to bus");
        let e = run_with_deadline(&argv(&["false"]), S(10)).unwrap_err();
        assert_eq!(e.to_string(), "exit status: 1");
    }

    #[test]
    fn a_hanging_graceful_command_is_killed_at_its_deadline() {
        let t0 = Instant::now();
        let e = run_with_deadline(&argv(&["sleep", "30"]), Duration::from_millis(100)).unwrap_err();
        assert!(matches!(e, CommandError::TimedOut { .. }), "{e}");
        assert!(e.to_string().contains("killed"), "{e}");
        assert!(t0.elapsed() < S(5), "{:?}", t0.elapsed());
    }

    #[test]
    fn a_missing_or_empty_graceful_command_is_an_error_not_a_panic() {
        let e = run_with_deadline(&argv(&["/nonexistent/systemctl", "reboot"]), S(1)).unwrap_err();
        assert!(
            e.to_string()
                .contains("cannot start `/nonexistent/systemctl`"),
            "{e}"
        );
        let e = run_with_deadline(&[], S(1)).unwrap_err();
        assert_eq!(e, CommandError::Empty);
    }

    #[test]
    fn a_command_run_for_its_output_returns_both_streams_or_fails_with_them() {
        assert_eq!(
            run_for_output(&argv(&["sh", "-c", "echo out; echo err >&2"]), S(10)),
            Ok("out; err".to_string())
        );
        let e = run_for_output(&argv(&["sh", "-c", "echo no >&2; exit 2"]), S(10)).unwrap_err();
        assert!(e.contains("exit status: 2") && e.contains("no"), "{e}");
        let e = run_for_output(&argv(&["sleep", "30"]), Duration::from_millis(100)).unwrap_err();
        assert!(e.contains("killed"), "{e}");
    }
}
