//! `[certificates]`: expiry of k3s's client and serving certificates, and when a k3s
//! restart may renew them. Why these numbers: `certs::judge`.

use serde::{Deserialize, Serialize};

use super::checks::{dur_range, range};
use super::duration::ConfigDuration;

pub(crate) const DEFAULT_SERVER_TLS_DIR: &str = "/var/lib/rancher/k3s/server/tls";
pub(crate) const DEFAULT_AGENT_DIR: &str = "/var/lib/rancher/k3s/agent";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct CertificatesSection {
    pub(crate) enabled: bool,
    /// Every `*.crt` directly in it (servers only).
    pub(crate) server_tls_dir: String,
    pub(crate) agent_dir: String,
    /// The agent's certificates, by name in `agent_dir` (every node).
    pub(crate) agent_files: Vec<String>,
    pub(crate) interval: ConfigDuration,
    /// `K3sCertificateExpiring` when a certificate has fewer days left than this.
    pub(crate) warn_days: u32,
    /// k3s renews a certificate when it starts with this many days or fewer left.
    pub(crate) rotate_days: u32,
    /// When the renewing k3s restart may happen, `"HH:MM-HH:MM"` in UTC (may cross
    /// midnight); "" means any time.
    pub(crate) maintenance_window: String,
}

impl Default for CertificatesSection {
    fn default() -> Self {
        CertificatesSection {
            enabled: true,
            server_tls_dir: DEFAULT_SERVER_TLS_DIR.into(),
            agent_dir: DEFAULT_AGENT_DIR.into(),
            agent_files: [
                "client-kubelet.crt",
                "serving-kubelet.crt",
                "client-kube-proxy.crt",
            ]
            .map(String::from)
            .to_vec(),
            // Certificates change only when k3s starts; a pass is a stat per file, and a
            // parse only for a file that changed. 5 min is the window's resolution.
            interval: ConfigDuration::secs(300),
            // A month's notice before k3s's own 90-day renewal window opens.
            warn_days: 120,
            // k3s (pkg/util/certs, discussion #10024): renewed at start within 90 days.
            rotate_days: 90,
            maintenance_window: "02:00-05:00".into(),
        }
    }
}

/// A daily window in UTC minutes since midnight: `start..end`, wrapping past midnight
/// when `end <= start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DailyWindow {
    pub(crate) start_min: u32,
    pub(crate) end_min: u32,
}

impl DailyWindow {
    /// `"HH:MM-HH:MM"`; None for "" (always open).
    pub(crate) fn parse(s: &str) -> Result<Option<DailyWindow>, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(None);
        }
        let hm = |t: &str| -> Option<u32> {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60 && t.trim().len() == 5).then_some(h * 60 + m)
        };
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("\"{s}\" is not \"HH:MM-HH:MM\""))?;
        match (hm(a), hm(b)) {
            (Some(start_min), Some(end_min)) if start_min != end_min => {
                Ok(Some(DailyWindow { start_min, end_min }))
            }
            (Some(_), Some(_)) => Err(format!("\"{s}\" is empty (start equals end)")),
            _ => Err(format!("\"{s}\" is not \"HH:MM-HH:MM\" (24-hour, UTC)")),
        }
    }

    pub(crate) fn contains(&self, unix: u64) -> bool {
        let m = ((unix % 86_400) / 60) as u32;
        if self.start_min < self.end_min {
            (self.start_min..self.end_min).contains(&m)
        } else {
            m >= self.start_min || m < self.end_min
        }
    }

    /// Minutes the window stays open, start to end.
    pub(crate) fn length_min(&self) -> u32 {
        (self.end_min + 1440 - self.start_min) % 1440
    }
}

impl CertificatesSection {
    pub(crate) fn validate(&self, v: &mut Vec<String>) {
        for (k, p) in [
            ("server_tls_dir", &self.server_tls_dir),
            ("agent_dir", &self.agent_dir),
        ] {
            if !p.starts_with('/') || p.contains("..") {
                v.push(format!(
                    "key `certificates.{k}` = \"{p}\" must be an absolute path"
                ));
            }
        }
        for f in &self.agent_files {
            if f.is_empty() || f.contains('/') {
                v.push(format!(
                    "key `certificates.agent_files`: \"{f}\" must be a file name in `certificates.agent_dir`, such as \"client-kubelet.crt\""
                ));
            }
        }
        dur_range(v, "certificates.interval", self.interval, 10_000, 3_600_000);
        range(v, "certificates.warn_days", self.warn_days.into(), 1, 3650);
        range(
            v,
            "certificates.rotate_days",
            self.rotate_days.into(),
            1,
            3650,
        );
        if self.rotate_days > self.warn_days {
            v.push(format!(
                "key `certificates.rotate_days` = {} must not exceed `certificates.warn_days` = {}: the warning comes first",
                self.rotate_days, self.warn_days
            ));
        }
        match DailyWindow::parse(&self.maintenance_window) {
            Err(e) => v.push(format!(
                "key `certificates.maintenance_window`: {e}; expected \"HH:MM-HH:MM\" in UTC such as \"02:00-05:00\", or \"\" for any time"
            )),
            // The restart and the check that it renewed the certificate both fall inside.
            Ok(Some(w)) if w.length_min() < 60 => v.push(format!(
                "key `certificates.maintenance_window` = \"{}\" is {} minutes long; allowed at least 60 (the restart and its check must both fit)",
                self.maintenance_window,
                w.length_min()
            )),
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_and_wrap_past_midnight() {
        let w = DailyWindow::parse("22:30-01:00").unwrap().unwrap();
        assert!(w.contains(22 * 3600 + 30 * 60));
        assert!(w.contains(86_400 * 5 + 30 * 60));
        assert!(!w.contains(3600 + 60));
        assert!(!w.contains(12 * 3600));
        assert_eq!(w.length_min(), 150);
        let d = DailyWindow::parse("02:00-05:00").unwrap().unwrap();
        assert!(d.contains(2 * 3600) && d.contains(5 * 3600 - 1) && !d.contains(5 * 3600));
        assert_eq!(DailyWindow::parse(" ").unwrap(), None);
        for bad in ["2-5", "02:00", "25:00-01:00", "02:00-02:00", "2:00-05:00"] {
            assert!(DailyWindow::parse(bad).is_err(), "{bad}");
        }
    }
}
