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
