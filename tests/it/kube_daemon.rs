//! The daemon against the in-process fake API server (real wire protocol; the stand-in for
//! a kube-apiserver, checked against kubectl in kube_api.rs): a detection becomes a Node
//! condition and an Event, act mode cordons with ownership, the pause annotation pauses,
//! and an API outage is reported in metrics, never as a sick node.

use std::time::Duration;

use nix::sys::signal::Signal;

use super::kernel_kmsg::kmsg_write;
use super::support::fake_apiserver::{Availability, FakeApiServer, condition};
use super::support::{Daemon, is_root, poll, require};

const STALL: &str = "<3>rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:";

#[test]
fn serial_a_detection_becomes_a_node_condition_an_event_and_in_act_mode_our_cordon() {
    if !require(
        is_root() && std::path::Path::new("/dev/kmsg").exists(),
        "root and /dev/kmsg",
    ) {
        return;
    }
    let server = FakeApiServer::start();
    server.add_node("pi1");
    // A second schedulable Node: cordoning pi1 must leave one (kubernetes.min_schedulable_nodes).
    server.add_node("pi2");
    let kdir = tempfile::tempdir().unwrap();
    let kc = server.write_kubeconfig(&kdir.path().join("kubeconfig"));
    let mut d = Daemon::start(
        &format!(
            "mode = \"act\"\nnode_name = \"pi1\"\n\
             [kubernetes]\nkubeconfig = \"{}\"\nsync_interval = \"1s\"\nrequest_timeout = \"1s\"\n\
             [kernel]\naccept_non_kernel_facilities = true\n[memory]\nenabled = false\n\
             [mounts]\nenabled = false\n[policy]\nboot_grace = \"0s\"\n\
             [actions.restart_k3s]\nenabled = false\n[actions.reboot]\nenabled = false\n",
            kc.display()
        ),
        &[],
    );
    kmsg_write(STALL);
    let cond = poll(Duration::from_secs(15), || {
        condition(&server.node("pi1"), "NodeMedicKernelRCUStall").filter(|c| c["status"] == "True")
    })
    .unwrap_or_else(|| panic!("no condition; node: {}", server.node("pi1")));
    assert_eq!(cond["reason"], "RCUStall");
    // kubelet's own conditions are untouched.
    assert!(condition(&server.node("pi1"), "Ready").is_some());

    let node = poll(Duration::from_secs(10), || {
        let n = server.node("pi1");
        (n["spec"]["unschedulable"] == true).then_some(n)
    })
    .expect("act mode cordons");
    assert_eq!(
        node["metadata"]["annotations"]["nodemedic.io/cordoned-by"],
        "nodemedic"
    );
    let reasons = poll(Duration::from_secs(10), || {
        let r: Vec<String> = server
            .events("default")
            .iter()
            .map(|e| e["reason"].as_str().unwrap_or("").to_string())
            .collect();
        (r.iter().any(|x| x == "KernelRCUStall") && r.iter().any(|x| x == "NodeMedicCordonDone"))
            .then_some(r)
    })
    .unwrap_or_else(|| panic!("events: {:?}", server.events("default")));
    assert!(
        reasons.iter().any(|r| r == "NodeMedicCordonDone"),
        "{reasons:?}"
    );
    let m = d.metrics();
    assert!(m.contains("nodemedic_kube_api_up 1"), "{m}");
    assert!(
        m.contains("nodemedic_remediation_actions_total{action=\"cordon\",result=\"done\"} 1"),
        "{m}"
    );

    // The operator pauses nodemedic through the Node.
    server.edit("nodes", "", "pi1", |n| {
        n["metadata"]["annotations"]["nodemedic.io/pause"] = "investigating".into();
    });
    d.wait_metrics(Duration::from_secs(10), |m| {
        m.contains("nodemedic_paused 1")
    })
    .expect("the pause annotation pauses");
    // ... and is kept in the state dir for `nodemedic preflight`, which runs before the API.
    let seen = poll(Duration::from_secs(10), || {
        let text = std::fs::read(d.state_dir().join("pause-annotation.json")).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
        (v["paused"] == true).then_some(v)
    })
    .expect("the daemon records the pause annotation for preflight");
    assert_eq!(seen["value"], "investigating");
    assert_eq!(seen["annotation"], "nodemedic.io/pause");

    // The API goes away: reported, not a sick node.
    server.set_availability(Availability::Unavailable);
    let m = d
        .wait_metrics(Duration::from_secs(15), |m| {
            m.contains("nodemedic_kube_api_up 0")
        })
        .expect("API down is visible in metrics");
    assert_eq!(d.get("/healthz").status, 200, "{m}");
    server.set_availability(Availability::Up);
    d.wait_metrics(Duration::from_secs(30), |m| {
        m.contains("nodemedic_kube_api_up 1")
    })
    .expect("API back");
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).unwrap().success());
}

#[test]
fn without_credentials_the_daemon_runs_node_local_and_registers_no_kube_metrics() {
    let root = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(
        &format!(
            "host_root = \"{}\"\n[kernel]\nenabled = false\n[memory]\nenabled = false\n[mounts]\nenabled = false\n",
            root.path().display()
        ),
        &[],
    );
    assert!(
        d.wait_log("no Kubernetes credentials found", Duration::from_secs(5))
            .is_some()
    );
    let m = d.metrics();
    assert!(!m.contains("nodemedic_kube_api_up"), "{m}");
    assert!(m.contains("nodemedic_reboot_budget_remaining 3"), "{m}");
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).unwrap().success());
}

/// Issue 17, point 1: a reboot whose cluster lease another node holds is held back as
/// `lease_unavailable`, spending nothing, and goes ahead (here: as a dry run, so nothing
/// reboots) once the lease is free, then the lease is given back.
#[test]
fn serial_a_reboot_waits_for_a_lease_held_by_another_node_spending_nothing_then_goes() {
    if !require(
        is_root() && std::path::Path::new("/dev/kmsg").exists(),
        "root and /dev/kmsg",
    ) {
        return;
    }
    let server = FakeApiServer::start();
    server.add_node("pi1");
    server.add_node("pi2");
    let now = chrono_now_micro();
    server.put(
        "leases",
        "kube-system",
        serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "nodemedic-reboot", "namespace": "kube-system"},
            "spec": {
                "holderIdentity": "pi2",
                "leaseDurationSeconds": 900,
                "acquireTime": now,
                "renewTime": now,
            }
        }),
    );
    let kdir = tempfile::tempdir().unwrap();
    let kc = server.write_kubeconfig(&kdir.path().join("kubeconfig"));
    let mut d = Daemon::start(
        &format!(
            "mode = \"act\"\nnode_name = \"pi1\"\n\
             [kubernetes]\nkubeconfig = \"{}\"\nsync_interval = \"1s\"\nrequest_timeout = \"1s\"\n\
             [kernel]\naccept_non_kernel_facilities = true\n[memory]\nenabled = false\n\
             [mounts]\nenabled = false\n[policy]\nboot_grace = \"0s\"\n\
             [policy.ladders]\nkernel_rcu_stall = [\"reboot@0s\"]\n\
             [actions.reboot]\nenabled = true\ndry_run = true\nmax_per_day = 3\n",
            kc.display()
        ),
        &[],
    );
    assert!(
        d.wait_log(
            "kubernetes.reboot_lease = \"when_permitted\"",
            Duration::from_secs(5)
        )
        .is_some(),
        "the start-up log says which lease rule applies"
    );
    kmsg_write(STALL);
    let audit = d.state_dir().join("audit.jsonl");
    let read_audit = || std::fs::read_to_string(&audit).unwrap_or_default();
    poll(Duration::from_secs(20), || {
        read_audit()
            .contains("held back: lease_unavailable")
            .then_some(())
    })
    .unwrap_or_else(|| {
        d.drain_log();
        panic!(
            "no lease hold; audit:\n{}\nlog:\n{}",
            read_audit(),
            d.log.join("\n")
        )
    });
    // Several ticks later: still waiting, nothing spent, audited once.
    std::thread::sleep(Duration::from_secs(4));
    let a = read_audit();
    let rcu = |a: &str, needle: &str| {
        a.lines()
            .filter(|l| l.contains("\"problem\":\"KernelRCUStall\"") && l.contains(needle))
            .count()
    };
    assert_eq!(rcu(&a, "lease_unavailable"), 1, "{a}");
    assert!(!a.contains("\"outcome\":\"dry_run\""), "{a}");
    let m = d.metrics();
    let st = std::fs::read_to_string(d.state_dir().join("state.json")).unwrap_or_default();
    assert!(
        m.contains("nodemedic_reboot_budget_remaining 3"),
        "no budget spent: {st}\n{a}"
    );
    assert!(
        !m.contains("nodemedic_escalation_step{problem=\"KernelRCUStall\"} 1"),
        "no ladder step spent: {m}"
    );
    assert_eq!(
        server.lease("kube-system", "nodemedic-reboot").unwrap()["spec"]["holderIdentity"],
        "pi2",
        "the other node's lease is untouched"
    );
    // pi2 releases it: the reboot goes ahead (a dry run here) holding the lease, and the
    // lease is given back once no reboot wants it.
    server.edit("leases", "kube-system", "nodemedic-reboot", |l| {
        l["spec"]["holderIdentity"] = serde_json::Value::Null;
    });
    poll(Duration::from_secs(20), || {
        read_audit()
            .contains("\"outcome\":\"dry_run\"")
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "no reboot after the lease was freed; audit:\n{}",
            read_audit()
        )
    });
    let given_back = poll(Duration::from_secs(20), || {
        let puts = server.requests_to("PUT", "/leases/nodemedic-reboot");
        let took = puts
            .iter()
            .any(|r| r.body.contains("\"pi1\"") && r.status == 200);
        let l = server.lease("kube-system", "nodemedic-reboot")?;
        (took && l["spec"]["holderIdentity"].is_null()).then_some(l)
    });
    assert!(
        given_back.is_some(),
        "taken by pi1, then given back: {:?}",
        server.lease("kube-system", "nodemedic-reboot")
    );
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).unwrap().success());
}

fn chrono_now_micro() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let out = std::process::Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{secs}"),
            "+%Y-%m-%dT%H:%M:%S.000000Z",
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Issue 17, point 3: a daemon restart mid-episode (a package upgrade, same boot)
/// changes nothing on the node or in the cluster: the cordon stays, no uncordon, no
/// second cordon, the ladder goes on where it was.
#[test]
fn serial_a_daemon_restart_mid_episode_neither_uncordons_nor_restarts_the_ladder() {
    if !require(
        is_root() && std::path::Path::new("/dev/kmsg").exists(),
        "root and /dev/kmsg",
    ) {
        return;
    }
    let server = FakeApiServer::start();
    server.add_node("pi1");
    // A second schedulable Node: cordoning pi1 must leave one (kubernetes.min_schedulable_nodes).
    server.add_node("pi2");
    let kdir = tempfile::tempdir().unwrap();
    let kc = server.write_kubeconfig(&kdir.path().join("kubeconfig"));
    let config = format!(
        "mode = \"act\"\nnode_name = \"pi1\"\n\
         [kubernetes]\nkubeconfig = \"{}\"\nsync_interval = \"1s\"\nrequest_timeout = \"1s\"\n\
         [kernel]\naccept_non_kernel_facilities = true\n[memory]\nenabled = false\n\
         [mounts]\nenabled = false\n[policy]\nboot_grace = \"0s\"\n\
         [policy.ladders]\nkernel_rcu_stall = [\"cordon@0s\", \"restart_k3s@1h\"]\n\
         [actions.restart_k3s]\nenabled = false\n[actions.reboot]\nenabled = false\n",
        kc.display()
    );
    let mut first = Daemon::start(&config, &[]);
    kmsg_write(STALL);
    poll(Duration::from_secs(20), || {
        (server.node("pi1")["spec"]["unschedulable"] == true).then_some(())
    })
    .expect("act mode cordons");
    first.signal(Signal::SIGTERM);
    assert!(first.wait_exit(Duration::from_secs(10)).unwrap().success());
    let dir = std::mem::replace(&mut first.dir, tempfile::tempdir().unwrap());
    let audit = dir.path().join("state/audit.jsonl");
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    let rcu_cordons = |a: &str| {
        a.lines()
            .filter(|l| {
                l.contains("\"action\":\"cordon\"")
                    && l.contains("\"problem\":\"KernelRCUStall\"")
                    && l.contains("\"outcome\":\"done\"")
            })
            .count()
    };
    let before = read(&audit);
    assert_eq!(rcu_cordons(&before), 1, "{before}");

    // The upgrade restarts the daemon: same boot, same state directory.
    let mut again = Daemon::start_in(dir, &config, &[]);
    again
        .wait_metrics(Duration::from_secs(20), |m| {
            m.contains("nodemedic_condition{condition=\"KernelRCUStall\"} 1")
        })
        .expect("the held stall is rebuilt from the kernel log");
    // Several ticks, past the first pass and the 2 s tick.
    std::thread::sleep(Duration::from_secs(8));
    let after = read(&again.state_dir().join("audit.jsonl"));
    assert!(!after.contains("\"action\":\"uncordon\""), "{after}");
    assert_eq!(rcu_cordons(&after), 1, "no second cordon: {after}");
    assert_eq!(
        server.node("pi1")["spec"]["unschedulable"],
        true,
        "still cordoned"
    );
    let m = again.metrics();
    assert!(
        m.contains("nodemedic_escalation_step{problem=\"KernelRCUStall\"} 1"),
        "the ladder goes on where it was: {m}"
    );
    assert!(
        server
            .requests_to("PATCH", "/nodes/pi1")
            .iter()
            .all(|r| !r.body.contains("\"unschedulable\":false")
                && !r.body.contains("\"unschedulable\":null")),
        "never uncordoned on the wire"
    );
    again.signal(Signal::SIGTERM);
    assert!(again.wait_exit(Duration::from_secs(10)).unwrap().success());
}

/// Issue 17, point 8: three Nodes. The others are cordoned: this one does not cordon
/// itself (min_schedulable). One of them holds the same problem: the disruptive step is
/// held as correlated, with one Event.
#[test]
fn serial_cluster_wide_restraint_with_three_nodes() {
    if !require(
        is_root() && std::path::Path::new("/dev/kmsg").exists(),
        "root and /dev/kmsg",
    ) {
        return;
    }
    let server = FakeApiServer::start();
    for n in ["pi1", "pi2", "pi3"] {
        server.add_node(n);
    }
    for n in ["pi2", "pi3"] {
        server.edit("nodes", "", n, |v| v["spec"]["unschedulable"] = true.into());
    }
    server.edit("nodes", "", "pi2", |v| {
        v["status"]["conditions"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "type": "NodeMedicKernelRCUStall", "status": "True",
                "reason": "RCUStall", "message": "the NAS died",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
                "lastHeartbeatTime": "2026-01-01T00:00:00Z"
            }));
    });
    let kdir = tempfile::tempdir().unwrap();
    let kc = server.write_kubeconfig(&kdir.path().join("kubeconfig"));
    let mut d = Daemon::start(
        &format!(
            "mode = \"act\"\nnode_name = \"pi1\"\n\
             [kubernetes]\nkubeconfig = \"{}\"\nsync_interval = \"1s\"\nrequest_timeout = \"1s\"\n\
             [kernel]\naccept_non_kernel_facilities = true\n[memory]\nenabled = false\n\
             [mounts]\nenabled = false\n[policy]\nboot_grace = \"0s\"\n\
             [policy.ladders]\nkernel_rcu_stall = [\"cordon@0s\", \"reboot@0s\"]\n\
             [actions.reboot]\nenabled = true\ndry_run = true\nmax_per_day = 3\n",
            kc.display()
        ),
        &[],
    );
    let audit = d.state_dir().join("audit.jsonl");
    let rcu = |needle: &str| {
        std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"problem\":\"KernelRCUStall\"") && l.contains(needle))
            .count()
    };
    // Let the first pass read the Nodes before the stall.
    d.wait_metrics(Duration::from_secs(15), |m| {
        m.contains("nodemedic_kube_api_up 1")
    })
    .expect("API up");
    std::thread::sleep(Duration::from_secs(2));
    kmsg_write(STALL);
    poll(Duration::from_secs(20), || {
        (rcu("held back: min_schedulable") == 1).then_some(())
    })
    .unwrap_or_else(|| {
        d.drain_log();
        panic!(
            "no min_schedulable hold: {}\nlog:\n{}",
            std::fs::read_to_string(&audit).unwrap_or_default(),
            d.log.join("\n")
        )
    });
    assert_eq!(
        server.node("pi1")["spec"]["unschedulable"],
        serde_json::Value::Null
    );
    // pi3 comes back: now pi1 may cordon (pi3 stays schedulable), and the reboot is held
    // because pi2 holds the same problem (2 of 3 Nodes).
    server.edit("nodes", "", "pi3", |v| {
        v["spec"]["unschedulable"] = false.into()
    });
    poll(Duration::from_secs(20), || {
        (rcu("held back: correlated") == 1).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "no correlated hold: {}",
            std::fs::read_to_string(&audit).unwrap_or_default()
        )
    });
    assert_eq!(server.node("pi1")["spec"]["unschedulable"], true);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(rcu("held back: correlated"), 1, "audited once");
    assert_eq!(rcu("\"outcome\":\"dry_run\""), 0, "the reboot was held");
    let correlated_events = || -> Vec<serde_json::Value> {
        server
            .events("default")
            .into_iter()
            .filter(|e| {
                e["reason"] == "NodeMedicRebootSuppressed"
                    && e["message"]
                        .as_str()
                        .unwrap_or("")
                        .contains("held back: correlated")
            })
            .collect()
    };
    poll(Duration::from_secs(10), || {
        (!correlated_events().is_empty()).then_some(())
    })
    .expect("an Event for the correlated hold");
    std::thread::sleep(Duration::from_secs(2));
    let e = correlated_events();
    assert_eq!(e.len(), 1, "one Event: {e:?}");
    assert_eq!(e[0]["count"], 1, "{e:?}");
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).unwrap().success());
}
