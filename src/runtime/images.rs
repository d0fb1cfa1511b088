//! Removing images no container uses, over CRI: the image half of the opt-in disk reclaim
//! (`limits::reclaim`). An image is kept when any container (running or exited: the
//! kubelet restarts exited ones from their image) refers to it by id, tag or digest, when
//! the runtime pins it, or when it is the runtime's sandbox ("pause") image. A container
//! whose image cannot be told apart stops the whole run: removing an image in use is not a
//! risk taken to free space.
//!
//! `plan` is pure; `prune` does the calls, listing containers again right before removing
//! so a container created meanwhile keeps its image (the kubelet's own image GC has the
//! same window).

use std::collections::BTreeSet;
use std::time::Instant;

use k8s_cri::v1::{
    ImageSpec, ImageStatusRequest, ListContainersRequest, ListImagesRequest, RemoveImageRequest,
    StatusRequest,
};

use super::cri::{CriError, GrpcCri};

/// At most this many images go per run: a node with more unused ones has a kubelet whose
/// own image GC is off or failing, and a human should look.
pub(crate) const MAX_IMAGES_PER_RUN: usize = 100;

/// One image as CRI lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ImageInfo {
    pub(crate) id: String,
    pub(crate) tags: Vec<String>,
    pub(crate) digests: Vec<String>,
    pub(crate) size: u64,
    pub(crate) pinned: bool,
}

impl ImageInfo {
    fn known_as(&self, reference: &str) -> bool {
        self.id == reference
            || self.tags.iter().any(|t| t == reference)
            || self.digests.iter().any(|d| d == reference)
    }

    fn name(&self) -> String {
        self.tags
            .first()
            .or(self.digests.first())
            .cloned()
            .unwrap_or_else(|| self.id.clone())
    }

    /// Without the runtime's word on its sandbox image: the pause image by name.
    fn looks_like_pause(&self) -> bool {
        self.tags.iter().any(|t| {
            let repo = t.rsplit_once(':').map_or(t.as_str(), |(r, _)| r);
            repo == "pause" || repo.ends_with("/pause") || repo.ends_with("/mirrored-pause")
        })
    }
}

/// The CRI calls the image pruning needs.
pub(crate) trait ImageCri {
    fn list_images(&mut self) -> Result<Vec<ImageInfo>, CriError>;
    /// (container id, the image references it carries: spec image and image ref) of every
    /// container in any state.
    fn container_images(&mut self) -> Result<Vec<(String, Vec<String>)>, CriError>;
    /// The id of the image `reference` names, if the runtime has one.
    fn resolve(&mut self, reference: &str) -> Result<Option<String>, CriError>;
    fn remove_image(&mut self, id: &str) -> Result<(), CriError>;
    /// The runtime's sandbox image, when its status says (containerd: `sandboxImage`).
    fn sandbox_image(&mut self) -> Option<String>;
}

/// What a run would remove, and why the rest stays.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ImagePlan {
    pub(crate) remove: Vec<ImageInfo>,
    pub(crate) in_use: usize,
    pub(crate) pinned: usize,
    /// Unused beyond [`MAX_IMAGES_PER_RUN`]: left for the next run.
    pub(crate) deferred: usize,
}

/// `used`: the ids of every image some container uses (or the sandbox image).
pub(crate) fn plan(
    images: &[ImageInfo],
    used: &BTreeSet<String>,
    sandbox: Option<&str>,
) -> ImagePlan {
    let mut p = ImagePlan {
        remove: Vec::new(),
        in_use: 0,
        pinned: 0,
        deferred: 0,
    };
    for i in images {
        let is_sandbox = match sandbox {
            Some(s) => i.known_as(s),
            None => i.looks_like_pause(),
        };
        if used.contains(&i.id) {
            p.in_use += 1;
        } else if i.pinned || is_sandbox {
            p.pinned += 1;
        } else if p.remove.len() < MAX_IMAGES_PER_RUN {
            p.remove.push(i.clone());
        } else {
            p.deferred += 1;
        }
    }
    p
}

/// The ids of the images the containers use; Err when a container's image is not one the
/// runtime can name (then nothing may be removed).
fn used_ids(cri: &mut dyn ImageCri, images: &[ImageInfo]) -> Result<BTreeSet<String>, String> {
    let mut used = BTreeSet::new();
    for (container, refs) in cri.container_images().map_err(|e| e.to_string())? {
        let mut found = false;
        for r in refs.iter().filter(|r| !r.is_empty()) {
            if let Some(i) = images.iter().find(|i| i.known_as(r)) {
                used.insert(i.id.clone());
                found = true;
            } else if let Some(id) = cri.resolve(r).map_err(|e| e.to_string())? {
                used.insert(id);
                found = true;
            }
        }
        if !found {
            return Err(format!(
                "cannot tell which image container {container} uses ({}): no image removed",
                refs.join(", ")
            ));
        }
    }
    Ok(used)
}

/// Removes the images no container uses, stopping at `deadline`.
pub(crate) fn prune(cri: &mut dyn ImageCri, deadline: Instant) -> Result<String, String> {
    let images = cri.list_images().map_err(|e| e.to_string())?;
    let sandbox = cri.sandbox_image();
    let first = plan(&images, &used_ids(cri, &images)?, sandbox.as_deref());
    if first.remove.is_empty() {
        return Ok(format!(
            "no unused image to remove ({} in use, {} pinned or the sandbox image)",
            first.in_use, first.pinned
        ));
    }
    // Again, right before removing: a container created since keeps its image.
    let p = plan(&images, &used_ids(cri, &images)?, sandbox.as_deref());
    let (mut removed, mut bytes, mut failed) = (Vec::new(), 0u64, Vec::new());
    for i in &p.remove {
        if Instant::now() >= deadline {
            failed.push(format!("deadline reached before {}", i.name()));
            break;
        }
        match cri.remove_image(&i.id) {
            Ok(()) => {
                log::info!("disk reclaim: removed unused image {} ({})", i.name(), i.id);
                bytes += i.size;
                removed.push(i.name());
            }
            Err(e) => failed.push(format!("{}: {e}", i.name())),
        }
    }
    let mut said = format!(
        "removed {} unused image(s), {:.1} MiB: {}; kept {} in use and {} pinned or the sandbox image",
        removed.len(),
        bytes as f64 / f64::from(1 << 20),
        if removed.is_empty() {
            "none".into()
        } else {
            removed.join(", ")
        },
        p.in_use,
        p.pinned
    );
    if p.deferred > 0 {
        said.push_str(&format!("; {} more left for the next run", p.deferred));
    }
    if failed.is_empty() {
        Ok(said)
    } else {
        Err(format!("{said}; not removed: {}", failed.join("; ")))
    }
}

impl ImageCri for GrpcCri {
    fn list_images(&mut self) -> Result<Vec<ImageInfo>, CriError> {
        let mut c = self.images.clone();
        let req = self.req(ListImagesRequest::default());
        let images = self
            .call("ListImages", c.list_images(req))?
            .map(|r| r.images)
            .unwrap_or_default();
        Ok(images
            .into_iter()
            .map(|i| ImageInfo {
                id: i.id,
                tags: i.repo_tags,
                digests: i.repo_digests,
                size: i.size,
                pinned: i.pinned,
            })
            .collect())
    }

    fn container_images(&mut self) -> Result<Vec<(String, Vec<String>)>, CriError> {
        let mut c = self.client.clone();
        let req = self.req(ListContainersRequest::default());
        let list = self
            .call("ListContainers", c.list_containers(req))?
            .map(|r| r.containers)
            .unwrap_or_default();
        Ok(list
            .into_iter()
            .map(|k| {
                let spec = k.image.map(|s| s.image).unwrap_or_default();
                (k.id, vec![spec, k.image_ref])
            })
            .collect())
    }

    fn resolve(&mut self, reference: &str) -> Result<Option<String>, CriError> {
        let mut c = self.images.clone();
        let req = self.req(ImageStatusRequest {
            image: Some(ImageSpec {
                image: reference.into(),
                ..Default::default()
            }),
            verbose: false,
        });
        Ok(self
            .call(&format!("ImageStatus {reference}"), c.image_status(req))?
            .and_then(|r| r.image)
            .map(|i| i.id))
    }

    fn remove_image(&mut self, id: &str) -> Result<(), CriError> {
        let mut c = self.images.clone();
        let req = self.req(RemoveImageRequest {
            image: Some(ImageSpec {
                image: id.into(),
                ..Default::default()
            }),
        });
        self.call(&format!("RemoveImage {id}"), c.remove_image(req))
            .map(|_| ())
    }

    fn sandbox_image(&mut self) -> Option<String> {
        let mut c = self.client.clone();
        let req = self.req(StatusRequest { verbose: true });
        let info = self.call("Status", c.status(req)).ok()??.info;
        // containerd puts its CRI config, as JSON, under "config".
        let config: serde_json::Value = serde_json::from_str(info.get("config")?).ok()?;
        config
            .get("sandboxImage")
            .or_else(|| config.pointer("/containerd/sandboxImage"))
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(id: &str, tag: &str) -> ImageInfo {
        ImageInfo {
            id: id.into(),
            tags: vec![tag.into()],
            digests: vec![format!("{}@sha256:{id}", tag.split(':').next().unwrap())],
            size: 10 << 20,
            pinned: false,
        }
    }

    #[derive(Default)]
    struct FakeImageCri {
        images: Vec<ImageInfo>,
        containers: Vec<(String, Vec<String>)>,
        later_containers: Option<Vec<(String, Vec<String>)>>,
        sandbox: Option<String>,
        removed: Vec<String>,
        listed: u32,
    }

    impl ImageCri for FakeImageCri {
        fn list_images(&mut self) -> Result<Vec<ImageInfo>, CriError> {
            Ok(self.images.clone())
        }
        fn container_images(&mut self) -> Result<Vec<(String, Vec<String>)>, CriError> {
            self.listed += 1;
            match (&self.later_containers, self.listed) {
                (Some(l), n) if n > 1 => Ok(l.clone()),
                _ => Ok(self.containers.clone()),
            }
        }
        fn resolve(&mut self, reference: &str) -> Result<Option<String>, CriError> {
            Ok(self
                .images
                .iter()
                .find(|i| reference.starts_with(i.tags[0].split(':').next().unwrap()))
                .map(|i| i.id.clone()))
        }
        fn remove_image(&mut self, id: &str) -> Result<(), CriError> {
            self.removed.push(id.into());
            Ok(())
        }
        fn sandbox_image(&mut self) -> Option<String> {
            self.sandbox.clone()
        }
    }

    fn far() -> Instant {
        Instant::now() + std::time::Duration::from_secs(60)
    }

    #[test]
    fn only_images_no_container_uses_go_and_the_pinned_and_pause_images_stay() {
        let mut pinned = img("sha256:c", "docker.io/rancher/klipper-lb:v1");
        pinned.pinned = true;
        let mut f = FakeImageCri {
            images: vec![
                img("sha256:a", "docker.io/library/nginx:1.25"),
                img("sha256:b", "docker.io/library/redis:7"),
                pinned,
                img("sha256:p", "docker.io/rancher/mirrored-pause:3.6"),
            ],
            // One by id, one exited container by tag only.
            containers: vec![("c1".into(), vec!["sha256:a".into(), "".into()])],
            ..Default::default()
        };
        let said = prune(&mut f, far()).unwrap();
        assert_eq!(f.removed, vec!["sha256:b".to_string()], "{said}");
        assert!(
            said.contains("removed 1 unused image(s), 10.0 MiB: docker.io/library/redis:7"),
            "{said}"
        );
        assert!(said.contains("kept 1 in use and 2 pinned"), "{said}");
    }

    #[test]
    fn a_container_whose_image_cannot_be_named_stops_the_run() {
        let mut f = FakeImageCri {
            images: vec![img("sha256:a", "docker.io/library/nginx:1.25")],
            containers: vec![("c9".into(), vec!["quay.io/gone/app:1".into()])],
            ..Default::default()
        };
        let e = prune(&mut f, far()).unwrap_err();
        assert!(
            e.contains("container c9") && e.contains("no image removed"),
            "{e}"
        );
        assert!(f.removed.is_empty());
    }

    #[test]
    fn a_container_created_between_listing_and_removing_keeps_its_image() {
        let mut f = FakeImageCri {
            images: vec![
                img("sha256:a", "docker.io/library/nginx:1.25"),
                img("sha256:b", "docker.io/library/redis:7"),
            ],
            containers: vec![],
            later_containers: Some(vec![(
                "new".into(),
                vec!["docker.io/library/redis:7".into()],
            )]),
            sandbox: Some("registry.k8s.io/pause:3.9".into()),
            ..Default::default()
        };
        prune(&mut f, far()).unwrap();
        assert_eq!(f.removed, vec!["sha256:a".to_string()]);
    }

    #[test]
    fn the_runtimes_sandbox_image_stays_even_under_another_name() {
        let imgs = vec![img("sha256:s", "example.org/infra/sandbox:1")];
        let p = plan(&imgs, &BTreeSet::new(), Some("example.org/infra/sandbox:1"));
        assert!(p.remove.is_empty());
        assert_eq!(p.pinned, 1);
        let p = plan(&imgs, &BTreeSet::new(), None);
        assert_eq!(
            p.remove.len(),
            1,
            "no pause-like name, no sandbox word: unused"
        );
    }
}
