//! The cluster-wide reboot lock: coordination.k8s.io/v1 Leases, decided purely.
//!
//! Why a Lease: on a 1-3 server k3s cluster with embedded etcd, two servers rebooting at
//! once lose quorum, so reboots go one (or `max_holders`) at a time. kured's lock never
//! expires by default, its users' top complaint: a node that dies holding it blocks every
//! other reboot forever. Ours always expires after `leaseDurationSeconds`.
//!
//! Expiry is judged on *our* monotonic clock, the way client-go's leader election does:
//! a lease held by another node counts as expired once its record has not changed for its
//! duration since we first saw it. The holder's `renewTime` is written with its wall clock,
//! and Raspberry Pis have no RTC: their clocks start in the past and jump.
//!
//! With `max_holders = N > 1` the lock is N Leases `name-0 .. name-(N-1)`; a node holds at
//! most one of them.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::api::LeaseView;
use crate::config::KubernetesSection;
use crate::config::kubernetes::{
    DEFAULT_LEASE_DURATION, DEFAULT_LEASE_NAME, DEFAULT_LEASE_NAMESPACE,
};

/// Renew after a third of the duration: two renewals may fail before anyone else can
/// count the lease as expired.
pub(crate) const RENEW_DIVISOR: u32 = 3;

/// We stop counting ourselves as holder a tenth of the duration before anyone else may
/// count the lease as expired, so two nodes never both believe they hold it.
pub(crate) const SAFETY_DIVISOR: u32 = 10;

/// Where the lock lives and how it behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// Nodes that may reboot at the same time; 1 unless the cluster has no etcd to lose.
    pub max_holders: u32,
    pub duration: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            namespace: DEFAULT_LEASE_NAMESPACE.into(),
            name: DEFAULT_LEASE_NAME.into(),
            max_holders: 1,
            duration: DEFAULT_LEASE_DURATION,
        }
    }
}

impl LeaseConfig {
    /// The lock `[kubernetes]` describes.
    pub(crate) fn from_section(k: &KubernetesSection) -> LeaseConfig {
        LeaseConfig {
            namespace: k.lease_namespace.clone(),
            name: k.lease_name.clone(),
            max_holders: k.lease_max_holders,
            duration: k.lease_duration.get(),
        }
    }

    /// The Lease names making up the lock.
    pub(crate) fn slot_names(&self) -> Vec<String> {
        match self.max_holders {
            0 | 1 => vec![self.name.clone()],
            n => (0..n).map(|i| format!("{}-{i}", self.name)).collect(),
        }
    }

    pub(crate) fn renew_every(&self) -> Duration {
        self.duration / RENEW_DIVISOR
    }
}

/// What the daemon wants from the lock. `Untouched` until it says: a daemon that just
/// started must not release a lock it took before a reboot until the node is healthy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockWant {
    Untouched,
    Hold,
    Release,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StepKind {
    Acquire,
    Renew,
    Release,
}

/// The next write to make, if any.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum LeaseStep {
    Create {
        slot: String,
        lease: LeaseView,
    },
    Replace {
        slot: String,
        kind: StepKind,
        lease: LeaseView,
    },
    /// We hold `slot` and renewal is not due.
    Keep {
        slot: String,
    },
    /// Every slot is held by someone else; the earliest may expire in `retry_in`.
    Wait {
        holders: Vec<String>,
        retry_in: Duration,
    },
    /// Nothing held, nothing wanted.
    Idle,
}

/// One slot as read, with how long its record has been unchanged on our clock.
#[derive(Clone, Debug)]
pub(crate) struct SlotState {
    pub(crate) name: String,
    pub(crate) lease: Option<LeaseView>,
    pub(crate) unchanged_for: Duration,
}

/// When we first saw each slot's current record, on the monotonic clock.
#[derive(Clone, Debug, Default)]
pub(crate) struct Observations {
    seen: BTreeMap<String, (Fingerprint, Duration)>,
}

type Fingerprint = (Option<String>, Option<String>, Option<SystemTime>);

fn fingerprint(lease: Option<&LeaseView>) -> Fingerprint {
    match lease {
        None => (None, None, None),
        Some(l) => (
            l.resource_version.clone(),
            l.holder().map(str::to_string),
            l.renew_time,
        ),
    }
}

impl Observations {
    /// Records what `slot` looks like now; returns how long it has looked like this.
    pub(crate) fn observe(
        &mut self,
        slot: &str,
        lease: Option<&LeaseView>,
        now_mono: Duration,
    ) -> Duration {
        let fp = fingerprint(lease);
        match self.seen.get(slot) {
            Some((old, since)) if *old == fp => now_mono.saturating_sub(*since),
            _ => {
                self.seen.insert(slot.to_string(), (fp, now_mono));
                Duration::ZERO
            }
        }
    }
}

/// Decides the next lease write for `me`.
///
/// `since_our_write` is the time since our last successful write to the slot we hold
/// (None after a restart: renew at once).
pub(crate) fn decide(
    slots: &[SlotState],
    me: &str,
    want: LockWant,
    now: SystemTime,
    since_our_write: Option<Duration>,
    cfg: &LeaseConfig,
) -> LeaseStep {
    let mine = slots
        .iter()
        .find(|s| s.lease.as_ref().and_then(LeaseView::holder) == Some(me));
    match (want, mine) {
        (LockWant::Untouched, _) | (LockWant::Release, None) => LeaseStep::Idle,
        (LockWant::Release, Some(s)) => {
            let cur = s.lease.clone().unwrap_or_default();
            LeaseStep::Replace {
                slot: s.name.clone(),
                kind: StepKind::Release,
                lease: LeaseView {
                    holder: None,
                    acquire_time: None,
                    renew_time: Some(now),
                    ..cur
                },
            }
        }
        (LockWant::Hold, Some(s)) => {
            if since_our_write.is_some_and(|d| d < cfg.renew_every()) {
                return LeaseStep::Keep {
                    slot: s.name.clone(),
                };
            }
            let cur = s.lease.clone().unwrap_or_default();
            LeaseStep::Replace {
                slot: s.name.clone(),
                kind: StepKind::Renew,
                lease: LeaseView {
                    duration_secs: Some(secs(cfg.duration)),
                    acquire_time: cur.acquire_time.or(Some(now)),
                    renew_time: Some(now),
                    ..cur
                },
            }
        }
        (LockWant::Hold, None) => acquire(slots, me, now, cfg),
    }
}

fn acquire(slots: &[SlotState], me: &str, now: SystemTime, cfg: &LeaseConfig) -> LeaseStep {
    let fresh = |transitions: u32, resource_version: Option<String>| LeaseView {
        resource_version,
        holder: Some(me.to_string()),
        duration_secs: Some(secs(cfg.duration)),
        acquire_time: Some(now),
        renew_time: Some(now),
        transitions,
    };
    let mut holders = Vec::new();
    let mut retry_in: Option<Duration> = None;
    for s in slots {
        let Some(cur) = &s.lease else {
            return LeaseStep::Create {
                slot: s.name.clone(),
                lease: fresh(0, None),
            };
        };
        let left = match cur.holder() {
            None => Duration::ZERO,
            Some(h) => {
                holders.push(h.to_string());
                let d = cur
                    .duration_secs
                    .map_or(cfg.duration, |d| Duration::from_secs(d.into()));
                d.saturating_sub(s.unchanged_for)
            }
        };
        if left.is_zero() {
            return LeaseStep::Replace {
                slot: s.name.clone(),
                kind: StepKind::Acquire,
                lease: fresh(
                    cur.transitions.saturating_add(1),
                    cur.resource_version.clone(),
                ),
            };
        }
        retry_in = Some(retry_in.map_or(left, |r| r.min(left)));
    }
    LeaseStep::Wait {
        holders,
        retry_in: retry_in.unwrap_or(cfg.renew_every()),
    }
}

/// Whether we may still act as holder: our last successful write is recent enough that
/// nobody else can have counted the lease as expired.
pub(crate) fn held_fresh(since_our_write: Option<Duration>, cfg: &LeaseConfig) -> bool {
    since_our_write.is_some_and(|d| d < cfg.duration - cfg.duration / SAFETY_DIVISOR)
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    const MIN: Duration = Duration::from_secs(60);

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_764_000_000 + secs)
    }

    fn held_by(holder: &str, rv: &str) -> LeaseView {
        LeaseView {
            resource_version: Some(rv.into()),
            holder: Some(holder.into()),
            duration_secs: Some(900),
            acquire_time: Some(t(0)),
            renew_time: Some(t(0)),
            transitions: 3,
        }
    }

    fn slot(name: &str, lease: Option<LeaseView>, unchanged_for: Duration) -> SlotState {
        SlotState {
            name: name.into(),
            lease,
            unchanged_for,
        }
    }

    fn cfg() -> LeaseConfig {
        LeaseConfig::default()
    }

    #[test]
    fn a_missing_lease_is_created_for_us() {
        let step = decide(
            &[slot("nodemedic-reboot", None, Duration::ZERO)],
            "pi4",
            LockWant::Hold,
            t(5),
            None,
            &cfg(),
        );
        let LeaseStep::Create { slot, lease } = step else {
            panic!("{step:?}")
        };
        assert_eq!(slot, "nodemedic-reboot");
        assert_eq!(lease.holder.as_deref(), Some("pi4"));
        assert_eq!(lease.duration_secs, Some(900));
        assert_eq!(lease.acquire_time, Some(t(5)));
        assert_eq!(lease.renew_time, Some(t(5)));
        assert_eq!(lease.transitions, 0);
        assert_eq!(lease.resource_version, None);
    }

    #[test]
    fn a_lease_held_by_another_node_is_not_granted_before_it_expires() {
        let s = [slot(
            "nodemedic-reboot",
            Some(held_by("pi5", "10")),
            14 * MIN,
        )];
        let step = decide(&s, "pi4", LockWant::Hold, t(840), None, &cfg());
        assert_eq!(
            step,
            LeaseStep::Wait {
                holders: vec!["pi5".into()],
                retry_in: MIN
            }
        );
    }

    #[test]
    fn an_expired_lease_is_taken_over_with_a_transition() {
        let s = [slot(
            "nodemedic-reboot",
            Some(held_by("pi5", "10")),
            15 * MIN,
        )];
        let LeaseStep::Replace { slot, kind, lease } =
            decide(&s, "pi4", LockWant::Hold, t(900), None, &cfg())
        else {
            panic!()
        };
        assert_eq!(
            (slot.as_str(), kind),
            ("nodemedic-reboot", StepKind::Acquire)
        );
        assert_eq!(lease.holder.as_deref(), Some("pi4"));
        assert_eq!(
            lease.resource_version.as_deref(),
            Some("10"),
            "conditional on what we read"
        );
        assert_eq!(lease.transitions, 4);
        assert_eq!(lease.acquire_time, Some(t(900)));
    }

    #[test]
    fn expiry_ignores_the_holders_wall_clock() {
        // pi5 booted without RTC and wrote a renewTime from 1970; only our own observation
        // of an unchanged record counts.
        let mut l = held_by("pi5", "10");
        l.renew_time = Some(UNIX_EPOCH);
        let s = [slot("nodemedic-reboot", Some(l), Duration::from_secs(5))];
        assert!(matches!(
            decide(&s, "pi4", LockWant::Hold, t(0), None, &cfg()),
            LeaseStep::Wait { .. }
        ));
    }

    #[test]
    fn the_holders_own_duration_decides_expiry() {
        let mut l = held_by("pi5", "10");
        l.duration_secs = Some(60);
        let s = [slot("nodemedic-reboot", Some(l), MIN)];
        assert!(matches!(
            decide(&s, "pi4", LockWant::Hold, t(60), None, &cfg()),
            LeaseStep::Replace {
                kind: StepKind::Acquire,
                ..
            }
        ));
    }

    #[test]
    fn a_released_lease_is_free_at_once() {
        let mut l = held_by("", "11");
        l.holder = Some(String::new());
        let s = [slot("nodemedic-reboot", Some(l), Duration::ZERO)];
        assert!(matches!(
            decide(&s, "pi4", LockWant::Hold, t(1), None, &cfg()),
            LeaseStep::Replace {
                kind: StepKind::Acquire,
                ..
            }
        ));
    }

    #[test]
    fn our_lease_is_renewed_only_when_due() {
        let s = [slot(
            "nodemedic-reboot",
            Some(held_by("pi4", "12")),
            Duration::ZERO,
        )];
        assert_eq!(
            decide(&s, "pi4", LockWant::Hold, t(60), Some(MIN), &cfg()),
            LeaseStep::Keep {
                slot: "nodemedic-reboot".into()
            }
        );
        let LeaseStep::Replace { kind, lease, .. } =
            decide(&s, "pi4", LockWant::Hold, t(300), Some(5 * MIN), &cfg())
        else {
            panic!()
        };
        assert_eq!(kind, StepKind::Renew);
        assert_eq!(lease.renew_time, Some(t(300)));
        assert_eq!(lease.acquire_time, Some(t(0)), "acquire time is kept");
        assert_eq!(lease.transitions, 3, "renewal is not a transition");
    }

    #[test]
    fn after_a_restart_we_renew_our_own_lease_at_once() {
        let s = [slot(
            "nodemedic-reboot",
            Some(held_by("pi4", "12")),
            Duration::ZERO,
        )];
        assert!(matches!(
            decide(&s, "pi4", LockWant::Hold, t(400), None, &cfg()),
            LeaseStep::Replace {
                kind: StepKind::Renew,
                ..
            }
        ));
    }

    #[test]
    fn release_clears_the_holder_and_keeps_the_record() {
        let s = [slot(
            "nodemedic-reboot",
            Some(held_by("pi4", "12")),
            Duration::ZERO,
        )];
        let LeaseStep::Replace { kind, lease, .. } =
            decide(&s, "pi4", LockWant::Release, t(700), Some(MIN), &cfg())
        else {
            panic!()
        };
        assert_eq!(kind, StepKind::Release);
        assert_eq!(lease.holder, None);
        assert_eq!(lease.renew_time, Some(t(700)));
        assert_eq!(lease.resource_version.as_deref(), Some("12"));
    }

    #[test]
    fn untouched_or_releasing_without_holding_does_nothing() {
        let s = [slot(
            "nodemedic-reboot",
            Some(held_by("pi5", "12")),
            Duration::ZERO,
        )];
        assert_eq!(
            decide(&s, "pi4", LockWant::Untouched, t(0), None, &cfg()),
            LeaseStep::Idle
        );
        assert_eq!(
            decide(&s, "pi4", LockWant::Release, t(0), None, &cfg()),
            LeaseStep::Idle
        );
        let mine = [slot(
            "nodemedic-reboot",
            Some(held_by("pi4", "12")),
            Duration::ZERO,
        )];
        assert_eq!(
            decide(&mine, "pi4", LockWant::Untouched, t(0), None, &cfg()),
            LeaseStep::Idle,
            "a restarted daemon does not release before it is told the node is healthy"
        );
    }

    #[test]
    fn with_two_holders_the_first_free_slot_is_taken() {
        let c = LeaseConfig {
            max_holders: 2,
            ..cfg()
        };
        assert_eq!(c.slot_names(), ["nodemedic-reboot-0", "nodemedic-reboot-1"]);
        let s = [
            slot("nodemedic-reboot-0", Some(held_by("pi5", "3")), MIN),
            slot("nodemedic-reboot-1", None, Duration::ZERO),
        ];
        assert!(matches!(
            decide(&s, "pi4", LockWant::Hold, t(0), None, &c),
            LeaseStep::Create { slot, .. } if slot == "nodemedic-reboot-1"
        ));
        let full = [
            slot("nodemedic-reboot-0", Some(held_by("pi5", "3")), MIN),
            slot("nodemedic-reboot-1", Some(held_by("pi3", "4")), 10 * MIN),
        ];
        assert_eq!(
            decide(&full, "pi4", LockWant::Hold, t(0), None, &c),
            LeaseStep::Wait {
                holders: vec!["pi5".into(), "pi3".into()],
                retry_in: 5 * MIN
            }
        );
    }

    #[test]
    fn a_node_holding_one_slot_renews_it_instead_of_taking_another() {
        let c = LeaseConfig {
            max_holders: 2,
            ..cfg()
        };
        let s = [
            slot("nodemedic-reboot-0", None, Duration::ZERO),
            slot(
                "nodemedic-reboot-1",
                Some(held_by("pi4", "4")),
                Duration::ZERO,
            ),
        ];
        assert!(matches!(
            decide(&s, "pi4", LockWant::Hold, t(0), None, &c),
            LeaseStep::Replace { slot, kind: StepKind::Renew, .. } if slot == "nodemedic-reboot-1"
        ));
    }

    #[test]
    fn observations_measure_how_long_a_record_stayed_the_same() {
        let mut o = Observations::default();
        let l = held_by("pi5", "10");
        assert_eq!(
            o.observe("x", Some(&l), Duration::from_secs(100)),
            Duration::ZERO
        );
        assert_eq!(o.observe("x", Some(&l), Duration::from_secs(160)), MIN);
        let renewed = LeaseView {
            resource_version: Some("11".into()),
            renew_time: Some(t(60)),
            ..l
        };
        assert_eq!(
            o.observe("x", Some(&renewed), Duration::from_secs(170)),
            Duration::ZERO
        );
        assert_eq!(
            o.observe("x", Some(&renewed), Duration::from_secs(230)),
            MIN
        );
    }

    #[test]
    fn we_stop_trusting_our_hold_before_others_may_take_it() {
        let c = cfg();
        assert!(held_fresh(Some(MIN), &c));
        assert!(held_fresh(Some(13 * MIN), &c));
        assert!(!held_fresh(
            Some(c.duration - c.duration / SAFETY_DIVISOR),
            &c
        ));
        assert!(!held_fresh(None, &c));
    }
}
