//! The optional MemoryPressure response, end to end: the daemon ranks BestEffort pods by
//! the working set the kernel charged to their cgroups and evicts the largest one that a
//! PodDisruptionBudget lets go, through the Eviction API.
//!
//! Real: the `nodemedic` binary, the memory cgroups and what the kernel charges to them
//! (one process per pod, each touching its own amount of memory). Stand-ins: the API
//! server (the in-process fake speaking the wire protocol, `status.qosClass` set on create
//! as the real one does) and `/proc/meminfo` (a fixture with MemAvailable at 4%, so the
//! condition is raised by the no-PSI fallback without starving the test machine). The
//! fixture host root links `sys` to the real `/sys`, and its `proc/self/mountinfo` names
//! this test's own cgroup directory as the memory hierarchy's mount point, so the daemon
//! finds `kubepods/besteffort/pod<uid>` there exactly as it would on a k3s node (cgroupfs
//! driver), without touching a real kubelet's cgroups. Needs root, a memory cgroup
//! controller and `cc`; skips loudly elsewhere and fails under CI.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use super::support::fake_apiserver::FakeApiServer;
use super::support::{Daemon, is_root, poll, remove_cgroups, require};

/// Maps and touches argv[1] MiB once it reads a byte on stdin (by then the test has moved
/// it into its pod's cgroup, so every page is charged there), answers "r", then holds the
/// memory until stdin closes.
const HOLD_C: &str = r#"
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv) {
    char c;
    if (argc != 2 || read(0, &c, 1) != 1) return 2;
    size_t len = (size_t)strtoul(argv[1], 0, 10) << 20;
    unsigned char *p = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 3;
    memset(p, 1, len);
    if (write(1, "r", 1) != 1) return 4;
    while (read(0, &c, 1) > 0) {}
    return 0;
}
"#;

/// Below `evict_min_working_set_mib` (32 by default), so never a candidate.
const TINY_MIB: u64 = 4;

#[derive(Clone, Copy, PartialEq)]
enum Layout {
    /// The hybrid layout: a v1 memory hierarchy at /sys/fs/cgroup/memory.
    V1,
    /// cgroup2 with the memory controller.
    V2,
}

struct Bed {
    layout: Layout,
    /// This test's directory in the real hierarchy; the daemon sees it as the mount point.
    base: PathBuf,
    dirs: Vec<PathBuf>,
    holders: Vec<Child>,
    bin: PathBuf,
}

impl Bed {
    fn new(tmp: &Path) -> Result<Bed, String> {
        let name = format!("nodemedic-it-evict-{}", std::process::id());
        let v1 = PathBuf::from("/sys/fs/cgroup/memory");
        let (layout, base) = if v1.join("memory.limit_in_bytes").exists() {
            (Layout::V1, v1.join(&name))
        } else {
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            let cg2 = nodemedic::memory::detector::cgroup2_mount(&mountinfo)
                .map(PathBuf::from)
                .ok_or("a memory cgroup controller (v1 or cgroup2)")?;
            let controllers =
                std::fs::read_to_string(cg2.join("cgroup.controllers")).unwrap_or_default();
            if !controllers.split_whitespace().any(|c| c == "memory") {
                return Err("a memory cgroup controller (v1 or cgroup2)".into());
            }
            enable_memory(&cg2);
            (Layout::V2, cg2.join(&name))
        };
        let src = tmp.join("hold.c");
        std::fs::write(&src, HOLD_C).unwrap();
        let bin = tmp.join("hold");
        let out = Command::new("cc")
            .arg("-O2")
            .arg("-o")
            .arg(&bin)
            .arg(&src)
            .output()
            .map_err(|e| format!("the `cc` command ({e})"))?;
        assert!(
            out.status.success(),
            "cc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut bed = Bed {
            layout,
            base: base.clone(),
            dirs: Vec::new(),
            holders: Vec::new(),
            bin,
        };
        for d in ["", "kubepods", "kubepods/besteffort", "kubepods/burstable"] {
            let dir = base.join(d);
            std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            bed.dirs.push(dir.clone());
            if layout == Layout::V2 && d != "kubepods/besteffort" && d != "kubepods/burstable" {
                enable_memory(&dir);
            }
        }
        Ok(bed)
    }

    /// The `proc/self/mountinfo` line the daemon reads: this test's directory as the
    /// memory hierarchy's root.
    fn mountinfo(&self) -> String {
        match self.layout {
            Layout::V1 => format!(
                "35 30 0:31 / {} rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory\n",
                self.base.display()
            ),
            Layout::V2 => format!(
                "29 23 0:26 / {} rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n",
                self.base.display()
            ),
        }
    }

    /// A process holding `mib` MiB in the pod cgroup `qos/pod<uid>`.
    fn pod(&mut self, qos: &str, uid: &str, mib: u64) {
        let dir = self
            .base
            .join("kubepods")
            .join(qos)
            .join(format!("pod{uid}"));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        self.dirs.push(dir.clone());
        let mut child = Command::new(&self.bin)
            .arg(mib.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::fs::write(dir.join("cgroup.procs"), child.id().to_string()).unwrap();
        child.stdin.as_mut().unwrap().write_all(b"g").unwrap();
        let mut ready = [0u8; 1];
        child
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut ready)
            .unwrap();
        assert_eq!(&ready, b"r");
        // The kernel charged it where the daemon will look.
        let file = match self.layout {
            Layout::V1 => "memory.usage_in_bytes",
            Layout::V2 => "memory.current",
        };
        let used: u64 = std::fs::read_to_string(dir.join(file))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            used >= mib << 20,
            "{}: {used} bytes charged, {mib} MiB touched",
            dir.display()
        );
        self.holders.push(child);
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        for mut c in self.holders.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        remove_cgroups(std::mem::take(&mut self.dirs), "memory_evict");
    }
}

fn enable_memory(dir: &Path) {
    let ctl = dir.join("cgroup.subtree_control");
    let on = std::fs::read_to_string(&ctl).unwrap_or_default();
    if !on.split_whitespace().any(|c| c == "memory") {
        std::fs::write(&ctl, "+memory")
            .unwrap_or_else(|e| panic!("enable memory in {}: {e}", ctl.display()));
    }
}

fn uid(server: &FakeApiServer, ns: &str, name: &str) -> String {
    server.get("pods", ns, name).expect("pod")["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn memory_pressure_evicts_the_largest_besteffort_pod_a_pdb_lets_go() {
    if !require(is_root(), "root (to create memory cgroups)") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let bed = Bed::new(tmp.path());
    let mut bed = match bed {
        Ok(b) => b,
        Err(what) => {
            require(false, &what);
            return;
        }
    };

    let server = FakeApiServer::start();
    server.add_node("pi1");
    // A second schedulable Node: cordoning the only one is skipped (min_schedulable).
    server.add_node("pi2");
    // BestEffort pods (no resources: the fake stamps qosClass as the API server does).
    server.add_pod(
        "apps",
        "scraper",
        "pi1",
        Some(("ReplicaSet", "scraper-7d9")),
        false,
    );
    server.add_pod(
        "apps",
        "cache",
        "pi1",
        Some(("ReplicaSet", "cache-5c4")),
        false,
    );
    server.add_pod(
        "apps",
        "tiny",
        "pi1",
        Some(("ReplicaSet", "tiny-1a2")),
        false,
    );
    server.add_pod(
        "kube-system",
        "svclb-x7k2p",
        "pi1",
        Some(("DaemonSet", "svclb")),
        false,
    );
    // A Burstable pod, larger than all of them: not the BestEffort class, never a candidate.
    server.put(
        "pods",
        "apps",
        json!({
            "metadata": {"name": "db", "namespace": "apps"},
            "spec": {"nodeName": "pi1", "containers": [{"name": "main", "image": "postgres",
                     "resources": {"requests": {"memory": "64Mi"}}}]},
            "status": {"phase": "Running"},
        }),
    );
    for (ns, name) in [("apps", "scraper"), ("apps", "cache"), ("apps", "tiny")] {
        let q = &server.get("pods", ns, name).unwrap()["status"]["qosClass"];
        assert_eq!(q, "BestEffort", "{ns}/{name}");
    }
    assert_eq!(
        server.get("pods", "apps", "db").unwrap()["status"]["qosClass"],
        "Burstable"
    );
    // The largest BestEffort pod is protected by a PodDisruptionBudget.
    server.block_eviction("apps", "scraper", "scraper-pdb");

    bed.pod("besteffort", &uid(&server, "apps", "scraper"), 96);
    bed.pod("besteffort", &uid(&server, "apps", "cache"), 64);
    bed.pod("besteffort", &uid(&server, "apps", "tiny"), TINY_MIB);
    bed.pod(
        "besteffort",
        &uid(&server, "kube-system", "svclb-x7k2p"),
        80,
    );
    bed.pod("burstable", &uid(&server, "apps", "db"), 128);

    // Fixture host root: low MemAvailable and no PSI (the fallback raises the condition),
    // the test's cgroup directory as the memory hierarchy, the real /sys behind it.
    let root = tmp.path().join("root");
    let proc = root.join("proc");
    std::fs::create_dir_all(proc.join("self")).unwrap();
    std::fs::write(
        proc.join("meminfo"),
        "MemTotal:        4000000 kB\nMemFree:           80000 kB\nMemAvailable:     160000 kB\n\
         SwapTotal:             0 kB\nSwapFree:              0 kB\n",
    )
    .unwrap();
    std::fs::write(
        proc.join("vmstat"),
        "pgmajfault 100\npswpin 0\npswpout 0\noom_kill 0\n",
    )
    .unwrap();
    std::fs::write(proc.join("self/mountinfo"), bed.mountinfo()).unwrap();
    std::os::unix::fs::symlink("/sys", root.join("sys")).unwrap();

    let kc = server.write_kubeconfig(&tmp.path().join("kubeconfig"));
    let d = Daemon::start(
        &format!(
            "mode = \"act\"\nnode_name = \"pi1\"\nhost_root = \"{}\"\n\
             [kubernetes]\nkubeconfig = \"{}\"\nsync_interval = \"1s\"\nrequest_timeout = \"2s\"\n\
             [kernel]\nenabled = false\n[mounts]\nenabled = false\n[runtime]\nenabled = false\n\
             [memory]\ninterval = \"500ms\"\nsustain = \"1s\"\ncalm = \"2s\"\n\
             [policy]\nboot_grace = \"0s\"\n\
             [policy.ladders]\nmemory_pressure = [\"cordon@0s\", \"evict_besteffort@1s\"]\n\
             [actions.evict_besteffort]\nenabled = true\n\
             [actions.restart_k3s]\nenabled = false\n[actions.reboot]\nenabled = false\n",
            root.display(),
            kc.display()
        ),
        &[],
    );

    // The PDB refuses the largest; the next largest goes.
    poll(Duration::from_secs(30), || {
        (!server.pod_exists("apps", "cache")).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "apps/cache was not evicted; evictions asked: {:?}\nlog: {:#?}",
            server.requests_to("POST", "eviction"),
            d.log
        )
    });
    let asked: Vec<(String, u16)> = server
        .requests_to("POST", "eviction")
        .into_iter()
        .map(|r| (r.path, r.status))
        .collect();
    assert_eq!(
        asked,
        vec![
            (
                "/api/v1/namespaces/apps/pods/scraper/eviction".to_string(),
                429
            ),
            (
                "/api/v1/namespaces/apps/pods/cache/eviction".to_string(),
                201
            ),
        ],
        "largest first; the PDB-protected one passed over; DaemonSet, Burstable and tiny pods never asked"
    );
    for (ns, name) in [
        ("apps", "scraper"),
        ("apps", "tiny"),
        ("apps", "db"),
        ("kube-system", "svclb-x7k2p"),
    ] {
        assert!(server.pod_exists(ns, name), "{ns}/{name} must stay");
    }

    let m = d
        .wait_metrics(Duration::from_secs(10), |m| {
            m.contains("nodemedic_pod_evictions_total{result=\"evicted\"} 1")
        })
        .unwrap_or_else(|| panic!("no eviction counted:\n{}", d.metrics()));
    assert!(
        m.contains(
            "nodemedic_remediation_actions_total{action=\"evict_besteffort\",result=\"done\"} 1"
        ),
        "{m}"
    );
    let audit = poll(Duration::from_secs(5), || {
        let (entries, _) = nodemedic::audit::read_tail(&d.state_dir(), 100);
        entries
            .into_iter()
            .find(|e| e.action == "evict_besteffort" && e.subject == "apps/cache")
    })
    .expect("the eviction is in the audit trail with the pod");
    assert!(
        audit.reason.contains("passed over: apps/scraper")
            && audit.reason.contains("PodDisruptionBudget"),
        "{}",
        audit.reason
    );
    // The working set the daemon ranked by is the kernel's figure for the 64 MiB holder.
    assert!(
        audit.reason.contains("64.") || audit.reason.contains("65."),
        "{}",
        audit.reason
    );
    poll(Duration::from_secs(10), || {
        server
            .events("default")
            .iter()
            .any(|e| e["reason"] == "NodeMedicEvictedBestEffortPod")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no Event; events: {:?}", server.events("default")));
    assert_eq!(
        server.node("pi1")["spec"]["unschedulable"],
        true,
        "cordoned first"
    );

    // One eviction per ladder step: the condition still holds, yet two more Kubernetes
    // passes (each reads the Node) go by without another eviction.
    let passes_after_eviction = || {
        let reqs = server.requests();
        let last = reqs.iter().rposition(|r| r.path.ends_with("/eviction"))?;
        let node_reads = reqs[last..]
            .iter()
            .filter(|r| r.method == "GET" && r.path == "/api/v1/nodes/pi1")
            .count();
        (node_reads >= 2).then_some(())
    };
    poll(Duration::from_secs(15), passes_after_eviction)
        .unwrap_or_else(|| panic!("no Kubernetes pass after the eviction"));
    assert_eq!(server.requests_to("POST", "eviction").len(), 2);
    assert!(
        d.metrics()
            .contains("nodemedic_condition{condition=\"MemoryPressure\"} 1"),
        "the pressure still holds"
    );
    drop(bed);
}
