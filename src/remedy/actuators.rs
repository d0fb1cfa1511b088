//! The actuators the policy loop drives, each behind a small trait: the loop is tested with
//! the recording fakes step by step, and the real edges one by one. The traits whose real
//! implementation belongs to a detector subsystem (the mount detacher, the CRI sandbox
//! remover, the pod cgroup reader) are implemented for it in `daemon::wiring`, so remedy
//! never imports those subsystems; `services` (systemctl), `rebooter` (the reboot
//! sequence) and `cluster` (the Kubernetes wishes) are remedy's own.

use std::sync::Arc;
#[cfg(any(test, feature = "fakes"))]
use std::sync::Mutex;

use super::cluster::ClusterLink;
use super::error::ActionError;
#[cfg(any(test, feature = "fakes"))]
use super::error::Target;
use super::rebooter::Rebooter;
use super::services::ServiceManager;
use crate::model::PodUsage;

/// Lazy unmount of a hung network mount (subject: the mountpoint).
pub(crate) trait MountRemedy: Send + Sync {
    fn detach(&self, mountpoint: &str) -> Result<String, ActionError>;
}

/// Removal of the dead sandbox that holds a pod's name (subject: the sandbox name).
pub(crate) trait SandboxRemedy: Send + Sync {
    fn remove_conflicting(&self, name: &str) -> Result<String, ActionError>;
}

/// Where BestEffort pods' cgroups live on this node, or why they cannot be read.
pub(crate) trait PodMemory: Send + Sync {
    /// Every BestEffort pod's working set. Err says what was looked for and where.
    fn besteffort_usage(&self) -> Result<Vec<PodUsage>, ActionError>;
}

/// Frees space on a filesystem short of it (subject: the first watched path on it): the
/// journal vacuumed, images no container uses removed. `dry_run` says what it would do.
pub(crate) trait DiskReclaim: Send + Sync {
    fn reclaim(&self, path: &str) -> Result<String, ActionError>;
}

#[derive(Clone)]
pub(crate) struct Actuators {
    pub(crate) services: Arc<dyn ServiceManager>,
    pub(crate) rebooter: Arc<dyn Rebooter>,
    pub(crate) mounts: Option<Arc<dyn MountRemedy>>,
    pub(crate) sandboxes: Option<Arc<dyn SandboxRemedy>>,
    /// BestEffort pods' working sets, for the eviction step.
    pub(crate) pod_memory: Option<Arc<dyn PodMemory>>,
    /// The disk reclaim step (DiskSpaceLow).
    pub(crate) disk: Option<Arc<dyn DiskReclaim>>,
    pub(crate) cluster: Arc<ClusterLink>,
}

#[cfg(any(test, feature = "fakes"))]
/// Records calls and answers Ok, or the error a test set; for tests of the loop.
#[derive(Clone, Default)]
pub struct RecordingRemedy {
    pub calls: Arc<Mutex<Vec<String>>>,
    pub(crate) fail: Arc<Mutex<Option<ActionError>>>,
}

#[cfg(any(test, feature = "fakes"))]
impl MountRemedy for RecordingRemedy {
    fn detach(&self, mountpoint: &str) -> Result<String, ActionError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("detach {mountpoint}"));
        match self.fail.lock().unwrap().clone() {
            Some(e) => Err(e),
            None => Ok(format!("detached {mountpoint}")),
        }
    }
}

#[cfg(any(test, feature = "fakes"))]
impl SandboxRemedy for RecordingRemedy {
    fn remove_conflicting(&self, name: &str) -> Result<String, ActionError> {
        self.calls.lock().unwrap().push(format!("remove {name}"));
        match self.fail.lock().unwrap().clone() {
            Some(e) => Err(e),
            None => Ok(format!("removed the dead sandbox holding {name}")),
        }
    }
}

#[cfg(any(test, feature = "fakes"))]
impl DiskReclaim for RecordingRemedy {
    fn reclaim(&self, path: &str) -> Result<String, ActionError> {
        self.calls.lock().unwrap().push(format!("reclaim {path}"));
        match self.fail.lock().unwrap().clone() {
            Some(e) => Err(e),
            None => Ok(format!("reclaimed space on {path}")),
        }
    }
}

#[cfg(any(test, feature = "fakes"))]
/// Answers a fixed list; for tests of the callers.
pub struct FixedPodMemory(pub Result<Vec<PodUsage>, String>);

#[cfg(any(test, feature = "fakes"))]
impl FixedPodMemory {
    fn answer(&self) -> Result<Vec<PodUsage>, ActionError> {
        self.0
            .clone()
            .map_err(|e| ActionError::failed(Target::PodCgroups, e))
    }
}

#[cfg(any(test, feature = "fakes"))]
impl PodMemory for FixedPodMemory {
    fn besteffort_usage(&self) -> Result<Vec<PodUsage>, ActionError> {
        self.answer()
    }
}
