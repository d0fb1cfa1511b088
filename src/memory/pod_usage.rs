//! Memory used by each BestEffort pod, read from the kubelet's QoS cgroups, for the
//! optional "evict the highest-usage BestEffort pod" response to `MemoryPressure`.
//!
//! The kubelet puts every BestEffort pod under one QoS cgroup, named by its cgroup driver:
//!
//! | driver | QoS directory | pod directory |
//! |---|---|---|
//! | cgroupfs (k3s's default) | `kubepods/besteffort` | `pod<uid>` |
//! | systemd | `kubepods.slice/kubepods-besteffort.slice` | `kubepods-besteffort-pod<uid with _ for ->.slice` |
//!
//! under whichever hierarchy carries the memory controller: cgroup2 (`memory.current`) or,
//! on a hybrid layout, the v1 `memory` hierarchy (`memory.usage_in_bytes`). The figure
//! ranked is the *working set*, usage minus inactive file cache, as the kubelet's own
//! eviction manager ranks pods: cache the kernel can drop for free says nothing about who
//! causes the pressure.
//!
//! Parsing is pure; reading goes through [`HostFiles`] (sysfs only, never a network mount).

use std::path::Path;
use std::sync::Arc;

use crate::edge::HostFiles;
use crate::formats::mountinfo::parse_mountinfo;
use crate::model::PodUsage;

/// The pod UID from a pod cgroup directory name, for both cgroup drivers.
pub(crate) fn pod_uid(dir: &str) -> Option<String> {
    let raw = if let Some(rest) = dir.strip_prefix("pod") {
        rest.to_string()
    } else {
        // systemd driver: `kubepods-besteffort-pod<uid>.slice`, dashes in the UID escaped
        // as underscores because `-` separates slice levels.
        let slice = dir.strip_suffix(".slice")?;
        let (_, uid) = slice.rsplit_once("-pod")?;
        uid.replace('_', "-")
    };
    is_uid(&raw).then_some(raw)
}

/// A Kubernetes UID is an RFC 4122 UUID: 8-4-4-4-12 hex digits.
fn is_uid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Which hierarchy a QoS directory is in decides the file names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hierarchy {
    V2,
    V1,
}

impl Hierarchy {
    fn usage_file(self) -> &'static str {
        match self {
            Hierarchy::V2 => "memory.current",
            Hierarchy::V1 => "memory.usage_in_bytes",
        }
    }
    /// The `memory.stat` key for inactive file cache, this cgroup and its children.
    fn inactive_key(self) -> &'static str {
        match self {
            Hierarchy::V2 => "inactive_file",
            Hierarchy::V1 => "total_inactive_file",
        }
    }
}

/// Working set from the usage file's content and `memory.stat`: usage minus inactive file
/// cache, never below zero (the two are read at different instants).
pub(crate) fn working_set(usage: &str, stat: &str, h: Hierarchy) -> Result<u64, String> {
    let usage: u64 = usage
        .trim()
        .parse()
        .map_err(|_| format!("{} is not a number: {:?}", h.usage_file(), usage.trim()))?;
    let inactive = stat
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == h.inactive_key()).then(|| v.trim().parse::<u64>().ok())?
        })
        .unwrap_or(0);
    Ok(usage.saturating_sub(inactive))
}

/// Candidate BestEffort QoS directories (relative to the host root), most likely first,
/// from `/proc/self/mountinfo`: cgroup2 first, then the v1 memory hierarchy.
pub(crate) fn qos_dirs(mountinfo: &str) -> Vec<(String, Hierarchy)> {
    let entries = parse_mountinfo(mountinfo.as_bytes()).entries;
    let mut mounts = Vec::new();
    for e in entries.iter().filter(|e| e.fstype == "cgroup2") {
        mounts.push((e.mount_point.clone(), Hierarchy::V2));
    }
    for e in entries
        .iter()
        .filter(|e| e.fstype == "cgroup" && e.super_options.iter().any(|o| o == "memory"))
    {
        mounts.push((e.mount_point.clone(), Hierarchy::V1));
    }
    let mut out = Vec::new();
    for (mnt, h) in mounts {
        for qos in [
            "kubepods.slice/kubepods-besteffort.slice",
            "kubepods/besteffort",
        ] {
            let p = mnt.join(qos);
            out.push((rel(&p), h));
        }
    }
    out
}

fn rel(p: &Path) -> String {
    p.to_string_lossy().trim_start_matches('/').to_string()
}

/// Why BestEffort pods' memory could not be measured; the text says what was looked for
/// and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PodUsageError {
    /// A file or directory that should be there could not be read.
    #[error("{0}")]
    Unreadable(String),
    /// No BestEffort QoS memory cgroup on this node.
    #[error("{0}")]
    NoQosCgroup(String),
    /// A cgroup file did not parse.
    #[error("{0}")]
    Malformed(String),
}

/// The real reader: host files under the daemon's host root.
pub(crate) struct CgroupPodMemory {
    pub(crate) files: Arc<dyn HostFiles>,
}

impl CgroupPodMemory {
    /// Every BestEffort pod's working set. Err says what was looked for and where.
    pub(crate) fn besteffort_usage(&self) -> Result<Vec<PodUsage>, PodUsageError> {
        let mountinfo = self.files.read_string("proc/self/mountinfo").map_err(|e| {
            PodUsageError::Unreadable(format!("cannot read /proc/self/mountinfo: {e}"))
        })?;
        let candidates = qos_dirs(&mountinfo);
        // The QoS directory that is itself a memory cgroup of its hierarchy: on a hybrid
        // layout the cgroup2 copy exists too but has no memory controller.
        let Some((qos, h)) = candidates
            .iter()
            .find(|(d, h)| self.files.exists(&format!("{d}/{}", h.usage_file())))
        else {
            let tried: Vec<String> = candidates.iter().map(|(d, _)| format!("/{d}")).collect();
            return Err(PodUsageError::NoQosCgroup(format!(
                "no BestEffort QoS memory cgroup found (tried {}): is the kubelet running with \
                 its default cgroups-per-qos?",
                if tried.is_empty() {
                    "nothing: no cgroup2 or v1 memory mount in /proc/self/mountinfo".into()
                } else {
                    tried.join(", ")
                }
            )));
        };
        let dirs = self
            .files
            .list(qos)
            .map_err(|e| PodUsageError::Unreadable(format!("cannot list /{qos}: {e}")))?;
        let mut out = Vec::new();
        for d in dirs {
            let Some(uid) = pod_uid(&d) else { continue };
            let base = format!("{qos}/{d}");
            // A pod removed between the listing and the read is simply gone.
            let Ok(usage) = self
                .files
                .read_string(&format!("{base}/{}", h.usage_file()))
            else {
                continue;
            };
            let stat = self
                .files
                .read_string(&format!("{base}/memory.stat"))
                .unwrap_or_default();
            let working_set = working_set(&usage, &stat, *h)
                .map_err(|e| PodUsageError::Malformed(format!("/{base}: {e}")))?;
            out.push(PodUsage { uid, working_set });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::host_files::FakeFiles;

    const UID: &str = "5f1d2c3b-0a9e-4b7c-8d6e-1f2a3b4c5d6e";

    fn fake(entries: &[(String, &str)]) -> Arc<FakeFiles> {
        let v: Vec<(&str, &str)> = entries.iter().map(|(p, c)| (p.as_str(), *c)).collect();
        Arc::new(FakeFiles::with(&v))
    }

    /// This test VM's layout: v1 hierarchies plus cgroup2 at `unified` (hybrid).
    const HYBRID: &str = "\
30 23 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
35 30 0:31 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
36 30 0:32 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,cpu,cpuacct
";
    /// A current Raspberry Pi OS / Debian 12 node: cgroup2 only.
    const UNIFIED: &str = "29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";

    #[test]
    fn pod_uids_come_from_both_cgroup_drivers_directory_names() {
        assert_eq!(pod_uid(&format!("pod{UID}")).as_deref(), Some(UID));
        let systemd = format!("kubepods-besteffort-pod{}.slice", UID.replace('-', "_"));
        assert_eq!(pod_uid(&systemd).as_deref(), Some(UID));
        for not_a_pod in [
            "cgroup.procs",
            "memory.stat",
            "pod",
            "podnot-a-uid",
            "kubepods-besteffort.slice",
            &format!("pod{UID}x"),
            // a container directory inside a pod
            "cri-containerd-ab12.scope",
        ] {
            assert_eq!(pod_uid(not_a_pod), None, "{not_a_pod}");
        }
    }

    #[test]
    fn working_set_subtracts_inactive_file_cache_per_hierarchy() {
        let v1 = "cache 4096\ninactive_file 999999\ntotal_inactive_file 1048576\n";
        assert_eq!(
            working_set("5242880\n", v1, Hierarchy::V1),
            Ok(4 << 20),
            "v1 uses the hierarchical total_, not the cgroup's own inactive_file"
        );
        let v2 = "anon 4194304\nfile 2097152\ninactive_file 1048576\nactive_file 1048576\n";
        assert_eq!(working_set("6291456", v2, Hierarchy::V2), Ok(5 << 20));
        assert_eq!(
            working_set("100", "inactive_file 4096\n", Hierarchy::V2),
            Ok(0),
            "never negative"
        );
        assert_eq!(working_set("100", "", Hierarchy::V2), Ok(100));
        let err = working_set("max", "", Hierarchy::V2).unwrap_err();
        assert!(err.contains("memory.current"), "{err}");
    }

    #[test]
    fn qos_dirs_try_cgroup2_first_then_the_v1_memory_hierarchy() {
        let dirs = qos_dirs(HYBRID);
        assert_eq!(
            dirs,
            vec![
                (
                    "sys/fs/cgroup/unified/kubepods.slice/kubepods-besteffort.slice".into(),
                    Hierarchy::V2
                ),
                (
                    "sys/fs/cgroup/unified/kubepods/besteffort".into(),
                    Hierarchy::V2
                ),
                (
                    "sys/fs/cgroup/memory/kubepods.slice/kubepods-besteffort.slice".into(),
                    Hierarchy::V1
                ),
                (
                    "sys/fs/cgroup/memory/kubepods/besteffort".into(),
                    Hierarchy::V1
                ),
            ]
        );
        assert!(qos_dirs("").is_empty());
    }

    #[test]
    fn hybrid_layout_reads_the_v1_memory_hierarchy_with_cgroupfs_names() {
        let q = "sys/fs/cgroup/memory/kubepods/besteffort";
        let other = "0b7e4a1c-2d3f-4e5a-9b8c-7d6e5f4a3b2c";
        let files = fake(&[
            ("proc/self/mountinfo".into(), HYBRID),
            // The cgroup2 copy of the QoS directory exists but has no memory controller.
            (
                "sys/fs/cgroup/unified/kubepods/besteffort/cgroup.procs".into(),
                "",
            ),
            (format!("{q}/memory.usage_in_bytes"), "999"),
            (format!("{q}/pod{UID}/memory.usage_in_bytes"), "73400320"),
            (
                format!("{q}/pod{UID}/memory.stat"),
                "total_inactive_file 4194304\n",
            ),
            (format!("{q}/pod{other}/memory.usage_in_bytes"), "8388608"),
            (format!("{q}/pod{other}/memory.stat"), ""),
            (format!("{q}/memory.stat"), ""),
        ]);
        let mut got = CgroupPodMemory { files }.besteffort_usage().unwrap();
        got.sort_by(|a, b| a.uid.cmp(&b.uid));
        assert_eq!(
            got,
            vec![
                PodUsage {
                    uid: other.into(),
                    working_set: 8 << 20
                },
                PodUsage {
                    uid: UID.into(),
                    working_set: 66 << 20
                },
            ]
        );
    }

    #[test]
    fn unified_layout_reads_memory_current_with_systemd_names() {
        let q = "sys/fs/cgroup/kubepods.slice/kubepods-besteffort.slice";
        let pod = format!("kubepods-besteffort-pod{}.slice", UID.replace('-', "_"));
        let files = fake(&[
            ("proc/self/mountinfo".into(), UNIFIED),
            (format!("{q}/memory.current"), "1"),
            (format!("{q}/{pod}/memory.current"), "10485760"),
            (format!("{q}/{pod}/memory.stat"), "inactive_file 2097152\n"),
        ]);
        let got = CgroupPodMemory { files }.besteffort_usage().unwrap();
        assert_eq!(
            got,
            vec![PodUsage {
                uid: UID.into(),
                working_set: 8 << 20
            }]
        );
    }

    #[test]
    fn a_node_without_kubelet_cgroups_says_where_it_looked() {
        let files = fake(&[("proc/self/mountinfo".into(), UNIFIED)]);
        let err = CgroupPodMemory { files }
            .besteffort_usage()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/sys/fs/cgroup/kubepods/besteffort") && err.contains("cgroups-per-qos"),
            "{err}"
        );
        let none = CgroupPodMemory {
            files: fake(&[("proc/self/mountinfo".into(), "")]),
        }
        .besteffort_usage()
        .unwrap_err()
        .to_string();
        assert!(none.contains("no cgroup2 or v1 memory mount"), "{none}");
    }
}
