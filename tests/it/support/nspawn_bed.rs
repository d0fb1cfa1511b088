//! A systemd-in-nspawn test bed for the daemon as packaged: the test-built binary and the
//! packaged units under /usr, a config and a `k3s.service` stand-in under /etc, and the
//! state directory bound from a host temp dir so the test reads the audit trail (and any
//! fake device file put there) directly.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::BIN;
use super::nspawn::{Boot, Machine, install_packaged_units};

/// Where the test config makes the daemon listen, inside the container's own network.
pub const ADDR: &str = "127.0.0.1:9847";
pub const WAIT: Duration = Duration::from_secs(60);

pub const PRESET: &str = "enable nodemedic.service
enable nodemedic-clean-shutdown.service
enable k3s.service
disable *
";

/// The config every test starts from: act mode, no Kubernetes API. The kernel, memory and
/// mounts detectors are off: they would read the host's kernel log and memory, where other
/// tests leave stalls and lockups behind, and act on them in this act-mode container.
pub fn base_config(extra: &str) -> String {
    format!(
        "listen = \"{ADDR}\"\nmode = \"act\"\n[kubernetes]\nenabled = false\n\
         [kernel]\nenabled = false\n[memory]\nenabled = false\n[mounts]\nenabled = false\n{extra}"
    )
}

pub struct Bed {
    pub dir: tempfile::TempDir,
    /// (host file under etc/, container path) bound read-only.
    pub binds: Vec<(String, String)>,
}

impl Bed {
    /// `k3s_unit` becomes /etc/systemd/system/k3s.service; `scripts` go to
    /// /usr/local/bin in the container.
    pub fn new(config: &str, k3s_unit: &str, scripts: &[(&str, &str)]) -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let usr = d.join("usr");
        fs::create_dir_all(usr.join("bin")).unwrap();
        fs::copy(BIN, usr.join("bin/nodemedic")).unwrap();
        install_packaged_units(&usr.join("lib/systemd/system"));
        fs::create_dir_all(usr.join("local/bin")).unwrap();
        for (name, text) in scripts {
            let p = usr.join("local/bin").join(name);
            fs::write(&p, text).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        fs::create_dir_all(d.join("etc")).unwrap();
        fs::create_dir_all(d.join("state")).unwrap();
        fs::write(d.join("etc/preset"), PRESET).unwrap();
        fs::write(d.join("etc/k3s.service"), k3s_unit).unwrap();
        fs::write(d.join("etc/config.toml"), config).unwrap();
        Bed {
            dir,
            binds: vec![
                (
                    "preset".into(),
                    "/etc/systemd/system-preset/00-nodemedic-test.preset".into(),
                ),
                (
                    "k3s.service".into(),
                    "/etc/systemd/system/k3s.service".into(),
                ),
            ],
        }
    }

    /// An extra read-only file in the container's /etc.
    pub fn with_etc(mut self, name: &str, dst: &str, text: &str) -> Bed {
        fs::write(self.dir.path().join("etc").join(name), text).unwrap();
        self.binds.push((name.into(), dst.into()));
        self
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn boot(&self) -> Machine {
        let d = self.dir.path();
        let mut binds: Vec<(PathBuf, String, bool)> = self
            .binds
            .iter()
            .map(|(f, dst)| (d.join("etc").join(f), dst.clone(), true))
            .collect();
        binds.push((
            d.join("etc/config.toml"),
            "/etc/nodemedic/config.toml".into(),
            false,
        ));
        binds.push((self.state(), "/var/lib/nodemedic".into(), false));
        Machine::boot(&Boot {
            usr_upper: d.join("usr"),
            binds,
            overlays: vec![],
        })
    }

    /// The audit trail's entries (current file).
    pub fn audit(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(self.state().join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Audit entries of `action` with `outcome`.
    pub fn audited(&self, action: &str, outcome: &str) -> Vec<serde_json::Value> {
        self.audit()
            .into_iter()
            .filter(|e| e["action"] == action && e["outcome"] == outcome)
            .collect()
    }
}

pub fn wait_unit(m: &Machine, unit: &str, active: &str) {
    let ok = m.wait_for(WAIT, |m| {
        (m.prop(unit, "ActiveState") == active).then_some(())
    });
    assert!(
        ok.is_some(),
        "{unit} is {} not {active}:\n{}",
        m.prop(unit, "ActiveState"),
        m.journal(unit)
    );
}

pub fn read_time(p: &Path) -> f64 {
    fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .parse()
        .unwrap()
}
