//! The datastore detectors inside the running daemon, against stand-ins: an HTTP server on
//! the loopback playing etcd's metrics listener (canned k3s etcd pages; then it stops
//! answering), the fake API server with three k3s servers for the quorum rule, and a
//! sqlite file built by the test for the preflight VACUUM.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use super::support::fake_apiserver::FakeApiServer;
use super::support::{BIN, Daemon, poll};

#[derive(Clone)]
enum Mode {
    /// Answer /metrics and /health with these bodies.
    Serve(String, String),
    /// Accept, read the request, never answer (a SIGSTOPped k3s).
    Hang,
}

/// etcd's metrics listener, stood in for.
struct FakeEtcd {
    addr: String,
    mode: Arc<Mutex<Mode>>,
    /// Connections held without an answer now, and at most.
    max_hung: Arc<AtomicUsize>,
    served: Arc<AtomicUsize>,
}

impl FakeEtcd {
    fn start(mode: Mode) -> FakeEtcd {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let mode = Arc::new(Mutex::new(mode));
        let (hung, max_hung, served): (Arc<AtomicUsize>, Arc<AtomicUsize>, Arc<AtomicUsize>) =
            (Arc::default(), Arc::default(), Arc::default());
        let f = FakeEtcd {
            addr,
            mode: mode.clone(),
            max_hung: Arc::clone(&max_hung),
            served: Arc::clone(&served),
        };
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let (mode, hung, max_hung, served) =
                    (mode.clone(), hung.clone(), max_hung.clone(), served.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    let got = s.read(&mut buf).unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..got]).to_string();
                    let m = mode.lock().unwrap().clone();
                    match m {
                        Mode::Serve(metrics, health) => {
                            let body = if req.starts_with("GET /health ") {
                                health
                            } else {
                                metrics
                            };
                            let _ = write!(
                                s,
                                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            );
                            served.fetch_add(1, Ordering::SeqCst);
                        }
                        Mode::Hang => {
                            // Hold the connection until the client gives up and closes it.
                            let h = hung.fetch_add(1, Ordering::SeqCst) + 1;
                            max_hung.fetch_max(h, Ordering::SeqCst);
                            while s.read(&mut buf).map(|n| n > 0).unwrap_or(false) {}
                            hung.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        f
    }

    fn set(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }
}

/// A k3s v1.32 server's etcd page, trimmed: WAL fsyncs all under 1 ms, the db at `db` bytes
/// of the default 2 GiB quota.
fn etcd_page(db: u64, leader_changes: u32) -> String {
    let mut t = String::new();
    for name in [
        "etcd_disk_wal_fsync_duration_seconds",
        "etcd_disk_backend_commit_duration_seconds",
    ] {
        t.push_str(&format!("# HELP {name} latency\n# TYPE {name} histogram\n"));
        for le in [
            "0.001", "0.002", "0.004", "0.008", "0.016", "0.032", "0.064", "0.128", "0.256",
            "0.512", "1.024", "2.048", "4.096", "8.192", "+Inf",
        ] {
            t.push_str(&format!("{name}_bucket{{le=\"{le}\"}} 5000\n"));
        }
        t.push_str(&format!("{name}_sum 1.5\n{name}_count 5000\n"));
    }
    t.push_str(&format!(
        "# TYPE etcd_server_leader_changes_seen_total counter\netcd_server_leader_changes_seen_total {leader_changes}\n\
         # TYPE etcd_server_has_leader gauge\netcd_server_has_leader 1\n\
         # TYPE etcd_mvcc_db_total_size_in_bytes gauge\netcd_mvcc_db_total_size_in_bytes {db}\n\
         # TYPE etcd_mvcc_db_total_size_in_use_in_bytes gauge\netcd_mvcc_db_total_size_in_use_in_bytes {}\n\
         # TYPE etcd_server_quota_backend_bytes gauge\netcd_server_quota_backend_bytes 2.147483648e+09\n",
        db / 4
    ));
    t
}

const HEALTHY: &str = r#"{"health":"true","reason":""}"#;
const NOSPACE: &str = r#"{"health":"false","reason":"ALARM NOSPACE"}"#;

/// A host root that looks like a k3s server with embedded etcd.
fn server_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(
        root.path()
            .join("var/lib/rancher/k3s/server/db/etcd/member"),
    )
    .unwrap();
    root
}

fn metric_value(m: &str, prefix: &str) -> Option<f64> {
    m.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn an_etcd_that_stops_answering_never_delays_the_daemon_and_its_conditions_go_stale() {
    let etcd = FakeEtcd::start(Mode::Serve(etcd_page(1_900_000_000, 1), HEALTHY.into()));
    let root = server_root();
    let mut d = Daemon::start(
        &format!(
            "host_root = \"{}\"\n[kernel]\nenabled = false\n[memory]\nenabled = false\n[mounts]\nenabled = false\n\
             [etcd]\nmetrics_url = \"http://{}/metrics\"\ninterval = \"1s\"\ntimeout = \"300ms\"\n",
            root.path().display(),
            etcd.addr
        ),
        &[],
    );
    let m = d
        .wait_metrics(Duration::from_secs(20), |m| {
            m.contains("nodemedic_condition{condition=\"EtcdNearQuota\"} 1")
        })
        .unwrap_or_else(|| panic!("no EtcdNearQuota:\n{}", d.metrics()));
    assert!(m.contains("nodemedic_etcd_up 1"), "{m}");
    let ratio = metric_value(&m, "nodemedic_etcd_quota_used_ratio").unwrap();
    assert!(
        (ratio - 1_900_000_000.0 / 2_147_483_648.0).abs() < 1e-6,
        "{ratio}"
    );

    // k3s is SIGSTOPped: every connection is accepted and never answered.
    etcd.set(Mode::Hang);
    let before = d.status()["detectors"]["etcd"]["last_run_unix"]
        .as_f64()
        .unwrap();
    let m = d
        .wait_metrics(Duration::from_secs(30), |m| {
            metric_value(m, "nodemedic_etcd_scrapes_total{result=\"timeout\"}").unwrap_or(0.0)
                >= 4.0
                && m.contains("nodemedic_condition{condition=\"EtcdNearQuota\"} 0")
        })
        .unwrap_or_else(|| {
            panic!(
                "timeouts not counted or the condition held:\n{}",
                d.metrics()
            )
        });
    assert!(m.contains("nodemedic_etcd_up 0"), "{m}");
    assert_eq!(
        d.get("/healthz").status,
        200,
        "a silent etcd is not a stuck daemon"
    );
    let after = d.status()["detectors"]["etcd"]["last_run_unix"]
        .as_f64()
        .unwrap();
    assert!(
        after > before,
        "the etcd detector's passes went on while etcd hung"
    );
    assert_eq!(
        etcd.max_hung.load(Ordering::SeqCst),
        1,
        "never more than one scrape in flight"
    );

    // Back, with a NOSPACE alarm.
    etcd.set(Mode::Serve(etcd_page(100 << 20, 1), NOSPACE.into()));
    let m = d
        .wait_metrics(Duration::from_secs(20), |m| {
            m.contains("nodemedic_etcd_alarm{alarm=\"NOSPACE\"} 1")
                && m.contains("nodemedic_condition{condition=\"EtcdNearQuota\"} 1")
        })
        .unwrap_or_else(|| panic!("NOSPACE not seen:\n{}", d.metrics()));
    assert!(m.contains("nodemedic_etcd_up 1"), "{m}");
    let st = d.status();
    let held: Vec<&Value> = st["conditions"].as_array().unwrap().iter().collect();
    assert!(
        held.iter()
            .any(|c| c["kind"] == "EtcdNearQuota" && c["reason"] == "NoSpaceAlarm"),
        "{held:?}"
    );
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).unwrap().success());
    assert!(etcd.served.load(Ordering::SeqCst) >= 2);
}

fn etcd_node(server: &FakeApiServer, name: &str, voter: &str) {
    server.add_node(name);
    server.edit("nodes", "", name, |n| {
        n["metadata"]["labels"]["node-role.kubernetes.io/etcd"] = "true".into();
        n["status"]["conditions"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "type": "EtcdIsVoter", "status": voter,
                "reason": if voter == "True" { "MemberNotLearner" } else { "Unhealthy" },
                "message": "", "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                "lastTransitionTime": "2026-01-01T00:00:00Z"
            }));
    });
}

fn actions(d: &Daemon, action: &str) -> Vec<Value> {
    d.status()["last_actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == action)
        .cloned()
        .collect()
}

#[test]
fn a_near_quota_restart_waits_for_every_other_etcd_member_then_takes_the_cluster_lease() {
    let server = FakeApiServer::start();
    etcd_node(&server, "pi1", "True");
    etcd_node(&server, "pi2", "True");
    // k3s's etcd leader found pi3's member unhealthy.
    etcd_node(&server, "pi3", "False");
    let kdir = tempfile::tempdir().unwrap();
    let kc = server.write_kubeconfig(&kdir.path().join("kubeconfig"));
    let etcd = FakeEtcd::start(Mode::Serve(etcd_page(100 << 20, 1), NOSPACE.into()));
    let root = server_root();
    let mut d = Daemon::start(
        &format!(
            "mode = \"act\"\nnode_name = \"pi1\"\nhost_root = \"{}\"\n\
             [kernel]\nenabled = false\n[memory]\nenabled = false\n[mounts]\nenabled = false\n\
             [kubernetes]\nkubeconfig = \"{}\"\nsync_interval = \"1s\"\nrequest_timeout = \"2s\"\n\
             [policy]\nboot_grace = \"0s\"\n[policy.ladders]\netcd_near_quota = [\"restart_k3s@0s\"]\n\
             [remedy]\nk3s_unit = \"k3s.service\"\nlease_wait = \"5s\"\ntick = \"500ms\"\n\
             [etcd]\nmetrics_url = \"http://{}/metrics\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n",
            root.path().display(),
            kc.display(),
            etcd.addr
        ),
        &[],
    );
    let held = poll(Duration::from_secs(30), || {
        actions(&d, "restart_k3s")
            .into_iter()
            .find(|a| a["outcome"] == "suppressed")
    })
    .unwrap_or_else(|| panic!("no held restart; status: {}", d.status()));
    assert!(
        held["reason"]
            .as_str()
            .unwrap()
            .contains("held back: quorum"),
        "{held}"
    );
    assert!(
        server.requests_to("POST", "leases").is_empty()
            && server.requests_to("PUT", "leases").is_empty(),
        "no lease taken while a member is unhealthy"
    );
    let m = d.metrics();
    assert!(
        m.contains(
            "nodemedic_actions_suppressed_total{action=\"restart_k3s\",reason=\"quorum\"} 1"
        ),
        "held once, audited once:\n{m}"
    );

    // pi3's member is healthy again: the restart goes ahead, under the lease.
    server.edit("nodes", "", "pi3", |n| {
        for c in n["status"]["conditions"].as_array_mut().unwrap() {
            if c["type"] == "EtcdIsVoter" {
                c["status"] = "True".into();
                c["reason"] = "MemberNotLearner".into();
            }
        }
    });
    let went = poll(Duration::from_secs(30), || {
        actions(&d, "restart_k3s")
            .into_iter()
            .find(|a| a["outcome"] != "suppressed")
    })
    .unwrap_or_else(|| panic!("no restart once quorum was safe; status: {}", d.status()));
    let lease_writes: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/leases") && (r.method == "POST" || r.method == "PUT"))
        .map(|r| r.body)
        .collect();
    assert!(
        lease_writes
            .iter()
            .any(|b| b.contains("\"holderIdentity\":\"pi1\"")),
        "the restart went under the cluster lease: {lease_writes:?}; restart: {went}"
    );
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).unwrap().success());
}

/// A sqlite file like kine's, built with the sqlite3 CLI: rows written then half deleted.
fn kine_db(path: &Path) {
    let sql = "PRAGMA journal_mode=WAL;\
        CREATE TABLE kine (id INTEGER PRIMARY KEY AUTOINCREMENT, name INTEGER, value BLOB);\
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 3000) \
        INSERT INTO kine (name, value) SELECT i, zeroblob(4096) FROM n;\
        DELETE FROM kine WHERE id % 2 = 0;";
    let out = std::process::Command::new("sqlite3")
        .arg(path)
        .arg(sql)
        .output()
        .expect("sqlite3 (scripts/deps.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn preflight_vacuums_a_sound_kine_database_only_when_opted_in_and_in_act_mode() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let dbdir = root.join("var/lib/rancher/k3s/server/db");
    std::fs::create_dir_all(&dbdir).unwrap();
    let db = dbdir.join("state.db");
    kine_db(&db);
    let size = || std::fs::metadata(&db).unwrap().len();
    let before = size();
    let cfg = dir.path().join("config.toml");
    let write = |extra: &str| {
        std::fs::write(
            &cfg,
            format!(
                "{extra}host_root = \"{}\"\nstate_dir = \"{}\"\n[preflight]\nclock_wait = \"0s\"\nbudget = \"1s\"\n\
                 [policy]\npause_file = \"{}\"\n",
                root.display(),
                dir.path().join("state").display(),
                dir.path().join("pause").display()
            ),
        )
        .unwrap();
    };
    let run = || {
        let out = std::process::Command::new(BIN)
            .args(["preflight", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    write("mode = \"act\"\n");
    let out = run();
    assert!(!out.contains("VACUUM"), "not opted in: {out}");
    assert_eq!(size(), before);
    write("mode = \"act\"\nkine.vacuum_before_start = true\n");
    let out = run();
    assert!(out.contains("kine: VACUUM done"), "{out}");
    assert!(size() < before * 7 / 10, "{before} -> {}", size());
    let rec: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("state/kine-vacuum.json")).unwrap())
            .unwrap();
    assert_eq!(rec["last_result"], "done");
    // The next start, within vacuum_min_interval: skipped.
    let out = run();
    assert!(
        out.contains("VACUUM skipped") && out.contains("vacuum_min_interval"),
        "{out}"
    );
}
