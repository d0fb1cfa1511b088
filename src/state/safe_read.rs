//! Reading a state-dir file that may not be what it claims. The state directory can be
//! damaged or tampered with: issue 18 found that a FIFO named `state.json` hung startup
//! before the daemon listened, with no log line, and a symlink to `/dev/zero` grew memory
//! past 1 GiB in seconds. So every file the daemon reads from there is opened without
//! following a final symlink and without blocking on a FIFO, must be a regular file, and is
//! read up to a cap.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Why a state file could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    Missing,
    /// Not something the daemon wrote: a symlink, a FIFO, a device, a directory, or
    /// larger than the cap. Say what it is.
    NotOurs(String),
    Io(io::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Missing => f.write_str("missing"),
            ReadError::NotOurs(what) => f.write_str(what),
            ReadError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Reads `path` whole if it is a regular file of at most `max` bytes.
pub(crate) fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => ReadError::Missing,
            // O_NOFOLLOW on a symlink.
            Some(libc::ELOOP) => ReadError::NotOurs("a symbolic link, not a regular file".into()),
            _ => ReadError::Io(e),
        })?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let what = if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_char_device() {
            "a character device"
        } else if ft.is_block_device() {
            "a block device"
        } else if ft.is_dir() {
            "a directory"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "something"
        };
        return Err(ReadError::NotOurs(format!("{what}, not a regular file")));
    }
    if meta.len() > max {
        return Err(ReadError::NotOurs(format!(
            "{} bytes, more than the {max} a state file can hold",
            meta.len()
        )));
    }
    read_capped(file, max)
}

fn read_capped(file: File, max: u64) -> Result<Vec<u8>, ReadError> {
    let mut out = Vec::new();
    // The size was checked, but a file can grow between fstat and read.
    file.take(max + 1)
        .read_to_end(&mut out)
        .map_err(ReadError::Io)?;
    if out.len() as u64 > max {
        return Err(ReadError::NotOurs(format!(
            "more than the {max} bytes a state file can hold"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_regular_file_is_read_and_a_missing_one_says_so() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.json");
        assert!(matches!(read_regular(&p, 10), Err(ReadError::Missing)));
        std::fs::write(&p, b"{}").unwrap();
        assert_eq!(read_regular(&p, 10).unwrap(), b"{}");
    }

    #[test]
    fn a_fifo_is_refused_at_once_instead_of_blocking() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.json");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let q = p.clone();
        std::thread::spawn(move || {
            let _ = tx.send(read_regular(&q, 1 << 20).map_err(|e| e.to_string()));
        });
        // The bound is only there so a regression fails instead of hanging the suite.
        let r = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("must not block");
        assert_eq!(r.unwrap_err(), "a FIFO, not a regular file");
    }

    #[test]
    fn a_symlink_to_dev_zero_is_refused_without_reading_it() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.json");
        std::os::unix::fs::symlink("/dev/zero", &p).unwrap();
        let e = read_regular(&p, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }

    #[test]
    fn an_oversize_file_and_a_directory_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.json");
        std::fs::write(&p, vec![b' '; 2048]).unwrap();
        let e = read_regular(&p, 1024).unwrap_err().to_string();
        assert!(e.contains("2048 bytes, more than the 1024"), "{e}");
        let dir = d.path().join("dir.json");
        std::fs::create_dir(&dir).unwrap();
        assert_eq!(
            read_regular(&dir, 1024).unwrap_err().to_string(),
            "a directory, not a regular file"
        );
    }
}
