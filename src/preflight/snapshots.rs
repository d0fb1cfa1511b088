//! Snapshot/metadata desync (issue 16, point 4): a committed overlayfs snapshot whose
//! directory is gone while containerd's metadata still lists it.
//!
//! After a crash (or a disk that lost writes) the overlayfs snapshotter's
//! `snapshots/<N>/fs` of an image layer can be missing. containerd still lists the snapshot
//! and the image as unpacked, so it never re-unpacks, and every new container of that image
//! fails, for days, with `failed to stat parent: stat .../snapshots/N/fs: no such file or
//! directory` or `failed to create prepare snapshot dir` (containerd 3369, 7834; rke2 4961).
//! The fix is to remove the broken chain and the images that reference it through
//! containerd's API, so the next pull (the kubelet's) or import (k3s's air-gap tarballs at
//! start) unpacks them again. Every other image and snapshot stays; the root is never wiped.
//!
//! Detection, without reading the snapshotter's private database (which alone maps a snapshot
//! to its directory number):
//! - The mounts of every container's active snapshot (a read-only call) name the `fs`
//!   directory of each layer of its image, top first. Most images of a node are in use, so
//!   this covers most chains at no write cost.
//! - Each committed leaf whose chain is not covered so (an unused image) is probed: a view of
//!   it is prepared, which returns the same mounts, and removed again (two small metadata
//!   writes). A missing leaf directory makes the prepare itself fail with `failed to stat
//!   parent`; a missing ancestor shows as a mount directory that does not exist.
//! - Images map to their top snapshot through containerd's own GC labels: image target
//!   (index, `containerd.io/gc.ref.content.m.*`) -> manifest (`...gc.ref.content.config`) ->
//!   config (`containerd.io/gc.ref.snapshot.<snapshotter>`).
//!
//! A broken chain is the missing snapshot and everything above it. It is removed only when no
//! container that stays still uses it (an active snapshot of a record this run does not
//! remove blocks it, and says so), images first, then snapshots from the top down. Only the
//! `overlayfs` snapshotter is checked (k3s's default); others are named and skipped.

use super::containerd::{Deleted, GrpcStore, StoreError};
use containerd_client::services::v1::snapshots::{
    Kind as SnapshotKind, ListSnapshotsRequest, MountsRequest, RemoveSnapshotRequest,
    ViewSnapshotRequest, snapshots_client::SnapshotsClient,
};
use containerd_client::services::v1::{
    DeleteImageRequest, InfoRequest, ListImagesRequest, content_client::ContentClient,
    images_client::ImagesClient,
};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use tonic::Code;

/// The only snapshotter checked: k3s's default, whose directories we can see.
pub(crate) const SNAPSHOTTER: &str = "overlayfs";
/// Default cap: broken images (distinct targets) one run may remove.
pub(crate) const DEFAULT_MAX_BROKEN_IMAGES: u32 = 20;
/// Prefix of the probe views' keys (removed again at once).
const PROBE_KEY: &str = "nodemedic-preflight-probe";

/// One snapshot as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snap {
    pub(crate) key: String,
    pub(crate) parent: String,
    pub(crate) committed: bool,
}

/// What a probe of a committed leaf found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The `fs` directories of the chain, top (the leaf) first.
    Dirs(Vec<PathBuf>),
    /// containerd refused the view because the leaf's own directory is missing.
    LeafMissing(String),
}

/// One image record and what it points to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageRef {
    pub(crate) name: String,
    pub(crate) target: String,
}

/// The containerd calls the check and the repair need.
pub trait SnapshotApi {
    fn list_snapshots(&mut self, namespace: &str) -> Result<Vec<Snap>, StoreError>;
    /// The mounts of an active snapshot, as layer directories top first (the snapshot's own
    /// upper directory excluded).
    fn mounts(&mut self, key: &str) -> Result<Vec<PathBuf>, StoreError>;
    /// Prepares a view of `leaf`, reads its mounts, removes the view.
    fn probe(&mut self, leaf: &str, n: usize) -> Result<Probe, StoreError>;
    fn list_images(&mut self) -> Result<Vec<ImageRef>, StoreError>;
    fn content_labels(&mut self, digest: &str) -> Result<BTreeMap<String, String>, StoreError>;
    fn delete_image(&mut self, name: &str) -> Result<Deleted, StoreError>;
    fn remove_snapshot(&mut self, key: &str) -> Result<Deleted, StoreError>;
}

/// A snapshot whose directory is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Missing {
    pub key: String,
    /// The directory (or containerd's error naming it).
    pub detail: String,
}

/// A broken image: every record name pointing at one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenImage {
    pub(crate) target: String,
    pub names: Vec<String>,
    /// The image's top snapshot (in the broken chain).
    pub top: String,
}

/// What the check found and what the repair will remove.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SnapshotPlan {
    pub missing: Vec<Missing>,
    pub images: Vec<BrokenImage>,
    /// Snapshots to remove, top first.
    pub(crate) snapshots: Vec<String>,
    /// Why some broken chain stays.
    pub blocked: Vec<String>,
    pub(crate) notes: Vec<String>,
}

impl SnapshotPlan {
    pub(crate) fn is_empty(&self) -> bool {
        self.images.is_empty() && self.snapshots.is_empty()
    }
}

/// The outcome of the check and repair, for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SnapshotReport {
    /// Snapshots of the CRI namespace checked.
    pub(crate) snapshots: usize,
    /// Container snapshots whose mounts were read.
    pub(crate) mounts_read: usize,
    /// Unused image chains probed with a view.
    pub(crate) probed: usize,
    pub plan: SnapshotPlan,
    /// Why the removals were withheld, if they were.
    pub withheld: Option<String>,
    pub images_removed: Vec<String>,
    pub snapshots_removed: Vec<String>,
    /// Snapshots of the chain already gone when their turn came: a container's went with its
    /// record, and containerd's GC may take a layer as soon as its images are deleted.
    pub snapshots_gone: Vec<String>,
    pub failed: Vec<String>,
}

/// Which snapshot of `chain` (top first) owns each missing directory of a probe.
fn missing_in(chain: &[&str], probe: &Probe, exists: &dyn Fn(&Path) -> bool) -> Vec<Missing> {
    match probe {
        Probe::LeafMissing(e) => vec![Missing {
            key: chain[0].to_string(),
            detail: e.clone(),
        }],
        Probe::Dirs(dirs) => dirs
            .iter()
            .zip(chain.iter())
            .filter(|(d, _)| !exists(d))
            .map(|(d, k)| Missing {
                key: k.to_string(),
                detail: format!("{} is missing", d.display()),
            })
            .collect(),
    }
}

/// Plans the repair (pure). `snaps` are the CRI namespace's; `missing` the snapshots found
/// without a directory; `images` each image with its top snapshot (`None`: unknown);
/// `staying` the active snapshots of records that stay.
pub(crate) fn plan_repair(
    snaps: &[Snap],
    missing: Vec<Missing>,
    images: &[(ImageRef, Option<String>)],
    staying: &BTreeSet<String>,
) -> SnapshotPlan {
    let mut plan = SnapshotPlan {
        missing,
        ..Default::default()
    };
    if plan.missing.is_empty() {
        return plan;
    }
    let mut children: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for s in snaps {
        if !s.parent.is_empty() {
            children
                .entry(s.parent.as_str())
                .or_default()
                .push(s.key.as_str());
        }
    }
    let known: BTreeSet<&str> = snaps.iter().map(|s| s.key.as_str()).collect();
    let mut removal: Vec<(usize, String)> = Vec::new();
    let mut broken_tops: BTreeSet<String> = BTreeSet::new();
    let roots: BTreeSet<&str> = plan.missing.iter().map(|m| m.key.as_str()).collect();
    for root in roots {
        // The chain above the missing snapshot, with each one's depth from it.
        let mut chain: Vec<(usize, &str)> = vec![(0, root)];
        let mut i = 0;
        while i < chain.len() {
            let (d, k) = chain[i];
            for c in children.get(k).into_iter().flatten() {
                chain.push((d + 1, c));
            }
            i += 1;
        }
        let users: Vec<&str> = chain
            .iter()
            .map(|(_, k)| *k)
            .filter(|k| staying.contains(*k))
            .collect();
        if !users.is_empty() {
            plan.blocked.push(format!(
                "snapshot {root} is broken but container snapshot(s) {users:?} of records that stay build on it: kept until they are gone"
            ));
            continue;
        }
        if !known.contains(root) {
            continue;
        }
        for (d, k) in chain {
            broken_tops.insert(k.to_string());
            if !removal.iter().any(|(_, x)| x == k) {
                removal.push((d, k.to_string()));
            }
        }
    }
    // Top first: a snapshot with children cannot be removed.
    removal.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    plan.snapshots = removal.into_iter().map(|(_, k)| k).collect();
    let mut by_target: BTreeMap<&str, BrokenImage> = BTreeMap::new();
    for (img, top) in images {
        match top {
            Some(t) if broken_tops.contains(t) => {
                by_target
                    .entry(img.target.as_str())
                    .or_insert_with(|| BrokenImage {
                        target: img.target.clone(),
                        names: vec![],
                        top: t.clone(),
                    })
                    .names
                    .push(img.name.clone());
            }
            Some(_) => {}
            None => plan.notes.push(format!(
                "image {} has no snapshot label: cannot tell whether it uses a broken layer",
                img.name
            )),
        }
    }
    plan.images = by_target.into_values().collect();
    plan
}

/// The top snapshot of an image, through containerd's GC labels.
fn top_snapshot(api: &mut dyn SnapshotApi, target: &str) -> Result<Option<String>, StoreError> {
    let snap_label = format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}");
    let mut digest = target.to_string();
    // index -> manifest -> config: three hops at most (a nested index is not followed).
    for _ in 0..3 {
        let labels = api.content_labels(&digest)?;
        if let Some(s) = labels.get(&snap_label) {
            return Ok(Some(s.clone()));
        }
        let next = labels
            .get("containerd.io/gc.ref.content.config")
            .or_else(|| {
                labels
                    .iter()
                    .find(|(k, _)| k.starts_with("containerd.io/gc.ref.content.m."))
                    .map(|(_, v)| v)
            });
        match next {
            Some(n) => digest = n.clone(),
            None => return Ok(None),
        }
    }
    Ok(None)
}

/// The chain of committed snapshots under `key` (its parent first, then down to the base).
fn chain_below<'a>(by_key: &BTreeMap<&'a str, &'a Snap>, key: &'a str) -> Vec<&'a str> {
    let mut chain = Vec::new();
    let mut cur = by_key.get(key).map(|s| s.parent.as_str()).unwrap_or("");
    while !cur.is_empty() && chain.len() < 256 {
        chain.push(cur);
        cur = by_key.get(cur).map(|s| s.parent.as_str()).unwrap_or("");
    }
    chain
}

/// Runs the check and plans the repair. `staying` are the active snapshots of records that
/// stay. Writes nothing but the probe views of unused images.
pub(crate) fn check(
    api: &mut dyn SnapshotApi,
    namespace: &str,
    staying: &BTreeSet<String>,
) -> Result<SnapshotReport, StoreError> {
    let mut report = SnapshotReport::default();
    let ours = api.list_snapshots(namespace)?;
    report.snapshots = ours.len();
    let by_key: BTreeMap<&str, &Snap> = ours.iter().map(|s| (s.key.as_str(), s)).collect();
    let mut verified: BTreeSet<&str> = BTreeSet::new();
    let mut missing: Vec<Missing> = Vec::new();
    let record = |m: Vec<Missing>, missing: &mut Vec<Missing>| {
        for m in m {
            if !missing.iter().any(|x| x.key == m.key) {
                missing.push(m);
            }
        }
    };
    // Containers' snapshots: their mounts name every layer below them.
    for s in ours.iter().filter(|s| !s.committed && !s.parent.is_empty()) {
        let chain = chain_below(&by_key, &s.key);
        if chain.iter().all(|k| verified.contains(k)) {
            continue;
        }
        let dirs = api.mounts(&s.key)?;
        report.mounts_read += 1;
        if dirs.len() != chain.len() {
            // Not the overlay shape we know: leave it to the view probes.
            continue;
        }
        record(
            missing_in(&chain, &Probe::Dirs(dirs), &|p| p.is_dir()),
            &mut missing,
        );
        verified.extend(chain);
    }
    // Committed tops of chains (a container's active snapshot on top does not count).
    let parents: BTreeSet<&str> = ours
        .iter()
        .filter(|s| s.committed)
        .map(|s| s.parent.as_str())
        .collect();
    let leaves: Vec<&Snap> = ours
        .iter()
        .filter(|s| s.committed && !parents.contains(s.key.as_str()))
        .collect();
    for (n, leaf) in leaves.iter().enumerate() {
        let mut chain = vec![leaf.key.as_str()];
        chain.extend(chain_below(&by_key, &leaf.key));
        if chain.iter().all(|k| verified.contains(k)) {
            continue;
        }
        let probe = api.probe(&leaf.key, n)?;
        report.probed += 1;
        record(missing_in(&chain, &probe, &|p| p.is_dir()), &mut missing);
        verified.extend(chain);
    }
    if missing.is_empty() {
        return Ok(report);
    }
    let mut images = Vec::new();
    for img in api.list_images()? {
        let top = top_snapshot(api, &img.target)?;
        images.push((img, top));
    }
    report.plan = plan_repair(&ours, missing, &images, staying);
    Ok(report)
}

/// Removes what `plan` names: images, then snapshots top first. Stops the snapshot part at
/// the first failure (a parent cannot go before its child).
pub(crate) fn repair(api: &mut dyn SnapshotApi, report: &mut SnapshotReport) {
    let plan = report.plan.clone();
    for img in &plan.images {
        for name in &img.names {
            match api.delete_image(name) {
                Ok(_) => {
                    log::info!(
                        "preflight: removed image {name}: its layer snapshot {} has no directory",
                        img.top
                    );
                    report.images_removed.push(name.clone());
                }
                Err(e) => report.failed.push(format!("image {name}: {e}")),
            }
        }
    }
    for key in &plan.snapshots {
        match api.remove_snapshot(key) {
            Ok(Deleted::Removed) => report.snapshots_removed.push(key.clone()),
            Ok(Deleted::AlreadyGone) => report.snapshots_gone.push(key.clone()),
            Err(e) => {
                report.failed.push(format!("snapshot {key}: {e}"));
                break;
            }
        }
    }
}

/// The layer directories in overlayfs mounts, top first: `lowerdir=` of an overlay mount,
/// or the source of a bind mount when it is a layer (a view of a one-layer chain; an active
/// snapshot without parent binds its own directory, which is no layer).
fn layer_dirs(mounts: Vec<containerd_client::types::Mount>, bind_is_layer: bool) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for m in mounts {
        if m.r#type == "bind" {
            if bind_is_layer {
                dirs.push(PathBuf::from(m.source));
            }
        } else {
            for o in m.options {
                if let Some(l) = o.strip_prefix("lowerdir=") {
                    dirs.extend(l.split(':').map(PathBuf::from));
                }
            }
        }
    }
    dirs
}

impl SnapshotApi for GrpcStore {
    fn list_snapshots(&mut self, namespace: &str) -> Result<Vec<Snap>, StoreError> {
        let mut c = SnapshotsClient::new(self.channel()).max_decoding_message_size(16 << 20);
        let what = format!("listing {SNAPSHOTTER} snapshots of {namespace}");
        let r = self.call_raw(&what, |t| {
            let req = crate::edge::grpc::namespaced(
                ListSnapshotsRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    filters: vec![],
                },
                namespace,
                t,
            );
            async move {
                let mut st = c.list(req).await?.into_inner();
                let mut v = Vec::new();
                while let Some(m) = st.message().await? {
                    v.extend(m.info);
                }
                Ok(v)
            }
        })?;
        match r {
            Ok(v) => Ok(v
                .into_iter()
                .map(|i| Snap {
                    committed: i.kind == SnapshotKind::Committed as i32,
                    key: i.name,
                    parent: i.parent,
                })
                .collect()),
            // No such snapshotter here (another is configured): nothing of ours to check.
            Err(s) if matches!(s.code(), Code::NotFound | Code::InvalidArgument) => Ok(vec![]),
            Err(s) => Err(self.status_error(&what, s)),
        }
    }

    fn mounts(&mut self, key: &str) -> Result<Vec<PathBuf>, StoreError> {
        let mut c = SnapshotsClient::new(self.channel());
        let what = format!("reading the mounts of snapshot {key}");
        match self.call_raw(&what, |t| {
            let req = self.request(
                MountsRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: key.to_string(),
                },
                t,
            );
            async move { c.mounts(req).await }
        })? {
            Ok(r) => Ok(layer_dirs(r.into_inner().mounts, false)),
            Err(s) if s.code() == Code::NotFound => Ok(vec![]),
            Err(s) => Err(self.status_error(&what, s)),
        }
    }

    fn probe(&mut self, leaf: &str, n: usize) -> Result<Probe, StoreError> {
        let key = format!("{PROBE_KEY}-{}-{n}", std::process::id());
        let what = format!("probing snapshot {leaf}");
        let mut c = SnapshotsClient::new(self.channel());
        let mut c2 = c.clone();
        let r = self.call_raw(&what, |t| {
            let req = self.request(
                ViewSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: key.clone(),
                    parent: leaf.to_string(),
                    labels: Default::default(),
                },
                t,
            );
            async move { c.view(req).await }
        })?;
        let mounts = match r {
            Ok(m) => m.into_inner().mounts,
            Err(s)
                if s.message().contains("failed to stat parent")
                    || s.message().contains("no such file or directory") =>
            {
                return Ok(Probe::LeafMissing(s.message().to_string()));
            }
            Err(s) => return Err(self.status_error(&what, s)),
        };
        let _ = self.call_raw("removing a probe view", |t| {
            let req = self.request(
                RemoveSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: key.clone(),
                },
                t,
            );
            async move { c2.remove(req).await }
        });
        Ok(Probe::Dirs(layer_dirs(mounts, true)))
    }

    fn list_images(&mut self) -> Result<Vec<ImageRef>, StoreError> {
        let mut c = ImagesClient::new(self.channel()).max_decoding_message_size(16 << 20);
        let what = "listing images";
        match self.call_raw(what, |t| {
            let req = self.request(ListImagesRequest { filters: vec![] }, t);
            async move { c.list(req).await }
        })? {
            Ok(r) => Ok(r
                .into_inner()
                .images
                .into_iter()
                .filter_map(|i| {
                    Some(ImageRef {
                        target: i.target?.digest,
                        name: i.name,
                    })
                })
                .collect()),
            Err(s) => Err(self.status_error(what, s)),
        }
    }

    fn content_labels(&mut self, digest: &str) -> Result<BTreeMap<String, String>, StoreError> {
        let mut c = ContentClient::new(self.channel());
        let what = format!("reading content {digest}");
        match self.call_raw(&what, |t| {
            let req = self.request(
                InfoRequest {
                    digest: digest.to_string(),
                },
                t,
            );
            async move { c.info(req).await }
        })? {
            Ok(r) => Ok(r
                .into_inner()
                .info
                .map(|i| i.labels.into_iter().collect())
                .unwrap_or_default()),
            Err(s) if s.code() == Code::NotFound => Ok(BTreeMap::new()),
            Err(s) => Err(self.status_error(&what, s)),
        }
    }

    fn delete_image(&mut self, name: &str) -> Result<Deleted, StoreError> {
        let mut c = ImagesClient::new(self.channel());
        let what = format!("deleting image {name}");
        match self.call_raw(&what, |t| {
            let req = self.request(
                DeleteImageRequest {
                    name: name.to_string(),
                    sync: false,
                    target: None,
                },
                t,
            );
            async move { c.delete(req).await }
        })? {
            Ok(_) => Ok(Deleted::Removed),
            Err(s) if s.code() == Code::NotFound => Ok(Deleted::AlreadyGone),
            Err(s) => Err(self.status_error(&what, s)),
        }
    }

    fn remove_snapshot(&mut self, key: &str) -> Result<Deleted, StoreError> {
        let mut c = SnapshotsClient::new(self.channel());
        let what = format!("removing snapshot {SNAPSHOTTER}/{key}");
        match self.call_raw(&what, |t| {
            let req = self.request(
                RemoveSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: key.to_string(),
                },
                t,
            );
            async move { c.remove(req).await }
        })? {
            Ok(_) => Ok(Deleted::Removed),
            Err(s) if s.code() == Code::NotFound => Ok(Deleted::AlreadyGone),
            Err(s) => Err(self.status_error(&what, s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(key: &str, parent: &str, committed: bool) -> Snap {
        Snap {
            key: key.into(),
            parent: parent.into(),
            committed,
        }
    }

    fn img(name: &str, target: &str) -> ImageRef {
        ImageRef {
            name: name.into(),
            target: target.into(),
        }
    }

    /// Two images: `app` (layers l1 <- l2) and `pause` (p1); a container on app, one on pause.
    fn node() -> Vec<Snap> {
        vec![
            snap("l1", "", true),
            snap("l2", "l1", true),
            snap("p1", "", true),
            snap("c-app", "l2", false),
            snap("c-pause", "p1", false),
        ]
    }

    fn images() -> Vec<(ImageRef, Option<String>)> {
        vec![
            (img("docker.io/app:1", "sha256:m-app"), Some("l2".into())),
            (img("sha256:cfg-app", "sha256:m-app"), Some("l2".into())),
            (
                img("docker.io/pause:3", "sha256:m-pause"),
                Some("p1".into()),
            ),
        ]
    }

    #[test]
    fn a_missing_ancestor_takes_its_chain_and_images_and_nothing_else() {
        let missing = vec![Missing {
            key: "l1".into(),
            detail: "x".into(),
        }];
        let p = plan_repair(&node(), missing, &images(), &BTreeSet::new());
        assert_eq!(p.snapshots, vec!["c-app", "l2", "l1"], "top first");
        assert_eq!(p.images.len(), 1);
        assert_eq!(p.images[0].names, vec!["docker.io/app:1", "sha256:cfg-app"]);
        assert!(p.blocked.is_empty());
        assert!(!p.snapshots.contains(&"p1".to_string()));
    }

    #[test]
    fn a_container_that_stays_on_the_chain_blocks_its_removal() {
        let missing = vec![Missing {
            key: "l2".into(),
            detail: "x".into(),
        }];
        let staying = BTreeSet::from(["c-app".to_string()]);
        let p = plan_repair(&node(), missing, &images(), &staying);
        assert!(p.is_empty(), "{p:?}");
        assert!(p.blocked[0].contains("c-app"), "{:?}", p.blocked);
    }

    #[test]
    fn probe_dirs_map_to_the_chain_top_first() {
        let chain = ["l2", "l1"];
        let probe = Probe::Dirs(vec!["/s/2/fs".into(), "/s/1/fs".into()]);
        let m = missing_in(&chain, &probe, &|p| p != Path::new("/s/1/fs"));
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].key, "l1");
        let m = missing_in(
            &chain,
            &Probe::LeafMissing("failed to stat parent: stat /s/2/fs: no such file".into()),
            &|_| true,
        );
        assert_eq!(m[0].key, "l2");
        assert!(m[0].detail.contains("failed to stat parent"));
    }

    /// A recording fake of the API.
    #[derive(Default)]
    struct Fake {
        snaps: Vec<Snap>,
        mounts: BTreeMap<String, Vec<PathBuf>>,
        probes: BTreeMap<String, Probe>,
        labels: BTreeMap<String, BTreeMap<String, String>>,
        images: Vec<ImageRef>,
        calls: Vec<String>,
    }

    impl SnapshotApi for Fake {
        fn list_snapshots(&mut self, _ns: &str) -> Result<Vec<Snap>, StoreError> {
            Ok(self.snaps.clone())
        }
        fn mounts(&mut self, key: &str) -> Result<Vec<PathBuf>, StoreError> {
            self.calls.push(format!("mounts {key}"));
            Ok(self.mounts.get(key).cloned().unwrap_or_default())
        }
        fn probe(&mut self, leaf: &str, _n: usize) -> Result<Probe, StoreError> {
            self.calls.push(format!("probe {leaf}"));
            Ok(self.probes[leaf].clone())
        }
        fn list_images(&mut self) -> Result<Vec<ImageRef>, StoreError> {
            Ok(self.images.clone())
        }
        fn content_labels(&mut self, d: &str) -> Result<BTreeMap<String, String>, StoreError> {
            Ok(self.labels.get(d).cloned().unwrap_or_default())
        }
        fn delete_image(&mut self, name: &str) -> Result<Deleted, StoreError> {
            self.calls.push(format!("delete image {name}"));
            Ok(Deleted::Removed)
        }
        fn remove_snapshot(&mut self, key: &str) -> Result<Deleted, StoreError> {
            self.calls.push(format!("remove {key}"));
            Ok(Deleted::Removed)
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn used_chains_are_read_from_mounts_unused_ones_probed_and_a_missing_leaf_repaired() {
        let d = tempfile::tempdir().unwrap();
        let dir = |n: u32| d.path().join(format!("{n}/fs"));
        for n in [1, 2] {
            std::fs::create_dir_all(dir(n)).unwrap();
        }
        // p1 (pause, in use by container c) has directory 1; l1 (app, unused) had 3.
        let mut api = Fake {
            snaps: vec![
                snap("l1", "", true),
                snap("p1", "", true),
                snap("c", "p1", false),
            ],
            ..Default::default()
        };
        api.mounts.insert("c".into(), vec![dir(1)]);
        api.probes.insert("l1".into(), Probe::Dirs(vec![dir(2)]));
        let r = check(&mut api, "k8s.io", &BTreeSet::new()).unwrap();
        assert_eq!((r.snapshots, r.mounts_read, r.probed), (3, 1, 1));
        assert!(r.plan.missing.is_empty());
        assert_eq!(
            api.calls,
            vec!["mounts c", "probe l1"],
            "p1 is not probed again"
        );

        api.calls.clear();
        api.probes.insert(
            "l1".into(),
            Probe::LeafMissing(
                "failed to stat parent: stat /x/snapshots/3/fs: no such file or directory".into(),
            ),
        );
        api.images = vec![img("app:1", "sha256:m1"), img("pause:3", "sha256:m2")];
        api.labels.insert(
            "sha256:m1".into(),
            labels(&[("containerd.io/gc.ref.content.config", "sha256:c1")]),
        );
        api.labels.insert(
            "sha256:c1".into(),
            labels(&[("containerd.io/gc.ref.snapshot.overlayfs", "l1")]),
        );
        api.labels.insert(
            "sha256:m2".into(),
            labels(&[("containerd.io/gc.ref.content.config", "sha256:c2")]),
        );
        api.labels.insert(
            "sha256:c2".into(),
            labels(&[("containerd.io/gc.ref.snapshot.overlayfs", "p1")]),
        );
        let mut r = check(&mut api, "k8s.io", &BTreeSet::from(["c".to_string()])).unwrap();
        assert_eq!(r.plan.missing[0].key, "l1");
        assert_eq!(r.plan.snapshots, vec!["l1"]);
        assert_eq!(r.plan.images[0].names, vec!["app:1"]);
        api.calls.clear();
        repair(&mut api, &mut r);
        assert_eq!(api.calls, vec!["delete image app:1", "remove l1"]);
        assert_eq!(r.images_removed, vec!["app:1"]);

        // A missing layer under a used chain shows in the container's mounts.
        std::fs::remove_dir_all(d.path().join("1")).unwrap();
        api.calls.clear();
        api.probes.insert("l1".into(), Probe::Dirs(vec![dir(2)]));
        let r = check(&mut api, "k8s.io", &BTreeSet::from(["c".to_string()])).unwrap();
        assert_eq!(r.plan.missing[0].key, "p1");
        assert!(r.plan.blocked[0].contains("\"c\""), "{:?}", r.plan.blocked);
    }
}
