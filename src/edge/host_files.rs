//! The `/proc`, `/sys`, `/boot` edge. Detectors read host files through [`HostFiles`] with
//! paths relative to the host root (`"proc/meminfo"`), so tests point them at a fixture tree
//! or an in-memory map. Only pseudo-files and local config live here: nothing read through
//! this trait may touch a network mount (those go through the mount prober).

#[cfg(any(test, feature = "fakes"))]
use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
#[cfg(any(test, feature = "fakes"))]
use std::sync::Mutex;

pub trait HostFiles: Send + Sync {
    fn read(&self, rel: &str) -> io::Result<Vec<u8>>;
    fn list(&self, rel: &str) -> io::Result<Vec<String>>;
    /// The real path of `rel`, for callers that must open it themselves (e.g. `/dev/kmsg`).
    fn path(&self, rel: &str) -> PathBuf;

    fn read_string(&self, rel: &str) -> io::Result<String> {
        String::from_utf8(self.read(rel)?).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{rel}: not UTF-8: {e}"))
        })
    }
    fn exists(&self, rel: &str) -> bool {
        self.read(rel).is_ok() || self.list(rel).is_ok()
    }
}

/// Real: files under a root directory (`/` in production).
pub struct RootedFiles {
    root: PathBuf,
}

impl RootedFiles {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RootedFiles { root: root.into() }
    }
}

impl HostFiles for RootedFiles {
    fn read(&self, rel: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.path(rel))
    }
    fn list(&self, rel: &str) -> io::Result<Vec<String>> {
        let mut v: Vec<String> = std::fs::read_dir(self.path(rel))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        Ok(v)
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }
}

#[cfg(any(test, feature = "fakes"))]
/// Fake: an in-memory tree that records what was read.
#[derive(Default)]
pub struct FakeFiles {
    files: Mutex<BTreeMap<String, Vec<u8>>>,
    pub reads: Mutex<Vec<String>>,
}

#[cfg(any(test, feature = "fakes"))]
impl FakeFiles {
    pub fn with(entries: &[(&str, &str)]) -> Self {
        let f = FakeFiles::default();
        for (p, c) in entries {
            f.put(p, c);
        }
        f
    }
    pub fn put(&self, rel: &str, content: &str) {
        self.files.lock().unwrap().insert(
            rel.trim_start_matches('/').to_string(),
            content.as_bytes().to_vec(),
        );
    }
    pub fn remove(&self, rel: &str) {
        self.files
            .lock()
            .unwrap()
            .remove(rel.trim_start_matches('/'));
    }
}

#[cfg(any(test, feature = "fakes"))]
impl HostFiles for FakeFiles {
    fn read(&self, rel: &str) -> io::Result<Vec<u8>> {
        let rel = rel.trim_start_matches('/');
        self.reads.lock().unwrap().push(rel.to_string());
        self.files.lock().unwrap().get(rel).cloned().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{rel}: not in fake tree"))
        })
    }
    fn list(&self, rel: &str) -> io::Result<Vec<String>> {
        let prefix = format!("{}/", rel.trim_start_matches('/').trim_end_matches('/'));
        let files = self.files.lock().unwrap();
        let mut names: Vec<String> = files
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .map(|rest| rest.split('/').next().unwrap_or(rest).to_string())
            .collect();
        names.dedup();
        if names.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{rel}: no such dir in fake tree"),
            ));
        }
        Ok(names)
    }
    fn path(&self, rel: &str) -> PathBuf {
        PathBuf::from("/fake").join(rel.trim_start_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooted_files_resolve_relative_to_the_root() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("proc/pressure")).unwrap();
        std::fs::write(d.path().join("proc/pressure/memory"), "some avg10=0.00").unwrap();
        let f = RootedFiles::new(d.path());
        assert_eq!(
            f.read_string("/proc/pressure/memory").unwrap(),
            "some avg10=0.00"
        );
        assert_eq!(f.list("proc").unwrap(), vec!["pressure"]);
        assert!(f.read("proc/meminfo").is_err());
    }

    #[test]
    fn fake_files_list_children_and_record_reads() {
        let f = FakeFiles::with(&[
            ("proc/1/stat", "x"),
            ("proc/22/stat", "y"),
            ("proc/meminfo", "m"),
        ]);
        assert_eq!(f.list("proc").unwrap(), vec!["1", "22", "meminfo"]);
        assert_eq!(f.read_string("proc/22/stat").unwrap(), "y");
        assert_eq!(*f.reads.lock().unwrap(), vec!["proc/22/stat"]);
        assert!(f.read("proc/nope").is_err());
    }
}
