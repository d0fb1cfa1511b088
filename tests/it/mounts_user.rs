//! A hung FUSE mount owned by an unprivileged user (issue 18, point 1): anyone can make one
//! and stall it on purpose, so through the daemon in act mode it raises `UserMountHung` and
//! earns a cordon, and nothing else: no unmount, no k3s restart, no reboot, although all
//! three are enabled. Before the fix it raised `NetworkMountHung`, whose ladder unmounts.
//! Needs root and /dev/fuse; the mount carries its own fstype so only it is watched.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::support::fake_apiserver::{FakeApiServer, condition};
use super::support::hangfs::{HangFs, HangMode};
use super::support::{Daemon, is_root, poll, require, run_cli};

const FSTYPE: &str = "fuse.nodemedic-user";
const NOBODY: u32 = 65534;

fn mounted(p: &Path) -> bool {
    let want = p.to_str().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want))
}

fn audit(d: &Daemon) -> Vec<serde_json::Value> {
    std::fs::read_to_string(d.state_dir().join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn a_ladder_that_would_restart_unmount_or_reboot_for_a_user_mount_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["unmount@2m", "restart_k3s@10m", "reboot@30m"] {
        let cfg = dir.path().join("c.toml");
        std::fs::write(
            &cfg,
            format!("[policy.ladders]\nuser_mount_hung = [\"cordon@0s\", \"{bad}\"]\n"),
        )
        .unwrap();
        let (code, out, err) = run_cli(&["config", "check", cfg.to_str().unwrap()]);
        assert_eq!(code, 78, "{bad}: {out}{err}");
        assert!(
            err.contains("policy.ladders.user_mount_hung") && err.contains("only cordon"),
            "{err}"
        );
    }
}

#[test]
fn serial_a_hung_mount_of_an_unprivileged_user_is_reported_and_cordoned_only() {
    if !require(
        is_root() && Path::new("/dev/fuse").exists(),
        "root and /dev/fuse",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let canon = dir.path().canonicalize().unwrap();
    let fs = HangFs::mount_owned(&canon, HangMode::NeverInit, FSTYPE, NOBODY, NOBODY).unwrap();
    let server = FakeApiServer::start();
    server.add_node("pi1");
    // A second schedulable Node: cordoning the only one is skipped (min_schedulable).
    server.add_node("pi2");
    let kdir = tempfile::tempdir().unwrap();
    let kc = server.write_kubeconfig(&kdir.path().join("kubeconfig"));
    // Every disruptive action is switched on (restart and reboot as dry runs: the audit
    // would still record them) and NetworkMountHung's ladder would take them all within
    // 3 s: only the user_mount_hung ladder (cordon) may run.
    let mut d = Daemon::start(
        &format!(
            "mode = \"act\"\nnode_name = \"pi1\"\n\
             [kubernetes]\nkubeconfig = \"{}\"\nsync_interval = \"1s\"\nrequest_timeout = \"1s\"\n\
             [kernel]\nenabled = false\n[memory]\nenabled = false\n[runtime]\nenabled = false\n\
             [mounts]\ninterval = \"1s\"\nprobe_timeout = \"1s\"\nfstypes = [\"{FSTYPE}\"]\n\
             [actions.unmount]\nenabled = true\n[actions.drain]\nenabled = true\n\
             [actions.restart_k3s]\ndry_run = true\n[actions.reboot]\ndry_run = true\n\
             [policy]\nboot_grace = \"0s\"\n\
             [policy.ladders]\nnetwork_mount_hung = [\"cordon@0s\", \"unmount@1s\", \"restart_k3s@2s\", \"reboot@3s\"]\n",
            kc.display()
        ),
        &[],
    );
    let cond = poll(Duration::from_secs(20), || {
        condition(&server.node("pi1"), "NodeMedicUserMountHung").filter(|c| c["status"] == "True")
    })
    .unwrap_or_else(|| {
        panic!(
            "no UserMountHung on the node: {}\nlog:\n{}",
            server.node("pi1"),
            d.log.join("\n")
        )
    });
    assert!(
        cond["message"].as_str().unwrap_or("").contains("uid 65534"),
        "{cond}"
    );
    poll(Duration::from_secs(10), || {
        (server.node("pi1")["spec"]["unschedulable"] == true).then_some(())
    })
    .expect("act mode cordons");
    // Give the policy time to take the further steps a NetworkMountHung would have earned
    // here (unmount, restart, reboot within 3 s): none.
    std::thread::sleep(Duration::from_secs(5));
    let s = d.status();
    let kinds: Vec<String> = s["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap().to_string())
        .collect();
    assert!(kinds.contains(&"UserMountHung".to_string()), "{kinds:?}");
    assert!(
        !kinds.contains(&"NetworkMountHung".to_string()),
        "{kinds:?}"
    );
    let actions: Vec<(String, String)> = audit(&d)
        .iter()
        // Condition records (action "condition") are reports, not actions.
        .filter(|e| e["action"] != "condition")
        .filter_map(|e| {
            Some((
                e["action"].as_str()?.to_string(),
                e["outcome"].as_str().unwrap_or("").to_string(),
            ))
        })
        .collect();
    assert!(
        actions.iter().any(|(a, o)| a == "cordon" && o == "done"),
        "{actions:?}"
    );
    assert!(
        actions.iter().all(|(a, _)| a == "cordon"),
        "only cordon: {actions:?}"
    );
    assert!(mounted(&canon), "a user's mount is never unmounted");
    d.signal(Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(10)).unwrap().success());
    drop(fs);
}

/// fusectl at its usual place, mounted for the test when the machine has not (systemd
/// mounts it on a real node); unmounted again on drop only if the test mounted it.
struct Fusectl(bool);
impl Fusectl {
    fn ensure() -> Fusectl {
        let dir = Path::new("/sys/fs/fuse/connections");
        let mounted = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some("/sys/fs/fuse/connections"));
        if mounted {
            return Fusectl(false);
        }
        nix::mount::mount(
            Some("fusectl"),
            dir,
            Some("fusectl"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .expect("mount fusectl");
        Fusectl(true)
    }
}
impl Drop for Fusectl {
    fn drop(&mut self) {
        if self.0 {
            let _ =
                nix::mount::umount2("/sys/fs/fuse/connections", nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// A real kernel hung-task report whose task waits on an unprivileged user's dead FUSE mount
/// (issue 18.1): `UserMountHung` (cordon only), not `KernelHungTasks` (restart after 10m,
/// reboot after 30m). The mounts detector is off, so the condition can only come from the
/// kernel log. Before the fix the report raised KernelHungTasks.
#[test]
fn serial_a_real_hung_task_report_on_a_users_fuse_mount_raises_user_mount_hung_not_kernel_hung_tasks()
 {
    use super::kernel_kmsg::{Kill, Sysctl};
    use std::process::{Command, Stdio};
    if !require(
        is_root() && Path::new("/dev/fuse").exists() && Path::new("/dev/kmsg").exists(),
        "root, /dev/fuse and /dev/kmsg",
    ) {
        return;
    }
    let _fusectl = Fusectl::ensure();
    let d = Daemon::start("[mounts]\nenabled = false\n", &[]);
    let dir = tempfile::tempdir().unwrap();
    let canon = dir.path().canonicalize().unwrap();
    let fs = HangFs::mount_owned(&canon, HangMode::NeverInit, FSTYPE, NOBODY, NOBODY).unwrap();
    let _timeout = Sysctl::set("/proc/sys/kernel/hung_task_timeout_secs", "5");
    let _warnings = Sysctl::set("/proc/sys/kernel/hung_task_warnings", "10");
    let mut kids = Kill(Vec::new());
    for i in 0..2 {
        kids.0.push(
            Command::new("mkdir")
                .arg(canon.join(format!("d{i}")))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    let pids: Vec<String> = kids.0.iter().map(|c| format!("mkdir:{}", c.id())).collect();
    let found = poll(Duration::from_secs(40), || {
        let s = d.status();
        s["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["kind"] == "UserMountHung" && c["reason"] == "HungTaskOnUserMount")
            .cloned()
            .map(|c| (c, s))
    });
    fs.release();
    drop(kids);
    let (c, s) = found.unwrap_or_else(|| {
        panic!(
            "no UserMountHung from the hung-task report:\n{}\nlog:\n{}",
            d.status(),
            d.log.join("\n")
        )
    });
    let msg = c["message"].as_str().unwrap();
    assert!(
        msg.contains(canon.to_str().unwrap()) && msg.contains("uid 65534"),
        "{msg}"
    );
    assert!(pids.iter().any(|p| msg.contains(p)), "{msg} {pids:?}");
    // Our tasks' reports raised no KernelHungTasks (other tests' reports may; and while
    // another test's root-owned FUSE mount has requests waiting, ours cannot be told apart
    // and rightly stay KernelHungTasks: re-run once, as for every serial test).
    for k in s["conditions"].as_array().unwrap() {
        if k["kind"] == "KernelHungTasks" {
            let m = k["message"].as_str().unwrap_or("");
            assert!(!pids.iter().any(|p| m.contains(p)), "{k}");
        }
    }
}
