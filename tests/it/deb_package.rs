//! The Debian package: built by cargo-deb from the test build of the binary (the release
//! profile takes minutes on 2 cores; the package's structure does not depend on it), then
//! checked with lintian and dpkg-deb, and installed, upgraded, removed and purged with dpkg
//! on a real systemd (nspawn) where a stand-in k3s is running.
//!
//! Real: cargo-deb, lintian, dpkg, deb-systemd-helper/-invoke, systemd 252. Stand-in: the
//! running "k3s" is a `sleep` (what matters is that the install does not touch it).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::support::nspawn::{self, Boot, Machine, which};
use super::support::{BIN, require};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// cargo-deb's default Debian revision.
const REVISION: &str = "1";
const UNIT_WAIT: Duration = Duration::from_secs(30);

fn tools() -> bool {
    require(
        ["cargo-deb", "lintian", "dpkg-deb"]
            .iter()
            .all(|t| which(t).is_some()),
        "cargo-deb (cargo install cargo-deb), lintian and dpkg-deb",
    )
}

/// Packages the test-built binary (`--no-build --profile dev`, fast compression) into `dir`.
fn build_deb(dir: &Path) -> PathBuf {
    let deb = dir.join("nodemedic.deb");
    let out = Command::new("cargo")
        .args(["deb", "--quiet", "--no-build", "--profile", "dev", "--fast"])
        .arg("--manifest-path")
        .arg(Path::new(REPO).join("Cargo.toml"))
        .arg("--output")
        .arg(&deb)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo deb failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    deb
}

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let out = Command::new("dpkg-deb")
        .args(args)
        .arg(deb)
        .output()
        .unwrap();
    assert!(out.status.success(), "dpkg-deb {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// `serial_`: cargo-deb strips the binary into a fixed temp file under target/, so two
// package builds must not run at once.
#[test]
fn serial_the_deb_holds_binary_units_dropins_and_an_observe_mode_conffile_and_lintian_finds_no_errors()
 {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let deb = build_deb(dir.path());

    // Files and modes (`-rwxr-xr-x 0/0  size date ./path`).
    let listing = dpkg_deb(&["-c"], &deb);
    let mode_of = |path: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(" ./{path}")))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("{path} is not in the package:\n{listing}"))
            .to_string()
    };
    assert_eq!(mode_of("usr/bin/nodemedic"), "-rwxr-xr-x");
    for f in [
        "etc/nodemedic/config.toml",
        "usr/lib/systemd/system/nodemedic.service",
        "usr/lib/systemd/system/nodemedic-clean-shutdown.service",
        "usr/lib/systemd/system/k3s.service.d/10-nodemedic-preflight.conf",
        "usr/lib/systemd/system/k3s-agent.service.d/10-nodemedic-preflight.conf",
        "usr/share/nodemedic/prometheus/nodemedic-rules.yaml",
        "usr/share/nodemedic/grafana/nodemedic-dashboard.json",
        "usr/share/nodemedic/k8s/rbac.yaml",
        "usr/share/doc/nodemedic/README.md",
        "usr/share/doc/nodemedic/copyright",
        "usr/share/doc/nodemedic/changelog.Debian.gz",
    ] {
        assert_eq!(mode_of(f), "-rw-r--r--", "{f}");
    }

    // Control data: version, the config as a conffile, maintainer scripts that never
    // touch k3s.
    assert_eq!(
        dpkg_deb(&["-f"], &deb)
            .lines()
            .find_map(|l| l.strip_prefix("Version: "))
            .unwrap(),
        format!("{VERSION}-{REVISION}")
    );
    let ctl = dir.path().join("control");
    Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(&ctl)
        .status()
        .unwrap();
    let conffiles = fs::read_to_string(ctl.join("conffiles")).unwrap();
    assert_eq!(conffiles.trim(), "/etc/nodemedic/config.toml");
    for script in ["postinst", "prerm", "postrm"] {
        let text = fs::read_to_string(ctl.join(script)).unwrap();
        let code: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect();
        assert!(
            !code.iter().any(|l| l.contains("k3s")),
            "{script} must not touch k3s:\n{text}"
        );
    }

    // The conffile is the documented default: observe mode, identical to what the
    // binary prints as its defaults.
    let root = dir.path().join("root");
    Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&root)
        .status()
        .unwrap();
    let conf = fs::read_to_string(root.join("etc/nodemedic/config.toml")).unwrap();
    let printed = Command::new(BIN)
        .args(["config", "default"])
        .output()
        .unwrap();
    assert_eq!(conf, String::from_utf8_lossy(&printed.stdout));
    assert!(conf.lines().any(|l| l == "mode = \"observe\""));

    // Debian requires the changelog's newest entry to be this version.
    let mut changelog = String::new();
    flate2::read::GzDecoder::new(
        fs::File::open(root.join("usr/share/doc/nodemedic/changelog.Debian.gz")).unwrap(),
    )
    .read_to_string(&mut changelog)
    .unwrap();
    let first = changelog.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!("nodemedic ({VERSION}-{REVISION}) ")),
        "packaging/debian/changelog's newest entry is `{first}`, the package is {VERSION}-{REVISION}"
    );

    // lintian: no errors (warnings are printed for the record).
    let out = Command::new("lintian")
        .args(["--fail-on", "error"])
        .arg(&deb)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("lintian:\n{text}");
    assert!(
        out.status.success() && !text.lines().any(|l| l.starts_with("E:")),
        "lintian errors:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A container with a running stand-in k3s and no nodemedic: what a node looks like
/// before the package arrives. dpkg works on an overlay of this machine's package database.
struct Node {
    dir: tempfile::TempDir,
}

const K3S_STAND_IN: &str = "[Unit]
Description=k3s stand-in (a sleep)
[Service]
ExecStart=/bin/sh -c 'echo \"k3s stand-in started\"; exec sleep infinity'
[Install]
WantedBy=multi-user.target
";

impl Node {
    fn new(deb: &Path) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // The CI machine's policy-rc.d forbids starting services (a container-image habit);
        // a node has none, which is what "exit 0" says.
        fs::create_dir_all(d.join("usr/sbin")).unwrap();
        fs::write(d.join("usr/sbin/policy-rc.d"), "#!/bin/sh\nexit 0\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(
            d.join("usr/sbin/policy-rc.d"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        // The volatile /etc has no groups, so the host's stat overrides would not resolve.
        fs::create_dir_all(d.join("dpkg")).unwrap();
        fs::write(d.join("dpkg/statoverride"), "").unwrap();
        fs::create_dir_all(d.join("pkg")).unwrap();
        fs::copy(deb, d.join("pkg/nodemedic.deb")).unwrap();
        fs::write(d.join("k3s.service"), K3S_STAND_IN).unwrap();
        fs::create_dir_all(d.join("preset")).unwrap();
        fs::write(
            d.join("preset/00-nodemedic-test.preset"),
            "enable k3s.service\ndisable *\n",
        )
        .unwrap();
        Node { dir }
    }

    fn boot(&self) -> Machine {
        let d = self.dir.path();
        Machine::boot(&Boot {
            usr_upper: d.join("usr"),
            binds: vec![
                (d.join("pkg"), "/run/pkg".into(), true),
                (
                    d.join("k3s.service"),
                    "/etc/systemd/system/k3s.service".into(),
                    true,
                ),
                (d.join("preset"), "/etc/systemd/system-preset".into(), false),
            ],
            overlays: vec![("/var/lib/dpkg".into(), d.join("dpkg"), "/run/dpkg".into())],
        })
    }
}

fn dpkg(m: &Machine, args: &[&str]) -> String {
    let mut cmd = vec!["dpkg", "--admindir=/run/dpkg"];
    cmd.extend_from_slice(args);
    let out = m.exec(&cmd);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "dpkg {args:?} failed:\n{text}");
    text
}

/// What must not change on the running k3s: same process, same invocation, no restart.
fn k3s_fingerprint(m: &Machine) -> (String, String, String) {
    (
        m.prop("k3s.service", "MainPID"),
        m.prop("k3s.service", "InvocationID"),
        m.prop("k3s.service", "NRestarts"),
    )
}

#[test]
fn serial_installing_the_deb_starts_the_daemon_in_observe_mode_and_leaves_a_running_k3s_untouched()
{
    if !tools() || !nspawn::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = Node::new(&build_deb(dir.path()));
    let m = node.boot();
    // The first-boot preset kept this machine's other services off. A node has no
    // `disable *` preset, and deb-systemd-helper enables a new unit through presets.
    m.run(&["rm", "/etc/systemd/system-preset/00-nodemedic-test.preset"]);
    let k3s = k3s_fingerprint(&m);
    assert_eq!(m.prop("k3s.service", "ActiveState"), "active");

    // Install: enabled, started, observe mode, endpoint up; k3s only learns of the drop-in.
    dpkg(&m, &["-i", "/run/pkg/nodemedic.deb"]);
    for unit in ["nodemedic.service", "nodemedic-clean-shutdown.service"] {
        assert_eq!(m.prop(unit, "UnitFileState"), "enabled", "{unit}");
        let active = m.wait_for(UNIT_WAIT, |m| {
            (m.prop(unit, "ActiveState") == "active").then_some(())
        });
        assert!(active.is_some(), "{unit}:\n{}", m.journal(unit));
    }
    let status = m.prop("nodemedic.service", "StatusText");
    assert!(status.starts_with("observe mode"), "{status}");
    let scraped = m.wait_for(UNIT_WAIT, |m| m.http_get("127.0.0.1:9847", "/metrics"));
    let (code, body) = scraped.expect("no /metrics on the default port");
    assert_eq!(code, 200);
    assert!(body.contains("\nnodemedic_up 1\n"), "{body}");
    assert_eq!(k3s_fingerprint(&m), k3s, "the install touched k3s");
    assert!(
        m.prop("k3s.service", "DropInPaths")
            .contains("/usr/lib/systemd/system/k3s.service.d/10-nodemedic-preflight.conf")
    );
    assert!(!m.journal("k3s.service").contains("preflight"));

    // Upgrade (the same version again): the daemon restarts, the operator's edit of the
    // conffile survives, k3s is still untouched.
    let before = m.prop("nodemedic.service", "MainPID");
    m.run(&[
        "sed",
        "-i",
        "s/^mode = \"observe\"$/mode = \"observe\" # kept by the operator/",
        "/etc/nodemedic/config.toml",
    ]);
    dpkg(&m, &["-i", "/run/pkg/nodemedic.deb"]);
    let restarted = m.wait_for(UNIT_WAIT, |m| {
        let pid = m.prop("nodemedic.service", "MainPID");
        (pid != before && pid != "0" && m.prop("nodemedic.service", "ActiveState") == "active")
            .then_some(())
    });
    assert!(restarted.is_some(), "{}", m.journal("nodemedic.service"));
    assert!(
        m.run(&["cat", "/etc/nodemedic/config.toml"])
            .contains("# kept by the operator")
    );
    assert_eq!(k3s_fingerprint(&m), k3s, "the upgrade touched k3s");

    // Remove: stopped and gone, state kept, and no clean-shutdown marker (not a shutdown).
    dpkg(&m, &["-r", "nodemedic"]);
    assert_eq!(m.prop("nodemedic.service", "ActiveState"), "inactive");
    // deb-systemd-helper masks a removed package's units until it is purged.
    assert_eq!(m.prop("nodemedic.service", "LoadState"), "masked");
    let state = m.exec(&["test", "-f", "/var/lib/nodemedic/state.json"]);
    assert!(state.status.success(), "remove must keep the state dir");
    let marker = m.exec(&["test", "-e", "/var/lib/nodemedic/clean-shutdown.json"]);
    assert!(
        !marker.status.success(),
        "a removal is not a clean shutdown"
    );
    assert_eq!(k3s_fingerprint(&m), k3s, "the removal touched k3s");

    // Purge: state and config gone.
    dpkg(&m, &["-P", "nodemedic"]);
    assert_eq!(m.prop("nodemedic.service", "LoadState"), "not-found");
    for p in ["/var/lib/nodemedic", "/etc/nodemedic/config.toml"] {
        assert!(
            !m.exec(&["test", "-e", p]).status.success(),
            "{p} survived purge"
        );
    }
}
