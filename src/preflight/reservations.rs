//! Which host-local IP reservations preflight may release (issue 16, point 5).
//!
//! `/var/lib/cni/networks/<net>/<ip>` files are shared by every CNI user of the host:
//! podman's and nerdctl's containers (whose ids are 64 hex digits too), containerd
//! namespaces other than CRI's, networks that are not k3s's. A reservation is released only
//! when all of these hold:
//! 1. its network is one k3s's CNI config names: `preflight.cni_networks` (flannel's `cbr0`
//!    by default) and the `name` of every config in `preflight.cni_conf_dir`;
//! 2. its owner is the id of a sandbox of containerd's CRI namespace on this root (a record
//!    or, on 2.x, a sandbox store entry seen by this run's inventory);
//! 3. that sandbox is provably dead;
//! 4. and, unless this plan removes the sandbox or the node rebooted, nothing of its network
//!    is left: after a mere k3s restart a dead sandbox whose network namespace file or host
//!    veth still exists keeps its IP, for the kubelet's StopPodSandbox to tear down with the
//!    rest (releasing it early could hand the IP to a new pod while the old veth and routes
//!    still use it).
//!
//! One more case goes, for its own reason (`OrphanReservationAfterReboot`): the leak of k3s
//! issue 4682 ("no IP addresses available in range set"), a CNI DEL that failed before the
//! kubelet removed the sandbox, so the record is gone and the reservation stays. Its owner is
//! known nowhere, so rules 2 and 3 cannot hold; it is released only when it is provably stale:
//! 5. preflight runs after a reboot ([`Mode::AfterReboot`]), on one of k3s's networks (rule 1);
//! 6. the owner is a container id (64 hex digits) known in *no* namespace of this containerd
//!    root, as a record or a sandbox store entry (nerdctl's `default`, buildkit's, ...: all
//!    listed, and a listing that fails keeps everything);
//! 7. the file was last written before this boot began (its mtime is before now - uptime, by
//!    more than [`BOOT_MARGIN_SECS`]): host-local writes it once, at ADD, so no process of
//!    this boot asked for it;
//! 8. and no network namespace or host veth of it is left (from its cached CNI result).
//!
//! Everything else is kept and said so in the plan's `left_alone`: a reservation without a
//! readable owner, one whose owner is unknown after a mere k3s restart or was written in this
//! boot, and every reservation of other networks, runtimes and namespaces (an operator
//! removes those by hand, `nodemedic` names them).

use super::cni::{CniInventory, Reservation};
use super::plan::{Action, Item, Mode, Plan, Reason};
use super::sandbox_meta::Inventory;
use super::sandbox_store::StoreView;
use crate::formats::name_reservation::is_cri_id;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// flannel's network in k3s's CNI config (`10-flannel.conflist`, `"name": "cbr0"`).
pub(crate) const DEFAULT_NETWORK: &str = "cbr0";
/// Where k3s writes its CNI config.
pub(crate) const K3S_CNI_CONF_DIR: &str = "/var/lib/rancher/k3s/agent/etc/cni/net.d";
/// Largest CNI config file read for its network name.
const MAX_CONF_BYTES: u64 = 1 << 20;
/// Rule 7's margin: the boot time is computed as now - uptime, so a clock step since boot
/// moves it. chrony and systemd-timesyncd correct a synced clock by well under a second; a
/// minute also covers the seconds between a reservation written just before a power cut and
/// the next boot. A board whose clock is still behind makes the boot look earlier, which only
/// keeps more.
pub(crate) const BOOT_MARGIN_SECS: u64 = 60;

/// What rule 6 and 7 need beyond the inventory of the CRI namespace.
pub(crate) struct EarlierBoot<'a> {
    /// Unix seconds when this boot began (now - uptime); `None`: unknown, nothing is released
    /// under rules 5 to 8.
    pub(crate) boot_unix: Option<u64>,
    /// Every container record and sandbox store id in every namespace of this containerd
    /// root, with its namespace. Asked once, and only when a reservation got this far.
    pub(crate) ids_in_root: &'a mut dyn FnMut() -> Result<BTreeMap<String, String>, String>,
}

/// The networks whose reservations may be released: `configured` plus the `name` of every
/// `*.conflist`, `*.conf` and `*.json` in `conf_dir` (a missing dir adds none). Returns the
/// names and notes on files that could not be read.
pub(crate) fn managed_networks(
    configured: &[String],
    conf_dir: &Path,
) -> (BTreeSet<String>, Vec<String>) {
    let mut names: BTreeSet<String> = configured.iter().cloned().collect();
    let mut notes = Vec::new();
    let Ok(rd) = std::fs::read_dir(conf_dir) else {
        return (names, notes);
    };
    let mut files: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    files.sort();
    for f in files {
        let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !matches!(ext, "conflist" | "conf" | "json") {
            continue;
        }
        let read = std::fs::metadata(&f)
            .map_err(|e| e.to_string())
            .and_then(|m| {
                if m.len() > MAX_CONF_BYTES {
                    Err(format!("{} bytes", m.len()))
                } else {
                    std::fs::read(&f).map_err(|e| e.to_string())
                }
            })
            .and_then(|b| {
                serde_json::from_slice::<serde_json::Value>(&b).map_err(|e| e.to_string())
            });
        match read {
            Ok(v) => match v.get("name").and_then(|n| n.as_str()) {
                Some(n) if !n.is_empty() => {
                    names.insert(n.to_string());
                }
                _ => notes.push(format!("{} names no network", f.display())),
            },
            Err(e) => notes.push(format!("{} could not be read: {e}", f.display())),
        }
    }
    (names, notes)
}

/// What is left of a dead sandbox's network on the host, for rule 4: `Some(what)` when its
/// network namespace file or a host-side interface of its cached CNI result still exists.
pub(crate) trait NetworkTraces {
    fn traces(&self, sandbox: &str, netns: &str) -> Option<String>;
}

/// The real probe: the netns path from the sandbox's metadata, and the host-side interfaces
/// (no `sandbox` field, not a bridge) of its result cache files, looked up under `sys_net`
/// (`/sys/class/net`, the host's since preflight runs in the host network namespace).
pub(crate) struct HostTraces<'a> {
    pub(crate) results_dir: &'a Path,
    pub(crate) sys_net: &'a Path,
}

impl NetworkTraces for HostTraces<'_> {
    fn traces(&self, sandbox: &str, netns: &str) -> Option<String> {
        if !netns.is_empty() && Path::new(netns).exists() {
            return Some(format!("its network namespace {netns} still exists"));
        }
        let rd = std::fs::read_dir(self.results_dir).ok()?;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.contains(sandbox) {
                continue;
            }
            let Ok(b) = std::fs::read(e.path()) else {
                continue;
            };
            // A sandbox whose metadata is gone (rule 8) has only its cached result to say
            // where its network namespace was.
            for ns in netns_paths(&b) {
                if Path::new(&ns).exists() {
                    return Some(format!("its network namespace {ns} still exists"));
                }
            }
            for iface in host_interfaces(&b) {
                let dev = self.sys_net.join(&iface);
                if dev.exists() && !dev.join("bridge").exists() {
                    return Some(format!("its host interface {iface} still exists"));
                }
            }
        }
        None
    }
}

/// Network namespace paths in a cached CNI result: the `sandbox` of the pod-side interfaces
/// (what the bridge plugin reports), and a top-level `netns` where the cache carries one.
pub(crate) fn netns_paths(bytes: &[u8]) -> Vec<String> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return vec![];
    };
    let result = v.get("result").unwrap_or(&v);
    let ifaces = result
        .get("interfaces")
        .and_then(|i| i.as_array())
        .into_iter()
        .flatten()
        .filter_map(|i| i.get("sandbox"));
    let mut out: Vec<String> = v
        .get("netns")
        .into_iter()
        .chain(ifaces)
        .filter_map(|p| p.as_str())
        .filter(|p| p.starts_with('/'))
        .map(str::to_string)
        .collect();
    out.dedup();
    out
}

/// Host-side interface names in a cached CNI result (libcni's `cniCacheV1` or a bare result):
/// interfaces without a `sandbox` (netns) field.
pub(crate) fn host_interfaces(bytes: &[u8]) -> Vec<String> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return vec![];
    };
    let result = v.get("result").unwrap_or(&v);
    result
        .get("interfaces")
        .and_then(|i| i.as_array())
        .into_iter()
        .flatten()
        .filter(|i| {
            i.get("sandbox")
                .and_then(|s| s.as_str())
                .is_none_or(str::is_empty)
        })
        .filter_map(|i| i.get("name").and_then(|n| n.as_str()))
        .filter(|n| !n.is_empty() && !n.contains('/') && !n.starts_with('.'))
        .map(str::to_string)
        .collect()
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Plans the release of the reservations the rules allow (pure but for `traces`). `inv` is
/// `None` when containerd's records are unknown: then nothing is released.
pub(crate) fn plan(
    plan: &mut Plan,
    cni: &CniInventory,
    inv: Option<&Inventory>,
    store: &StoreView,
    networks: &BTreeSet<String>,
    traces: &dyn NetworkTraces,
    earlier: &mut EarlierBoot<'_>,
) {
    let Some(inv) = inv else { return };
    // Sandboxes of this namespace on this root, whether alive, dead or removed now.
    let mut netns_of: BTreeMap<&str, &str> = BTreeMap::new();
    for s in &inv.sandboxes {
        let netns = s.meta.as_ref().map(|m| m.netns.as_str()).unwrap_or("");
        netns_of.insert(s.id.as_str(), netns);
    }
    for e in store.entries.iter().flatten() {
        let netns = e.meta.as_ref().map(|m| m.netns.as_str()).unwrap_or("");
        netns_of.entry(e.id.as_str()).or_insert(netns);
    }
    // A sandbox with a container that is not dead may still have its network in use.
    let busy = inv
        .containers
        .iter()
        .filter(|c| !c.liveness.is_dead())
        .filter_map(|c| c.meta.as_ref().ok().map(|m| m.sandbox_id.as_str()));
    let not_dead: BTreeSet<&str> = inv
        .not_dead_sandbox_ids()
        .into_iter()
        .chain(busy)
        .chain(
            store
                .orphan_liveness
                .iter()
                .filter(|(_, l)| !l.is_dead())
                .map(|(id, _)| id.as_str()),
        )
        .collect();
    let removed: BTreeSet<String> = plan
        .items
        .iter()
        .filter_map(|i| match &i.action {
            Action::RemoveSandbox { id, .. } => Some(id.clone()),
            _ => None,
        })
        .collect();
    let mut foreign_nets: BTreeMap<&str, usize> = BTreeMap::new();
    // Rule 6's listing of every namespace, made at most once.
    let mut in_root: Option<Result<BTreeMap<String, String>, String>> = None;
    for r in &cni.reservations {
        if !networks.contains(&r.network) {
            *foreign_nets.entry(r.network.as_str()).or_default() += 1;
            continue;
        }
        let Some(owner) = r.owner.as_deref() else {
            plan.left_alone.push(format!(
                "{} has no readable owner: not provably a CRI sandbox's, kept",
                r.path.display()
            ));
            continue;
        };
        let Some(netns) = netns_of.get(owner) else {
            match orphan_of_an_earlier_boot(r, owner, plan.mode, traces, earlier, &mut in_root) {
                Ok(item) => plan.items.push(item),
                Err(why) => plan.left_alone.push(format!(
                    "{} belongs to {}, which is no sandbox of this containerd namespace on this root (podman, nerdctl, another namespace, or gone): kept, {why}",
                    r.path.display(),
                    short(owner)
                )),
            }
            continue;
        };
        if not_dead.contains(owner) {
            continue;
        }
        if !removed.contains(owner)
            && plan.mode == Mode::AfterRestart
            && let Some(what) = traces.traces(owner, netns)
        {
            plan.left_alone.push(format!(
                "sandbox {} is dead but {what}: its IP {} is left to the kubelet's teardown",
                short(owner),
                r.ip
            ));
            continue;
        }
        plan.items.push(release(r, owner));
    }
    if !foreign_nets.is_empty() {
        let list: Vec<String> = foreign_nets
            .iter()
            .map(|(n, c)| format!("{n} ({c})"))
            .collect();
        plan.left_alone.push(format!(
            "IP reservations on networks k3s's CNI config does not name are never touched: {}; k3s's: {}",
            list.join(", "),
            networks.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
}

/// Rules 5 to 8 for a reservation on k3s's network whose owner the CRI namespace does not
/// know: the release, or why it stays.
fn orphan_of_an_earlier_boot(
    r: &Reservation,
    owner: &str,
    mode: Mode,
    traces: &dyn NetworkTraces,
    earlier: &mut EarlierBoot<'_>,
    in_root: &mut Option<Result<BTreeMap<String, String>, String>>,
) -> Result<Item, String> {
    if mode != Mode::AfterReboot {
        return Err(
            "as only after a reboot is an unknown owner's reservation provably stale".into(),
        );
    }
    if !is_cri_id(owner) {
        return Err("as its owner is no containerd container id".into());
    }
    let Some(boot) = earlier.boot_unix else {
        return Err("as this boot's start time is unknown".into());
    };
    let Some(written) = r.modified_unix else {
        return Err("as its write time is unknown".into());
    };
    if written.saturating_add(BOOT_MARGIN_SECS) >= boot {
        return Err(format!(
            "as it was written after this boot began, or within {BOOT_MARGIN_SECS} s of it"
        ));
    }
    if let Some(what) = traces.traces(owner, "") {
        return Err(format!("as {what}"));
    }
    match in_root.get_or_insert_with(|| (earlier.ids_in_root)()) {
        Err(e) => Err(format!(
            "as the namespaces of this containerd root could not all be listed ({e})"
        )),
        Ok(ids) => match ids.get(owner) {
            Some(ns) => Err(format!("as it is a container of namespace {ns:?}")),
            None => Ok(Item {
                action: Action::ReleaseIp {
                    path: r.path.clone(),
                    network: r.network.clone(),
                    ip: r.ip.to_string(),
                    owner: Some(owner.to_string()),
                },
                reason: Reason::OrphanReservationAfterReboot {
                    owner: owner.to_string(),
                    written_unix: written,
                    boot_unix: boot,
                },
            }),
        },
    }
}

fn release(r: &Reservation, owner: &str) -> Item {
    Item {
        action: Action::ReleaseIp {
            path: r.path.clone(),
            network: r.network.clone(),
            ip: r.ip.to_string(),
            owner: Some(owner.to_string()),
        },
        reason: Reason::StaleReservation {
            sandbox: owner.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::sandbox_meta::{Liveness, Sandbox, SandboxMeta};

    fn id(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }

    fn sandbox(c: char, liveness: Liveness) -> Sandbox {
        Sandbox {
            id: id(c),
            meta: Ok(SandboxMeta {
                id: id(c),
                name: format!("p{c}_default_u{c}_0"),
                pod: None,
                netns: format!("/nonexistent/netns/cni-{c}"),
                ip: String::new(),
                additional_ips: vec![],
            }),
            liveness,
            created_unix_nanos: 1,
            snapshotter: String::new(),
            snapshot_key: String::new(),
        }
    }

    fn resv(net: &str, ip: &str, owner: Option<String>) -> Reservation {
        Reservation {
            path: format!("/var/lib/cni/networks/{net}/{ip}").into(),
            network: net.into(),
            ip: ip.parse().unwrap(),
            owner,
            ifname: Some("eth0".into()),
            modified_unix: None,
        }
    }

    struct Traces(BTreeSet<String>);
    impl NetworkTraces for Traces {
        fn traces(&self, sandbox: &str, _netns: &str) -> Option<String> {
            self.0
                .contains(sandbox)
                .then(|| "its network namespace still exists".to_string())
        }
    }

    /// Rules 5 to 8 without a boot time: nothing released under them, nothing listed.
    fn unknown_boot() -> EarlierBoot<'static> {
        EarlierBoot {
            boot_unix: None,
            ids_in_root: Box::leak(Box::new(|| -> Result<BTreeMap<String, String>, String> {
                panic!("every namespace listed without a candidate")
            })),
        }
    }

    fn empty_plan(mode: Mode) -> Plan {
        Plan {
            mode,
            mode_reason: "r".into(),
            items: vec![],
            left_alone: vec![],
        }
    }

    fn released(p: &Plan) -> Vec<String> {
        p.items
            .iter()
            .filter_map(|i| match &i.action {
                Action::ReleaseIp { ip, .. } => Some(ip.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn only_dead_cri_sandboxes_of_k3s_networks_lose_their_ips() {
        let dead = || Liveness::Dead("no task".into());
        let inv = Inventory {
            sandboxes: vec![
                sandbox('a', dead()),
                sandbox('b', Liveness::Alive("task running, pid 5".into())),
                sandbox('c', dead()),
                sandbox('d', Liveness::Unknown("task state unknown".into())),
            ],
            containers: vec![],
            foreign: vec![id('n')],
        };
        let cni = CniInventory {
            reservations: vec![
                resv("cbr0", "10.42.0.2", Some(id('a'))), // dead sandbox: goes
                resv("cbr0", "10.42.0.3", Some(id('b'))), // alive
                resv("cbr0", "10.42.0.4", Some(id('d'))), // unknown is alive
                resv("podman", "10.88.0.2", Some(id('c'))), // another network, even if dead
                resv("bridge", "10.4.0.2", Some(id('n'))), // nerdctl's (namespace "default")
                resv("cbr0", "10.42.0.5", Some(id('n'))), // a record of another namespace
                resv("cbr0", "10.42.0.6", Some(id('z'))), // nobody we know
                resv("cbr0", "10.42.0.7", None),          // no owner
            ],
            ..Default::default()
        };
        let nets = BTreeSet::from(["cbr0".to_string()]);
        for mode in [Mode::AfterReboot, Mode::AfterRestart] {
            let mut p = empty_plan(mode);
            plan(
                &mut p,
                &cni,
                Some(&inv),
                &StoreView::default(),
                &nets,
                &Traces(BTreeSet::new()),
                &mut unknown_boot(),
            );
            assert_eq!(released(&p), vec!["10.42.0.2"], "{mode:?}");
            let alone = p.left_alone.join("\n");
            assert!(
                alone.contains("podman (1), bridge (1)")
                    || alone.contains("bridge (1), podman (1)"),
                "{alone}"
            );
            assert_eq!(
                alone
                    .matches("no sandbox of this containerd namespace")
                    .count(),
                2,
                "{alone}"
            );
            assert!(alone.contains("10.42.0.7 has no readable owner"), "{alone}");
        }
        let mut p = empty_plan(Mode::AfterReboot);
        plan(
            &mut p,
            &cni,
            None,
            &StoreView::default(),
            &nets,
            &Traces(BTreeSet::new()),
            &mut unknown_boot(),
        );
        assert!(p.items.is_empty(), "unknown inventory releases nothing");
    }

    #[test]
    fn after_a_k3s_restart_a_dead_sandbox_with_network_traces_keeps_its_ip() {
        let inv = Inventory {
            sandboxes: vec![
                sandbox('a', Liveness::Dead("task stopped".into())),
                sandbox('b', Liveness::Dead("task stopped".into())),
            ],
            ..Default::default()
        };
        let cni = CniInventory {
            reservations: vec![
                resv("cbr0", "10.42.0.2", Some(id('a'))),
                resv("cbr0", "10.42.0.3", Some(id('b'))),
            ],
            ..Default::default()
        };
        let nets = BTreeSet::from(["cbr0".to_string()]);
        let traces = Traces(BTreeSet::from([id('a')]));
        let mut p = empty_plan(Mode::AfterRestart);
        plan(
            &mut p,
            &cni,
            Some(&inv),
            &StoreView::default(),
            &nets,
            &traces,
            &mut unknown_boot(),
        );
        assert_eq!(released(&p), vec!["10.42.0.3"]);
        assert!(
            p.left_alone[0].contains("left to the kubelet's teardown"),
            "{:?}",
            p.left_alone
        );
        // A sandbox this plan removes takes its IP along, traces or not.
        let mut p = empty_plan(Mode::AfterRestart);
        p.items.push(Item {
            action: Action::RemoveSandbox {
                id: id('a'),
                name: None,
                ip: None,
                snapshotter: String::new(),
                snapshot_key: String::new(),
            },
            reason: Reason::DuplicateName {
                claimed: "x".into(),
                kept: id('b'),
            },
        });
        plan(
            &mut p,
            &cni,
            Some(&inv),
            &StoreView::default(),
            &nets,
            &traces,
            &mut unknown_boot(),
        );
        assert_eq!(released(&p), vec!["10.42.0.2", "10.42.0.3"]);
        // After a reboot nothing of the old boot's network exists.
        let mut p = empty_plan(Mode::AfterReboot);
        plan(
            &mut p,
            &cni,
            Some(&inv),
            &StoreView::default(),
            &nets,
            &traces,
            &mut unknown_boot(),
        );
        assert_eq!(released(&p).len(), 2);
    }

    #[test]
    fn a_dead_sandbox_whose_container_still_runs_keeps_its_ip() {
        use crate::preflight::sandbox_meta::{Container, ContainerMeta};
        let inv = Inventory {
            sandboxes: vec![sandbox('a', Liveness::Dead("no task".into()))],
            containers: vec![Container {
                id: id('c'),
                meta: Ok(ContainerMeta {
                    id: id('c'),
                    name: "app_pa_default_ua_0".into(),
                    sandbox_id: id('a'),
                }),
                liveness: Liveness::Alive("task running, pid 7".into()),
                created_unix_nanos: 1,
                snapshotter: String::new(),
                snapshot_key: String::new(),
            }],
            ..Default::default()
        };
        let cni = CniInventory {
            reservations: vec![resv("cbr0", "10.42.0.2", Some(id('a')))],
            ..Default::default()
        };
        let mut p = empty_plan(Mode::AfterReboot);
        let nets = BTreeSet::from(["cbr0".to_string()]);
        plan(
            &mut p,
            &cni,
            Some(&inv),
            &StoreView::default(),
            &nets,
            &Traces(BTreeSet::new()),
            &mut unknown_boot(),
        );
        assert!(p.items.is_empty(), "{:?}", p.items);
    }

    #[test]
    fn network_names_come_from_the_setting_and_k3s_cni_configs() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("10-flannel.conflist"),
            r#"{"name":"cbr0","cniVersion":"1.0.0","plugins":[{"type":"flannel"}]}"#,
        )
        .unwrap();
        std::fs::write(
            d.path().join("20-extra.conf"),
            r#"{"name":"extra","type":"bridge"}"#,
        )
        .unwrap();
        std::fs::write(d.path().join("30-bad.conflist"), "{").unwrap();
        std::fs::write(d.path().join("README"), "not a config").unwrap();
        let (names, notes) = managed_networks(&["mine".into()], d.path());
        assert_eq!(
            names,
            BTreeSet::from(["cbr0".into(), "extra".into(), "mine".into()])
        );
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("30-bad.conflist"));
        let (names, _) = managed_networks(&[DEFAULT_NETWORK.into()], &d.path().join("missing"));
        assert_eq!(names, BTreeSet::from(["cbr0".into()]));
    }

    #[test]
    fn host_side_interfaces_are_those_without_a_netns() {
        let cache = br#"{"kind":"cniCacheV1","containerId":"x","result":{"cniVersion":"1.0.0","interfaces":[{"name":"cni0","mac":"aa"},{"name":"veth1a2b3c4d","mac":"bb"},{"name":"eth0","mac":"cc","sandbox":"/var/run/netns/cni-1"}]}}"#;
        assert_eq!(host_interfaces(cache), vec!["cni0", "veth1a2b3c4d"]);
        assert!(host_interfaces(b"{").is_empty());
        // The bridge is skipped by the probe, the veth counts.
        let d = tempfile::tempdir().unwrap();
        let results = d.path().join("results");
        let sys = d.path().join("sys");
        std::fs::create_dir_all(&results).unwrap();
        std::fs::create_dir_all(sys.join("cni0/bridge")).unwrap();
        std::fs::write(results.join(format!("cbr0-{}-eth0", id('a'))), cache).unwrap();
        let t = HostTraces {
            results_dir: &results,
            sys_net: &sys,
        };
        assert_eq!(t.traces(&id('a'), ""), None);
        std::fs::create_dir_all(sys.join("veth1a2b3c4d")).unwrap();
        assert!(t.traces(&id('a'), "").unwrap().contains("veth1a2b3c4d"));
        let ns = d.path().join("netns-file");
        std::fs::write(&ns, "").unwrap();
        assert!(
            t.traces(&id('b'), ns.to_str().unwrap())
                .unwrap()
                .contains("namespace")
        );
    }

    #[test]
    fn a_cached_result_names_the_netns_of_a_sandbox_whose_metadata_is_gone() {
        let d = tempfile::tempdir().unwrap();
        let ns = d.path().join("cni-0000");
        let cache = format!(
            r#"{{"kind":"cniCacheV1","containerId":"x","result":{{"interfaces":[{{"name":"eth0","sandbox":"{}"}}]}}}}"#,
            ns.display()
        );
        assert_eq!(
            netns_paths(cache.as_bytes()),
            vec![ns.display().to_string()]
        );
        assert_eq!(
            netns_paths(br#"{"netns":"/run/netns/a","result":{"interfaces":[{"name":"eth0","sandbox":"/run/netns/a"}]}}"#),
            vec!["/run/netns/a"]
        );
        assert!(
            netns_paths(br#"{"result":{"interfaces":[{"name":"eth0","sandbox":"relative"}]}}"#)
                .is_empty()
        );
        let results = d.path().join("results");
        std::fs::create_dir_all(&results).unwrap();
        std::fs::write(results.join(format!("cbr0-{}-eth0", id('a'))), &cache).unwrap();
        let t = HostTraces {
            results_dir: &results,
            sys_net: &d.path().join("sys"),
        };
        assert_eq!(t.traces(&id('a'), ""), None, "its netns is gone");
        std::fs::write(&ns, "").unwrap();
        assert!(
            t.traces(&id('a'), "")
                .unwrap()
                .contains("network namespace")
        );
    }

    /// The boot used by the orphan tests, and a write time that far before it.
    const BOOT: u64 = 1_700_000_000;

    fn written(r: Reservation, secs_before_boot: i64) -> Reservation {
        Reservation {
            modified_unix: Some((BOOT as i64 - secs_before_boot) as u64),
            ..r
        }
    }

    #[test]
    fn after_a_reboot_an_orphan_reservation_of_an_earlier_boot_goes_and_nothing_else_does() {
        // Owners no record or store entry of the CRI namespace knows.
        let cni = CniInventory {
            reservations: vec![
                written(resv("cbr0", "10.42.0.2", Some(id('a'))), 3600), // the leak: goes
                written(resv("cbr0", "10.42.0.3", Some(id('b'))), 30),   // within the margin
                written(resv("cbr0", "10.42.0.4", Some(id('c'))), -10),  // written in this boot
                written(resv("podman", "10.88.0.2", Some(id('d'))), 3600), // not k3s's network
                written(resv("cbr0", "10.42.0.5", Some(id('e'))), 3600), // nerdctl's "default"
                written(resv("cbr0", "10.42.0.6", Some(id('f'))), 3600), // its netns is left
                written(resv("cbr0", "10.42.0.7", Some("buildkit-x".into())), 3600),
                written(resv("cbr0", "10.42.0.8", None), 3600),
                resv("cbr0", "10.42.0.9", Some(id('9'))), // write time unknown
            ],
            ..Default::default()
        };
        let nets = BTreeSet::from(["cbr0".to_string()]);
        let traces = Traces(BTreeSet::from([id('f')]));
        let inv = Inventory::default();
        let listed = std::cell::Cell::new(0);
        let mut in_root = || {
            listed.set(listed.get() + 1);
            Ok(BTreeMap::from([(id('e'), "default".to_string())]))
        };
        let mut p = empty_plan(Mode::AfterReboot);
        plan(
            &mut p,
            &cni,
            Some(&inv),
            &StoreView::default(),
            &nets,
            &traces,
            &mut EarlierBoot {
                boot_unix: Some(BOOT),
                ids_in_root: &mut in_root,
            },
        );
        assert_eq!(released(&p), vec!["10.42.0.2"], "{:#?}", p.left_alone);
        assert_eq!(
            p.items[0].reason,
            Reason::OrphanReservationAfterReboot {
                owner: id('a'),
                written_unix: BOOT - 3600,
                boot_unix: BOOT
            }
        );
        assert!(
            p.items[0]
                .to_string()
                .contains("written 3600 s before this boot")
        );
        assert_eq!(listed.get(), 1, "every namespace is listed once");
        let alone = p.left_alone.join("\n");
        for (ip, why) in [
            ("10.42.0.3", "within 60 s of it"),
            ("10.42.0.4", "written after this boot began"),
            ("10.42.0.5", "a container of namespace \"default\""),
            ("10.42.0.6", "its network namespace still exists"),
            ("10.42.0.7", "no containerd container id"),
            ("10.42.0.8", "has no readable owner"),
            ("10.42.0.9", "its write time is unknown"),
        ] {
            assert!(
                alone.lines().any(|l| l.contains(ip) && l.contains(why)),
                "{ip}: {why}\n{alone}"
            );
        }
        assert!(alone.contains("never touched: podman (1)"), "{alone}");

        // The same node after a mere k3s restart: an unknown owner proves nothing.
        let mut p = empty_plan(Mode::AfterRestart);
        plan(
            &mut p,
            &cni,
            Some(&inv),
            &StoreView::default(),
            &nets,
            &traces,
            &mut EarlierBoot {
                boot_unix: Some(BOOT),
                ids_in_root: &mut in_root,
            },
        );
        assert!(released(&p).is_empty());
        assert!(
            p.left_alone
                .iter()
                .any(|l| l.contains("10.42.0.2") && l.contains("only after a reboot")),
            "{:?}",
            p.left_alone
        );
        assert_eq!(listed.get(), 1, "not listed when no candidate is left");

        // A namespace that cannot be listed keeps every orphan; so does an unknown boot time.
        let mut failing = || Err("Unavailable: transport error".to_string());
        let mut p = empty_plan(Mode::AfterReboot);
        plan(
            &mut p,
            &cni,
            Some(&inv),
            &StoreView::default(),
            &nets,
            &traces,
            &mut EarlierBoot {
                boot_unix: Some(BOOT),
                ids_in_root: &mut failing,
            },
        );
        assert!(released(&p).is_empty());
        assert!(
            p.left_alone
                .iter()
                .any(|l| l.contains("10.42.0.2") && l.contains("could not all be listed")),
            "{:?}",
            p.left_alone
        );
        let mut p = empty_plan(Mode::AfterReboot);
        plan(
            &mut p,
            &cni,
            Some(&inv),
            &StoreView::default(),
            &nets,
            &traces,
            &mut unknown_boot(),
        );
        assert!(released(&p).is_empty());
    }

    #[test]
    fn orphan_releases_count_against_the_cni_cap() {
        let cni = CniInventory {
            reservations: (2..5)
                .map(|i| {
                    let owner = format!("{i:064x}");
                    written(resv("cbr0", &format!("10.42.0.{i}"), Some(owner)), 3600)
                })
                .collect(),
            ..Default::default()
        };
        let mut p = empty_plan(Mode::AfterReboot);
        plan(
            &mut p,
            &cni,
            Some(&Inventory::default()),
            &StoreView::default(),
            &BTreeSet::from(["cbr0".to_string()]),
            &Traces(BTreeSet::new()),
            &mut EarlierBoot {
                boot_unix: Some(BOOT),
                ids_in_root: &mut || Ok(BTreeMap::new()),
            },
        );
        assert_eq!(released(&p).len(), 3);
        let (decisions, withheld) = crate::preflight::gate::decide(
            &p,
            &crate::preflight::gate::Switch::allowed(500),
            &crate::preflight::gate::Switch::allowed(2),
        );
        assert!(withheld.iter().all(Option::is_some), "{withheld:?}");
        let cni = decisions
            .iter()
            .find(|d| d.kind == crate::preflight::gate::Kind::CniFiles)
            .unwrap();
        assert!(!cni.allowed && cni.reason.contains("preflight.max_cni_files"));
    }
}
