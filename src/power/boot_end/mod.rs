//! Why the previous boot ended: evidence gathered once at start ([`gather`]), a pure verdict
//! ([`decide::decide`]) and `previous-boot.json`, which keeps the verdict for `check` and
//! `/status` and the fingerprints of the pstore records already seen.
//!
//! | file | what |
//! |---|---|
//! | `pstore.rs` | pstore records in `/sys/fs/pstore` and `/var/lib/systemd/pstore`, read, never deleted |
//! | `journal.rs` | the previous boot's last kernel lines from a persistent journal, with a deadline |
//! | `decide.rs` | the causes and which evidence wins |
//!
//! The kernel classifier reads the pstore records and the journal lines; this subsystem
//! does not import it: the daemon hands a summariser in ([`Sources::summarise`]).

pub(crate) mod decide;
pub(crate) mod journal;
pub(crate) mod pstore;

use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use crate::edge::HostFiles;
use crate::model::{KernelEventSummary, KernelLine};
use crate::state::reboot_intent::RebootIntent;

use decide::{BootVerdict, Evidence, JournalFinding, PstoreFinding};
use journal::BootJournal;

pub(crate) const RECORD_FILE: &str = "previous-boot.json";
/// Fingerprints of seen pstore records kept: far more than a pstore holds.
const MAX_SEEN: usize = 256;

/// `previous-boot.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct BootEndRecord {
    /// The boot in which it was decided.
    pub(crate) boot_id: String,
    pub(crate) previous_boot_id: Option<String>,
    pub(crate) decided_unix: u64,
    /// None at the first start nodemedic sees (no previous boot to judge).
    pub(crate) verdict: Option<BootVerdict>,
    pub(crate) seen_pstore: Vec<String>,
}

pub(crate) fn read_record(dir: &Path) -> Option<BootEndRecord> {
    let f = std::fs::File::open(dir.join(RECORD_FILE)).ok()?;
    let mut bytes = Vec::new();
    f.take(1 << 20).read_to_end(&mut bytes).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub(crate) fn write_record(dir: &Path, r: &BootEndRecord) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    crate::state::atomic_file::write_atomic(&dir.join(RECORD_FILE), &bytes)
}

/// Where the evidence comes from.
pub(crate) struct Sources<'a> {
    pub(crate) files: &'a dyn HostFiles,
    pub(crate) state_dir: &'a Path,
    pub(crate) journal: &'a dyn BootJournal,
    pub(crate) journal_lines: u32,
    pub(crate) journal_timeout: Duration,
    /// The kernel classifier, handed in by the daemon.
    pub(crate) summarise: &'a dyn Fn(&[KernelLine]) -> Vec<KernelEventSummary>,
}

/// What the state directory says of the previous boot.
pub(crate) struct Previous<'a> {
    pub(crate) boot_id: &'a str,
    /// The clean-shutdown marker names it.
    pub(crate) clean_marker: bool,
    /// `reboot-intent.json`, whatever boot it names.
    pub(crate) intent: Option<RebootIntent>,
}

/// Everything gathered, and the verdict.
pub(crate) struct Gathered {
    pub(crate) verdict: BootVerdict,
    pub(crate) evidence: Evidence,
}

/// New pstore records (not in `seen`), read and summarised; `seen` gains them.
pub(crate) fn new_pstore_records(src: &Sources<'_>, seen: &mut Vec<String>) -> Vec<PstoreFinding> {
    let mut out = Vec::new();
    for path in pstore::list(src.files) {
        let r = match pstore::read(src.files, &path) {
            Ok(r) => r,
            Err(e) => {
                log::warn!("pstore: {e}");
                continue;
            }
        };
        if seen.contains(&r.fingerprint) {
            continue;
        }
        seen.push(r.fingerprint.clone());
        out.push(PstoreFinding {
            path: r.path.clone(),
            reason: r.reason.clone(),
            panic_line: r.panic_line.clone(),
            panicked: r.panicked(),
            events: (src.summarise)(&r.lines),
        });
    }
    let excess = seen.len().saturating_sub(MAX_SEEN);
    seen.drain(..excess);
    out
}

/// Reads the journal and decides. `pstore` are the new records found at this start.
pub(crate) fn gather(
    src: &Sources<'_>,
    prev: &Previous<'_>,
    pstore: Vec<PstoreFinding>,
) -> Gathered {
    let intent = prev
        .intent
        .as_ref()
        .filter(|i| i.boot_id == prev.boot_id)
        .map(|i| (i.kind, i.reason.clone()));
    let journal = match src.journal.kernel_tail(
        prev.boot_id,
        src.journal_lines,
        src.journal_timeout,
    ) {
        Ok(lines) if lines.is_empty() => JournalFinding::NotRead {
            why:
                "the journal holds no kernel line of that boot (is it persistent? /var/log/journal)"
                    .into(),
        },
        Ok(lines) => JournalFinding::Read {
            lines: lines.len(),
            events: (src.summarise)(&lines),
            panic_line: lines.iter().rev().find_map(|l| {
                l.text
                    .find("Kernel panic - not syncing: ")
                    .map(|i| l.text[i..].chars().take(300).collect())
            }),
            last_ts_usec: lines.iter().rev().find_map(|l| l.ts_usec),
        },
        Err(e) => JournalFinding::NotRead { why: e },
    };
    let power = super::store::read(src.state_dir)
        .ok()
        .flatten()
        .filter(|p| p.boot_id == prev.boot_id);
    let evidence = Evidence {
        clean_marker: prev.clean_marker,
        intent,
        pstore,
        journal,
        power,
    };
    Gathered {
        verdict: decide::decide(&evidence),
        evidence,
    }
}

/// The evidence as JSON for the audit entry.
pub(crate) fn evidence_json(e: &Evidence) -> serde_json::Value {
    serde_json::json!({
        "clean_shutdown_marker": e.clean_marker,
        "reboot_intent": e.intent.as_ref().map(|(k, why)| serde_json::json!({"kind": k, "reason": why})),
        "pstore": e.pstore,
        "journal": e.journal,
        "power_state": e.power.as_ref().map(|p| serde_json::json!({
            "under_voltage_at_end": p.alarm,
            "episodes": p.episodes_boot,
            "throttling_at_end": p.throttling,
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::FakeFiles;
    use crate::state::reboot_intent::IntentKind;
    use journal::FixedJournal;

    /// These tests only need to see the lines arrive: one summary per line saying `hang`.
    fn summarise(lines: &[KernelLine]) -> Vec<KernelEventSummary> {
        lines
            .iter()
            .filter(|l| l.text.contains("hang"))
            .map(|l| KernelEventSummary {
                kind: "hung_task",
                panic: false,
                cleared: false,
                critical: false,
                hang: true,
                ts_usec: l.ts_usec,
                fields: serde_json::json!({}),
            })
            .collect()
    }

    #[test]
    fn a_pstore_record_is_new_once_and_the_journal_is_asked_for_the_previous_boot() {
        let d = tempfile::tempdir().unwrap();
        let files = FakeFiles::with(&[(
            "sys/fs/pstore/dmesg-ramoops-0",
            "Panic#1 Part1\n<0>[ 5.0] Kernel panic - not syncing: hang\n",
        )]);
        let j = FixedJournal {
            answer: Ok(vec![KernelLine {
                ts_usec: Some(1),
                text: "a hang".into(),
            }]),
            asked: Default::default(),
        };
        let src = Sources {
            files: &files,
            state_dir: d.path(),
            journal: &j,
            journal_lines: 300,
            journal_timeout: Duration::from_secs(1),
            summarise: &summarise,
        };
        let mut seen = Vec::new();
        let p = new_pstore_records(&src, &mut seen);
        assert_eq!(p.len(), 1);
        assert_eq!(
            p[0].events.len(),
            1,
            "the record went through the summariser"
        );
        assert!(
            new_pstore_records(&src, &mut seen).is_empty(),
            "seen: not new again"
        );
        let prev = Previous {
            boot_id: "prev-boot",
            clean_marker: false,
            intent: Some(RebootIntent {
                boot_id: "older-boot".into(),
                at_unix: 1,
                kind: IntentKind::Reboot,
                reason: "x".into(),
            }),
        };
        let g = gather(&src, &prev, p);
        assert_eq!(
            g.verdict.cause,
            decide::Cause::KernelPanic,
            "an older boot's intent is not this one's"
        );
        assert_eq!(*j.asked.lock().unwrap(), ["prev-boot"]);
        assert_eq!(evidence_json(&g.evidence)["journal"]["journal"], "read");
    }
}
