//! Why the previous boot ended, decided once at start from the evidence left behind. Pure.
//!
//! The first rule that holds wins, strongest evidence first:
//!
//! | # | evidence | cause | why this rank |
//! |---|---|---|---|
//! | 1 | nodemedic's reboot intent (or reboot record) for that boot | `nodemedic_reboot` | nodemedic said so before it acted, fsynced |
//! | 2 | a new pstore record of a panic | `kernel_panic` | the kernel wrote it while dying |
//! | 3 | the journal's last lines: a critical trip or a hardware-protection shutdown for heat | `thermal` | that shutdown is orderly, so the clean marker may exist too |
//! | 4 | the clean-shutdown marker | `clean` | written by the shutdown unit |
//! | 5 | nodemedic's intent: keep-alives withheld from the watchdog for a stuck loop | `watchdog_after_hang` | |
//! | 6 | the journal's last lines: `Kernel panic - not syncing` | `kernel_panic` | |
//! | 7 | under-voltage when the boot ended (`power-state.json`, or an unrecovered `Undervoltage detected!` in the journal) | `power` | a Pi resets on a brown-out; a hang at the same time is its symptom |
//! | 8 | the journal's last lines: a hung task, lockup or long RCU stall within 10 min of the end | `watchdog_after_hang` | no clean shutdown after a hang: a watchdog (or a human) reset it |
//! | 9 | thermal throttling when the boot ended | `thermal` | |
//! | - | nothing | `unknown` | a power cut leaves no trace |

use serde::{Deserialize, Serialize};

use crate::model::KernelEventSummary;
use crate::state::reboot_intent::IntentKind;

use super::super::store::PowerRecord;

/// A hang this close to the journal's last line is "at the end".
const HANG_TAIL_USEC: u64 = 600_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Cause {
    Clean,
    NodemedicReboot,
    WatchdogAfterHang,
    KernelPanic,
    Thermal,
    Power,
    Unknown,
}

impl Cause {
    pub(crate) const ALL: [Cause; 7] = [
        Cause::Clean,
        Cause::NodemedicReboot,
        Cause::WatchdogAfterHang,
        Cause::KernelPanic,
        Cause::Thermal,
        Cause::Power,
        Cause::Unknown,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Cause::Clean => "clean",
            Cause::NodemedicReboot => "nodemedic_reboot",
            Cause::WatchdogAfterHang => "watchdog_after_hang",
            Cause::KernelPanic => "kernel_panic",
            Cause::Thermal => "thermal",
            Cause::Power => "power",
            Cause::Unknown => "unknown",
        }
    }

    /// A reboot nobody asked for after the kernel failed: counted by the reboot budget like
    /// one of nodemedic's own, so crash-reboot-crash is seen as the loop it is.
    pub(crate) fn unplanned_reboot(self) -> bool {
        matches!(self, Cause::WatchdogAfterHang | Cause::KernelPanic)
    }
}

/// One pstore record attributed to the previous boot.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct PstoreFinding {
    pub(crate) path: String,
    pub(crate) reason: Option<String>,
    pub(crate) panic_line: Option<String>,
    pub(crate) panicked: bool,
    pub(crate) events: Vec<KernelEventSummary>,
}

/// What the journal gave.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "journal")]
pub(crate) enum JournalFinding {
    /// Not read, and why (no persistent journal, timed out, first boot).
    NotRead { why: String },
    Read {
        lines: usize,
        events: Vec<KernelEventSummary>,
        panic_line: Option<String>,
        last_ts_usec: Option<u64>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Evidence {
    pub(crate) clean_marker: bool,
    pub(crate) intent: Option<(IntentKind, String)>,
    pub(crate) pstore: Vec<PstoreFinding>,
    pub(crate) journal: JournalFinding,
    /// `power-state.json` as the previous boot left it (None: not that boot's, or none).
    pub(crate) power: Option<PowerRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BootVerdict {
    pub(crate) cause: Cause,
    /// One sentence for the audit trail, the log, the Event and `check`.
    pub(crate) why: String,
}

fn verdict(cause: Cause, why: String) -> BootVerdict {
    BootVerdict { cause, why }
}

/// A short name for an event: `hung task containerd:812`, `soft lockup on CPU 2`.
pub(crate) fn describe(e: &KernelEventSummary) -> String {
    let f = &e.fields;
    let who = match (f["comm"].as_str(), f["pid"].as_u64()) {
        (Some(c), Some(p)) => format!(" {c}:{p}"),
        _ => String::new(),
    };
    let cpu = f["cpu"]
        .as_u64()
        .map(|c| format!(" on CPU {c}"))
        .unwrap_or_default();
    format!("{}{who}{cpu}", e.kind.replace('_', " "))
}

pub(crate) fn decide(e: &Evidence) -> BootVerdict {
    if let Some((IntentKind::Reboot, why)) = &e.intent {
        return verdict(
            Cause::NodemedicReboot,
            format!("nodemedic rebooted the node: {why}"),
        );
    }
    if let Some(p) = e.pstore.iter().find(|p| p.panicked) {
        let after = p
            .events
            .iter()
            .find(|x| x.hang || x.panic)
            .map(|x| format!(" after a {}", describe(x)))
            .unwrap_or_default();
        return verdict(
            Cause::KernelPanic,
            format!(
                "the kernel panicked{after}: {} (pstore record {})",
                p.panic_line
                    .as_deref()
                    .unwrap_or("no panic line kept, the record's header says Panic"),
                p.path
            ),
        );
    }
    let (events, panic_line, last_ts): (&[KernelEventSummary], _, _) = match &e.journal {
        JournalFinding::Read {
            events,
            panic_line,
            last_ts_usec,
            ..
        } => (events, panic_line.as_deref(), *last_ts_usec),
        JournalFinding::NotRead { .. } => (&[], None, None),
    };
    if let Some(x) = events
        .iter()
        .find(|x| x.kind == "thermal_throttle" && x.critical)
    {
        return verdict(
            Cause::Thermal,
            format!(
                "the kernel shut the node down at a critical temperature ({}; journal)",
                describe(x)
            ),
        );
    }
    if e.clean_marker {
        return verdict(
            Cause::Clean,
            "the previous boot shut down cleanly (clean-shutdown marker)".into(),
        );
    }
    if let Some((IntentKind::WatchdogStop, why)) = &e.intent {
        return verdict(
            Cause::WatchdogAfterHang,
            format!(
                "nodemedic withheld the hardware watchdog's keep-alives ({why}) and the board was reset"
            ),
        );
    }
    if let Some(p) = panic_line {
        return verdict(
            Cause::KernelPanic,
            format!("the kernel panicked: {p} (journal)"),
        );
    }
    let uv_events: Vec<_> = events.iter().filter(|x| x.kind == "undervoltage").collect();
    let uv_journal =
        uv_events.iter().any(|x| x.critical) || uv_events.last().is_some_and(|x| !x.cleared);
    let uv_persisted = e.power.as_ref().is_some_and(|p| p.alarm);
    if uv_journal || uv_persisted {
        let episodes = e
            .power
            .as_ref()
            .map(|p| {
                format!(
                    "; {} under-voltage episode(s) in that boot",
                    p.episodes_boot
                )
            })
            .unwrap_or_default();
        return verdict(
            Cause::Power,
            format!(
                "no clean shutdown, and the firmware reported under-voltage when the boot ended ({}){episodes}: the supply sagged and the board reset",
                if uv_persisted {
                    "power-state.json"
                } else {
                    "journal"
                }
            ),
        );
    }
    let hang = events
        .iter()
        .rev()
        .find(|x| x.hang)
        .filter(|x| match (x.ts_usec, last_ts) {
            (Some(t), Some(end)) => end.saturating_sub(t) <= HANG_TAIL_USEC,
            _ => true,
        });
    if let Some(x) = hang {
        return verdict(
            Cause::WatchdogAfterHang,
            format!(
                "no clean shutdown after a {} in the last kernel lines (journal): the node hung and was reset",
                describe(x)
            ),
        );
    }
    if let Some(p) = e.power.as_ref().filter(|p| p.throttling) {
        return verdict(
            Cause::Thermal,
            format!(
                "no clean shutdown while the CPU was being throttled for heat ({})",
                if p.throttling_why.is_empty() {
                    "power-state.json"
                } else {
                    &p.throttling_why
                }
            ),
        );
    }
    let oops = e
        .pstore
        .iter()
        .find(|p| p.reason.is_some())
        .map(|p| {
            format!(
                "; pstore holds a {} record ({}) but no panic",
                p.reason.as_deref().unwrap_or("?"),
                p.path
            )
        })
        .unwrap_or_default();
    let journal = match &e.journal {
        JournalFinding::NotRead { why } => format!("; journal not read: {why}"),
        JournalFinding::Read { lines, .. } => {
            format!("; the journal's last {lines} kernel lines show nothing that explains it")
        }
    };
    verdict(
        Cause::Unknown,
        format!(
            "no clean shutdown and no trace of why (a power cut, or a reset that left none){oops}{journal}"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &'static str, ts: u64) -> KernelEventSummary {
        KernelEventSummary {
            kind,
            panic: false,
            cleared: false,
            critical: false,
            hang: matches!(kind, "hung_task" | "soft_lockup"),
            ts_usec: Some(ts),
            fields: serde_json::json!({"kind": kind}),
        }
    }

    fn nothing() -> Evidence {
        Evidence {
            clean_marker: false,
            intent: None,
            pstore: Vec::new(),
            journal: JournalFinding::NotRead {
                why: "no persistent journal".into(),
            },
            power: None,
        }
    }

    fn journal(events: Vec<KernelEventSummary>, last: u64) -> JournalFinding {
        JournalFinding::Read {
            lines: 300,
            events,
            panic_line: None,
            last_ts_usec: Some(last),
        }
    }

    #[test]
    fn each_cause_follows_from_its_evidence() {
        let cause = |e: &Evidence| decide(e).cause;
        assert_eq!(cause(&nothing()), Cause::Unknown);
        assert_eq!(
            cause(&Evidence {
                clean_marker: true,
                ..nothing()
            }),
            Cause::Clean
        );
        let intent = |k| Some((k, "loop policy stuck for 31s".to_string()));
        assert_eq!(
            cause(&Evidence {
                intent: intent(IntentKind::Reboot),
                clean_marker: true,
                ..nothing()
            }),
            Cause::NodemedicReboot
        );
        assert_eq!(
            cause(&Evidence {
                intent: intent(IntentKind::WatchdogStop),
                ..nothing()
            }),
            Cause::WatchdogAfterHang
        );
        let pstore = PstoreFinding {
            path: "sys/fs/pstore/dmesg-ramoops-0".into(),
            reason: Some("Panic".into()),
            panic_line: Some("Kernel panic - not syncing: Attempted to kill init!".into()),
            panicked: true,
            events: Vec::new(),
        };
        assert_eq!(
            cause(&Evidence {
                pstore: vec![pstore],
                ..nothing()
            }),
            Cause::KernelPanic
        );
        let mut critical = ev("thermal_throttle", 900);
        critical.critical = true;
        assert_eq!(
            cause(&Evidence {
                clean_marker: true,
                journal: journal(vec![critical], 1000),
                ..nothing()
            }),
            Cause::Thermal,
            "a thermal shutdown is orderly: the marker exists and heat is still the cause"
        );
        assert_eq!(
            cause(&Evidence {
                journal: journal(vec![ev("hung_task", 900_000_000)], 1_000_000_000),
                ..nothing()
            }),
            Cause::WatchdogAfterHang
        );
        assert_eq!(
            cause(&Evidence {
                power: Some(PowerRecord {
                    alarm: true,
                    ..Default::default()
                }),
                journal: journal(vec![ev("hung_task", 900_000_000)], 1_000_000_000),
                ..nothing()
            }),
            Cause::Power,
            "under-voltage at the end explains the hang"
        );
        assert_eq!(
            cause(&Evidence {
                power: Some(PowerRecord {
                    throttling: true,
                    ..Default::default()
                }),
                ..nothing()
            }),
            Cause::Thermal
        );
    }

    #[test]
    fn under_voltage_that_recovered_or_a_hang_long_before_the_end_explain_nothing() {
        let mut normal = ev("undervoltage", 20);
        normal.cleared = true;
        let e = Evidence {
            journal: journal(
                vec![
                    ev("undervoltage", 10),
                    normal.clone(),
                    ev("hung_task", 1_000_000),
                ],
                2_000_000_000,
            ),
            ..nothing()
        };
        let v = decide(&e);
        assert_eq!(v.cause, Cause::Unknown, "{}", v.why);
        assert!(v.why.contains("last 300 kernel lines"), "{}", v.why);
        let e = Evidence {
            journal: journal(vec![normal, ev("undervoltage", 30)], 40),
            ..nothing()
        };
        assert_eq!(decide(&e).cause, Cause::Power);
    }

    #[test]
    fn only_a_hang_or_a_panic_is_an_unplanned_reboot() {
        let unplanned: Vec<_> = Cause::ALL
            .into_iter()
            .filter(|c| c.unplanned_reboot())
            .map(|c| c.name())
            .collect();
        assert_eq!(unplanned, ["watchdog_after_hang", "kernel_panic"]);
    }
}
