//! Boot bookkeeping and the post-boot check, as pure transitions of the engine's state:
//! which boot the daemon runs in, whether it follows a reboot nodemedic made (the reboot
//! is proved only by a new boot id), when the check of that reboot is due, and what its
//! findings mean. The policy loop gathers the findings (systemd, the Node) and records the
//! outcome; nothing here does I/O.

use std::time::Duration;

use super::clock::{self, At};
use super::engine::PolicyState;

/// What [`note_boot`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BootNote {
    /// The daemon restarted within the boot it last ran in.
    Same,
    /// A new boot, not one nodemedic caused (or none it could prove).
    New,
    /// The first start in the boot that followed nodemedic's reboot for `problem`.
    AfterOurReboot { problem: String, at: At },
}

/// Records that the daemon runs in boot `boot_id`, at wall time `unix` and `mono_secs` of
/// CLOCK_MONOTONIC, and returns node time now. In a new boot node time continues from
/// the last node time persisted ([`clock`]). A reboot nodemedic made is proved by the boot
/// id changing; the post-boot check then becomes owed, once.
pub(crate) fn note_boot(
    st: &mut PolicyState,
    boot_id: &str,
    unix: u64,
    mono_secs: u64,
) -> (At, BootNote) {
    let same = st.boot_id.as_deref() == Some(boot_id);
    if !same {
        st.node_offset = st.node_seen;
    }
    st.boot_id = Some(boot_id.to_string());
    let now = clock::now(st, unix, mono_secs);
    st.node_seen = st.node_seen.max(now.node);
    (now, note_reboot(st, boot_id, now, same))
}

fn note_reboot(st: &mut PolicyState, boot_id: &str, now: At, same: bool) -> BootNote {
    if let Some(lr) = st.last_reboot.as_mut()
        && lr.rebooted_into.is_none()
        && lr.boot_id.as_deref().is_some_and(|b| b != boot_id)
    {
        lr.rebooted_into = Some(boot_id.to_string());
        st.booted_after_reboot = Some(now);
        st.verify_pending = true;
        return BootNote::AfterOurReboot {
            problem: lr.problem.clone(),
            at: lr.at,
        };
    }
    if same { BootNote::Same } else { BootNote::New }
}

/// A state file from before boot ids were kept names no boot for its last reboot: take the
/// boot id from the matching reboot record, and whether it was checked already.
pub(crate) fn adopt_reboot_record(
    st: &mut PolicyState,
    record_at_unix: u64,
    record_boot_id: &str,
    record_checked: bool,
) {
    if let Some(lr) = st.last_reboot.as_mut()
        && lr.boot_id.is_none()
        && lr.at.unix == record_at_unix
    {
        lr.boot_id = Some(record_boot_id.to_string());
        if record_checked {
            // Checked by the older release in a later boot: nothing more is owed.
            lr.rebooted_into = Some(String::new());
        }
    }
}

/// Where the post-boot check stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VerifyStep {
    /// No check is owed.
    NotOwed,
    /// Owed, not yet: too soon after boot, or the API has not answered yet.
    Wait,
    /// Look now and call [`verified`] with what was found.
    Judge,
}

/// Whether the post-boot check is due: `verify_after` into the boot, and once the API has
/// answered, or a second `verify_after` has passed without it.
pub(crate) fn verify_step(
    st: &PolicyState,
    since_boot: Duration,
    verify_after: Duration,
    api_configured: bool,
    api_up: Option<bool>,
) -> VerifyStep {
    if !st.verify_pending {
        return VerifyStep::NotOwed;
    }
    if since_boot < verify_after {
        return VerifyStep::Wait;
    }
    if api_configured && api_up != Some(true) && since_boot < verify_after * 2 {
        return VerifyStep::Wait;
    }
    VerifyStep::Judge
}

/// What the policy loop found when the check came due.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct VerifyFacts {
    /// The k3s unit and whether it is active (Err: systemd could not say); None when no
    /// k3s unit is known.
    pub(crate) k3s: Option<(String, Result<bool, String>)>,
    /// Credentials are configured: the Node was to be read.
    pub(crate) api_configured: bool,
    pub(crate) api_up: Option<bool>,
    pub(crate) node_ready: Option<bool>,
    /// Critical DaemonSet pods: Ok, what is not running, or None when unknown.
    pub(crate) critical_pods: Option<Result<(), String>>,
}

/// The outcome of the post-boot check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Verified {
    pub(crate) healthy: bool,
    /// `healthy (...)` or `NOT healthy: ...`, for the reboot record and the audit.
    pub(crate) text: String,
}

/// Judges the findings: the check is no longer owed; a failed one is kept in
/// `verification_failed` (it raises `NeedsHuman` until an operator resets it).
pub(crate) fn verified(st: &mut PolicyState, f: &VerifyFacts) -> Verified {
    let mut problems = Vec::new();
    let mut checked = Vec::new();
    if let Some((unit, active)) = &f.k3s {
        match active {
            Ok(true) => checked.push(format!("{unit} active")),
            Ok(false) => problems.push(format!("{unit} is not active")),
            Err(e) => problems.push(format!("cannot ask systemd about {unit}: {e}")),
        }
    }
    if f.api_configured {
        match (f.api_up, f.node_ready) {
            (Some(true), Some(true)) => checked.push("node Ready".into()),
            (Some(true), Some(false)) => problems.push("the node is not Ready".into()),
            _ => checked.push("node Ready unknown (API unreachable)".into()),
        }
        match &f.critical_pods {
            Some(Ok(())) => checked.push("critical DaemonSets running".into()),
            Some(Err(e)) => problems.push(format!("critical DaemonSet pods not running: {e}")),
            None => checked.push("critical DaemonSets unknown".into()),
        }
    }
    st.verify_pending = false;
    let healthy = problems.is_empty();
    let text = if healthy {
        format!("healthy ({})", checked.join(", "))
    } else {
        format!("NOT healthy: {}", problems.join("; "))
    };
    if !healthy {
        st.verification_failed = Some(text.clone());
    }
    Verified { healthy, text }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::engine::LastReboot;
    use proptest::prelude::*;

    fn rebooted_from(boot: &str) -> PolicyState {
        PolicyState {
            boot_id: Some(boot.into()),
            last_reboot: Some(LastReboot {
                at: At::new(100, 100),
                problem: "KernelRCUStall".into(),
                boot_id: Some(boot.into()),
                rebooted_into: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_first_start_in_a_new_boot_after_our_reboot_owes_the_check_once() {
        let mut st = rebooted_from("a");
        st.node_seen = 140;
        assert_eq!(
            note_boot(&mut st, "a", 150, 150).1,
            BootNote::Same,
            "no reboot yet"
        );
        assert!(!st.verify_pending);
        // The new boot's node time continues from the last seen (150), plus its uptime.
        let (now, note) = note_boot(&mut st, "b", 200, 30);
        assert_eq!(now, At::new(200, 180));
        assert_eq!(
            note,
            BootNote::AfterOurReboot {
                problem: "KernelRCUStall".into(),
                at: At::new(100, 100)
            }
        );
        assert!(st.verify_pending);
        assert_eq!(st.booted_after_reboot, Some(At::new(200, 180)));
        // A daemon restart later in boot b changes nothing, node time included.
        assert_eq!(
            note_boot(&mut st, "b", 300, 130),
            (At::new(300, 280), BootNote::Same)
        );
        assert_eq!(st.booted_after_reboot, Some(At::new(200, 180)));
        assert_eq!(note_boot(&mut st, "c", 400, 5).1, BootNote::New);
    }

    #[test]
    fn a_legacy_reboot_takes_its_boot_id_from_the_reboot_record() {
        let mut st = rebooted_from("a");
        st.last_reboot.as_mut().unwrap().boot_id = None;
        adopt_reboot_record(&mut st, 99, "a", false);
        assert_eq!(
            st.last_reboot.as_ref().unwrap().boot_id,
            None,
            "other record"
        );
        adopt_reboot_record(&mut st, 100, "a", false);
        assert!(matches!(
            note_boot(&mut st, "b", 200, 1).1,
            BootNote::AfterOurReboot { .. }
        ));
        let mut checked = rebooted_from("a");
        checked.last_reboot.as_mut().unwrap().boot_id = None;
        adopt_reboot_record(&mut checked, 100, "a", true);
        assert_eq!(note_boot(&mut checked, "c", 200, 1).1, BootNote::New);
        assert!(!checked.verify_pending);
    }

    #[test]
    fn the_check_waits_for_its_time_and_for_the_api_a_bounded_while() {
        let mut st = PolicyState::default();
        let m = Duration::from_secs(60);
        assert_eq!(
            verify_step(&st, m * 20, m * 10, true, Some(true)),
            VerifyStep::NotOwed
        );
        st.verify_pending = true;
        assert_eq!(
            verify_step(&st, m * 9, m * 10, false, None),
            VerifyStep::Wait
        );
        assert_eq!(
            verify_step(&st, m * 10, m * 10, false, None),
            VerifyStep::Judge
        );
        assert_eq!(
            verify_step(&st, m * 10, m * 10, true, Some(false)),
            VerifyStep::Wait
        );
        assert_eq!(
            verify_step(&st, m * 20, m * 10, true, Some(false)),
            VerifyStep::Judge
        );
        assert_eq!(
            verify_step(&st, m * 10, m * 10, true, Some(true)),
            VerifyStep::Judge
        );
    }

    fn facts() -> impl Strategy<Value = VerifyFacts> {
        let active = prop_oneof![
            Just(Ok(true)),
            Just(Ok(false)),
            Just(Err("bus".to_string()))
        ];
        (
            prop::option::of(active),
            any::<bool>(),
            prop::option::of(any::<bool>()),
            prop::option::of(any::<bool>()),
            prop::option::of(prop_oneof![
                Just(Ok(())),
                Just(Err("x is Pending".to_string()))
            ]),
        )
            .prop_map(|(k3s, api_configured, api_up, node_ready, critical_pods)| {
                VerifyFacts {
                    k3s: k3s.map(|a| ("k3s.service".to_string(), a)),
                    api_configured,
                    api_up,
                    node_ready,
                    critical_pods,
                }
            })
    }

    proptest! {
        /// A node is judged healthy exactly when nothing that was looked at is wrong, the
        /// check is never owed twice, and only a failed one asks a human.
        #[test]
        fn the_post_boot_check_is_healthy_exactly_when_nothing_seen_is_wrong(f in facts()) {
            let mut st = PolicyState { verify_pending: true, ..Default::default() };
            let v = verified(&mut st, &f);
            let bad_k3s = matches!(&f.k3s, Some((_, r)) if r != &Ok(true));
            let bad_api = f.api_configured
                && ((f.api_up == Some(true) && f.node_ready == Some(false))
                    || matches!(f.critical_pods, Some(Err(_))));
            prop_assert_eq!(v.healthy, !bad_k3s && !bad_api, "{:?}", v);
            prop_assert!(!st.verify_pending);
            prop_assert_eq!(st.verification_failed.is_some(), !v.healthy);
            prop_assert_eq!(
                verify_step(&st, Duration::MAX, Duration::ZERO, false, None),
                VerifyStep::NotOwed
            );
        }

        /// Over any sequence of daemon starts in any boots, the check of one reboot is owed
        /// at most once, and only in a boot other than the one rebooted.
        #[test]
        fn a_reboot_is_proved_at_most_once_and_only_by_another_boot(
            boots in prop::collection::vec(0u8..4, 1..20),
        ) {
            let mut st = rebooted_from("0");
            let mut owed = 0;
            let mut last_node = 0;
            for (i, b) in boots.iter().enumerate() {
                let id = b.to_string();
                let (now, note) = note_boot(&mut st, &id, i as u64, i as u64);
                prop_assert!(now.node >= last_node, "node time went back");
                last_node = now.node;
                if let BootNote::AfterOurReboot { .. } = note {
                    owed += 1;
                    prop_assert_ne!(id.as_str(), "0");
                    prop_assert!(st.verify_pending);
                }
            }
            prop_assert!(owed <= 1);
            prop_assert_eq!(owed == 1, boots.iter().any(|b| *b != 0));
        }
    }
}
