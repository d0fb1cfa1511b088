//! Storage health for real (issue 19): ext4 on a loop device mounted
//! `errors=remount-ro`, corrupted while mounted (debugfs `clri` of a directory inode, drop
//! caches, touch a file in it), gives the real `EXT4-fs error`, `Aborting journal` and
//! `Remounting filesystem read-only` kernel records and mountinfo's `emergency_ro`; ext4's
//! shutdown ioctl and XFS's `xfs_io -x -c shutdown` give their real shutdown records. The
//! daemon, reading the real `/dev/kmsg` with the filesystem as its k3s data dir, must raise
//! `StorageErrors` naming the loop device and `ReadOnlyFilesystem` naming the mount point
//! within 10 s of the first kernel error, and clear them as specified: ReadOnlyFilesystem
//! once a write probe succeeds (fsck and mount again), StorageErrors after its quiet time.
//!
//! Needs root, losetup, mkfs.ext4, debugfs (xfs: mkfs.xfs, xfs_io). Without them each
//! test prints `SKIP:` and passes, unless under CI.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::kernel_kmsg::settled;
use super::support::hangfs::{DiskFs, HangFs};
use super::support::{Daemon, NotifySocket, is_root, poll, require};

/// The bound: the condition appears within 10 s of the first kernel error.
const WITHIN: Duration = Duration::from_secs(10);

fn run(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn have(tool: &str) -> bool {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(tool).exists())
}

fn ready(test: &str, tools: &[&str]) -> bool {
    require(is_root(), &format!("{test}: root (loop devices, mount)"))
        && tools
            .iter()
            .all(|t| require(have(t), &format!("{test}: {t} (scripts/deps.sh)")))
}

/// A filesystem image on a loop device, mounted; unmounted and detached on drop.
struct LoopFs {
    dev: String,
    img: PathBuf,
    mnt: PathBuf,
    opts: String,
}

impl LoopFs {
    fn new(dir: &Path, fstype: &str, opts: &str) -> LoopFs {
        Self::new_at(
            &dir.join(format!("{fstype}.img")),
            &dir.join("mnt"),
            fstype,
            opts,
            320,
        )
    }

    /// `img` of `mib` MiB made into `fstype`, on a new loop device, mounted on `mnt`.
    fn new_at(img: &Path, mnt: &Path, fstype: &str, opts: &str, mib: u64) -> LoopFs {
        let f = std::fs::File::create(img).unwrap();
        f.set_len(mib << 20).unwrap();
        drop(f);
        Self::on_file(img, mnt, fstype, opts)
    }

    /// An existing file (of the right size) on a new loop device, made into `fstype` and
    /// mounted on `mnt`.
    fn on_file(img: &Path, mnt: &Path, fstype: &str, opts: &str) -> LoopFs {
        let dev = run("losetup", &["-f", "--show", img.to_str().unwrap()])
            .trim()
            .to_string();
        let fs = LoopFs {
            dev,
            img: img.to_path_buf(),
            mnt: mnt.to_path_buf(),
            opts: opts.into(),
        };
        match fstype {
            "ext4" => run("mkfs.ext4", &["-q", "-F", "-E", "nodiscard", &fs.dev]),
            _ => run("mkfs.xfs", &["-q", "-f", "-K", &fs.dev]),
        };
        std::fs::create_dir_all(mnt).unwrap();
        fs.mount();
        fs
    }

    fn mount(&self) {
        run(
            "mount",
            &["-o", &self.opts, &self.dev, self.mnt.to_str().unwrap()],
        );
    }

    fn name(&self) -> &str {
        self.dev.trim_start_matches("/dev/")
    }

    fn mountinfo_options(&self) -> String {
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let m = self.mnt.to_str().unwrap();
        mi.lines()
            .rfind(|l| l.split(' ').nth(4) == Some(m))
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
        let _ = std::fs::remove_file(&self.img);
    }
}

/// The daemon's conditions of `kind`: (subject, reason, message).
fn conditions(d: &Daemon, kind: &str) -> Vec<(String, String, String)> {
    let s = d.status();
    s["conditions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|c| c["kind"] == kind)
                .map(|c| {
                    (
                        c["subject"].as_str().unwrap_or_default().to_string(),
                        c["reason"].as_str().unwrap_or_default().to_string(),
                        c["message"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A daemon whose k3s data dir is `mnt`, started (and its kernel reader settled) before
/// the loop device exists: records an earlier test left in the ring about a loop device
/// of the same number are read while that device backs nothing watched.
fn daemon(mnt: &Path) -> Daemon {
    std::fs::create_dir_all(mnt).unwrap();
    let d = Daemon::start(
        &format!(
            "[storage]\nk3s_data_dir = \"{}\"\nprobe_interval = \"2s\"\nprobe_deadline = \"2s\"\nquiet = \"4s\"\n\
             [runtime]\nenabled = false\n",
            mnt.display()
        ),
        &[],
    );
    settled(&d);
    d
}

/// Waits until the daemon sees `fs` mounted and writable.
fn wait_watched(d: &Daemon, fs: &LoopFs) {
    let series = format!(
        "nodemedic_storage_writable{{mount=\"{}\"}} 1",
        fs.mnt.display()
    );
    d.wait_metrics(Duration::from_secs(15), |m| m.contains(&series))
        .unwrap_or_else(|| panic!("{series} never seen:\n{}", d.metrics()));
}

/// Waits (at most [`WITHIN`] from `t0`) for StorageErrors on the loop device and
/// ReadOnlyFilesystem on the mount point; returns their messages.
fn wait_raised(d: &Daemon, fs: &LoopFs, t0: Instant) -> (String, String) {
    let found = poll(WITHIN.saturating_sub(t0.elapsed()), || {
        let se = conditions(d, "StorageErrors")
            .into_iter()
            .find(|c| c.0 == fs.name())?;
        let ro = conditions(d, "ReadOnlyFilesystem")
            .into_iter()
            .find(|c| c.0 == fs.mnt.to_str().unwrap())?;
        Some((se.2, format!("{}: {}", ro.1, ro.2)))
    });
    found.unwrap_or_else(|| {
        panic!(
            "no StorageErrors({}) and ReadOnlyFilesystem({}) within {WITHIN:?}; status:\n{}\nkmsg tail:\n{}",
            fs.name(),
            fs.mnt.display(),
            d.status(),
            run("dmesg", &[]).lines().rev().take(15).collect::<Vec<_>>().join("\n")
        )
    })
}

/// ReadOnlyFilesystem clears once the filesystem is fsck'd and mounted again (a probe
/// succeeds), StorageErrors after its quiet time (4 s here).
fn wait_cleared(d: &Daemon, fs: &LoopFs) {
    // The daemon's write probe or mount prober may have a file or stat open on it at this
    // instant ("target is busy"): try again for a while, as an operator would.
    let _ = poll(Duration::from_secs(10), || {
        let o = Command::new("umount").arg(&fs.mnt).output().ok()?;
        let gone = o.status.success()
            || !std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap_or_default()
                .contains(&format!(" {} ", fs.mnt.display()));
        if !gone {
            std::thread::sleep(Duration::from_millis(200));
        }
        gone.then_some(())
    });
    if fs.opts.contains("errors=") {
        let _ = Command::new("e2fsck").args(["-f", "-y", &fs.dev]).output();
    }
    fs.mount();
    poll(Duration::from_secs(20), || {
        (conditions(d, "StorageErrors")
            .iter()
            .all(|c| c.0 != fs.name())
            && conditions(d, "ReadOnlyFilesystem")
                .iter()
                .all(|c| c.0 != fs.mnt.to_str().unwrap()))
        .then_some(())
    })
    .unwrap_or_else(|| panic!("conditions did not clear:\n{}", d.status()));
}

#[test]
fn serial_ext4_corrupted_while_mounted_raises_storage_errors_and_read_only_within_10s() {
    let test = "serial_ext4_corrupted_while_mounted_raises_storage_errors_and_read_only_within_10s";
    if !ready(test, &["losetup", "mkfs.ext4", "debugfs", "e2fsck"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let d = daemon(&mnt);
    let fs = LoopFs::new(dir.path(), "ext4", "errors=remount-ro");
    let victim = fs.mnt.join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("f"), b"x").unwrap();
    run("sync", &[]);
    wait_watched(&d, &fs);
    let ino = std::fs::metadata(&victim).unwrap().ino();
    run("debugfs", &["-w", "-R", &format!("clri <{ino}>"), &fs.dev]);
    std::fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
    let t0 = Instant::now();
    let _ = std::fs::write(victim.join("g"), b"y");
    let (se, ro) = wait_raised(&d, &fs, t0);
    eprintln!(
        "raised after {:?}: StorageErrors: {se}; ReadOnlyFilesystem: {ro}",
        t0.elapsed()
    );
    assert!(
        se.contains(fs.mnt.to_str().unwrap()),
        "names the mount: {se}"
    );
    let opts = fs.mountinfo_options();
    assert!(
        opts.contains("emergency_ro") || opts.contains(" ro,") || opts.contains(" ro "),
        "mountinfo says read-only: {opts}"
    );
    let kmsg = run("dmesg", &[]);
    for want in ["EXT4-fs error", "Remounting filesystem read-only"] {
        assert!(
            kmsg.lines()
                .any(|l| l.contains(want) && l.contains(fs.name())),
            "the kernel said {want} about {}",
            fs.name()
        );
    }
    let m = d.metrics();
    assert!(
        m.contains(&format!(
            "nodemedic_storage_writable{{mount=\"{}\"}} 0",
            fs.mnt.display()
        )),
        "{m}"
    );
    wait_cleared(&d, &fs);
}

/// Raises after a filesystem shutdown made by `shutdown`, within 10 s, and clears.
fn shutdown_case(test: &str, fstype: &str, opts: &str, tools: &[&str], shutdown: fn(&LoopFs)) {
    if !ready(test, tools) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let d = daemon(&mnt);
    let fs = LoopFs::new(dir.path(), fstype, opts);
    std::fs::write(fs.mnt.join("f"), b"x").unwrap();
    wait_watched(&d, &fs);
    let t0 = Instant::now();
    shutdown(&fs);
    let (se, ro) = wait_raised(&d, &fs, t0);
    eprintln!("{fstype}: raised after {:?}: {se}; {ro}", t0.elapsed());
    wait_cleared(&d, &fs);
}

/// EXT4_IOC_SHUTDOWN = _IOR('X', 125, __u32) with EXT4_GOING_FLAGS_NOLOGFLUSH: the real
/// `shut down requested` record, and every later write fails with EIO.
fn ext4_shutdown(fs: &LoopFs) {
    const EXT4_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587d;
    let f = std::fs::File::open(&fs.mnt).unwrap();
    let flag: u32 = 2;
    // SAFETY: a valid fd and a pointer to a u32, as the ioctl expects.
    let r = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            EXT4_IOC_SHUTDOWN as _,
            &flag,
        )
    };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
}

#[test]
fn serial_ext4_shutdown_ioctl_raises_storage_errors_and_read_only_within_10s() {
    shutdown_case(
        "serial_ext4_shutdown_ioctl_raises_storage_errors_and_read_only_within_10s",
        "ext4",
        "errors=remount-ro",
        &["losetup", "mkfs.ext4", "e2fsck"],
        ext4_shutdown,
    );
}

#[test]
fn serial_xfs_shutdown_raises_storage_errors_and_read_only_within_10s() {
    shutdown_case(
        "serial_xfs_shutdown_raises_storage_errors_and_read_only_within_10s",
        "xfs",
        "defaults",
        &["losetup", "mkfs.xfs", "xfs_io"],
        |fs| {
            run(
                "xfs_io",
                &["-x", "-c", "shutdown", fs.mnt.to_str().unwrap()],
            );
        },
    );
}

/// 20 pod volumes (ext4 on loop devices under kubelet's dir) shut down at once, and the
/// k3s data dir on a FUSE mount nobody serves (its write probe hangs): 20 StorageErrors and
/// a ReadOnlyFilesystem (`ProbeHung`) are raised, while `/metrics` answers fast and the
/// systemd keep-alives keep coming.
#[test]
fn serial_twenty_failing_filesystems_and_a_hung_probe_delay_neither_keepalives_nor_metrics() {
    let test =
        "serial_twenty_failing_filesystems_and_a_hung_probe_delay_neither_keepalives_nor_metrics";
    if !ready(test, &["losetup", "mkfs.ext4"])
        || !require(
            Path::new("/dev/fuse").exists(),
            &format!("{test}: /dev/fuse"),
        )
    {
        return;
    }
    const N: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let k3s = dir.path().join("k3s");
    let kubelet = dir.path().join("kubelet");
    std::fs::create_dir_all(&k3s).unwrap();
    std::fs::create_dir_all(&kubelet).unwrap();
    let sock = NotifySocket::bind();
    let path = sock.path.to_str().unwrap().to_string();
    let d = Daemon::start(
        &format!(
            "[storage]\nk3s_data_dir = \"{}\"\nkubelet_dir = \"{}\"\nprobe_interval = \"2s\"\nprobe_deadline = \"1s\"\n\
             [runtime]\nenabled = false\n[mounts]\nenabled = false\n",
            k3s.display(),
            kubelet.display()
        ),
        &[("NOTIFY_SOCKET", &path), ("WATCHDOG_USEC", "1500000")],
    );
    settled(&d);
    let volumes: Vec<LoopFs> = (0..N)
        .map(|i| {
            LoopFs::new_at(
                &dir.path().join(format!("v{i}.img")),
                &kubelet.join(format!("pods/p{i}/volumes/kubernetes.io~local-volume/v")),
                "ext4",
                "errors=remount-ro",
                32,
            )
        })
        .collect();
    let hung = HangFs::mount(&k3s).unwrap();
    d.wait_metrics(Duration::from_secs(15), |m| {
        m.lines()
            .filter(|l| l.starts_with("nodemedic_storage_writable{") && l.contains("/pods/p"))
            .count()
            == N
    })
    .unwrap_or_else(|| panic!("the {N} pod volumes are never watched:\n{}", d.metrics()));
    let t0 = Instant::now();
    for v in &volumes {
        ext4_shutdown(v);
    }
    let raised = poll(WITHIN, || {
        let se = conditions(&d, "StorageErrors");
        let ro = conditions(&d, "ReadOnlyFilesystem");
        (volumes.iter().all(|v| se.iter().any(|c| c.0 == v.name()))
            && ro
                .iter()
                .any(|c| c.0 == k3s.to_str().unwrap() && c.1 == "ProbeHung"))
        .then_some(())
    });
    assert!(
        raised.is_some(),
        "20 StorageErrors and the hung k3s dir within {WITHIN:?}:\n{}",
        d.status()
    );
    eprintln!("20 StorageErrors and ProbeHung after {:?}", t0.elapsed());

    let _ = sock.collect(Duration::from_millis(10));
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        for p in ["/metrics", "/healthz"] {
            let r = d.get(p);
            assert_eq!(r.status, 200, "{p}: {}", r.body);
            worst = worst.max(r.elapsed);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("slowest /metrics or /healthz answer: {worst:?}");
    assert!(worst < Duration::from_millis(500), "{worst:?}");
    let msgs = sock.collect(Duration::from_secs(2));
    assert!(
        msgs.iter().filter(|m| *m == "WATCHDOG=1").count() >= 2,
        "keep-alives stopped: {msgs:?}"
    );
    hung.release();
    drop(volumes);
}

/// Block-level I/O errors for real: a loop device whose backing file lives on a FUSE
/// filesystem that answers EIO on demand (`support::hangfs::DiskFs`), with ext4 on it as
/// the k3s data dir. The kernel prints `I/O error, dev loopN, sector ...`; StorageErrors
/// names the loop device and the mount, ReadOnlyFilesystem the mount, within 10 s; both
/// clear once the file answers again and the filesystem is checked and mounted again.
#[test]
fn serial_block_io_errors_from_a_loop_device_on_a_failing_fuse_file_raise_within_10s() {
    let test = "serial_block_io_errors_from_a_loop_device_on_a_failing_fuse_file_raise_within_10s";
    if !ready(test, &["losetup", "mkfs.ext4", "e2fsck"])
        || !require(
            Path::new("/dev/fuse").exists(),
            &format!("{test}: /dev/fuse"),
        )
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fuse_dir = dir.path().join("fuse");
    std::fs::create_dir_all(&fuse_dir).unwrap();
    let mnt = dir.path().join("mnt");
    let d = daemon(&mnt);
    let disk = DiskFs::mount(&fuse_dir, 64 << 20).unwrap();
    let fs = LoopFs::on_file(&disk.disk(), &mnt, "ext4", "errors=remount-ro");
    std::fs::write(fs.mnt.join("f"), b"x").unwrap();
    run("sync", &[]);
    wait_watched(&d, &fs);
    disk.fail(true);
    let t0 = Instant::now();
    if let Ok(f) = std::fs::File::create(fs.mnt.join("g")) {
        let _ = std::io::Write::write_all(&mut &f, &[7u8; 65536]);
        let _ = f.sync_all();
    }
    let (se, ro) = wait_raised(&d, &fs, t0);
    eprintln!(
        "raised after {:?}: StorageErrors: {se}; ReadOnlyFilesystem: {ro}",
        t0.elapsed()
    );
    let kmsg = run("dmesg", &[]);
    assert!(
        kmsg.lines()
            .any(|l| l.contains("I/O error, dev") && l.contains(fs.name())),
        "the kernel reported block I/O errors on {}",
        fs.name()
    );
    let m = d.metrics();
    assert!(
        super::kernel_kmsg::metric(&m, "nodemedic_kernel_events_total{kind=\"block_io_error\"}")
            >= 1.0,
        "{m}"
    );
    disk.fail(false);
    wait_cleared(&d, &fs);
    drop(fs);
    drop(disk);
}
