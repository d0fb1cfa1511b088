//! The runtime detector's judgement, pure: `ContainerRuntimeDown` after `down_after` failed
//! passes in a row (a missing socket that was never seen is "absent", not down), and
//! `SandboxNameReserved` while a NotReady sandbox holds a name, from the listing or from a
//! log report the listing confirms.

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::cri::{SandboxInfo, find_conflicts};
use crate::model::{Condition, ConditionKind};

/// How the runtime looked in one pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub(crate) enum RuntimeState {
    Up,
    /// Not answering; `failures` passes in a row.
    Down {
        failures: u32,
        error: String,
    },
    /// No socket and never seen one: no runtime on this machine (yet).
    Absent,
}

/// Where a conflict was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ConflictSource {
    /// Two sandboxes with the same metadata in the listing.
    Listing,
    /// The kubelet's failed RunPodSandbox in containerd's log, confirmed by the listing.
    Log,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ConflictView {
    pub(crate) name: String,
    pub(crate) holder: String,
    pub(crate) source: ConflictSource,
}

/// One pass's facts, as the pure judge takes them.
#[derive(Debug)]
pub(crate) struct PassFacts {
    /// Monotonic time of the pass.
    pub(crate) now: Duration,
    pub(crate) socket_present: bool,
    pub(crate) listing: Result<Vec<SandboxInfo>, String>,
    /// (name, holder id) reported by log lines since the last pass.
    pub(crate) log_reports: Vec<(String, String)>,
}

/// What the judge makes of a pass.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Judgement {
    pub(crate) state: RuntimeState,
    pub(crate) conditions: Vec<Condition>,
    /// (ready, notready) from this pass's listing.
    pub(crate) counts: Option<(usize, usize)>,
    pub(crate) conflicts: Vec<ConflictView>,
}

/// Hysteresis for `ContainerRuntimeDown` and memory of log-reported conflicts (pure).
pub(crate) struct Judge {
    down_after: u32,
    forget: Duration,
    socket: String,
    failures: u32,
    seen_socket: bool,
    /// name -> (holder id, last reported at).
    reported: BTreeMap<String, (String, Duration)>,
    last_conflicts: Vec<ConflictView>,
}

impl Judge {
    pub fn new(down_after: u32, forget: Duration, socket: &Path) -> Self {
        Judge {
            down_after: down_after.max(1),
            forget,
            socket: socket.display().to_string(),
            failures: 0,
            seen_socket: false,
            reported: BTreeMap::new(),
            last_conflicts: Vec::new(),
        }
    }

    pub(crate) fn observe(&mut self, obs: PassFacts) -> Judgement {
        for (name, holder) in obs.log_reports {
            self.reported.insert(name, (holder, obs.now));
        }
        let forget = self.forget;
        self.reported
            .retain(|_, (_, at)| obs.now.saturating_sub(*at) <= forget);
        self.seen_socket |= obs.socket_present;
        let (state, counts) = match obs.listing {
            Ok(list) => {
                self.failures = 0;
                self.last_conflicts = self.conflicts(&list);
                let ready = list.iter().filter(|s| s.ready).count();
                (RuntimeState::Up, Some((ready, list.len() - ready)))
            }
            Err(_) if !obs.socket_present && !self.seen_socket => {
                self.failures = 0;
                self.last_conflicts.clear();
                (RuntimeState::Absent, None)
            }
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                let error = if obs.socket_present {
                    e
                } else {
                    format!("socket {} is gone ({e})", self.socket)
                };
                (
                    RuntimeState::Down {
                        failures: self.failures,
                        error,
                    },
                    None,
                )
            }
        };
        let mut conditions = Vec::new();
        if let RuntimeState::Down { failures, error } = &state
            && *failures >= self.down_after
        {
            conditions.push(Condition::new(
                ConditionKind::ContainerRuntimeDown,
                "",
                if error.contains("did not answer") {
                    "CriTimeout"
                } else {
                    "CriUnreachable"
                },
                format!(
                    "the container runtime at {} failed {failures} checks in a row: {error}",
                    self.socket
                ),
            ));
        }
        // A failed listing is no evidence that a conflict cleared: keep the last ones.
        for c in &self.last_conflicts {
            let how = match c.source {
                ConflictSource::Log => {
                    "the kubelet's RunPodSandbox fails with \"failed to reserve sandbox name\""
                }
                ConflictSource::Listing => "another sandbox with the same name exists",
            };
            conditions.push(Condition::new(
                ConditionKind::SandboxNameReserved,
                c.name.clone(),
                "NameHeldByDeadSandbox",
                format!(
                    "NotReady sandbox {} holds the name {} ({how}); stopping and removing exactly that sandbox frees the name and its IP",
                    &c.holder[..c.holder.len().min(12)],
                    c.name
                ),
            ));
        }
        Judgement {
            state,
            conditions,
            counts,
            conflicts: self.last_conflicts.clone(),
        }
    }

    /// Conflicts in `list`: duplicates, and log reports the listing confirms. A report
    /// whose holder is gone, Ready or renamed is dropped.
    fn conflicts(&mut self, list: &[SandboxInfo]) -> Vec<ConflictView> {
        let mut out: BTreeMap<String, ConflictView> = BTreeMap::new();
        for c in find_conflicts(list) {
            out.entry(c.name.clone()).or_insert(ConflictView {
                name: c.name,
                holder: c.stale_id,
                source: ConflictSource::Listing,
            });
        }
        self.reported.retain(|name, (holder, _)| {
            list.iter()
                .any(|s| s.id == *holder && !s.ready && s.name() == *name)
        });
        for (name, (holder, _)) in &self.reported {
            out.entry(name.clone()).or_insert(ConflictView {
                name: name.clone(),
                holder: holder.clone(),
                source: ConflictSource::Log,
            });
        }
        out.into_values().collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const SOCK: &str = "/run/k3s/containerd/containerd.sock";

    pub(crate) fn sb(c: char, pod: &str, attempt: u32, ready: bool) -> SandboxInfo {
        SandboxInfo {
            id: std::iter::repeat_n(c, 64).collect(),
            pod: pod.into(),
            namespace: "default".into(),
            uid: format!("uid-{pod}"),
            attempt,
            ready,
            created_at_nanos: 1,
        }
    }

    fn obs(now: u64, present: bool, listing: Result<Vec<SandboxInfo>, &str>) -> PassFacts {
        PassFacts {
            now: Duration::from_secs(now),
            socket_present: present,
            listing: listing.map_err(str::to_string),
            log_reports: vec![],
        }
    }

    fn kinds(j: &Judgement) -> Vec<(ConditionKind, String)> {
        j.conditions
            .iter()
            .map(|c| (c.kind, c.subject.clone()))
            .collect()
    }

    #[test]
    fn runtime_down_is_raised_only_after_n_failures_in_a_row_and_clears_on_one_success() {
        let mut j = Judge::new(
            3,
            crate::config::runtime::DEFAULT_CONFLICT_FORGET,
            Path::new(SOCK),
        );
        assert!(kinds(&j.observe(obs(0, true, Ok(vec![])))).is_empty());
        let e =
            "CRI at /run/k3s/containerd/containerd.sock did not answer ListPodSandbox within 2s";
        assert!(kinds(&j.observe(obs(10, true, Err(e)))).is_empty());
        assert!(kinds(&j.observe(obs(20, true, Err(e)))).is_empty());
        let third = j.observe(obs(30, true, Err(e)));
        assert_eq!(
            kinds(&third),
            vec![(ConditionKind::ContainerRuntimeDown, String::new())]
        );
        assert_eq!(third.conditions[0].reason, "CriTimeout");
        assert!(third.conditions[0].message.contains("3 checks in a row"));
        assert!(kinds(&j.observe(obs(40, true, Ok(vec![])))).is_empty());
        assert!(
            kinds(&j.observe(obs(50, true, Err("refused")))).is_empty(),
            "the count restarted"
        );
    }

    #[test]
    fn a_machine_without_a_runtime_socket_is_absent_not_down_forever() {
        let mut j = Judge::new(
            1,
            crate::config::runtime::DEFAULT_CONFLICT_FORGET,
            Path::new(SOCK),
        );
        for t in 0..100 {
            let r = j.observe(obs(t * 10, false, Err("No such file or directory")));
            assert_eq!(r.state, RuntimeState::Absent);
            assert!(r.conditions.is_empty());
        }
    }

    #[test]
    fn a_socket_seen_once_then_gone_counts_as_down() {
        let mut j = Judge::new(
            2,
            crate::config::runtime::DEFAULT_CONFLICT_FORGET,
            Path::new(SOCK),
        );
        j.observe(obs(0, true, Ok(vec![])));
        j.observe(obs(10, false, Err("No such file or directory")));
        let r = j.observe(obs(20, false, Err("No such file or directory")));
        assert_eq!(
            kinds(&r),
            vec![(ConditionKind::ContainerRuntimeDown, String::new())]
        );
        assert!(
            r.conditions[0].message.contains("is gone"),
            "{}",
            r.conditions[0].message
        );
        assert_eq!(r.conditions[0].reason, "CriUnreachable");
    }

    #[test]
    fn a_socket_that_never_answered_since_boot_is_down() {
        // containerd failing `failed to recover state` at start: the socket exists, CRI never serves.
        let mut j = Judge::new(
            2,
            crate::config::runtime::DEFAULT_CONFLICT_FORGET,
            Path::new(SOCK),
        );
        j.observe(obs(0, true, Err("refused")));
        assert_eq!(j.observe(obs(10, true, Err("refused"))).conditions.len(), 1);
    }

    #[test]
    fn duplicate_metadata_in_the_listing_raises_a_conflict_named_by_the_sandbox_name() {
        let mut j = Judge::new(
            3,
            crate::config::runtime::DEFAULT_CONFLICT_FORGET,
            Path::new(SOCK),
        );
        let list = vec![
            sb('a', "web-0", 0, false),
            sb('b', "web-0", 0, true),
            sb('c', "db-0", 0, false),
        ];
        let r = j.observe(obs(0, true, Ok(list)));
        assert_eq!(
            kinds(&r),
            vec![(
                ConditionKind::SandboxNameReserved,
                "web-0_default_uid-web-0_0".into()
            )]
        );
        assert_eq!(r.conflicts[0].holder, "a".repeat(64));
        assert_eq!(r.counts, Some((1, 2)));
    }

    #[test]
    fn a_log_report_is_raised_only_while_the_listing_confirms_a_notready_holder() {
        let mut j = Judge::new(3, Duration::from_secs(300), Path::new(SOCK));
        let name = "web-0_default_uid-web-0_0".to_string();
        let holder = "a".repeat(64);
        // A report whose holder is not listed (forged, or already removed) raises nothing.
        let mut o = obs(0, true, Ok(vec![sb('c', "db-0", 0, false)]));
        o.log_reports = vec![(name.clone(), holder.clone())];
        assert!(j.observe(o).conditions.is_empty());
        // Reported while the NotReady holder is listed under that name: raised.
        let mut o = obs(10, true, Ok(vec![sb('a', "web-0", 0, false)]));
        o.log_reports = vec![(name.clone(), holder.clone())];
        let r = j.observe(o);
        assert_eq!(
            kinds(&r),
            vec![(ConditionKind::SandboxNameReserved, name.clone())]
        );
        assert_eq!(r.conflicts[0].source, ConflictSource::Log);
        // Held while the listing fails (no evidence it cleared), alongside runtime down.
        let r = j.observe(obs(20, true, Err("timeout")));
        assert_eq!(
            kinds(&r),
            vec![(ConditionKind::SandboxNameReserved, name.clone())]
        );
        // Kept without new log lines, within the forget window.
        let r = j.observe(obs(200, true, Ok(vec![sb('a', "web-0", 0, false)])));
        assert_eq!(r.conditions.len(), 1);
        // The holder is removed: cleared at once.
        assert!(j.observe(obs(210, true, Ok(vec![]))).conditions.is_empty());
    }

    #[test]
    fn a_log_report_not_repeated_within_the_forget_window_is_dropped() {
        let mut j = Judge::new(3, Duration::from_secs(300), Path::new(SOCK));
        let mut o = obs(0, true, Ok(vec![sb('a', "web-0", 0, false)]));
        o.log_reports = vec![("web-0_default_uid-web-0_0".into(), "a".repeat(64))];
        assert_eq!(j.observe(o).conditions.len(), 1);
        let r = j.observe(obs(301, true, Ok(vec![sb('a', "web-0", 0, false)])));
        assert!(r.conditions.is_empty(), "the kubelet stopped trying");
    }

    #[test]
    fn a_ready_holder_is_never_a_conflict() {
        let mut j = Judge::new(3, Duration::from_secs(300), Path::new(SOCK));
        let mut o = obs(0, true, Ok(vec![sb('a', "web-0", 0, true)]));
        o.log_reports = vec![("web-0_default_uid-web-0_0".into(), "a".repeat(64))];
        assert!(j.observe(o).conditions.is_empty());
    }
}
