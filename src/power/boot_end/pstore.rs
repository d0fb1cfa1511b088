//! pstore records: what the kernel saved of its log when it panicked or oopsed, in
//! persistent RAM (ramoops; reliable on a Pi 5, not on a Pi 4: raspberrypi/linux #5298) or
//! EFI variables. They show up in `/sys/fs/pstore`, and `systemd-pstore` moves them to
//! `/var/lib/systemd/pstore` at boot. nodemedic only reads them, never deletes one: they
//! are the operator's evidence, and deleting from `/sys/fs/pstore` erases the backend too.
//!
//! A record is attributed to the previous boot when it was not seen at an earlier start
//! (its fingerprint is kept in `previous-boot.json`): ramoops keeps a record across any
//! number of clean reboots until someone deletes it.

use crate::edge::HostFiles;
use crate::model::KernelLine;

pub(crate) const PSTORE_DIRS: [&str; 2] = ["sys/fs/pstore", "var/lib/systemd/pstore"];
/// Records looked at per start; a pstore holds a handful.
const MAX_RECORDS: usize = 64;
/// Lines kept per record: the tail holds the panic.
const MAX_LINES: usize = 2000;

/// One kernel-log record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PstoreRecord {
    /// Relative to the host root.
    pub(crate) path: String,
    /// Name, size and a hash of the content: the same record found again is not new.
    pub(crate) fingerprint: String,
    /// The dump reason of the header line (`Panic#1 Part1` -> `Panic`), if any.
    pub(crate) reason: Option<String>,
    /// The `Kernel panic - not syncing: ...` text, if the record holds one.
    pub(crate) panic_line: Option<String>,
    pub(crate) lines: Vec<KernelLine>,
}

impl PstoreRecord {
    pub(crate) fn panicked(&self) -> bool {
        self.reason.as_deref() == Some("Panic") || self.panic_line.is_some()
    }
}

/// Kernel-log dumps: `dmesg-ramoops-0`, `dmesg-efi-<id>`, `dmesg-efi_pstore-<id>`,
/// `dmesg-erst-<id>`, and systemd-pstore's reassembled `dmesg.txt`. Compressed records the
/// kernel could not decompress (`.enc.z`) cannot be read as text.
fn is_dmesg_record(name: &str) -> bool {
    (name.starts_with("dmesg-") && !name.ends_with(".enc.z")) || name == "dmesg.txt"
}

/// Every kernel-log record under the pstore directories (one level of subdirectories, as
/// systemd-pstore makes), sorted by path.
pub(crate) fn list(files: &dyn HostFiles) -> Vec<String> {
    let mut out = Vec::new();
    for dir in PSTORE_DIRS {
        let Ok(names) = files.list(dir) else { continue };
        for n in names {
            let p = format!("{dir}/{n}");
            if is_dmesg_record(&n) {
                out.push(p);
            } else if let Ok(sub) = files.list(&p) {
                out.extend(
                    sub.into_iter()
                        .filter(|s| is_dmesg_record(s))
                        .map(|s| format!("{p}/{s}")),
                );
            }
        }
    }
    out.sort();
    out.truncate(MAX_RECORDS);
    out
}

pub(crate) fn read(files: &dyn HostFiles, path: &str) -> Result<PstoreRecord, String> {
    let bytes = files.read(path).map_err(|e| format!("{path}: {e}"))?;
    Ok(parse(path, &bytes))
}

/// FNV-1a, 64 bits: a stable fingerprint without a crypto dependency.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub(crate) fn parse(path: &str, bytes: &[u8]) -> PstoreRecord {
    let text = String::from_utf8_lossy(bytes);
    let name = path.rsplit('/').next().unwrap_or(path);
    let mut reason = None;
    let mut panic_line = None;
    let mut lines = Vec::new();
    for l in text.lines() {
        let t = l.trim_end();
        if t.is_empty() {
            continue;
        }
        // The dump header: `<Reason>#<count> Part<n>` (fs/pstore/platform.c).
        if let Some((r, rest)) = t.split_once('#')
            && rest.contains(" Part")
            && !r.is_empty()
            && r.bytes().all(|b| b.is_ascii_alphabetic())
        {
            reason.get_or_insert_with(|| r.to_string());
            continue;
        }
        if let Some(i) = t.find("Kernel panic - not syncing: ") {
            panic_line = Some(t[i..].chars().take(300).collect());
        }
        lines.push(KernelLine {
            ts_usec: None,
            text: t.to_string(),
        });
    }
    let excess = lines.len().saturating_sub(MAX_LINES);
    lines.drain(..excess);
    PstoreRecord {
        path: path.to_string(),
        fingerprint: format!("{name}:{}:{:016x}", bytes.len(), fnv1a(bytes)),
        reason,
        panic_line,
        lines,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::FakeFiles;

    #[test]
    fn records_are_found_in_both_places_and_only_kernel_log_dumps() {
        let f = FakeFiles::with(&[
            (
                "sys/fs/pstore/dmesg-ramoops-0",
                "Panic#1 Part1\n<0>[ 9.0] Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b\n",
            ),
            ("sys/fs/pstore/console-ramoops-0", "console"),
            ("sys/fs/pstore/dmesg-efi-171234-1.enc.z", "zzz"),
            (
                "var/lib/systemd/pstore/1712345678/dmesg-efi-171234567801001",
                "Oops#1 Part1\n<4>[ 1.0] x\n",
            ),
            ("var/lib/systemd/pstore/1712345678/dmesg.txt", "x\n"),
        ]);
        assert_eq!(
            list(&f),
            [
                "sys/fs/pstore/dmesg-ramoops-0",
                "var/lib/systemd/pstore/1712345678/dmesg-efi-171234567801001",
                "var/lib/systemd/pstore/1712345678/dmesg.txt",
            ]
        );
        let r = read(&f, "sys/fs/pstore/dmesg-ramoops-0").unwrap();
        assert_eq!(r.reason.as_deref(), Some("Panic"));
        assert!(r.panicked());
        assert_eq!(
            r.panic_line.as_deref(),
            Some("Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b")
        );
        assert_eq!(r.lines.len(), 1, "the header is not a log line");
        let o = read(
            &f,
            "var/lib/systemd/pstore/1712345678/dmesg-efi-171234567801001",
        )
        .unwrap();
        assert_eq!(o.reason.as_deref(), Some("Oops"));
        assert!(!o.panicked());
        assert_ne!(o.fingerprint, r.fingerprint);
        assert_eq!(
            parse("a/dmesg-ramoops-0", b"x").fingerprint,
            parse("b/dmesg-ramoops-0", b"x").fingerprint
        );
    }
}
