//! The certificate judge: pure. Each pass's certificates, the wall clock and the identity
//! of k3s's current run in; conditions and per-file figures out.
//!
//! k3s issues its client and serving certificates for 365 days and renews them only when
//! it starts with `rotate_days` (90) or fewer left (k3s discussion #10024): a cluster that
//! never restarts dies at day 365 (k3s issue 10865). So:
//! - `K3sCertificateExpiring` (warning) while the earliest certificate has fewer than
//!   `warn_days` left: a month's notice before the renewal window opens;
//! - `K3sCertificateRotationDue` (problem, ladder `restart_k3s`) while one is inside the
//!   renewal window and the maintenance window is open. The restart goes one node at a time
//!   under the cluster lease (`policy::quorum` and the policy loop);
//! - after k3s restarted (its systemd invocation ID changed) with the earliest notAfter
//!   not moved forward, the restart did not renew it: `NeedsHuman`, and no further restart
//!   for rotation until the certificate changes.

use crate::config::certificates::DailyWindow;
use crate::model::{Condition, ConditionKind};

use super::x509::CertInfo;

pub(crate) const DAY: u64 = 86_400;

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CertJudgeConfig {
    pub(crate) warn_days: u32,
    pub(crate) rotate_days: u32,
    pub(crate) window: Option<DailyWindow>,
}

/// One certificate file as read this pass.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct CertFile {
    /// Absolute path on the node.
    pub(crate) path: String,
    pub(crate) info: Result<CertInfo, String>,
}

/// The rotation attempt under way: what the earliest notAfter and k3s's run were when
/// the condition was raised.
#[derive(Clone, Debug, PartialEq)]
struct Attempt {
    not_after: u64,
    invocation: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct CertAssessment {
    pub(crate) conditions: Vec<Condition>,
    /// (path, seconds to expiry; negative when expired) for each readable file.
    pub(crate) expiry: Vec<(String, i64)>,
    /// Unreadable files, with why.
    pub(crate) unreadable: Vec<(String, String)>,
}

#[derive(Default)]
pub(crate) struct CertJudge {
    attempt: Option<Attempt>,
    /// The earliest notAfter a restart failed to move; no restart is asked for again
    /// until it changes.
    not_renewed: Option<(u64, String)>,
}

impl CertJudge {
    /// `invocation`: k3s's systemd InvocationID now (None: unknown, e.g. no systemd).
    pub(crate) fn assess(
        &mut self,
        cfg: &CertJudgeConfig,
        files: &[CertFile],
        now_unix: u64,
        invocation: Option<&str>,
    ) -> CertAssessment {
        let mut a = CertAssessment::default();
        let mut earliest: Option<(u64, &str, &str)> = None;
        for f in files {
            match &f.info {
                Ok(i) => {
                    a.expiry
                        .push((f.path.clone(), i.not_after_unix as i64 - now_unix as i64));
                    if earliest.is_none_or(|e| i.not_after_unix < e.0) {
                        earliest = Some((i.not_after_unix, f.path.as_str(), i.subject.as_str()));
                    }
                }
                Err(e) => a.unreadable.push((f.path.clone(), e.clone())),
            }
        }
        let Some((not_after, path, subject)) = earliest else {
            self.attempt = None;
            return a;
        };
        let left = not_after.saturating_sub(now_unix);
        let days = left / DAY;
        let count = |limit: u64| {
            files
                .iter()
                .filter(|f| {
                    f.info
                        .as_ref()
                        .is_ok_and(|i| i.not_after_unix < now_unix + limit)
                })
                .count()
        };
        let when = crate::timefmt::rfc3339_utc(not_after as f64);
        if left < u64::from(cfg.warn_days) * DAY {
            let n = count(u64::from(cfg.warn_days) * DAY);
            a.conditions.push(Condition::new(
                ConditionKind::K3sCertificateExpiring,
                "",
                if left == 0 { "CertificateExpired" } else { "CertificateExpiresSoon" },
                format!(
                    "{path} ({subject}) {} {when}{}; k3s renews its certificates when it starts with {} days or fewer left",
                    if left == 0 { "expired at".to_string() } else { format!("expires in {days} days, at") },
                    if n > 1 { format!(" ({n} certificates expire within {} days)", cfg.warn_days) } else { String::new() },
                    cfg.rotate_days
                ),
            ));
        }

        // A restart that did not renew: k3s ran again since the attempt began, yet the
        // earliest notAfter is where it was.
        if let Some(at) = &self.attempt
            && let (Some(before), Some(now_inv)) = (&at.invocation, invocation)
            && before != now_inv
        {
            if not_after <= at.not_after {
                self.not_renewed = Some((not_after, path.to_string()));
            }
            self.attempt = None;
        }
        if self
            .not_renewed
            .as_ref()
            .is_some_and(|(na, _)| *na != not_after)
        {
            // The certificate changed since (renewed by hand or by a later start).
            self.not_renewed = None;
        }
        if let Some((_, p)) = &self.not_renewed {
            a.conditions.push(Condition::new(
                ConditionKind::NeedsHuman,
                "k3s-certificates",
                "CertificateNotRenewed",
                format!(
                    "k3s restarted to renew its certificates but {p} still expires at {when}; renew them by hand \
                     (`k3s certificate rotate`, then restart k3s) and check k3s's log"
                ),
            ));
            return a;
        }

        let due = left <= u64::from(cfg.rotate_days) * DAY;
        let open = cfg.window.is_none_or(|w| w.contains(now_unix));
        if !due {
            self.attempt = None;
        } else if open {
            if self.attempt.is_none() {
                self.attempt = Some(Attempt {
                    not_after,
                    invocation: invocation.map(String::from),
                });
            }
            a.conditions.push(Condition::new(
                ConditionKind::K3sCertificateRotationDue,
                "",
                "InsideRotationWindow",
                format!(
                    "{path} expires in {days} days, at {when}: inside k3s's {}-day renewal window; a k3s restart renews it",
                    cfg.rotate_days
                ),
            ));
        }
        // Outside the maintenance window the attempt stays: a restart that happened
        // late in the window is still checked on the next pass.
        a
    }
}

#[cfg(test)]
mod tests {
    use super::super::x509::tests::ymd_unix;
    use super::*;

    fn cfg() -> CertJudgeConfig {
        CertJudgeConfig {
            warn_days: 120,
            rotate_days: 90,
            window: DailyWindow::parse("02:00-05:00").unwrap(),
        }
    }

    fn file(path: &str, not_after: u64) -> CertFile {
        CertFile {
            path: path.into(),
            info: Ok(CertInfo {
                not_after_unix: not_after,
                subject: "CN=system:node:pi1".into(),
            }),
        }
    }

    fn kinds(a: &CertAssessment) -> Vec<ConditionKind> {
        a.conditions.iter().map(|c| c.kind).collect()
    }

    const HOUR: u64 = 3600;

    #[test]
    fn a_warning_at_120_days_and_the_metric_for_every_file() {
        let expiry = ymd_unix(2027, 6, 1);
        let files = [
            file("/a/client-kubelet.crt", expiry),
            file("/a/server-ca.crt", expiry + 3000 * DAY),
        ];
        let mut j = CertJudge::default();
        let a = j.assess(&cfg(), &files, expiry - 121 * DAY, None);
        assert!(a.conditions.is_empty());
        assert_eq!(
            a.expiry[0],
            ("/a/client-kubelet.crt".into(), 121 * DAY as i64)
        );
        let a = j.assess(&cfg(), &files, expiry - 119 * DAY, None);
        assert_eq!(kinds(&a), [ConditionKind::K3sCertificateExpiring]);
        assert!(
            a.conditions[0].message.contains("client-kubelet.crt")
                && a.conditions[0].message.contains("119 days"),
            "{a:?}"
        );
        let a = j.assess(&cfg(), &files, expiry + DAY, None);
        assert_eq!(a.conditions[0].reason, "CertificateExpired");
        assert_eq!(a.expiry[0].1, -(DAY as i64));
    }

    #[test]
    fn rotation_is_due_only_inside_the_renewal_and_maintenance_windows() {
        let expiry = ymd_unix(2027, 6, 1);
        let files = [file("/a/client-kubelet.crt", expiry)];
        let mut j = CertJudge::default();
        let day_at = |days_left: u64, hour: u64| expiry - days_left * DAY + hour * HOUR;
        // 91 days left, in the window: only the warning.
        assert_eq!(
            kinds(&j.assess(&cfg(), &files, day_at(91, 3), Some("a"))),
            [ConditionKind::K3sCertificateExpiring]
        );
        // 89 days left at noon: outside the maintenance window.
        assert_eq!(
            kinds(&j.assess(&cfg(), &files, day_at(89, 12), Some("a"))),
            [ConditionKind::K3sCertificateExpiring]
        );
        // 89 days left at 02:30 UTC: due.
        let a = j.assess(&cfg(), &files, day_at(89, 2) + 1800, Some("a"));
        assert_eq!(
            kinds(&a),
            [
                ConditionKind::K3sCertificateExpiring,
                ConditionKind::K3sCertificateRotationDue
            ]
        );
    }

    #[test]
    fn a_renewing_restart_clears_everything() {
        let expiry = ymd_unix(2027, 6, 1);
        let mut j = CertJudge::default();
        let t = expiry - 60 * DAY + 2 * HOUR;
        let a = j.assess(&cfg(), &[file("/a/c.crt", expiry)], t, Some("run-1"));
        assert!(kinds(&a).contains(&ConditionKind::K3sCertificateRotationDue));
        // k3s restarted and wrote a certificate valid for a year.
        let a = j.assess(
            &cfg(),
            &[file("/a/c.crt", t + 365 * DAY)],
            t + 300,
            Some("run-2"),
        );
        assert!(a.conditions.is_empty(), "{a:?}");
    }

    #[test]
    fn a_restart_that_did_not_move_not_after_needs_a_human_and_stops_asking() {
        let expiry = ymd_unix(2027, 6, 1);
        let files = [file("/a/c.crt", expiry)];
        let mut j = CertJudge::default();
        let t = expiry - 60 * DAY + 2 * HOUR;
        assert!(
            kinds(&j.assess(&cfg(), &files, t, Some("run-1")))
                .contains(&ConditionKind::K3sCertificateRotationDue)
        );
        // Still the same run: still due.
        assert!(
            kinds(&j.assess(&cfg(), &files, t + 300, Some("run-1")))
                .contains(&ConditionKind::K3sCertificateRotationDue)
        );
        // k3s restarted, the certificate did not change.
        let a = j.assess(&cfg(), &files, t + 600, Some("run-2"));
        assert_eq!(
            kinds(&a),
            [
                ConditionKind::K3sCertificateExpiring,
                ConditionKind::NeedsHuman
            ]
        );
        assert_eq!(a.conditions[1].reason, "CertificateNotRenewed");
        // The next night: no new restart is asked for.
        let a = j.assess(&cfg(), &files, t + DAY, Some("run-2"));
        assert!(
            !kinds(&a).contains(&ConditionKind::K3sCertificateRotationDue),
            "{a:?}"
        );
        // An operator renewed it: all clear.
        let a = j.assess(
            &cfg(),
            &[file("/a/c.crt", t + 365 * DAY)],
            t + DAY + 60,
            Some("run-3"),
        );
        assert!(a.conditions.is_empty(), "{a:?}");
    }

    #[test]
    fn without_an_invocation_id_a_restart_cannot_be_judged_and_no_human_is_called() {
        let expiry = ymd_unix(2027, 6, 1);
        let files = [file("/a/c.crt", expiry)];
        let mut j = CertJudge::default();
        let t = expiry - 60 * DAY + 2 * HOUR;
        for k in 0..5 {
            let a = j.assess(&cfg(), &files, t + k * 300, None);
            assert!(!kinds(&a).contains(&ConditionKind::NeedsHuman));
        }
    }

    #[test]
    fn unreadable_files_are_listed_and_do_not_hide_the_others() {
        let expiry = ymd_unix(2027, 6, 1);
        let files = [
            CertFile {
                path: "/a/bad.crt".into(),
                info: Err("not a PEM certificate".into()),
            },
            file("/a/c.crt", expiry),
        ];
        let a = CertJudge::default().assess(&cfg(), &files, expiry - 100 * DAY, None);
        assert_eq!(a.unreadable.len(), 1);
        assert_eq!(kinds(&a), [ConditionKind::K3sCertificateExpiring]);
    }
}
