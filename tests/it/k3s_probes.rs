//! The k3s liveness probes as `nodemedic check` shows them, against stand-ins on this
//! machine: the kubelet's healthz served by a BusyBox `httpd` child on a free port (stopped
//! with SIGSTOP: the kernel still accepts connections, nothing answers), and the
//! apiserver's `/readyz` on the in-process fake API server, asked with the kubeconfig's
//! credentials, answering, failing (503) and hanging. No systemd here: the unit's state is
//! unknown, which `check` says, and the probes still run.
//!
//! Real: the `nodemedic` binary and its HTTP clients, BusyBox httpd. Stand-ins: the kubelet
//! (httpd), the Kubernetes API server (the fake).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::support::fake_apiserver::{Availability, FakeApiServer};
use super::support::{BIN, poll, require};

/// A BusyBox httpd serving `/healthz` = `ok` on a free loopback port.
struct Kubelet {
    child: Child,
    port: u16,
    _www: tempfile::TempDir,
}

impl Kubelet {
    fn start() -> Option<Kubelet> {
        let www = tempfile::tempdir().unwrap();
        std::fs::write(www.path().join("healthz"), "ok\n").unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("busybox")
            .args(["httpd", "-f", "-p", &format!("127.0.0.1:{port}"), "-h"])
            .arg(www.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let up = poll(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        assert!(up.is_some(), "httpd did not listen on {port}");
        Some(Kubelet {
            child,
            port,
            _www: www,
        })
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        let _ = self.signal_cont_and_kill();
    }
}

impl Kubelet {
    fn signal_cont_and_kill(&mut self) -> std::io::Result<()> {
        self.signal(nix::sys::signal::Signal::SIGCONT);
        self.child.kill()?;
        self.child.wait().map(drop)
    }
}

/// One `nodemedic check --json`; the k3s rows by item.
fn check(config: &std::path::Path) -> Vec<serde_json::Value> {
    let out = Command::new(BIN)
        .args(["check", "--json", "--config"])
        .arg(config)
        // No system bus: the unit's state is unknown, deterministically.
        .env(
            "DBUS_SYSTEM_BUS_ADDRESS",
            "unix:path=/nonexistent/system_bus_socket",
        )
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["area"] == "k3s")
        .cloned()
        .collect()
}

fn row<'a>(rows: &'a [serde_json::Value], item: &str) -> &'a serde_json::Value {
    rows.iter()
        .find(|r| r["item"] == item)
        .unwrap_or_else(|| panic!("no {item} row in {rows:#?}"))
}

#[test]
fn check_shows_each_k3s_probes_last_answer_for_a_healthy_a_stopped_and_a_hanging_endpoint() {
    let have_busybox = Command::new("busybox")
        .arg("true")
        .status()
        .is_ok_and(|s| s.success());
    if !require(have_busybox, "busybox (apt package busybox-static)") {
        return;
    }
    let kubelet = Kubelet::start().unwrap();
    let api = FakeApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(&dir.path().join("kubeconfig"));
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{state}\"\n\
             [kernel]\nenabled = false\n[mounts]\nenabled = false\n[memory]\nenabled = false\n\
             [runtime]\nenabled = false\n[clock]\nenabled = false\n\
             [kubernetes]\nkubeconfig = \"{kubeconfig}\"\n\
             [remedy]\nk3s_unit = \"k3s.service\"\n\
             [k3s]\nrole = \"server\"\nprobe_timeout = \"2s\"\njournal = false\nreboot_readiness = false\n\
             kubelet_url = \"http://127.0.0.1:{port}/healthz\"\n\
             apiserver_url = \"{api}/readyz\"\n",
            state = dir.path().join("state").display(),
            kubeconfig = kubeconfig.display(),
            port = kubelet.port,
            api = api.url(),
        ),
    )
    .unwrap();

    let rows = check(&config);
    let k = row(&rows, "k3s probe kubelet");
    assert_eq!(k["status"], "ok", "{k}");
    assert!(k["detail"].as_str().unwrap().contains("HTTP 200 ok"), "{k}");
    let a = row(&rows, "k3s probe apiserver");
    assert_eq!(a["status"], "ok", "{a}");
    assert!(
        api.requests().iter().any(|r| r.path == "/readyz"),
        "the apiserver probe asked the fake"
    );
    let e = row(&rows, "k3s probe etcd");
    assert!(
        e["detail"].as_str().unwrap().contains("no embedded etcd"),
        "{e}"
    );
    let u = row(&rows, "k3s unit k3s.service");
    assert!(
        u["detail"].as_str().unwrap().contains("state unknown"),
        "{u}"
    );

    // The kubelet stopped (SIGSTOP) and the apiserver answering 503.
    kubelet.signal(nix::sys::signal::Signal::SIGSTOP);
    api.set_availability(Availability::Unavailable);
    let rows = check(&config);
    let k = row(&rows, "k3s probe kubelet");
    assert_eq!(k["status"], "warn", "{k}");
    assert!(
        k["detail"]
            .as_str()
            .unwrap()
            .contains("no answer within 2000 ms"),
        "{k}"
    );
    let a = row(&rows, "k3s probe apiserver");
    assert_eq!(a["status"], "warn", "{a}");
    assert!(a["detail"].as_str().unwrap().contains("HTTP 503"), "{a}");

    // A hanging apiserver; the kubelet back.
    kubelet.signal(nix::sys::signal::Signal::SIGCONT);
    api.set_availability(Availability::Hang);
    let rows = check(&config);
    assert_eq!(row(&rows, "k3s probe kubelet")["status"], "ok");
    let a = row(&rows, "k3s probe apiserver");
    assert_eq!(a["status"], "warn", "{a}");
    assert!(
        a["detail"].as_str().unwrap().contains("no answer within"),
        "{a}"
    );
}
