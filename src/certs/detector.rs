//! The certificate detector (`[certificates]`): every `interval`, the k3s certificate
//! files' notAfter (parsed again only when a file's size or mtime changed), judged by
//! [`CertJudge`]. The server's `tls/*.crt` are read when the node is a server; the
//! agent's named files on every k3s node. A node without any is not a k3s node: nothing
//! to report.
//!
//! Whether k3s restarted is read from systemd's per-unit invocation ID
//! (`/run/systemd/units/invocation:<unit>`, a symlink whose target changes on every start
//! of the unit since systemd 232): no D-Bus call, one readlink.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::json;

use super::judge::{CertFile, CertJudge, CertJudgeConfig};
use super::metrics::{CertMetrics, FileLabels};
use super::x509::{self, CertInfo};
use crate::config::CertificatesSection;
use crate::config::certificates::DailyWindow;
use crate::detect::{CheckNote, Detector, NoteLevel, Sample};
use crate::edge::{Clock, HostFiles};

const SERVER_DIR: &str = "var/lib/rancher/k3s/server";

/// A file's size and mtime: when both are unchanged, so is the certificate.
type FileStamp = (u64, Option<SystemTime>);

pub(crate) struct CertDetector {
    cfg: CertificatesSection,
    judge_cfg: CertJudgeConfig,
    files: Arc<dyn HostFiles>,
    clock: Arc<dyn Clock>,
    metrics: Option<CertMetrics>,
    judge: CertJudge,
    /// Per path: (size, mtime) and what it parsed to.
    cache: BTreeMap<String, (FileStamp, Result<CertInfo, String>)>,
}

impl CertDetector {
    pub(crate) fn new(
        cfg: CertificatesSection,
        files: Arc<dyn HostFiles>,
        clock: Arc<dyn Clock>,
        metrics: Option<CertMetrics>,
    ) -> Self {
        let judge_cfg = CertJudgeConfig {
            warn_days: cfg.warn_days,
            rotate_days: cfg.rotate_days,
            // Validated at load.
            window: DailyWindow::parse(&cfg.maintenance_window).ok().flatten(),
        };
        CertDetector {
            cfg,
            judge_cfg,
            files,
            clock,
            metrics,
            judge: CertJudge::default(),
            cache: BTreeMap::new(),
        }
    }

    /// The certificate files to read now (paths relative to the host root).
    fn paths(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.files.exists(SERVER_DIR) {
            let dir = self.cfg.server_tls_dir.trim_start_matches('/');
            if let Ok(names) = self.files.list(dir) {
                v.extend(
                    names
                        .into_iter()
                        .filter(|n| n.ends_with(".crt"))
                        .map(|n| format!("{dir}/{n}")),
                );
            }
        }
        let agent = self.cfg.agent_dir.trim_start_matches('/');
        for f in &self.cfg.agent_files {
            let p = format!("{agent}/{f}");
            if std::fs::metadata(self.files.path(&p)).is_ok() {
                v.push(p);
            }
        }
        v
    }

    fn read(&mut self, rel: &str) -> Result<CertInfo, String> {
        let path = self.files.path(rel);
        let meta = std::fs::metadata(&path).map_err(|e| format!("cannot stat: {e}"))?;
        let key = (meta.len(), meta.modified().ok());
        if let Some((k, info)) = self.cache.get(rel)
            && *k == key
        {
            return info.clone();
        }
        let info = self
            .files
            .read(rel)
            .map_err(|e| format!("cannot read: {e}"))
            .and_then(|b| x509::read(&b));
        self.cache.insert(rel.to_string(), (key, info.clone()));
        info
    }

    /// k3s's current systemd invocation ID, if systemd keeps one.
    fn invocation(&self) -> Option<String> {
        let unit = if self.files.exists(SERVER_DIR) {
            "k3s.service"
        } else {
            "k3s-agent.service"
        };
        std::fs::read_link(
            self.files
                .path(&format!("run/systemd/units/invocation:{unit}")),
        )
        .ok()
        .map(|t| t.display().to_string())
    }
}

impl Detector for CertDetector {
    fn name(&self) -> &'static str {
        "certificates"
    }

    /// Reads of a few small local files every few minutes: bounded, as the limits
    /// detector's local statvfs (shared periodic thread).
    fn shares_timer(&self) -> bool {
        true
    }

    fn interval(&self) -> Duration {
        self.cfg.interval.get()
    }

    fn sample(&mut self) -> Result<Sample, String> {
        let paths = self.paths();
        self.cache.retain(|p, _| paths.contains(p));
        let files: Vec<CertFile> = paths
            .iter()
            .map(|p| CertFile {
                path: format!("/{p}"),
                info: self.read(p),
            })
            .collect();
        let now = self.clock.unix_secs();
        let inv = self.invocation();
        let a = self
            .judge
            .assess(&self.judge_cfg, &files, now, inv.as_deref());
        if let Some(m) = &self.metrics {
            m.expiry.clear();
            for (path, secs) in &a.expiry {
                m.expiry
                    .get_or_create(&FileLabels { file: path.clone() })
                    .set(*secs as f64);
            }
            m.unreadable.set(a.unreadable.len() as i64);
        }
        let notes = a
            .unreadable
            .iter()
            .map(|(p, e)| CheckNote::new(NoteLevel::Warn, "certificate", format!("{p}: {e}")))
            .collect();
        let earliest = a.expiry.iter().min_by_key(|e| e.1);
        Ok(Sample {
            conditions: a.conditions,
            info: json!({
                "files": a.expiry.len(),
                "earliest": earliest.map(|(p, s)| json!({"file": p, "days_left": s / 86_400})),
                "unreadable": a.unreadable.len(),
                "k3s_invocation": inv,
            }),
            notes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::x509::tests::{pem_until, ymd_unix};
    use super::*;
    use crate::edge::{FakeClock, RootedFiles};
    use crate::model::ConditionKind;

    #[test]
    fn server_and_agent_certificates_are_read_and_exported() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let tls = r.join("var/lib/rancher/k3s/server/tls");
        let agent = r.join("var/lib/rancher/k3s/agent");
        std::fs::create_dir_all(&tls).unwrap();
        std::fs::create_dir_all(&agent).unwrap();
        std::fs::write(
            tls.join("client-admin.crt"),
            pem_until("system:admin", 2027, 6, 1),
        )
        .unwrap();
        std::fs::write(
            tls.join("server-ca.crt"),
            pem_until("k3s-server-ca", 2035, 6, 1),
        )
        .unwrap();
        std::fs::write(tls.join("server-ca.key"), "not a cert").unwrap();
        std::fs::write(
            agent.join("client-kubelet.crt"),
            pem_until("system:node:pi1", 2027, 5, 1),
        )
        .unwrap();
        std::fs::write(agent.join("serving-kubelet.crt"), "garbage").unwrap();
        let clock = Arc::new(FakeClock::new(ymd_unix(2027, 1, 10), Duration::ZERO));
        let mut reg = prometheus_client::registry::Registry::default();
        let mut d = CertDetector::new(
            CertificatesSection::default(),
            Arc::new(RootedFiles::new(r)),
            clock.clone(),
            Some(CertMetrics::register(&mut reg)),
        );
        let s = d.sample().unwrap();
        assert_eq!(s.info["files"], 3);
        assert_eq!(s.info["unreadable"], 1);
        assert_eq!(s.notes.len(), 1, "{:?}", s.notes);
        assert_eq!(s.conditions.len(), 1);
        assert_eq!(s.conditions[0].kind, ConditionKind::K3sCertificateExpiring);
        assert!(
            s.conditions[0].message.contains("client-kubelet.crt"),
            "{:?}",
            s.conditions
        );
        let text = crate::metrics::encode(&reg);
        let want = (ymd_unix(2027, 5, 1) - ymd_unix(2027, 1, 10)) as f64;
        assert!(
            text.contains(&format!(
                "nodemedic_k3s_certificate_expiry_seconds{{file=\"/var/lib/rancher/k3s/agent/client-kubelet.crt\"}} {want}"
            )),
            "{text}"
        );
        assert!(
            text.contains("nodemedic_k3s_certificates_unreadable 1"),
            "{text}"
        );
    }

    #[test]
    fn a_node_without_k3s_reports_nothing() {
        let root = tempfile::tempdir().unwrap();
        let mut d = CertDetector::new(
            CertificatesSection::default(),
            Arc::new(RootedFiles::new(root.path())),
            Arc::new(FakeClock::default()),
            None,
        );
        let s = d.sample().unwrap();
        assert!(s.conditions.is_empty());
        assert_eq!(s.info["files"], 0);
    }
}
