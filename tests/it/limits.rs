//! The limits detector inside the running daemon (issue 24).
//!
//! A fixture host root holds the kernel's files of a node at its limits (tasks near
//! `pid_max`, the pods' cgroup near its `pids.max`, file handles, conntrack entries, 150
//! zombies of one parent): each must raise its condition. Its `dev/kmsg` is the real one,
//! so the kernel's own "table full" line, written there, raises the conntrack condition
//! through the kernel detector. A real tmpfs mounted under the fixture, filled and then
//! emptied, raises and clears DiskSpaceLow and InodesLow (root; serial: it mounts).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::kernel_kmsg::kmsg_write;
use super::support::{Daemon, is_root, require};

fn put(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A node at its limits, as its kernel files say.
fn limits_root(root: &Path) {
    put(
        root,
        "proc/self/mountinfo",
        "22 1 8:2 / / rw,relatime - ext4 /dev/root rw\n",
    );
    put(root, "proc/loadavg", "3.10 2.90 2.50 4/23500 31337\n");
    put(root, "proc/sys/kernel/pid_max", "32768\n");
    put(root, "proc/sys/kernel/threads-max", "61000\n");
    put(root, "proc/sys/fs/file-nr", "75000\t0\t100000\n");
    // Low: only the kernel's line raises conntrack here.
    put(root, "proc/sys/net/netfilter/nf_conntrack_count", "1000\n");
    put(root, "proc/sys/net/netfilter/nf_conntrack_max", "65536\n");
    put(root, "sys/fs/cgroup/pids/kubepods/pids.current", "900\n");
    put(root, "sys/fs/cgroup/pids/kubepods/pids.max", "1000\n");
    put(
        root,
        "proc/1/stat",
        "1 (systemd) S 0 1 1 0 -1 4194560 0 0\n",
    );
    put(
        root,
        "proc/777/stat",
        "777 (shim app) S 1 777 777 0 -1 4194560 0 0\n",
    );
    for pid in 1000..1150 {
        put(
            root,
            &format!("proc/{pid}/stat"),
            &format!("{pid} (worker) Z 777 777 777 0 -1 4227084 0 0\n"),
        );
    }
    std::fs::create_dir_all(root.join("dev")).unwrap();
    std::os::unix::fs::symlink("/dev/kmsg", root.join("dev/kmsg")).unwrap();
}

/// (kind, subject, reason) of each held condition.
type Held = Vec<(String, String, String)>;

fn conditions(d: &Daemon) -> Held {
    let s = d.status();
    s["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["kind"].as_str().unwrap().to_string(),
                c["subject"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn has(c: &[(String, String, String)], kind: &str, subject: &str, reason: &str) -> bool {
    c.iter()
        .any(|(k, s, r)| k == kind && s == subject && r == reason)
}

#[test]
fn serial_each_limit_of_a_fixture_node_raises_its_condition() {
    if !require(
        is_root() && Path::new("/dev/kmsg").exists(),
        "root and /dev/kmsg",
    ) {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    limits_root(root.path());
    let d = Daemon::start(
        &format!(
            "host_root = \"{}\"\n[kernel]\naccept_non_kernel_facilities = true\n\
             [memory]\nenabled = false\n[mounts]\nenabled = false\n[runtime]\nenabled = false\n\
             [limits]\ninterval = \"1s\"\ndisk_paths = []\n",
            root.path().display()
        ),
        &[],
    );
    let want = [
        ("PIDsLow", "", "NodePidsNearLimit"),
        ("PIDsLow", "kubepods", "PodPidsNearLimit"),
        ("FileHandlesLow", "", "FileHandlesNearLimit"),
        ("ZombieProcesses", "", "ZombiesAccumulating"),
    ];
    let end = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let c = conditions(&d);
        if want.iter().all(|(k, s, r)| has(&c, k, s, r)) {
            break;
        }
        assert!(std::time::Instant::now() < end, "not all raised: {c:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let s = d.status();
    let zombies = s["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "ZombieProcesses")
        .unwrap();
    assert!(
        zombies["message"]
            .as_str()
            .unwrap()
            .contains("150 are children of pid 777 (shim app)"),
        "{zombies}"
    );
    let m = d.metrics();
    assert!(
        m.contains("nodemedic_limit_used{limit=\"pids\",scope=\"node\"} 23500"),
        "{m}"
    );
    assert!(m.contains("nodemedic_zombie_processes 150"), "{m}");

    // The kernel says the conntrack table is full (as net_warn_ratelimited prints it). The
    // ring may still hold such lines from earlier runs (the daemon reads the whole ring):
    // the counter must rise by exactly this one.
    const FULL: &str = "nodemedic_kernel_events_total{kind=\"conntrack_table_full\"}";
    crate::kernel_kmsg::settled(&d);
    let before = counter(&d.metrics(), FULL);
    kmsg_write("<4>nf_conntrack: nf_conntrack: table full, dropping packet");
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while !has(&conditions(&d), "ConntrackTableFull", "", "DroppingPackets") {
        assert!(
            std::time::Instant::now() < end,
            "the kernel's line did not raise ConntrackTableFull: {:?}",
            conditions(&d)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Observe mode: the cordon its ladder asks for is audited as held back, never done.
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while counter(&d.metrics(), FULL) < before + 1.0 {
        assert!(std::time::Instant::now() < end, "{}", d.metrics());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(counter(&d.metrics(), FULL), before + 1.0, "{}", d.metrics());
}

/// A counter's value, 0 while it has no series yet.
fn counter(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// A tmpfs of `size` with `inodes` inodes at `dir`, unmounted on drop.
struct SmallFs(std::path::PathBuf);

impl SmallFs {
    fn mount(dir: &Path, opts: &str) -> SmallFs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "nodemedic-it-limits"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on {}", dir.display());
        SmallFs(dir.to_path_buf())
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn serial_a_filling_filesystem_raises_disk_space_and_inodes_low_and_emptying_it_clears_them() {
    if !require(is_root(), "root (mounts a tmpfs)") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    put(
        root.path(),
        "proc/self/mountinfo",
        "22 1 8:2 / / rw - ext4 /dev/root rw\n",
    );
    put(root.path(), "proc/loadavg", "0.1 0.1 0.1 1/300 1\n");
    let k3s = root.path().join("var/lib/rancher/k3s");
    let _fs = SmallFs::mount(&k3s, "size=4m,nr_inodes=200,mode=0755");
    let d = Daemon::start(
        &format!(
            "host_root = \"{}\"\n[kernel]\nenabled = false\n[memory]\nenabled = false\n\
             [mounts]\nenabled = false\n[runtime]\nenabled = false\n\
             [limits]\ninterval = \"1s\"\ndisk_paths = [\"/var/lib/rancher/k3s\"]\n",
            root.path().display()
        ),
        &[],
    );
    let wait_for = |pred: &dyn Fn(&Held) -> bool, what: &str| {
        let end = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let c = conditions(&d);
            if pred(&c) {
                return;
            }
            assert!(std::time::Instant::now() < end, "{what}: {c:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let subject = "/var/lib/rancher/k3s";
    wait_for(
        &|c| {
            !d.status()["detectors"]["limits"]["info"]["filesystems"]
                .as_array()
                .unwrap()
                .is_empty()
                && c.is_empty()
        },
        "an empty filesystem raises nothing",
    );
    // 3.5 of 4 MiB used: 12.5% available, below 20%.
    std::fs::write(k3s.join("images.tar"), vec![7u8; 3584 << 10]).unwrap();
    // 190 of 200 inodes: 5% free, below 10%.
    for i in 0..189 {
        std::fs::write(k3s.join(format!("f{i}")), b"").unwrap();
    }
    wait_for(
        &|c| {
            has(c, "DiskSpaceLow", subject, "DiskSpaceLow")
                && has(c, "InodesLow", subject, "InodesLow")
        },
        "a full filesystem must raise both",
    );
    let s = d.status();
    let disk = s["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "DiskSpaceLow")
        .unwrap();
    assert!(
        disk["message"]
            .as_str()
            .unwrap()
            .contains("nodefs.available<10%"),
        "{disk}"
    );
    let m = d.metrics();
    assert!(
        m.contains("nodemedic_filesystem_size_bytes{path=\"/var/lib/rancher/k3s\"} 4194304"),
        "{m}"
    );
    for e in std::fs::read_dir(&k3s).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    wait_for(&|c| c.is_empty(), "emptied, both clear");
}

/// The audit line of the last `action` with `outcome`, if any.
fn audit_line(d: &Daemon, action: &str, outcome: &str) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(d.state_dir().join("audit.jsonl")).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .collect::<Vec<_>>()
        .into_iter()
        .rfind(|v| v["action"] == action && v["outcome"] == outcome)
}

#[test]
fn serial_disk_reclaim_removes_an_unused_image_over_cri_and_keeps_the_used_one() {
    use super::support::containerd_bed::{
        BUSYBOX_IMAGE, ContainerdBed, PAUSE_IMAGE, prerequisites,
    };
    if !prerequisites() {
        return;
    }
    // A real containerd with CRI: a pod whose container uses busybox, and an image nobody
    // uses.
    let mut bed = ContainerdBed::new();
    const UNUSED: &str = "localhost/nodemedic-test/unused:1";
    bed.import_extra_image(UNUSED);
    let sb = bed.run_pod("app", "default", "uid-reclaim", 0).unwrap();
    bed.run_container(&sb, "sleeper", &["/bin/busybox", "sleep", "3600"])
        .unwrap();
    let tags = bed.image_tags();
    assert!(tags.contains(&UNUSED.to_string()), "{tags:?}");

    // The node's k3s filesystem (a small tmpfs under the fixture root, with containerd's
    // root on it) is nearly full: DiskSpaceLow, whose ladder reclaims.
    let root = tempfile::tempdir().unwrap();
    put(
        root.path(),
        "proc/self/mountinfo",
        "22 1 8:2 / / rw - ext4 /dev/root rw\n",
    );
    put(root.path(), "proc/loadavg", "0.1 0.1 0.1 1/300 1\n");
    let k3s = root.path().join("var/lib/rancher/k3s");
    let _fs = SmallFs::mount(&k3s, "size=4m,mode=0755");
    std::fs::create_dir_all(k3s.join("agent/containerd")).unwrap();
    std::fs::write(k3s.join("agent/containerd/filler"), vec![1u8; 3800 << 10]).unwrap();
    let mut d = Daemon::start(
        &format!(
            "mode = \"act\"\nhost_root = \"{root}\"\n\
             [actions.reclaim_disk]\nenabled = true\ndry_run = false\n\
             [policy]\nboot_grace = \"0s\"\n\
             [policy.ladders]\ndisk_space_low = [\"reclaim_disk@0ms\"]\n\
             [kernel]\nenabled = false\n[memory]\nenabled = false\n[mounts]\nenabled = false\n\
             [kubernetes]\nenabled = false\n\
             [runtime]\nenabled = false\nsocket = \"{sock}\"\n\
             [limits]\ninterval = \"1s\"\ndisk_paths = [\"/var/lib/rancher/k3s\"]\n",
            root = root.path().display(),
            sock = bed.socket.display()
        ),
        &[],
    );
    let end = Instant::now() + Duration::from_secs(60);
    let done = loop {
        if let Some(a) = audit_line(&d, "reclaim_disk", "done") {
            break a;
        }
        if let Some(a) = audit_line(&d, "reclaim_disk", "failed") {
            panic!("the reclaim failed: {a}\n{}", d.log.join("\n"));
        }
        assert!(
            Instant::now() < end,
            "no reclaim within 60 s; conditions: {}",
            d.status()["conditions"]
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let reason = done["reason"].as_str().unwrap_or_default().to_string();
    let detail = done.to_string();
    assert!(
        detail.contains("removed 1 unused image(s)") && detail.contains(UNUSED),
        "{detail}"
    );
    assert!(
        detail.contains("journal not on"),
        "no journal on the tmpfs: {detail}"
    );
    let tags = bed.image_tags();
    assert!(
        !tags.contains(&UNUSED.to_string()),
        "the unused image must go: {tags:?}"
    );
    assert!(
        tags.contains(&BUSYBOX_IMAGE.to_string()),
        "the image a container uses stays: {tags:?}"
    );
    assert!(
        tags.contains(&PAUSE_IMAGE.to_string()),
        "the sandbox image stays: {tags:?}"
    );
    let m = d.metrics();
    assert!(
        m.contains(
            "nodemedic_remediation_actions_total{action=\"reclaim_disk\",result=\"done\"} 1"
        ),
        "{m}\n{reason}"
    );
    d.drain_log();
}
