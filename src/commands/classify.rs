//! `nodemedic classify`: saved log lines on stdin, one JSON verdict per line on stdout.
//! For reading logs after an outage: it accepts plain text, `/dev/kmsg` records, `dmesg`
//! (with or without `-T`), and journal/syslog lines, including containerd, k3s and kubelet
//! lines for the sandbox-name conflict. Every line is trusted here (it is a saved log, not
//! a live source), unlike the daemon, which only trusts kernel-facility records.

use std::io::{BufRead, Write};

use crate::cli::exit;
use crate::kernel::classify::Classifier;
use crate::kernel::line_format::{Origin, normalise};

/// A saved log line longer than this is classified on its first 64 KiB; the rest is read
/// and dropped, so one endless line cannot grow memory. Kernel records are at most 1 KiB
/// (`PRINTKRB_RECORD_MAX`); containerd's longest error lines are a few KiB.
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// `nodemedic classify`: stdin to stdout; a closed pipe (`| head`) is a normal end.
pub(crate) fn command(events: bool) -> u8 {
    let stdin = std::io::stdin().lock();
    let stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let result = if events {
        run_events(stdin, stdout)
    } else {
        run(stdin, stdout)
    };
    match result {
        Ok(()) => exit::OK,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::OK,
        Err(e) => {
            eprintln!("nodemedic classify: {e}");
            exit::PROBLEM
        }
    }
}

/// Streams: every line is classified and written before the next is read; complete
/// events are written (`--events`) or dropped as they complete. Memory does not grow
/// with the input (issue 18: 1 M lines used to keep 562 MiB of events).
pub fn run(input: impl BufRead, out: impl Write) -> std::io::Result<()> {
    stream(input, out, false)
}

/// As [`run`], one JSON object per complete event.
pub fn run_events(input: impl BufRead, out: impl Write) -> std::io::Result<()> {
    stream(input, out, true)
}

fn stream(mut input: impl BufRead, mut out: impl Write, events: bool) -> std::io::Result<()> {
    let mut c = Classifier::new();
    let mut line = Vec::with_capacity(1024);
    while read_line(&mut input, &mut line)? {
        let text = String::from_utf8_lossy(&line);
        let n = normalise(&text);
        if n.origin == Origin::KmsgDict {
            // Metadata of the previous record, not a message: never ends a splat.
            if !events {
                out.write_all(br#"{"kind":null,"continuation":true}"#)?;
                out.write_all(b"\n")?;
            }
            continue;
        }
        let mut first = None;
        if let Origin::Kmsg { .. } = n.origin {
            // A saved `/dev/kmsg` record: its first line is the only one that can be a
            // head; one output line for the record.
            c.feed_record(&n.text, n.kernel_ts_usec, |v| {
                first.get_or_insert(v);
            });
        } else {
            first = Some(c.feed(&n.text, n.kernel_ts_usec));
        }
        if !events && let Some(v) = first {
            serde_json::to_writer(&mut out, &v).map_err(std::io::Error::other)?;
            out.write_all(b"\n")?;
        }
        drain(&mut c, &mut out, events)?;
    }
    c.flush();
    drain(&mut c, &mut out, events)?;
    out.flush()
}

/// Writes (`events`) or drops every complete event: nothing is kept.
fn drain(c: &mut Classifier, out: &mut impl Write, events: bool) -> std::io::Result<()> {
    while let Some(e) = c.pop_event() {
        if events {
            serde_json::to_writer(&mut *out, &e).map_err(std::io::Error::other)?;
            out.write_all(b"\n")?;
        }
    }
    Ok(())
}

/// Reads one line (without its `\n`) into `buf`, keeping at most [`MAX_LINE`] bytes of it.
/// False at the end of the input.
fn read_line(input: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    buf.clear();
    let mut any = false;
    loop {
        let chunk = match input.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(any);
        }
        any = true;
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        let room = MAX_LINE.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..take.min(room)]);
        input.consume(if done { take + 1 } else { take });
        if done {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(input: &str) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        run(input.as_bytes(), &mut out).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn one_json_object_per_input_line_across_formats() {
        let v = classify(concat!(
            "[  123.456789] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n",
            "[  123.456790] rcu: \t2-...!: (1 GPs behind) idle=ab4/1/0x4000000000000000 softirq=1/1 fqs=0\n",
            "Nov 21 17:35:41 pi5 kernel: nfs: server nas.local not responding, still trying\n",
            "hello world\n",
            "6,1234,5000000,-;INFO: task kworker/u8:2:123 blocked for more than 120 seconds.\n",
        ));
        assert_eq!(v.len(), 5);
        assert_eq!(v[0]["kind"], "rcu_stall");
        assert_eq!(v[0]["continuation"], false);
        assert_eq!(v[0]["flavor"], "rcu_preempt");
        assert_eq!(v[1]["kind"], "rcu_stall");
        assert_eq!(v[1]["continuation"], true);
        assert_eq!(v[2]["kind"], "nfs_not_responding");
        assert_eq!(v[2]["server"], "nas.local");
        assert_eq!(v[3]["kind"], serde_json::Value::Null);
        assert_eq!(v[4]["kind"], "hung_task");
        assert_eq!(v[4]["comm"], "kworker/u8:2");
        assert_eq!(v[4]["pid"], 123);
    }

    #[test]
    fn kubelet_sandbox_name_conflicts_are_recognised() {
        let line = r#"Nov 21 17:35:41 pi5 k3s[812]: E1121 17:35:41.123456     812 log.go:32] "RunPodSandbox from runtime service failed" err="rpc error: code = Unknown desc = failed to reserve sandbox name \"web-0_default_1b2c_1\": name \"web-0_default_1b2c_1\" is reserved for \"4f1d2c3b4a5968778695a4b3c2d1e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091\"""#;
        let v = classify(line);
        assert_eq!(v[0]["kind"], "sandbox_name_reserved");
        assert_eq!(v[0]["sandbox_name"], "web-0_default_1b2c_1");
        assert_eq!(v[0]["pod"], "web-0");
        assert_eq!(
            v[0]["holder_id"],
            "4f1d2c3b4a5968778695a4b3c2d1e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091"
        );
    }

    #[test]
    fn events_are_written_as_they_complete_and_lines_are_bounded() {
        let mut input = String::new();
        input.push_str("rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n");
        input.push_str("rcu: \t(detected by 0, t=5252 jiffies, g=1, q=2 ncpus=4)\n");
        input.push_str(&"x".repeat(3 * MAX_LINE));
        input.push('\n');
        input.push_str("nfs: server nas not responding, still trying\n");
        let mut out = Vec::new();
        run_events(input.as_bytes(), &mut out).unwrap();
        let v: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(v.len(), 2, "{v:?}");
        assert_eq!(v[0]["kind"], "rcu_stall");
        assert_eq!(v[0]["jiffies"], 5252);
        assert_eq!(v[0]["lines"], 2);
        assert_eq!(v[1]["kind"], "nfs_not_responding");
        // Per-line mode: one object per input line, the long one included.
        let lines = classify(&input);
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[2]["kind"], serde_json::Value::Null);
    }

    #[test]
    fn a_saved_kmsg_record_is_classified_whole() {
        let v = classify(concat!(
            "4,10,5000000,-;x\\x0awatchdog: Watchdog detected hard LOCKUP on cpu 0\n",
            "4,11,5000001,-;w[12]: segfault at 0 ip 0 sp 0 error 4 in watchdog: Watchdog detected hard LOCKUP on cpu 0[400000+1000]\n",
            "0,12,5000002,-;watchdog: Watchdog detected hard LOCKUP on cpu 1\n",
        ));
        assert_eq!(v.len(), 3);
        assert_eq!(v[0]["kind"], serde_json::Value::Null);
        assert_eq!(v[1]["kind"], serde_json::Value::Null);
        assert_eq!(v[2]["kind"], "hard_lockup");
        assert_eq!(v[2]["cpu"], 1);
    }
}
