//! The Kubernetes edge against an in-process fake API server speaking the real wire
//! protocol, with kubectl as the oracle that the fake behaves like the real thing.
//!
//! Real here: nodemedic's kube-rs client, HTTP, JSON bodies, patch content types,
//! resourceVersion conflicts, the Eviction subresource, and `kubectl` itself. Time is
//! injected into the sync passes (`Now`), so lease expiry needs no sleeping.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, UNIX_EPOCH};

use nodemedic::kube::api::{
    Capabilities, ConditionStatus, EventType, EvictOutcome, KubeError, NodeApi,
};
use nodemedic::kube::credentials::{self, CredentialSource, Discovery};
use nodemedic::kube::drain::{self, DrainOptions, RemainReason, Skip};
use nodemedic::kube::lease::{LeaseConfig, LockWant};
use nodemedic::kube::sync::{LockStatus, NodeSync, Now, SyncConfig};
use nodemedic::kube::{
    CordonOutcome, DesiredCondition, EventDraft, KubeClient, KubeMetrics, Timeouts,
};
use prometheus_client::registry::Registry;
use serde_json::Value;

use super::support::fake_apiserver::{Availability, FakeApiServer, condition};
use super::support::require;

/// Short deadlines keep the outage tests fast; the defaults are 5 s and 10 s.
const TEST_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(1),
    request: Duration::from_millis(500),
};

fn now(secs: u64) -> Now {
    Now {
        wall: UNIX_EPOCH + Duration::from_secs(1_764_000_000 + secs),
        mono: Duration::from_secs(5000 + secs),
    }
}

/// `now(secs)` as the API spells it.
fn wire(secs: u64) -> String {
    nodemedic::kube::api::format_time(now(secs).wall)
}

struct Client {
    api: KubeClient,
    metrics: KubeMetrics,
    registry: Registry,
    _dir: tempfile::TempDir,
}

impl Client {
    fn metrics_text(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).unwrap();
        out
    }

    fn has_metric(&self, line: &str) -> bool {
        self.metrics_text().lines().any(|l| l == line)
    }
}

/// A client built the way the daemon builds it: discovery, kubeconfig, kube-rs.
async fn client(server: &FakeApiServer) -> Client {
    let dir = tempfile::tempdir().unwrap();
    let kc = server.write_kubeconfig(&dir.path().join("kubeconfig"));
    let src = credentials::discover(&Discovery {
        root: dir.path(),
        explicit: Some(&kc),
        service_host: None,
        service_port: None,
    })
    .unwrap();
    let mut registry = Registry::default();
    let metrics = KubeMetrics::register(&mut registry);
    let api = KubeClient::connect(&src, Path::new("/"), TEST_TIMEOUTS, Some(metrics.clone()))
        .await
        .unwrap();
    Client {
        api,
        metrics,
        registry,
        _dir: dir,
    }
}

fn node_sync(c: &Client, node: &str) -> NodeSync<KubeClient> {
    NodeSync::new(
        c.api.clone(),
        SyncConfig::new(node, Capabilities::full("test kubeconfig")),
        now(0),
        11,
    )
    .with_metrics(c.metrics.clone())
}

fn rcu_stall() -> DesiredCondition {
    DesiredCondition::new(
        "KernelRCUStall",
        ConditionStatus::True,
        "RCUStallDetected",
        "rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: { P4121 } 21 jiffies",
    )
}

fn memory_pressure() -> DesiredCondition {
    DesiredCondition::new(
        "MemoryPressure",
        ConditionStatus::True,
        "MemAvailableLow",
        "MemAvailable 6% of 8 GiB for 60s, swap 2% free",
    )
}

fn kubelet_conditions(node: &Value) -> Vec<Value> {
    node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| !c["type"].as_str().unwrap().starts_with("NodeMedic"))
        .cloned()
        .collect()
}

#[tokio::test]
async fn conditions_are_set_then_cleared_without_touching_kubelets() {
    let server = FakeApiServer::start();
    let before = server.add_node("pi5");
    let c = client(&server).await;
    let mut s = node_sync(&c, "pi5");

    s.set_conditions(vec![rcu_stall()]);
    let r = s.sync(now(0)).await;
    assert!(r.api_down.is_none() && r.errors.is_empty(), "{r:?}");
    let node = server.node("pi5");
    let rcu = condition(&node, "NodeMedicKernelRCUStall").expect("published");
    assert_eq!(rcu["status"], "True");
    assert_eq!(rcu["reason"], "RCUStallDetected");
    assert_eq!(rcu["message"], rcu_stall().message);
    assert_eq!(rcu["lastTransitionTime"], wire(0));
    assert_eq!(rcu["lastHeartbeatTime"], wire(0));
    assert_eq!(
        kubelet_conditions(&node),
        kubelet_conditions(&before),
        "kubelet's untouched"
    );

    let patches = server.requests_to("PATCH", "/api/v1/nodes/pi5/status");
    assert_eq!(patches.len(), 1);
    assert!(
        patches[0]
            .content_type
            .starts_with("application/strategic-merge-patch+json")
    );
    let sent = patches[0].json();
    assert_eq!(
        sent["status"]["conditions"].as_array().unwrap().len(),
        1,
        "only ours on the wire"
    );
    assert!(
        patches[0].query.contains("fieldManager=nodemedic"),
        "{}",
        patches[0].query
    );

    server.clear_requests();
    s.sync(now(60)).await;
    assert!(
        server.requests_to("PATCH", "/status").is_empty(),
        "unchanged: no write before the heartbeat"
    );

    s.set_conditions(vec![]);
    s.sync(now(120)).await;
    let node = server.node("pi5");
    let rcu = condition(&node, "NodeMedicKernelRCUStall").unwrap();
    assert_eq!(rcu["status"], "False");
    assert_eq!(rcu["reason"], "NodeMedicNotDetected");
    assert_eq!(rcu["lastTransitionTime"], wire(120));
    assert_eq!(kubelet_conditions(&node), kubelet_conditions(&before));
}

#[tokio::test]
async fn a_restarted_daemon_rederives_and_clears_what_its_predecessor_left() {
    let server = FakeApiServer::start();
    server.add_node("pi5");
    let c = client(&server).await;
    {
        let mut first = node_sync(&c, "pi5");
        let mount = DesiredCondition::new(
            "NetworkMountHung",
            ConditionStatus::True,
            "MountHung",
            "/srv/nfs: statfs blocked 95s",
        );
        first.set_conditions(vec![rcu_stall(), mount]);
        first.sync(now(0)).await;
    }
    let before = server.node("pi5");
    assert_eq!(
        condition(&before, "NodeMedicNetworkMountHung").unwrap()["status"],
        "True"
    );

    // A new process: it still sees the RCU stall, the mount recovered while it was down.
    let c2 = client(&server).await;
    let mut second = node_sync(&c2, "pi5");
    second.set_conditions(vec![rcu_stall()]);
    let r = second.sync(now(400)).await;
    assert!(r.api_down.is_none(), "{r:?}");
    let node = server.node("pi5");
    let rcu = condition(&node, "NodeMedicKernelRCUStall").unwrap();
    assert_eq!(rcu["status"], "True");
    assert_eq!(
        rcu["lastTransitionTime"],
        wire(0),
        "re-derived, not flapped"
    );
    assert_eq!(rcu["lastHeartbeatTime"], wire(400), "heartbeat was due");
    let mount = condition(&node, "NodeMedicNetworkMountHung").unwrap();
    assert_eq!(
        (
            mount["status"].as_str(),
            mount["lastTransitionTime"].as_str()
        ),
        (Some("False"), Some(wire(400).as_str()))
    );
    assert_eq!(kubelet_conditions(&node), kubelet_conditions(&before));

    // A third instance with nothing to report clears the rest and leaves kubelet's alone.
    let c3 = client(&server).await;
    let mut third = node_sync(&c3, "pi5");
    third.sync(now(500)).await;
    let node = server.node("pi5");
    for c in node["status"]["conditions"].as_array().unwrap() {
        let t = c["type"].as_str().unwrap();
        if t.starts_with("NodeMedic") {
            assert_eq!(c["status"], "False", "{t}");
        }
    }
    assert_eq!(condition(&node, "Ready").unwrap()["status"], "True");
}

#[tokio::test]
async fn an_operator_cordon_is_never_removed() {
    let server = FakeApiServer::start();
    server.add_node("pi5");
    server.edit("nodes", "", "pi5", |n| {
        n["spec"]["unschedulable"] = Value::Bool(true)
    });
    let c = client(&server).await;
    let mut s = node_sync(&c, "pi5");

    s.want_cordon("NodeMedicMemoryPressure");
    assert_eq!(
        s.sync(now(0)).await.cordon,
        Some(CordonOutcome::CordonedByOperator)
    );
    s.want_uncordon();
    assert_eq!(
        s.sync(now(10)).await.cordon,
        Some(CordonOutcome::CordonedByOperator)
    );

    let node = server.node("pi5");
    assert_eq!(node["spec"]["unschedulable"], true);
    assert!(
        node["metadata"]["annotations"]
            .get("nodemedic.io/cordoned-by")
            .is_none()
    );
    assert!(
        server
            .requests_to("PATCH", "/api/v1/nodes/pi5")
            .iter()
            .all(|r| r.path.ends_with("/status"))
    );
    assert!(
        c.has_metric("nodemedic_node_cordoned{by=\"operator\"} 1"),
        "{}",
        c.metrics_text()
    );
}

#[tokio::test]
async fn our_cordon_carries_ownership_and_is_removed_on_clear() {
    let server = FakeApiServer::start();
    server.add_node("pi5");
    let c = client(&server).await;
    let mut s = node_sync(&c, "pi5");

    s.want_cordon("NodeMedicMemoryPressure: MemAvailable 6% for 60s");
    s.sync(now(0)).await;
    let node = server.node("pi5");
    let ann = &node["metadata"]["annotations"];
    assert_eq!(node["spec"]["unschedulable"], true);
    assert_eq!(ann["nodemedic.io/cordoned-by"], "nodemedic");
    assert_eq!(
        ann["nodemedic.io/cordon-reason"],
        "NodeMedicMemoryPressure: MemAvailable 6% for 60s"
    );
    assert_eq!(ann["nodemedic.io/cordoned-at"], wire(0));
    let patch = server
        .requests_to("PATCH", "/api/v1/nodes/pi5")
        .pop()
        .unwrap();
    assert!(
        patch
            .content_type
            .starts_with("application/merge-patch+json")
    );
    assert!(
        patch.json()["metadata"]["resourceVersion"].is_string(),
        "conditional write"
    );
    assert!(c.has_metric("nodemedic_node_cordoned{by=\"nodemedic\"} 1"));

    s.want_uncordon();
    s.sync(now(30)).await;
    let node = server.node("pi5");
    assert!(node["spec"].get("unschedulable").is_none_or(|u| u == false));
    let ann = node["metadata"]["annotations"].as_object().unwrap();
    assert!(
        ann.keys().all(|k| !k.starts_with("nodemedic.io/")),
        "{ann:?}"
    );
    assert!(
        ann.contains_key("k3s.io/node-args"),
        "other annotations kept"
    );
    let reasons: Vec<String> = server
        .events("default")
        .iter()
        .map(|e| e["reason"].as_str().unwrap().to_string())
        .collect();
    assert!(
        reasons.contains(&"NodeMedicCordoned".into())
            && reasons.contains(&"NodeMedicUncordoned".into()),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn a_cordon_that_loses_a_race_rereads_instead_of_overwriting() {
    let server = FakeApiServer::start();
    server.add_node("pi5");
    let c = client(&server).await;
    let mut s = node_sync(&c, "pi5");
    s.sync(now(0)).await;
    server.clear_requests();
    server.script_conflicts("nodes", 1);
    s.want_cordon("NodeMedicKernelRCUStall");
    let r = s.sync(now(10)).await;
    assert_eq!(r.cordon, Some(CordonOutcome::CordonedByUs), "{r:?}");
    let codes: Vec<u16> = server
        .requests_to("PATCH", "/api/v1/nodes/pi5")
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(codes, [409, 200]);
    assert_eq!(
        server.requests_to("GET", "/api/v1/nodes/pi5").len(),
        2,
        "re-read after the conflict"
    );
    assert_eq!(server.node("pi5")["spec"]["unschedulable"], true);
}

#[tokio::test]
async fn the_reboot_lease_is_refused_while_held_and_granted_after_expiry() {
    let server = FakeApiServer::start();
    server.add_node("pi5");
    server.add_node("pi4");
    let (ca, cb) = (client(&server).await, client(&server).await);
    let mut a = node_sync(&ca, "pi5");
    let mut b = node_sync(&cb, "pi4");
    a.want_lock(LockWant::Hold);
    b.want_lock(LockWant::Hold);

    let r = a.sync(now(0)).await;
    assert_eq!(
        r.lock,
        Some(LockStatus::Held {
            slot: "nodemedic-reboot".into()
        }),
        "{r:?}"
    );
    let lease = server.lease("kube-system", "nodemedic-reboot").unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "pi5");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 900);
    assert_eq!(lease["spec"]["leaseTransitions"], 0);
    assert_eq!(lease["spec"]["acquireTime"], "2025-11-24T16:00:00.000000Z");
    assert_eq!(lease["spec"]["renewTime"], "2025-11-24T16:00:00.000000Z");
    assert!(ca.has_metric("nodemedic_reboot_lease_held 1"));
    assert!(
        ca.has_metric(
            "nodemedic_kube_requests_total{verb=\"get\",resource=\"leases\",code=\"404\"} 1"
        ),
        "{}",
        ca.metrics_text()
    );
    assert!(ca.has_metric(
        "nodemedic_kube_requests_total{verb=\"create\",resource=\"leases\",code=\"201\"} 1"
    ));

    let r = b.sync(now(5)).await;
    assert!(
        matches!(&r.lock, Some(LockStatus::Waiting { holders, .. }) if holders == &["pi5"]),
        "{r:?}"
    );
    assert!(cb.has_metric("nodemedic_reboot_lease_held 0"));

    // pi5 never comes back. Just before the duration on pi4's clock: still refused.
    drop(a);
    assert!(matches!(
        b.sync(now(5 + 899)).await.lock,
        Some(LockStatus::Waiting { .. })
    ));
    let r = b.sync(now(5 + 900)).await;
    assert!(matches!(r.lock, Some(LockStatus::Held { .. })), "{r:?}");
    let lease = server.lease("kube-system", "nodemedic-reboot").unwrap();
    assert_eq!(
        (
            lease["spec"]["holderIdentity"].as_str(),
            lease["spec"]["leaseTransitions"].as_i64()
        ),
        (Some("pi4"), Some(1))
    );

    // Back and healthy: released, free for the next node at once.
    b.want_lock(LockWant::Release);
    assert_eq!(b.sync(now(1200)).await.lock, Some(LockStatus::NotHeld));
    let lease = server.lease("kube-system", "nodemedic-reboot").unwrap();
    assert!(
        lease["spec"]
            .get("holderIdentity")
            .is_none_or(Value::is_null),
        "{lease}"
    );
    let reasons: Vec<String> = server
        .events("default")
        .iter()
        .map(|e| e["reason"].as_str().unwrap().into())
        .collect();
    assert!(
        reasons.contains(&"NodeMedicRebootLockAcquired".into())
            && reasons.contains(&"NodeMedicRebootLockReleased".into())
    );
}

#[tokio::test]
async fn with_two_holders_two_nodes_reboot_and_a_third_waits() {
    let server = FakeApiServer::start();
    let clients = [
        client(&server).await,
        client(&server).await,
        client(&server).await,
    ];
    let mut syncs: Vec<_> = ["pi3", "pi4", "pi5"]
        .iter()
        .zip(&clients)
        .map(|(n, c)| {
            server.add_node(n);
            let mut cfg = SyncConfig::new(*n, Capabilities::full("test"));
            cfg.lease = LeaseConfig {
                max_holders: 2,
                ..LeaseConfig::default()
            };
            let mut s = NodeSync::new(c.api.clone(), cfg, now(0), 5);
            s.want_lock(LockWant::Hold);
            s
        })
        .collect();
    let mut results = Vec::new();
    for s in &mut syncs {
        results.push(s.sync(now(0)).await.lock);
    }
    assert_eq!(
        results[0],
        Some(LockStatus::Held {
            slot: "nodemedic-reboot-0".into()
        })
    );
    assert_eq!(
        results[1],
        Some(LockStatus::Held {
            slot: "nodemedic-reboot-1".into()
        })
    );
    assert!(
        matches!(&results[2], Some(LockStatus::Waiting { holders, .. }) if holders.len() == 2),
        "{results:?}"
    );
}

#[tokio::test]
async fn a_lease_write_conflict_is_resolved_by_rereading() {
    let server = FakeApiServer::start();
    server.add_node("pi5");
    let c = client(&server).await;
    let mut s = node_sync(&c, "pi5");
    s.want_lock(LockWant::Hold);
    s.sync(now(0)).await;
    server.clear_requests();
    server.script_conflicts("leases", 1);
    let r = s.sync(now(300)).await;
    assert!(matches!(r.lock, Some(LockStatus::Held { .. })), "{r:?}");
    let puts: Vec<u16> = server
        .requests_to("PUT", "/leases/nodemedic-reboot")
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(puts, [409, 200]);
    assert_eq!(
        server.requests_to("GET", "/leases/nodemedic-reboot").len(),
        2
    );
    let lease = server.lease("kube-system", "nodemedic-reboot").unwrap();
    assert_eq!(lease["spec"]["renewTime"], "2025-11-24T16:05:00.000000Z");
}

#[tokio::test]
async fn while_the_api_is_down_actions_queue_and_apply_once_it_is_back() {
    let server = FakeApiServer::start();
    server.add_node("pi5");
    let c = client(&server).await;
    let mut s = node_sync(&c, "pi5");
    s.sync(now(0)).await;

    server.set_availability(Availability::Refuse);
    s.set_conditions(vec![rcu_stall()]);
    s.want_cordon("NodeMedicKernelRCUStall");
    for i in 0..3 {
        s.record_event(
            EventDraft::new(
                EventType::Warning,
                "RCUStall",
                "rcu_preempt detected expedited stalls, 21 jiffies",
            ),
            now(10 + i),
        );
    }
    let t0 = Instant::now();
    let r = s.sync(now(20)).await;
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "refused connections fail fast"
    );
    assert!(
        matches!(r.api_down, Some(KubeError::Unreachable { .. })),
        "{r:?}"
    );
    assert!(c.has_metric("nodemedic_kube_api_up 0"));
    assert!(
        c.metrics_text().contains("code=\"unreachable\""),
        "{}",
        c.metrics_text()
    );
    assert!(c.has_metric("nodemedic_kube_pending_actions{kind=\"events\"} 1"));
    assert!(!s.sync(now(20)).await.attempted, "backoff");

    // Latest wish wins while waiting.
    s.set_conditions(vec![memory_pressure()]);
    server.set_availability(Availability::Up);
    let r = s.sync(now(200)).await;
    assert!(r.api_down.is_none() && r.errors.is_empty(), "{r:?}");
    let node = server.node("pi5");
    assert_eq!(
        condition(&node, "NodeMedicMemoryPressure").unwrap()["status"],
        "True"
    );
    assert!(
        condition(&node, "NodeMedicKernelRCUStall").is_none(),
        "superseded before it was ever sent"
    );
    assert_eq!(node["spec"]["unschedulable"], true);
    let stalls: Vec<Value> = server
        .events("default")
        .into_iter()
        .filter(|e| e["reason"] == "RCUStall")
        .collect();
    assert_eq!(stalls.len(), 1, "{stalls:?}");
    assert_eq!(stalls[0]["count"], 3);
    assert!(c.has_metric("nodemedic_kube_api_up 1"));
    assert!(c.has_metric("nodemedic_kube_pending_actions{kind=\"conditions\"} 0"));

    // Nothing is sent twice.
    server.clear_requests();
    s.sync(now(230)).await;
    assert!(
        server.requests_to("POST", "/events").is_empty()
            && server.requests_to("PATCH", "/events").is_empty()
    );
}

#[tokio::test]
async fn an_api_answering_503_is_down_not_a_sick_node() {
    let server = FakeApiServer::start();
    server.add_node("pi5");
    let c = client(&server).await;
    let mut s = node_sync(&c, "pi5");
    server.set_availability(Availability::Unavailable);
    let r = s.sync(now(0)).await;
    assert!(
        matches!(&r.api_down, Some(e) if e.code() == Some(503)),
        "{r:?}"
    );
    assert!(
        c.has_metric(
            "nodemedic_kube_requests_total{verb=\"get\",resource=\"nodes\",code=\"503\"} 1"
        ),
        "{}",
        c.metrics_text()
    );
    server.set_availability(Availability::Up);
    let r = s.sync(now(100)).await;
    assert!(r.api_down.is_none(), "{r:?}");
    let node = server.node("pi5");
    assert!(
        node["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"] != "True" || c["type"] == "Ready"),
        "an outage never becomes a node condition: {node}"
    );
}

#[tokio::test]
async fn a_hanging_api_never_blocks_the_caller_beyond_its_deadline() {
    let server = FakeApiServer::start();
    server.add_node("pi5");
    let c = client(&server).await;
    server.set_availability(Availability::Hang);

    let t0 = Instant::now();
    let e = c.api.get_node("pi5").await.unwrap_err();
    let took = t0.elapsed();
    assert!(matches!(e, KubeError::Timeout { .. }), "{e:?}");
    assert!(
        took >= TEST_TIMEOUTS.request && took < TEST_TIMEOUTS.request + Duration::from_secs(1),
        "{took:?}"
    );
    assert!(
        server
            .requests_to("GET", "/api/v1/nodes/pi5")
            .iter()
            .all(|r| r.status == 0),
        "never answered"
    );

    let mut cfg = SyncConfig::new("pi5", Capabilities::full("test"));
    cfg.pass_deadline = Duration::from_secs(2);
    let mut s = NodeSync::new(c.api.clone(), cfg, now(0), 1).with_metrics(c.metrics.clone());
    s.set_conditions(vec![rcu_stall()]);
    let t0 = Instant::now();
    let r = s.sync(now(0)).await;
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(
        r.api_down.as_ref().is_some_and(KubeError::api_unavailable),
        "{r:?}"
    );
    assert!(c.metrics_text().contains("code=\"timeout\""));

    server.set_availability(Availability::Up);
    let r = s.sync(now(100)).await;
    assert!(r.api_down.is_none(), "{r:?}");
    assert_eq!(
        condition(&server.node("pi5"), "NodeMedicKernelRCUStall").unwrap()["status"],
        "True"
    );
}

#[tokio::test]
async fn node_events_reference_the_node_and_count_repeats_on_the_wire() {
    let server = FakeApiServer::start();
    server.add_node("pi5");
    let c = client(&server).await;
    let mut s = node_sync(&c, "pi5");
    let stall = || {
        EventDraft::new(
            EventType::Warning,
            "RCUStall",
            "rcu: INFO: rcu_sched self-detected stall on CPU",
        )
    };
    s.record_event(stall(), now(0));
    s.record_event(stall(), now(1));
    s.sync(now(2)).await;
    let evs = server.events("default");
    assert_eq!(evs.len(), 1);
    let e = &evs[0];
    assert_eq!(e["involvedObject"]["kind"], "Node");
    assert_eq!(e["involvedObject"]["name"], "pi5");
    assert_eq!(e["involvedObject"]["uid"], "pi5");
    assert_eq!(e["source"]["component"], "nodemedic");
    assert_eq!(e["source"]["host"], "pi5");
    assert_eq!(e["type"], "Warning");
    assert_eq!(e["count"], 2);
    assert_eq!(e["firstTimestamp"], wire(0));
    assert_eq!(e["lastTimestamp"], wire(1));
    assert!(e["metadata"]["name"].as_str().unwrap().starts_with("pi5."));

    s.record_event(stall(), now(40));
    s.sync(now(41)).await;
    let evs = server.events("default");
    assert_eq!(evs.len(), 1, "a repeat updates, it does not create");
    assert_eq!(evs[0]["count"], 3);
    assert_eq!(evs[0]["lastTimestamp"], wire(40));
    assert_eq!(evs[0]["firstTimestamp"], wire(0));
    let patch = server
        .requests_to("PATCH", "/api/v1/namespaces/default/events/")
        .pop()
        .unwrap();
    assert!(
        patch
            .content_type
            .starts_with("application/strategic-merge-patch+json")
    );
}

fn drain_opts() -> DrainOptions {
    DrainOptions {
        deadline: Duration::from_secs(5),
        retry_interval: Duration::from_millis(50),
    }
}

fn seed_pods(server: &FakeApiServer) {
    server.add_node("pi5");
    server.add_node("pi4");
    server.add_pod(
        "monitoring",
        "prometheus-server-6d8f7b9c4-x2kqp",
        "pi5",
        Some(("ReplicaSet", "prometheus-server-6d8f7b9c4")),
        false,
    );
    server.add_pod(
        "kube-system",
        "svclb-traefik-8c7f2-9xkzq",
        "pi5",
        Some(("DaemonSet", "svclb-traefik-8c7f2")),
        false,
    );
    server.add_pod(
        "kube-system",
        "etcd-pi5",
        "pi5",
        Some(("Node", "pi5")),
        true,
    );
    server.add_pod(
        "default",
        "grafana-5b6c8d7f9-4jwzt",
        "pi4",
        Some(("ReplicaSet", "grafana-5b6c8d7f9")),
        false,
    );
    let job = server.add_pod(
        "backup",
        "nightly-29391840-abcde",
        "pi5",
        Some(("Job", "nightly-29391840")),
        false,
    );
    server.edit(
        "pods",
        "backup",
        job["metadata"]["name"].as_str().unwrap(),
        |p| p["status"]["phase"] = "Succeeded".into(),
    );
}

#[tokio::test]
async fn an_eviction_refused_by_a_pdb_is_retried_until_it_succeeds() {
    let server = FakeApiServer::start();
    seed_pods(&server);
    server.script_eviction(
        "monitoring",
        "prometheus-server-6d8f7b9c4-x2kqp",
        &[429, 429],
    );
    let c = client(&server).await;

    let r = drain::drain(&c.api, "pi5", &Capabilities::full("test"), drain_opts())
        .await
        .unwrap();
    assert!(r.complete(), "{r:?}");
    assert_eq!(r.evicted, ["monitoring/prometheus-server-6d8f7b9c4-x2kqp"]);
    let mut skipped = r.skipped.clone();
    skipped.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        skipped,
        [
            ("backup/nightly-29391840-abcde".to_string(), Skip::Finished),
            ("kube-system/etcd-pi5".to_string(), Skip::Mirror),
            (
                "kube-system/svclb-traefik-8c7f2-9xkzq".to_string(),
                Skip::DaemonSet
            ),
        ]
    );
    let evictions = server.requests_to("POST", "/eviction");
    let codes: Vec<u16> = evictions.iter().map(|r| r.status).collect();
    assert_eq!(codes, [429, 429, 201]);
    assert!(evictions.iter().all(|r| r.path
        == "/api/v1/namespaces/monitoring/pods/prometheus-server-6d8f7b9c4-x2kqp/eviction"));
    assert_eq!(evictions[0].json()["apiVersion"], "policy/v1");
    assert_eq!(evictions[0].json()["kind"], "Eviction");
    assert!(
        server.pod_exists("default", "grafana-5b6c8d7f9-4jwzt"),
        "another node's pod is untouched"
    );
    assert!(server.pod_exists("kube-system", "svclb-traefik-8c7f2-9xkzq"));
    let list = server.requests_to("GET", "/api/v1/pods").remove(0);
    assert!(
        list.query.contains("fieldSelector=spec.nodeName%3Dpi5"),
        "{}",
        list.query
    );
}

/// Issue 17, point 7: a bare pod (no controller) is never evicted by a drain unless it
/// carries the explicit `nodemedic.io/evictable: "true"` annotation.
#[tokio::test]
async fn a_drain_leaves_a_bare_pod_alone_unless_it_is_annotated_evictable() {
    let server = FakeApiServer::start();
    server.add_node("pi5");
    server.add_pod("default", "debug-shell", "pi5", None, false);
    server.add_pod("default", "scratch", "pi5", None, false);
    server.edit("pods", "default", "scratch", |p| {
        p["metadata"]["annotations"]["nodemedic.io/evictable"] = "true".into();
    });
    let c = client(&server).await;
    let r = drain::drain(&c.api, "pi5", &Capabilities::full("test"), drain_opts())
        .await
        .unwrap();
    assert_eq!(r.evicted, ["default/scratch"], "{r:?}");
    assert_eq!(
        r.skipped,
        [("default/debug-shell".to_string(), Skip::Bare)],
        "{r:?}"
    );
    assert!(server.pod_exists("default", "debug-shell"));
}

#[tokio::test]
async fn a_drain_reports_what_a_pdb_still_blocks_at_the_deadline() {
    let server = FakeApiServer::start();
    seed_pods(&server);
    server.add_pod(
        "longhorn-system",
        "instance-manager-5f4c1a",
        "pi5",
        Some(("ReplicaSet", "instance-manager")),
        false,
    );
    server.block_eviction(
        "longhorn-system",
        "instance-manager-5f4c1a",
        "instance-manager-pdb",
    );
    let c = client(&server).await;
    let opts = DrainOptions {
        deadline: Duration::from_millis(800),
        ..drain_opts()
    };
    let t0 = Instant::now();
    let r = drain::drain(&c.api, "pi5", &Capabilities::full("test"), opts)
        .await
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert_eq!(r.evicted, ["monitoring/prometheus-server-6d8f7b9c4-x2kqp"]);
    assert_eq!(r.remaining.len(), 1, "{r:?}");
    let (pod, why) = &r.remaining[0];
    assert_eq!(pod, "longhorn-system/instance-manager-5f4c1a");
    assert!(
        matches!(why, RemainReason::Blocked(m) if m.contains("disruption budget")),
        "{why:?}"
    );
    assert!(
        server.pod_exists("longhorn-system", "instance-manager-5f4c1a"),
        "never forced"
    );
}

#[tokio::test]
async fn evicting_a_pod_that_is_gone_says_so() {
    let server = FakeApiServer::start();
    let c = client(&server).await;
    assert_eq!(
        c.api.evict_pod("default", "web-0").await.unwrap(),
        EvictOutcome::Gone
    );
    assert!(c.has_metric(
        "nodemedic_kube_requests_total{verb=\"create\",resource=\"pods/eviction\",code=\"404\"} 1"
    ));
}

#[tokio::test]
async fn the_kubelet_identity_publishes_but_never_drains_or_locks() {
    let server = FakeApiServer::start();
    server.add_node("pi4");
    server.add_pod(
        "default",
        "web-0",
        "pi4",
        Some(("StatefulSet", "web")),
        false,
    );
    let root = tempfile::tempdir().unwrap();
    // A k3s agent: only the kubelet kubeconfig exists (no client certificate needed over
    // the fake's plain HTTP).
    let kc = root.path().join(credentials::K3S_KUBELET_KUBECONFIG);
    server.write_kubeconfig(&kc);
    let src = credentials::discover(&Discovery {
        root: root.path(),
        explicit: None,
        service_host: None,
        service_port: None,
    })
    .unwrap();
    assert!(matches!(src, CredentialSource::K3sKubelet(_)));
    let caps = src.capabilities();
    let api = KubeClient::connect(&src, root.path(), TEST_TIMEOUTS, None)
        .await
        .unwrap();

    let mut s = NodeSync::new(api.clone(), SyncConfig::new("pi4", caps.clone()), now(0), 2);
    s.set_conditions(vec![memory_pressure()]);
    s.want_lock(LockWant::Hold);
    let r = s.sync(now(0)).await;
    assert_eq!(r.lock, Some(LockStatus::NotPermitted));
    assert!(
        r.errors
            .iter()
            .any(|e| matches!(e, KubeError::NotPermitted { .. }))
    );
    assert_eq!(
        condition(&server.node("pi4"), "NodeMedicMemoryPressure").unwrap()["status"],
        "True"
    );
    let e = drain::drain(&api, "pi4", &caps, drain_opts())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("kubelet"), "{e}");
    assert!(
        server
            .requests()
            .iter()
            .all(|r| !r.path.contains("/leases") && !r.path.contains("/eviction"))
    );
    assert!(server.pod_exists("default", "web-0"));
}

#[tokio::test]
async fn the_k3s_admin_kubeconfig_is_found_under_the_root_and_reaches_the_api() {
    let server = FakeApiServer::start();
    server.add_node("pi5");
    let root = tempfile::tempdir().unwrap();
    server.write_kubeconfig(&root.path().join(credentials::K3S_ADMIN_KUBECONFIG));
    let src = credentials::discover(&Discovery {
        root: root.path(),
        explicit: None,
        service_host: None,
        service_port: None,
    })
    .unwrap();
    assert!(matches!(src, CredentialSource::K3sAdmin(_)));
    let api = KubeClient::connect(&src, root.path(), TEST_TIMEOUTS, None)
        .await
        .unwrap();
    let node = api.get_node("pi5").await.unwrap();
    assert_eq!(node.name, "pi5");
    assert!(!node.unschedulable);
    assert_eq!(node.conditions.len(), 4, "kubelet's four");
}

// ---------------------------------------------------------------------------------------
// kubectl as the oracle

struct Kubectl {
    kubeconfig: std::path::PathBuf,
    cache: tempfile::TempDir,
}

impl Kubectl {
    fn available() -> bool {
        Command::new("kubectl")
            .args(["version", "--client"])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn new(server: &FakeApiServer, dir: &Path) -> Kubectl {
        Kubectl {
            kubeconfig: server.write_kubeconfig(&dir.join("kubectl.kubeconfig")),
            cache: tempfile::tempdir().unwrap(),
        }
    }

    /// Runs kubectl; returns stdout, panicking with stderr on failure.
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.cache.path())
            .arg("--request-timeout=10s")
            .args(args)
            .output()
            .expect("run kubectl");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.run(&a)).expect("kubectl printed JSON")
    }
}

#[tokio::test]
async fn kubectl_and_nodemedic_agree_on_cordon_conditions_events_and_leases() {
    if !require(
        Kubectl::available(),
        "kubectl (v1.32, the oracle for the fake API server)",
    ) {
        return;
    }
    let server = FakeApiServer::start();
    server.add_node("pi5");
    let dir = tempfile::tempdir().unwrap();
    let k = Kubectl::new(&server, dir.path());
    let c = client(&server).await;
    let mut s = node_sync(&c, "pi5");

    // An operator's cordon, made by kubectl: nodemedic must not take it over or remove it.
    assert!(k.run(&["cordon", "pi5"]).contains("node/pi5 cordoned"));
    let kubectl_patch = server
        .requests_to("PATCH", "/api/v1/nodes/pi5")
        .pop()
        .unwrap();
    assert_eq!(kubectl_patch.status, 200);
    s.want_cordon("NodeMedicMemoryPressure");
    s.sync(now(0)).await;
    s.want_uncordon();
    s.sync(now(10)).await;
    let node = k.json(&["get", "node", "pi5"]);
    assert_eq!(node["spec"]["unschedulable"], true);
    assert!(
        node["metadata"]["annotations"]
            .get("nodemedic.io/cordoned-by")
            .is_none()
    );
    assert!(k.run(&["uncordon", "pi5"]).contains("node/pi5 uncordoned"));
    assert!(
        k.json(&["get", "node", "pi5"])["spec"]
            .get("unschedulable")
            .is_none_or(|u| u == false)
    );

    // nodemedic's own writes, read back by kubectl.
    s.set_conditions(vec![rcu_stall()]);
    s.want_cordon("NodeMedicKernelRCUStall");
    s.want_lock(LockWant::Hold);
    let r = s.sync(now(20)).await;
    assert!(r.errors.is_empty() && r.api_down.is_none(), "{r:?}");
    let node = k.json(&["get", "node", "pi5"]);
    assert_eq!(node["spec"]["unschedulable"], true);
    assert_eq!(
        node["metadata"]["annotations"]["nodemedic.io/cordoned-by"],
        "nodemedic"
    );
    assert_eq!(
        condition(&node, "NodeMedicKernelRCUStall").unwrap()["status"],
        "True"
    );
    assert_eq!(condition(&node, "Ready").unwrap()["reason"], "KubeletReady");
    let lease = k.json(&["get", "lease", "-n", "kube-system", "nodemedic-reboot"]);
    assert_eq!(lease["spec"]["holderIdentity"], "pi5");
    let events = k.json(&[
        "get",
        "events",
        "-n",
        "default",
        "--field-selector",
        "involvedObject.kind=Node,involvedObject.name=pi5",
    ]);
    let reasons: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert!(
        reasons.contains(&"NodeMedicCordoned") && reasons.contains(&"NodeMedicRebootLockAcquired"),
        "{reasons:?}"
    );

    // An operator uncordons nodemedic's cordon: nodemedic respects it.
    k.run(&["uncordon", "pi5"]);
    assert_eq!(
        s.sync(now(30)).await.cordon,
        Some(CordonOutcome::OperatorUncordonedUs)
    );
    s.sync(now(40)).await;
    let node = k.json(&["get", "node", "pi5"]);
    assert!(node["spec"].get("unschedulable").is_none_or(|u| u == false));
    assert!(
        node["metadata"]["annotations"]
            .get("nodemedic.io/cordoned-by")
            .is_none()
    );

    // kubectl's own strategic-merge patch on conditions merges by type, as nodemedic's does.
    k.run(&[
        "patch", "node", "pi5", "--subresource=status", "--type=strategic",
        "-p", r#"{"status":{"conditions":[{"type":"NodeMedicKernelRCUStall","status":"False","reason":"ByHand"}]}}"#,
    ]);
    let node = k.json(&["get", "node", "pi5"]);
    assert_eq!(
        condition(&node, "NodeMedicKernelRCUStall").unwrap()["reason"],
        "ByHand"
    );
    assert_eq!(kubelet_conditions(&node).len(), 4);
    k.run(&[
        "patch",
        "node",
        "pi5",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/metadata/labels/nodemedic.io~1test","value":"yes"}]"#,
    ]);
    assert_eq!(
        server.node("pi5")["metadata"]["labels"]["nodemedic.io/test"],
        "yes"
    );
}

#[tokio::test]
async fn kubectl_drain_uses_the_same_eviction_api_as_nodemedic() {
    if !require(
        Kubectl::available(),
        "kubectl (v1.32, the oracle for the fake API server)",
    ) {
        return;
    }
    let server = FakeApiServer::start();
    seed_pods(&server);
    server.add_daemonset("kube-system", "svclb-traefik-8c7f2");
    let dir = tempfile::tempdir().unwrap();
    let k = Kubectl::new(&server, dir.path());
    let out = k.run(&[
        "drain",
        "pi5",
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=20s",
    ]);
    assert!(out.contains("node/pi5 drained"), "{out}");
    assert!(!server.pod_exists("monitoring", "prometheus-server-6d8f7b9c4-x2kqp"));
    assert!(
        server.pod_exists("kube-system", "svclb-traefik-8c7f2-9xkzq"),
        "DaemonSet pod stays"
    );
    assert!(
        server.pod_exists("kube-system", "etcd-pi5"),
        "mirror pod stays"
    );
    let kubectl_evictions = server.requests_to("POST", "/eviction");
    assert!(kubectl_evictions.iter().any(|r| r.status == 201));

    // nodemedic's drain over the same fake agrees on what is left to move: nothing.
    let c = client(&server).await;
    let r = drain::drain(&c.api, "pi5", &Capabilities::full("test"), drain_opts())
        .await
        .unwrap();
    assert!(r.complete() && r.evicted.is_empty(), "{r:?}");
}

#[tokio::test]
async fn the_rbac_manifest_allows_every_request_nodemedic_makes_and_no_more() {
    if !require(
        Kubectl::available(),
        "kubectl (v1.32, loads the RBAC manifest into the fake API server)",
    ) {
        return;
    }
    let server = FakeApiServer::start();
    seed_pods(&server);
    server.script_eviction("monitoring", "prometheus-server-6d8f7b9c4-x2kqp", &[429]);
    let dir = tempfile::tempdir().unwrap();
    let k = Kubectl::new(&server, dir.path());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/k8s/rbac.yaml");
    let out = k.run(&[
        "create",
        "--validate=false",
        "-f",
        manifest.to_str().unwrap(),
    ]);
    assert!(
        out.contains("clusterrole.rbac.authorization.k8s.io/nodemedic created"),
        "{out}"
    );
    server.clear_requests();

    // Everything nodemedic does against the API, at least once.
    let c = client(&server).await;
    let mut s = node_sync(&c, "pi5");
    let stall = || {
        EventDraft::new(
            EventType::Warning,
            "RCUStall",
            "rcu_preempt detected expedited stalls",
        )
    };
    s.set_conditions(vec![rcu_stall()]);
    s.want_cordon("NodeMedicKernelRCUStall");
    s.want_lock(LockWant::Hold);
    s.record_event(stall(), now(0));
    s.sync(now(0)).await;
    s.record_event(stall(), now(400));
    s.sync(now(400)).await;
    let r = drain::drain(&c.api, "pi5", &Capabilities::full("sa"), drain_opts())
        .await
        .unwrap();
    assert!(r.complete(), "{r:?}");
    // On a server: the other servers, for the quorum rule.
    c.api
        .list_nodes("node-role.kubernetes.io/control-plane")
        .await
        .unwrap();
    s.want_uncordon();
    s.want_lock(LockWant::Release);
    let r = s.sync(now(500)).await;
    assert!(r.errors.is_empty() && r.api_down.is_none(), "{r:?}");

    let requests: Vec<_> = server.requests().iter().filter_map(|r| r.rbac()).collect();
    let mut kinds: Vec<(String, String)> = requests
        .iter()
        .map(|r| (r.verb.clone(), r.resource.clone()))
        .collect();
    kinds.sort();
    kinds.dedup();
    let expected = [
        ("create", "events"),
        ("create", "leases"),
        ("create", "pods/eviction"),
        ("get", "leases"),
        ("get", "nodes"),
        ("list", "nodes"),
        ("list", "pods"),
        ("patch", "events"),
        ("patch", "nodes"),
        ("patch", "nodes/status"),
        ("update", "leases"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(v, r)| (v.to_string(), r.to_string()))
        .collect();
    assert_eq!(
        kinds, expected,
        "the scenario covers every call nodemedic makes"
    );
    for r in &requests {
        assert!(
            server.rbac_allows("kube-system", "nodemedic", r),
            "packaging/k8s/rbac.yaml does not allow {r:?}"
        );
    }

    // Least privilege: what nodemedic never does is not granted.
    let deny = |verb: &str, group: &str, resource: &str, namespace: &str, name: &str| {
        let req = super::support::fake_apiserver::RbacRequest {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
        };
        assert!(
            !server.rbac_allows("kube-system", "nodemedic", &req),
            "{req:?} should be denied"
        );
    };
    deny("delete", "", "pods", "default", "web-0");
    deny("update", "", "nodes", "", "pi5");
    deny(
        "update",
        "coordination.k8s.io",
        "leases",
        "kube-system",
        "kube-controller-manager",
    );
    deny("create", "coordination.k8s.io", "leases", "default", "");
    deny("get", "", "secrets", "kube-system", "nodemedic-token");
}

#[tokio::test]
async fn servers_are_listed_by_role_label_with_k3s_etcd_voter_condition() {
    let server = FakeApiServer::start();
    for n in ["pi1", "pi2", "pi3", "agent1"] {
        server.add_node(n);
    }
    // add_node makes servers; agent1 is an agent, pi3 not an etcd member.
    server.edit("nodes", "", "agent1", |n| {
        n["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove("node-role.kubernetes.io/control-plane");
    });
    for (n, status, reason) in [
        ("pi1", "True", "MemberNotLearner"),
        ("pi2", "False", "Unhealthy"),
    ] {
        server.edit("nodes", "", n, |n| {
            n["metadata"]["labels"]["node-role.kubernetes.io/etcd"] = "true".into();
            n["status"]["conditions"].as_array_mut().unwrap().push(serde_json::json!({
                "type": "EtcdIsVoter", "status": status, "reason": reason, "message": "",
                "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"
            }));
        });
    }
    let c = client(&server).await;
    let names = |v: Vec<nodemedic::kube::api::NodeView>| {
        let mut n: Vec<String> = v.into_iter().map(|n| n.name).collect();
        n.sort();
        n
    };
    let servers = c
        .api
        .list_nodes("node-role.kubernetes.io/control-plane")
        .await
        .unwrap();
    assert_eq!(names(servers), ["pi1", "pi2", "pi3"]);
    let etcd = c
        .api
        .list_nodes("node-role.kubernetes.io/etcd=true")
        .await
        .unwrap();
    let pi2 = etcd.iter().find(|n| n.name == "pi2").unwrap();
    let conds = format!("{:?}", pi2.conditions);
    assert!(
        conds.contains("type_: \"EtcdIsVoter\", status: False, reason: \"Unhealthy\""),
        "{conds}"
    );
    assert_eq!(names(etcd), ["pi1", "pi2"]);
    let q = &server.requests_to("GET", "/api/v1/nodes")[0].query;
    assert!(q.contains("labelSelector=node-role.kubernetes.io"), "{q}");
}
