//! The previous boot's last kernel lines, from a persistent journal: `journalctl -k -b
//! <boot id> -n N -o json`, run with a deadline (a corrupt journal must not hold up the
//! start). Only facility-0 lines are kept: a line userspace wrote to `/dev/kmsg` is stored
//! by journald with the kernel transport too, but with its own facility.
//!
//! Without a persistent journal (`Storage=volatile`, or `auto` with no `/var/log/journal`)
//! the previous boot is simply not there: that is a finding, not an error.

use std::path::PathBuf;
use std::time::Duration;

use crate::edge::command::output_with_deadline;
use crate::model::KernelLine;

/// journalctl's JSON output of 300 kernel lines is ~200 KiB; more is cut.
const MAX_OUTPUT: usize = 4 << 20;

/// The journal edge.
pub(crate) trait BootJournal: Send + Sync {
    /// The last `lines` kernel lines of boot `boot_id`, oldest first.
    fn kernel_tail(
        &self,
        boot_id: &str,
        lines: u32,
        timeout: Duration,
    ) -> Result<Vec<KernelLine>, String>;
}

/// Real: `journalctl`, with `--root` when the host root is not `/` (tests).
pub(crate) struct Journalctl {
    pub(crate) root: PathBuf,
    pub(crate) program: String,
}

impl Journalctl {
    pub(crate) fn new(root: impl Into<PathBuf>) -> Self {
        Journalctl {
            root: root.into(),
            program: "journalctl".into(),
        }
    }

    pub(crate) fn argv(&self, boot_id: &str, lines: u32) -> Vec<String> {
        let mut v = vec![
            self.program.clone(),
            "--no-pager".into(),
            "--quiet".into(),
            "--dmesg".into(),
            format!("--boot={}", boot_id.replace('-', "")),
            format!("--lines={lines}"),
            "--output=json".into(),
            "--output-fields=MESSAGE,SYSLOG_FACILITY,_SOURCE_MONOTONIC_TIMESTAMP".into(),
        ];
        if self.root != std::path::Path::new("/") {
            v.push(format!("--root={}", self.root.display()));
        }
        v
    }
}

impl BootJournal for Journalctl {
    fn kernel_tail(
        &self,
        boot_id: &str,
        lines: u32,
        timeout: Duration,
    ) -> Result<Vec<KernelLine>, String> {
        let out = output_with_deadline(&self.argv(boot_id, lines), timeout, MAX_OUTPUT)?;
        Ok(parse_json_lines(&out))
    }
}

/// One JSON object per line; MESSAGE is a string, or an array of bytes when it is not
/// UTF-8. Lines of another facility, or unparsable ones, are skipped.
pub(crate) fn parse_json_lines(out: &[u8]) -> Vec<KernelLine> {
    out.split(|b| *b == b'\n')
        .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
        .filter(|v| v["SYSLOG_FACILITY"].as_str() == Some("0"))
        .filter_map(|v| {
            let text = match &v["MESSAGE"] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Array(a) => {
                    let bytes: Vec<u8> = a
                        .iter()
                        .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                        .collect();
                    String::from_utf8_lossy(&bytes).into_owned()
                }
                _ => return None,
            };
            Some(KernelLine {
                ts_usec: v["_SOURCE_MONOTONIC_TIMESTAMP"]
                    .as_str()
                    .and_then(|t| t.parse().ok()),
                text,
            })
        })
        .collect()
}

#[cfg(test)]
/// Answers with fixed lines (or an error) and records the boot asked for.
pub(crate) struct FixedJournal {
    pub(crate) answer: Result<Vec<KernelLine>, String>,
    pub(crate) asked: std::sync::Mutex<Vec<String>>,
}

#[cfg(test)]
impl BootJournal for FixedJournal {
    fn kernel_tail(&self, boot_id: &str, _: u32, _: Duration) -> Result<Vec<KernelLine>, String> {
        self.asked.lock().unwrap().push(boot_id.to_string());
        self.answer.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kernel_facility_lines_are_kept_with_their_timestamps() {
        let out = concat!(
            r#"{"MESSAGE":"hwmon hwmon1: Undervoltage detected!","SYSLOG_FACILITY":"0","_SOURCE_MONOTONIC_TIMESTAMP":"5000000"}"#,
            "\n",
            r#"{"MESSAGE":"rcu: INFO: forged by root","SYSLOG_FACILITY":"1"}"#,
            "\n",
            r#"{"MESSAGE":[104,105,255],"SYSLOG_FACILITY":"0"}"#,
            "\nnot json\n",
        );
        let v = parse_json_lines(out.as_bytes());
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].ts_usec, Some(5_000_000));
        assert_eq!(v[0].text, "hwmon hwmon1: Undervoltage detected!");
        assert_eq!(v[1].text, "hi\u{fffd}");
    }

    #[test]
    fn the_boot_is_asked_for_by_id_and_a_test_root_is_passed_on() {
        let j = Journalctl::new("/");
        let a = j.argv("0123abcd-0000-4000-8000-000000000001", 300);
        assert!(
            a.contains(&"--boot=0123abcd000040008000000000000001".to_string()),
            "{a:?}"
        );
        assert!(a.contains(&"--dmesg".to_string()) && a.contains(&"--lines=300".to_string()));
        assert!(!a.iter().any(|x| x.starts_with("--root")));
        let a = Journalctl::new("/tmp/root").argv("b", 10);
        assert!(a.contains(&"--root=/tmp/root".to_string()));
    }

    #[test]
    fn a_missing_journalctl_is_an_error_not_a_panic() {
        let j = Journalctl {
            root: "/".into(),
            program: "/nonexistent/journalctl".into(),
        };
        let e = j.kernel_tail("b", 10, Duration::from_secs(1)).unwrap_err();
        assert!(e.contains("cannot start"), "{e}");
    }
}
