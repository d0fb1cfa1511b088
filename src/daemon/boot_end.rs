//! Once per boot, at the daemon's first start in it: how the previous boot ended
//! (`power::boot_end`), written to the audit trail, `previous-boot.json`, the persisted
//! counter behind `nodemedic_previous_boot_end_total{cause}`, the journal, and an Event on
//! the Node. New pstore records are summarised through the kernel classifier into the audit
//! trail, whatever the verdict. A panic or a hang-and-reset counts as an unplanned reboot in
//! the reboot budget (`policy::unplanned`). Later starts in the same boot only read the
//! verdict back.

use std::path::Path;

use crate::audit::{AuditEntry, AuditLog, AuditOutcome};
use crate::config::Config;
use crate::edge::{Clock, HostFiles};
use crate::kube::api::EventType;
use crate::kube::events::EventDraft;
use crate::power::boot_end::decide::{Cause, PstoreFinding, describe};
use crate::power::boot_end::journal::{BootJournal, Journalctl};
use crate::power::boot_end::{self, BootEndRecord, Previous, Sources};
use crate::state::StateStore;

/// The persisted counter of each cause in `state.json`.
pub(crate) fn counter_name(cause: &str) -> String {
    format!("previous_boot_end:{cause}")
}

/// What the rest of the start needs.
pub(crate) struct AtStart {
    /// For `/status` (`info.previous_boot`).
    pub(crate) status: serde_json::Value,
    /// Audit entries written, for `/status`'s recent actions.
    pub(crate) entries: Vec<AuditEntry>,
    /// The Event for the Node, once the API is reachable (first start in a boot only).
    pub(crate) event: Option<EventDraft>,
}

/// The edges it reads through, injectable for tests.
pub(crate) struct BootEndEdges<'a> {
    pub(crate) files: &'a dyn HostFiles,
    pub(crate) clock: &'a dyn Clock,
    pub(crate) journal: &'a dyn BootJournal,
}

/// The real journal for a config.
pub(crate) fn journal(cfg: &Config) -> Journalctl {
    Journalctl::new(&cfg.host_root)
}

fn entry(
    now: u64,
    boot: &str,
    action: &str,
    problem: &str,
    subject: &str,
    reason: String,
    evidence: serde_json::Value,
) -> AuditEntry {
    AuditEntry {
        time: crate::timefmt::rfc3339_utc(now as f64),
        unix: now as f64,
        boot_id: boot.to_string(),
        action: action.into(),
        problem: problem.into(),
        subject: subject.into(),
        outcome: AuditOutcome::Recorded,
        reason,
        evidence,
    }
}

fn status(r: &BootEndRecord) -> serde_json::Value {
    serde_json::json!({
        "boot_id": r.previous_boot_id,
        "cause": r.verdict.as_ref().map(|v| v.cause.name()),
        "why": r.verdict.as_ref().map(|v| v.why.clone()),
        "decided_unix": r.decided_unix,
    })
}

/// The pstore record's one-line summary for the audit trail.
fn pstore_reason(p: &PstoreFinding) -> String {
    let events: Vec<String> = p.events.iter().map(describe).collect();
    format!(
        "pstore record {} ({}){}{}; kept, never deleted",
        p.path,
        p.reason.as_deref().unwrap_or("no dump header"),
        p.panic_line
            .as_deref()
            .map(|l| format!(": {l}"))
            .unwrap_or_default(),
        if events.is_empty() {
            String::new()
        } else {
            format!("; kernel events: {}", events.join(", "))
        }
    )
}

/// Decides (first start in a boot) or reads back (a restart) how the previous boot ended.
/// `new_boot` and the store's `previous_boot_id` come from `StateStore::note_boot`;
/// `min_sane_unix` is the wall clock the previous run last saw.
pub(crate) fn at_start(
    cfg: &Config,
    e: &BootEndEdges<'_>,
    store: &mut StateStore,
    audit: &mut AuditLog,
    new_boot: bool,
    boot: &str,
    min_sane_unix: u64,
) -> AtStart {
    let dir = cfg.state_dir.as_path();
    let record = boot_end::read_record(dir).unwrap_or_default();
    if !new_boot {
        return AtStart {
            status: if record.boot_id == boot {
                status(&record)
            } else {
                serde_json::Value::Null
            },
            entries: Vec::new(),
            event: None,
        };
    }
    let now = e.clock.unix_secs();
    let summarise = crate::kernel::summary::summarise;
    let src = Sources {
        files: e.files,
        state_dir: dir,
        journal: e.journal,
        journal_lines: cfg.power.journal_lines,
        journal_timeout: cfg.power.journal_timeout.get(),
        summarise: &summarise,
    };
    let mut seen = record.seen_pstore;
    let pstore = boot_end::new_pstore_records(&src, &mut seen);
    let mut entries = Vec::new();
    let mut out = BootEndRecord {
        boot_id: boot.to_string(),
        previous_boot_id: store.data.previous_boot_id.clone(),
        decided_unix: now,
        verdict: None,
        seen_pstore: Vec::new(),
    };
    let mut event = None;
    match store.data.previous_boot_id.clone() {
        None => {
            // The first start nodemedic sees: nothing to judge. Records already in pstore
            // are from before nodemedic: audited, not blamed on a boot.
            for p in &pstore {
                entries.push(entry(
                    now,
                    boot,
                    "pstore",
                    "",
                    &p.path,
                    format!("found at nodemedic's first start: {}", pstore_reason(p)),
                    serde_json::to_value(p).unwrap_or_default(),
                ));
            }
        }
        Some(prev) => {
            let previous = Previous {
                boot_id: &prev,
                clean_marker: crate::state::read_clean_shutdown(dir)
                    .is_some_and(|m| m.boot_id == prev),
                intent: crate::state::reboot_intent::read(dir),
            };
            for p in &pstore {
                entries.push(entry(
                    now,
                    boot,
                    "pstore",
                    "",
                    &p.path,
                    pstore_reason(p),
                    serde_json::to_value(p).unwrap_or_default(),
                ));
            }
            let g = boot_end::gather(&src, &previous, pstore);
            let cause = g.verdict.cause;
            entries.push(entry(
                now,
                boot,
                "previous_boot",
                cause.name(),
                &prev,
                g.verdict.why.clone(),
                boot_end::evidence_json(&g.evidence),
            ));
            store.bump(&counter_name(cause.name()), 1);
            if cause.unplanned_reboot() {
                // The reboot happened when this boot began; a clock behind what the
                // previous run saw (no RTC) still puts it after that.
                let began = now
                    .saturating_sub(e.clock.monotonic().as_secs())
                    .max(min_sane_unix);
                crate::policy::unplanned::note_unplanned_reboot(&mut store.data.policy, began);
            }
            let line = format!(
                "previous boot {prev} ended: {} ({})",
                cause.name(),
                g.verdict.why
            );
            if matches!(cause, Cause::Clean | Cause::NodemedicReboot) {
                log::info!(cause = cause.name(); "{line}");
            } else {
                log::warn!(cause = cause.name(); "{line}");
            }
            event = Some(EventDraft::new(
                if matches!(cause, Cause::Clean | Cause::NodemedicReboot) {
                    EventType::Normal
                } else {
                    EventType::Warning
                },
                format!(
                    "NodeMedicPreviousBoot{}",
                    cause
                        .name()
                        .split('_')
                        .map(|w| w[..1].to_ascii_uppercase() + &w[1..])
                        .collect::<String>()
                ),
                format!("the previous boot ended: {}", g.verdict.why),
            ));
            out.verdict = Some(g.verdict);
        }
    }
    for en in &entries {
        if let Err(err) = audit.append(en) {
            log::error!("cannot write the audit trail: {err}");
        }
    }
    out.seen_pstore = seen;
    if let Err(err) = boot_end::write_record(dir, &out) {
        log::error!("cannot write {}: {err}", boot_end::RECORD_FILE);
    }
    if let Err(err) = store.save() {
        log::error!("cannot save the state after judging the previous boot: {err}");
    }
    AtStart {
        status: status(&out),
        entries,
        event,
    }
}

/// The `check` row: the verdict the daemon recorded, read-only.
pub(crate) fn check_detail(state_dir: &Path) -> Option<(Cause, String)> {
    let r = boot_end::read_record(state_dir)?;
    let v = r.verdict?;
    Some((
        v.cause,
        format!(
            "{}: {} (decided at {}, boot {})",
            v.cause.name(),
            v.why,
            crate::timefmt::rfc3339_utc(r.decided_unix as f64),
            r.previous_boot_id.unwrap_or_default()
        ),
    ))
}
