//! Which mounts a kernel storage event is about: the device the kernel named (`sda`,
//! `mmcblk0p2`, `loop3`, the mmc host `mmc0`, the USB port `2-1`, the SCSI `host0`, a
//! controller's PCI address) covers every block device whose sysfs path goes through it
//! (a disk's partitions, the disk behind an mmc host or USB port), and every device
//! stacked on those (`holders`: dm, md, LVM). A mount is backed by a device when its
//! major:minor in mountinfo is one of them.
//!
//! Pure: the sysfs facts come in as a [`BlockTable`] the detector reads.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use crate::formats::mountinfo::MountEntry;

/// One block device as sysfs shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BlockDev {
    /// `sda1`, `mmcblk0p2`, `loop0`, `dm-0`.
    pub(crate) name: String,
    /// major:minor.
    pub(crate) dev: (u32, u32),
    /// Where `/sys/class/block/<name>` points: the device path through its parents
    /// (`../../devices/platform/.../mmc_host/mmc0/mmc0:aaaa/block/mmcblk0/mmcblk0p2`).
    pub(crate) sys_path: PathBuf,
    /// Devices stacked on this one (`/sys/class/block/<name>/holders`).
    pub(crate) holders: Vec<String>,
}

/// Every block device of the machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct BlockTable(pub(crate) Vec<BlockDev>);

impl BlockTable {
    /// The major:minor numbers the kernel's device name covers; empty when sysfs knows no
    /// block device under that name.
    pub(crate) fn covered(&self, device: &str) -> BTreeSet<(u32, u32)> {
        let mut names: Vec<&str> = self
            .0
            .iter()
            .filter(|b| {
                b.name == device
                    || b.sys_path
                        .components()
                        .any(|c| matches!(c, Component::Normal(s) if s == device))
            })
            .map(|b| b.name.as_str())
            .collect();
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let mut out = BTreeSet::new();
        while let Some(n) = names.pop() {
            if !seen.insert(n) {
                continue;
            }
            if let Some(b) = self.0.iter().find(|b| b.name == n) {
                out.insert(b.dev);
                names.extend(b.holders.iter().map(String::as_str));
            }
        }
        out
    }
}

/// A filesystem the node needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Watched {
    pub(crate) mount_point: PathBuf,
    pub(crate) dev: (u32, u32),
    /// What mountinfo says the filesystem is (`/dev/mmcblk0p2`).
    pub(crate) source: String,
    pub(crate) fstype: String,
    /// `root`, `k3s data`, `state`, `pod volume`.
    pub(crate) roles: Vec<&'static str>,
    /// mountinfo says `emergency_ro` (ext4 after an error, 6.x kernels: the mount still
    /// says `rw`).
    pub(crate) emergency_ro: bool,
    /// For the write probe: the path the role was found for (`/`, the k3s data dir, the
    /// state dir); None for pod volumes (never probed: not ours to write to).
    pub(crate) probe_target: Option<PathBuf>,
}

/// The mount that holds `path`: the last-mounted entry whose mount point is the longest
/// prefix of it.
fn backing<'a>(entries: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    let mut best: Option<&MountEntry> = None;
    for e in entries {
        if path.starts_with(&e.mount_point)
            && best.is_none_or(|b| {
                e.mount_point.components().count() >= b.mount_point.components().count()
            })
        {
            best = Some(e);
        }
    }
    best
}

/// The filesystems behind `/`, the k3s data dir, the state dir, and every mount under
/// kubelet's dir; one entry per mount point.
pub(crate) fn watched(
    entries: &[MountEntry],
    k3s_data_dir: &Path,
    state_dir: &Path,
    kubelet_dir: &Path,
) -> Vec<Watched> {
    let mut out: Vec<Watched> = Vec::new();
    let mut add = |e: &MountEntry, role: &'static str, target: Option<&Path>| {
        if let Some(w) = out.iter_mut().find(|w| w.mount_point == e.mount_point) {
            if !w.roles.contains(&role) {
                w.roles.push(role);
            }
            if w.probe_target.is_none() {
                w.probe_target = target.map(Path::to_path_buf);
            }
            return;
        }
        out.push(Watched {
            mount_point: e.mount_point.clone(),
            dev: (e.major, e.minor),
            source: e.source.clone(),
            fstype: e.fstype.clone(),
            roles: vec![role],
            emergency_ro: e.super_options.iter().any(|o| o == "emergency_ro"),
            probe_target: target.map(Path::to_path_buf),
        });
    };
    for (role, p) in [
        ("root", Path::new("/")),
        ("state", state_dir),
        ("k3s data", k3s_data_dir),
    ] {
        if let Some(e) = backing(entries, p) {
            add(e, role, Some(p));
        }
    }
    for e in entries {
        if e.mount_point.starts_with(kubelet_dir) && e.mount_point != kubelet_dir {
            add(e, "pod volume", None);
        }
    }
    out
}

/// The watched mounts a device covers.
pub(crate) fn mounts_of<'a>(
    table: &BlockTable,
    watched: &'a [Watched],
    device: &str,
) -> Vec<&'a Watched> {
    let devs = table.covered(device);
    watched.iter().filter(|w| devs.contains(&w.dev)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::mountinfo::parse_mountinfo;

    fn table() -> BlockTable {
        let b = |name: &str, dev, path: &str, holders: &[&str]| BlockDev {
            name: name.into(),
            dev,
            sys_path: path.into(),
            holders: holders.iter().map(|s| s.to_string()).collect(),
        };
        BlockTable(vec![
            b(
                "mmcblk0",
                (179, 0),
                "../../devices/platform/emmc2bus/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0",
                &[],
            ),
            b(
                "mmcblk0p1",
                (179, 1),
                "../../devices/platform/emmc2bus/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0/mmcblk0p1",
                &[],
            ),
            b(
                "mmcblk0p2",
                (179, 2),
                "../../devices/platform/emmc2bus/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0/mmcblk0p2",
                &[],
            ),
            b(
                "sda",
                (8, 0),
                "../../devices/platform/scb/fd500000.pcie/pci0000:00/0000:00:00.0/0000:01:00.0/usb2/2-1/2-1:1.0/host0/target0:0:0/0:0:0:0/block/sda",
                &[],
            ),
            b(
                "sda2",
                (8, 2),
                "../../devices/platform/scb/fd500000.pcie/pci0000:00/0000:00:00.0/0000:01:00.0/usb2/2-1/2-1:1.0/host0/target0:0:0/0:0:0:0/block/sda/sda2",
                &["dm-0"],
            ),
            b("dm-0", (254, 0), "../../devices/virtual/block/dm-0", &[]),
            b("loop3", (7, 3), "../../devices/virtual/block/loop3", &[]),
        ])
    }

    const MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime - ext4 /dev/mapper/vg-root rw
23 22 8:1 / /boot/firmware rw - vfat /dev/sda1 rw
24 22 7:3 / /var/lib/rancher/k3s rw - ext4 /dev/loop3 rw,emergency_ro
25 22 0:55 / /var/lib/kubelet/pods/x/volumes/kubernetes.io~projected/kube-api-access rw - tmpfs tmpfs rw
26 22 179:2 / /var/lib/kubelet/pods/y/volumes/kubernetes.io~local-volume/data rw - ext4 /dev/mmcblk0p2 rw
";

    #[test]
    fn a_device_covers_its_partitions_the_disk_behind_its_host_or_port_and_what_is_stacked_on_them()
    {
        let mi = parse_mountinfo(MOUNTINFO.as_bytes());
        let w = watched(
            &mi.entries,
            Path::new("/var/lib/rancher/k3s"),
            Path::new("/var/lib/nodemedic"),
            Path::new("/var/lib/kubelet"),
        );
        let points: Vec<_> = w.iter().map(|w| w.mount_point.to_str().unwrap()).collect();
        assert_eq!(
            points,
            [
                "/",
                "/var/lib/rancher/k3s",
                "/var/lib/kubelet/pods/x/volumes/kubernetes.io~projected/kube-api-access",
                "/var/lib/kubelet/pods/y/volumes/kubernetes.io~local-volume/data"
            ]
        );
        assert_eq!(w[0].roles, ["root", "state"]);
        assert!(w[1].emergency_ro);
        assert_eq!(w[3].probe_target, None);
        let t = table();
        let on = |d: &str| -> Vec<String> {
            mounts_of(&t, &w, d)
                .iter()
                .map(|w| w.mount_point.display().to_string())
                .collect()
        };
        // The root is on LVM on sda2 behind USB port 2-1.
        assert_eq!(on("sda"), ["/"]);
        assert_eq!(on("2-1"), ["/"]);
        assert_eq!(on("host0"), ["/"]);
        assert_eq!(on("0000:01:00.0"), ["/"]);
        assert_eq!(on("dm-0"), ["/"]);
        assert_eq!(on("loop3"), ["/var/lib/rancher/k3s"]);
        assert_eq!(
            on("mmc0"),
            ["/var/lib/kubelet/pods/y/volumes/kubernetes.io~local-volume/data"]
        );
        // Nothing watched on it (the boot partition), or nothing sysfs knows.
        assert!(on("sda1").is_empty());
        assert!(on("mmc1").is_empty());
        assert!(on("nvme0n1").is_empty());
    }

    #[test]
    fn an_empty_sd_slot_backs_nothing() {
        let mi = parse_mountinfo(b"22 1 8:2 / / rw - ext4 /dev/sda2 rw\n");
        let w = watched(
            &mi.entries,
            Path::new("/var/lib/rancher/k3s"),
            Path::new("/var/lib/nodemedic"),
            Path::new("/var/lib/kubelet"),
        );
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].roles, ["root", "state", "k3s data"]);
        let t = BlockTable(vec![BlockDev {
            name: "sda2".into(),
            dev: (8, 2),
            sys_path: "../../devices/x/block/sda/sda2".into(),
            holders: vec![],
        }]);
        assert!(mounts_of(&t, &w, "mmc0").is_empty());
        assert_eq!(mounts_of(&t, &w, "sda").len(), 1);
    }
}
