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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunMode;
    use crate::edge::{FakeClock, FakeFiles};
    use crate::model::{Condition, ConditionKind, KernelLine, Remedy};
    use crate::power::boot_end::journal::FixedJournal;
    use crate::remedy::tests::{bed, config};
    use crate::state::reboot_intent::{self, IntentKind};
    use std::time::Duration;

    fn no_journal() -> FixedJournal {
        FixedJournal {
            answer: Err("Data from the specified boot is not available".into()),
            asked: Default::default(),
        }
    }

    /// The next boot's start over `dir`: the store learns the new boot, then the verdict.
    fn next_boot(
        cfg: &Config,
        files: &FakeFiles,
        journal: &FixedJournal,
        clock: &FakeClock,
    ) -> (AtStart, StateStore) {
        let (mut store, _) = StateStore::load(&cfg.state_dir, clock.unix_secs()).unwrap();
        store.note_boot("boot-a");
        assert!(store.note_boot("boot-b"));
        let mut audit = AuditLog::open(&cfg.state_dir, 1000).unwrap();
        let e = BootEndEdges {
            files,
            clock,
            journal,
        };
        let r = at_start(cfg, &e, &mut store, &mut audit, true, "boot-b", 0);
        (r, store)
    }

    #[test]
    fn a_reboot_nodemedic_made_is_the_next_boots_verdict_and_an_event() {
        let mut cfg = config(RunMode::Act, |_| {});
        let mut b = bed(&cfg);
        b.hold(ConditionKind::KernelHardLockup, "");
        let done = b.tick();
        assert!(done.iter().any(|c| c.decision.action == Remedy::Reboot));
        let i = reboot_intent::read(b.dir.path()).expect("intent written before the reboot");
        assert_eq!((i.kind, i.boot_id.as_str()), (IntentKind::Reboot, "boot-a"));
        cfg.state_dir = b.dir.path().into();
        let clock = FakeClock::new(b.clock.unix_secs() + 90, Duration::from_secs(40));
        let (r, store) = next_boot(&cfg, &FakeFiles::default(), &no_journal(), &clock);
        assert_eq!(r.status["cause"], "nodemedic_reboot");
        assert!(
            r.status["why"]
                .as_str()
                .unwrap()
                .contains("KernelHardLockup"),
            "{}",
            r.status
        );
        assert_eq!(store.counter("previous_boot_end:nodemedic_reboot"), 1);
        let ev = r.event.unwrap();
        assert_eq!(ev.reason, "NodeMedicPreviousBootNodemedicReboot");
        let (audit, _) = crate::audit::read_tail(b.dir.path(), 100);
        let last = audit.last().unwrap();
        assert_eq!(
            (
                last.action.as_str(),
                last.problem.as_str(),
                last.subject.as_str()
            ),
            ("previous_boot", "nodemedic_reboot", "boot-a")
        );
        // A restart later in the same boot reads the verdict back, deciding nothing again.
        let (mut store, _) = StateStore::load(&cfg.state_dir, 0).unwrap();
        let mut a = AuditLog::open(&cfg.state_dir, 1000).unwrap();
        let e = BootEndEdges {
            files: &FakeFiles::default(),
            clock: &clock,
            journal: &no_journal(),
        };
        let again = at_start(&cfg, &e, &mut store, &mut a, false, "boot-b", 0);
        assert_eq!(again.status["cause"], "nodemedic_reboot");
        assert!(again.event.is_none() && again.entries.is_empty());
        assert_eq!(
            store.counter("previous_boot_end:nodemedic_reboot"),
            1,
            "counted once"
        );
    }

    #[test]
    fn a_panic_in_pstore_is_summarised_kept_and_counted_as_an_unplanned_reboot() {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = config(RunMode::Act, |_| {});
        cfg.state_dir = d.path().into();
        let files = FakeFiles::with(&[(
            "sys/fs/pstore/dmesg-ramoops-0",
            concat!(
                "Panic#1 Part1\n",
                "<3>[ 3000.000000] INFO: task kworker/u8:2:123 blocked for more than 122 seconds.\n",
                "<0>[ 3001.000000] Kernel panic - not syncing: hung_task: blocked tasks\n",
            ),
        )]);
        let clock = FakeClock::new(1_800_000_000, Duration::from_secs(60));
        let (r, store) = next_boot(&cfg, &files, &no_journal(), &clock);
        assert_eq!(r.status["cause"], "kernel_panic");
        let why = r.status["why"].as_str().unwrap();
        assert!(
            why.contains("after a hung task kworker/u8:2:123")
                && why.contains("hung_task: blocked tasks"),
            "{why}"
        );
        assert_eq!(r.entries[0].action, "pstore");
        assert!(
            r.entries[0].reason.contains("kept, never deleted"),
            "{}",
            r.entries[0].reason
        );
        assert_eq!(
            store
                .data
                .policy
                .history
                .get(&Remedy::Reboot)
                .map(|v| v.iter().map(|a| a.at.unix).collect::<Vec<_>>()),
            Some(vec![1_800_000_000 - 60]),
            "an unplanned reboot at the boot's start"
        );
        assert!(
            files
                .reads
                .lock()
                .unwrap()
                .iter()
                .any(|p| p.ends_with("dmesg-ramoops-0"))
        );
        // The record stays where it is and is not blamed on the next boot again.
        let (r2, _) = next_boot(&cfg, &files, &no_journal(), &clock);
        assert_eq!(r2.status["cause"], "unknown");
        assert!(!r2.entries.iter().any(|e| e.action == "pstore"));
    }

    #[test]
    fn the_journal_is_read_for_the_previous_boot_and_its_hang_explains_the_reset() {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = config(RunMode::Act, |_| {});
        cfg.state_dir = d.path().into();
        let line = |ts: u64, t: &str| KernelLine {
            ts_usec: Some(ts),
            text: t.into(),
        };
        let j = FixedJournal {
            answer: Ok(vec![
                line(1_000_000, "Booting Linux on physical CPU 0x0"),
                line(
                    86_000_000_000,
                    "watchdog: BUG: soft lockup - CPU#2 stuck for 23s! [containerd:812]",
                ),
                line(86_000_100_000, "Call trace:"),
                line(86_000_200_000, " el0_svc+0x28/0x98"),
            ]),
            asked: Default::default(),
        };
        let (r, _) = next_boot(&cfg, &FakeFiles::default(), &j, &FakeClock::default());
        assert_eq!(*j.asked.lock().unwrap(), ["boot-a"]);
        assert_eq!(r.status["cause"], "watchdog_after_hang", "{}", r.status);
        assert!(
            r.status["why"]
                .as_str()
                .unwrap()
                .contains("soft lockup containerd:812 on CPU 2"),
            "{}",
            r.status
        );
    }

    #[test]
    fn a_lockup_during_under_voltage_carries_power_supply_and_asks_a_human() {
        let mut b = bed(&config(RunMode::Act, |_| {}));
        b.hub.publish(
            "test",
            vec![
                Condition::new(
                    ConditionKind::KernelSoftLockup,
                    "",
                    "SoftLockup",
                    "CPU#2 stuck for 23s",
                ),
                Condition::new(
                    ConditionKind::UnderVoltage,
                    "",
                    "UnderVoltageDetected",
                    "now",
                ),
            ],
            b.clock.unix_secs(),
        );
        let done = b.run_for(15);
        let acts: Vec<_> = done.iter().map(|c| c.decision.action).collect();
        assert_eq!(acts, [Remedy::Cordon, Remedy::NeedsHuman], "{done:?}");
        assert!(b.rebooter.inner.calls().is_empty());
        let held = b.hub.conditions();
        let lockup = held
            .iter()
            .find(|h| h.condition.kind == ConditionKind::KernelSoftLockup)
            .unwrap();
        assert_eq!(lockup.condition.reason, "PowerSupply");
        assert!(
            lockup
                .condition
                .message
                .contains("during under-voltage (SoftLockup: CPU#2 stuck for 23s)"),
            "{}",
            lockup.condition.message
        );
        let audit = b.audit();
        assert!(
            audit
                .iter()
                .any(|e| e.action == "cordon" && e.reason.contains("reason=PowerSupply")),
            "{audit:?}"
        );
        assert!(
            audit
                .iter()
                .any(|e| e.action == "needs_human" && e.reason.contains("replaced by NeedsHuman")),
            "{audit:?}"
        );
    }
}
