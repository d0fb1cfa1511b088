//! `HangFs`: a FUSE filesystem that never answers, mounted without libfuse.
//!
//! It stands in for a hard NFS mount whose server went away: the kernel
//! here has no NFS, but a FUSE connection nobody serves blocks callers the same way.
//!
//! Recipe: open `/dev/fuse`, pass its fd to `mount(2)` with fstype `fuse.nodemedic-hang`
//! and options `fd=N,rootmode=40000,user_id=U,group_id=G,allow_other`, then never serve a
//! request. What a caller sees depends on whether `FUSE_INIT` gets an answer (measured on
//! kernel 6.18; `mounts_real.rs` asserts it):
//!
//! - [`HangMode::NeverInit`] (the default): the connection never becomes initialised, so
//!   `stat`, `statfs` and `mkdir` wait in `fuse_get_req` for it. That wait is *killable*,
//!   which `/proc/<pid>/stat` shows as state `D`: exactly what a hard NFS mount produces.
//! - [`HangMode::AnswerInitOnly`]: requests are queued and the caller waits for the answer
//!   in `request_wait_answer`, first *interruptibly*, i.e. state `S`. Such a caller is
//!   blocked as well, but neither the kernel's hung-task detector nor a D-state census
//!   counts it; only a probe with a deadline notices.
//!
//! `release` (and `Drop`) close the `/dev/fuse` fd, which aborts the connection: every
//! waiter returns `ENOTCONN` at once. Then `umount2(MNT_DETACH)` removes the mount. The fd
//! is opened `O_CLOEXEC` so spawned children never hold the connection open.
//!
//! `allow_other` matters: without it the kernel answers `statfs` from processes of another
//! uid itself, without asking the (dead) server, so such a probe would not block.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The fstype the mount shows in /proc/self/mountinfo: a `fuse.*` subtype, like `fuse.sshfs`.
pub const HANGFS_FSTYPE: &str = "fuse.nodemedic-hang";
/// The mount source, so a stray mount is easy to recognise in `mount` output.
pub const HANGFS_SOURCE: &str = "nodemedic-hang";

/// `FUSE_INIT` opcode (include/uapi/linux/fuse.h).
const FUSE_INIT: u32 = 26;
/// The only FUSE major version the kernel speaks.
const FUSE_KERNEL_VERSION: u32 = 7;
/// `sizeof(struct fuse_in_header)`.
const IN_HEADER_LEN: usize = 40;
/// `sizeof(struct fuse_out_header)`.
const OUT_HEADER_LEN: usize = 16;
/// `sizeof(struct fuse_init_out)` on current kernels (7.36+).
const INIT_OUT_LEN: usize = 64;
/// `FUSE_COMPAT_22_INIT_OUT_SIZE`: what kernels that predate the 64-byte reply accept.
const INIT_OUT_COMPAT_LEN: usize = 24;
/// The kernel refuses reads into buffers smaller than max_write plus headers; 1 MiB plus a
/// page covers any max_write it may assume before INIT.
const READ_BUF_LEN: usize = (1 << 20) + 4096;
/// The kernel queues FUSE_INIT during mount(2); waiting longer than this means it never will.
const INIT_WAIT: Duration = Duration::from_secs(5);

/// Whether the fixture answers `FUSE_INIT` before falling silent. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangMode {
    /// Answer nothing: callers block in `fuse_get_req`, state `D`.
    NeverInit,
    /// Answer only `FUSE_INIT`: callers block in `request_wait_answer`, state `S`.
    AnswerInitOnly,
}

/// A mounted, never-answering FUSE filesystem. Dropping it releases every blocked caller.
#[derive(Debug)]
pub struct HangFs {
    dir: PathBuf,
    fuse: Option<OwnedFd>,
    mounted: bool,
}

impl HangFs {
    /// Mounts a hung filesystem on `dir` (an existing directory) in [`HangMode::NeverInit`].
    pub fn mount(dir: &Path) -> io::Result<HangFs> {
        HangFs::mount_with(dir, HangMode::NeverInit)
    }

    /// Mounts a hung filesystem on `dir` in the given mode.
    pub fn mount_with(dir: &Path, mode: HangMode) -> io::Result<HangFs> {
        HangFs::mount_as(dir, mode, HANGFS_FSTYPE)
    }

    /// Mounts a hung filesystem with its own `fuse.<subtype>` fstype, so a test can watch
    /// only its own mounts while other tests mount theirs.
    pub fn mount_as(dir: &Path, mode: HangMode, fstype: &str) -> io::Result<HangFs> {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        HangFs::mount_owned(dir, mode, fstype, uid, gid)
    }

    /// As [`HangFs::mount_as`], recorded as owned by `uid`/`gid` (`user_id=`, `group_id=`),
    /// as `fusermount` records an unprivileged user's mount.
    pub fn mount_owned(
        dir: &Path,
        mode: HangMode,
        fstype: &str,
        uid: u32,
        gid: u32,
    ) -> io::Result<HangFs> {
        let dev = CString::new("/dev/fuse").expect("static path has no NUL");
        // SAFETY: `dev` is a valid NUL-terminated string; the returned fd is checked.
        let raw = unsafe { libc::open(dev.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if raw < 0 {
            return Err(context(io::Error::last_os_error(), "open /dev/fuse"));
        }
        // SAFETY: `raw` is a fresh fd that nothing else owns.
        let fuse = unsafe { OwnedFd::from_raw_fd(raw) };

        let options = format!(
            "fd={},rootmode=40000,user_id={uid},group_id={gid},allow_other",
            fuse.as_raw_fd()
        );
        let target = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "mount dir contains NUL"))?;
        let source = CString::new(HANGFS_SOURCE).expect("static source has no NUL");
        let fstype = CString::new(fstype)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "fstype contains NUL"))?;
        let data = CString::new(options).expect("formatted options have no NUL");
        // SAFETY: all pointers are valid NUL-terminated strings living across the call.
        let rc = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                data.as_ptr().cast(),
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return Err(context(e, &format!("mount fuse on {}", dir.display())));
        }
        let mut fs = HangFs {
            dir: dir.to_path_buf(),
            fuse: Some(fuse),
            mounted: true,
        };
        if mode == HangMode::AnswerInitOnly {
            // On failure `fs` is dropped here, which aborts and unmounts.
            fs.answer_init()?;
        }
        Ok(fs)
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// `umount2(MNT_DETACH)` while keeping the connection hung: callers already blocked stay
    /// blocked, new path lookups see the directory underneath.
    pub fn lazy_unmount(&mut self) -> io::Result<()> {
        if self.mounted {
            self.mounted = false;
            detach(&self.dir)?;
        }
        Ok(())
    }

    /// Someone else (the code under test) detached the mount: only abort on release.
    pub fn mark_detached_elsewhere(&mut self) {
        self.mounted = false;
    }

    /// Aborts the connection (every blocked caller gets `ENOTCONN`) and unmounts.
    pub fn release(mut self) {
        self.teardown();
    }

    fn teardown(&mut self) {
        // Closing the only /dev/fuse fd aborts the connection and wakes every waiter.
        drop(self.fuse.take());
        if self.mounted {
            self.mounted = false;
            if let Err(e) = detach(&self.dir) {
                eprintln!("hangfs: lazy unmount of {} failed: {e}", self.dir.display());
            }
        }
    }

    /// Reads the FUSE_INIT request the kernel queued during mount(2) and answers it with the
    /// kernel's own minor version and no feature flags.
    /// Reads the next request (waiting up to `timeout`) and never answers it; returns its
    /// opcode. Once read, the request is "sent": its caller can no longer be killed out of
    /// the wait (fuse `request_wait_answer` ends in an uninterruptible wait), which is a
    /// process stuck in D state for good, until this filesystem is released.
    pub fn swallow_request(&self, timeout: Duration) -> io::Result<u32> {
        let fd = self
            .fuse
            .as_ref()
            .expect("fd open until teardown")
            .as_raw_fd();
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        if unsafe { libc::poll(&mut pfd, 1, ms) } <= 0 {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no FUSE request"));
        }
        let mut buf = vec![0u8; READ_BUF_LEN];
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < IN_HEADER_LEN as isize {
            return Err(context(io::Error::last_os_error(), "read a FUSE request"));
        }
        Ok(u32_at(&buf, 4))
    }

    fn answer_init(&mut self) -> io::Result<()> {
        let fd = self
            .fuse
            .as_ref()
            .expect("fd open until teardown")
            .as_raw_fd();
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout_ms = i32::try_from(INIT_WAIT.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd, count 1.
        let ready = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if ready <= 0 {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no FUSE_INIT on {} within {INIT_WAIT:?}",
                    self.dir.display()
                ),
            ));
        }
        let mut buf = vec![0u8; READ_BUF_LEN];
        // SAFETY: `buf` is writable for its full length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(context(io::Error::last_os_error(), "read FUSE_INIT"));
        }
        let n = n as usize;
        if n < IN_HEADER_LEN + 8 || u32_at(&buf, 4) != FUSE_INIT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "expected FUSE_INIT, got opcode {} ({n} bytes)",
                    u32_at(&buf, 4)
                ),
            ));
        }
        let unique = u64::from_ne_bytes(buf[8..16].try_into().expect("8 bytes"));
        let kernel_minor = u32_at(&buf, IN_HEADER_LEN + 4);

        let mut err = None;
        for body_len in [INIT_OUT_LEN, INIT_OUT_COMPAT_LEN] {
            let reply = init_reply(unique, kernel_minor, body_len);
            // SAFETY: `reply` is readable for its full length.
            let w = unsafe { libc::write(fd, reply.as_ptr().cast(), reply.len()) };
            if w == reply.len() as isize {
                return Ok(());
            }
            // An older kernel rejects a reply longer than its struct with EINVAL.
            err = Some(io::Error::last_os_error());
        }
        Err(context(err.expect("loop ran"), "answer FUSE_INIT"))
    }
}

impl Drop for HangFs {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// `fuse_out_header` + `fuse_init_out` with major 7, the kernel's minor, max_write 4096.
fn init_reply(unique: u64, minor: u32, body_len: usize) -> Vec<u8> {
    let len = OUT_HEADER_LEN + body_len;
    let mut r = Vec::with_capacity(len);
    r.extend_from_slice(&(len as u32).to_ne_bytes());
    r.extend_from_slice(&0i32.to_ne_bytes()); // error
    r.extend_from_slice(&unique.to_ne_bytes());
    let mut body = vec![0u8; body_len];
    body[0..4].copy_from_slice(&FUSE_KERNEL_VERSION.to_ne_bytes());
    body[4..8].copy_from_slice(&minor.to_ne_bytes());
    // max_readahead (8..12) and flags (12..16) stay 0; max_write sits at 20..24.
    body[20..24].copy_from_slice(&4096u32.to_ne_bytes());
    r.extend_from_slice(&body);
    r
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn detach(dir: &Path) -> io::Result<()> {
    let target = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "mount dir contains NUL"))?;
    // SAFETY: valid NUL-terminated path.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(context(
            io::Error::last_os_error(),
            &format!("umount2({}, MNT_DETACH)", dir.display()),
        ));
    }
    Ok(())
}

fn context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// `DiskFs`: a FUSE filesystem that serves one regular file, `disk`, from memory, and
/// answers EIO to every read, write and fsync of it on demand ([`DiskFs::fail`]). A loop
/// device backed by that file sees real block-level I/O errors: the kernel prints
/// `I/O error, dev loopN, sector ...` and the filesystem on the loop device its own errors.
///
/// The connection is served by a thread of the test process. Drop detaches the mount; the
/// server's read then ends (ENODEV) and the thread exits.
pub struct DiskFs {
    dir: PathBuf,
    failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    server: Option<std::thread::JoinHandle<()>>,
}

const FUSE_ROOT_ID: u64 = 1;
const DISK_ID: u64 = 2;
/// The file's name inside the mount.
pub const DISK_NAME: &str = "disk";

impl DiskFs {
    /// Mounts on `dir` (an existing directory) a filesystem holding `disk` of `size` bytes.
    pub fn mount(dir: &Path, size: u64) -> io::Result<DiskFs> {
        let mut hang = HangFs::mount_with(dir, HangMode::AnswerInitOnly)?;
        // The connection is ours to serve now: take its fd, leave the unmount to us.
        let fuse = hang.fuse.take().expect("fd open until teardown");
        hang.mounted = false;
        drop(hang);
        let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let f = failing.clone();
        let server = std::thread::Builder::new()
            .name("diskfs".into())
            .spawn(move || serve(fuse, size, f))?;
        Ok(DiskFs {
            dir: dir.to_path_buf(),
            failing,
            server: Some(server),
        })
    }

    /// The served file.
    pub fn disk(&self) -> PathBuf {
        self.dir.join(DISK_NAME)
    }

    /// From now on every read, write and fsync of the file fails with EIO (or works again).
    pub fn fail(&self, on: bool) {
        self.failing.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for DiskFs {
    fn drop(&mut self) {
        if let Err(e) = detach(&self.dir) {
            eprintln!("diskfs: lazy unmount of {} failed: {e}", self.dir.display());
        }
        if let Some(t) = self.server.take() {
            let end = std::time::Instant::now() + Duration::from_secs(5);
            while !t.is_finished() && std::time::Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// `fuse_attr` (88 bytes) of the root directory or the disk file.
fn attr(id: u64, size: u64) -> Vec<u8> {
    let mut a = Vec::with_capacity(88);
    let (mode, nlink, size) = if id == FUSE_ROOT_ID {
        (libc::S_IFDIR | 0o755, 2u32, 0u64)
    } else {
        (libc::S_IFREG | 0o600, 1, size)
    };
    for v in [id, size, size.div_ceil(512), 0, 0, 0] {
        a.extend_from_slice(&v.to_ne_bytes());
    }
    // atimensec, mtimensec, ctimensec, mode, nlink, uid, gid, rdev, blksize, flags
    for v in [0u32, 0, 0, mode, nlink, 0, 0, 0, 4096, 0] {
        a.extend_from_slice(&v.to_ne_bytes());
    }
    a
}

fn reply(fd: i32, unique: u64, error: i32, body: &[u8]) {
    let len = OUT_HEADER_LEN + body.len();
    let mut r = Vec::with_capacity(len);
    r.extend_from_slice(&(len as u32).to_ne_bytes());
    r.extend_from_slice(&(-error).to_ne_bytes());
    r.extend_from_slice(&unique.to_ne_bytes());
    r.extend_from_slice(body);
    // SAFETY: `r` is readable for its full length. A failed write (the request was
    // interrupted) is the kernel's business.
    unsafe { libc::write(fd, r.as_ptr().cast(), r.len()) };
}

fn serve(fuse: OwnedFd, size: u64, failing: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let fd = fuse.as_raw_fd();
    let mut data = vec![0u8; size as usize];
    let mut buf = vec![0u8; READ_BUF_LEN];
    let fails = || failing.load(std::sync::atomic::Ordering::SeqCst);
    loop {
        // SAFETY: `buf` is writable for its full length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) | Some(libc::ENOENT) | Some(libc::EAGAIN) => continue,
                _ => return, // ENODEV: unmounted.
            }
        }
        let n = n as usize;
        if n < IN_HEADER_LEN {
            return;
        }
        let opcode = u32_at(&buf, 4);
        let unique = u64::from_ne_bytes(buf[8..16].try_into().expect("8 bytes"));
        let nodeid = u64::from_ne_bytes(buf[16..24].try_into().expect("8 bytes"));
        let body = &buf[IN_HEADER_LEN..n];
        let u64_at = |b: &[u8], at: usize| u64::from_ne_bytes(b[at..at + 8].try_into().unwrap());
        match opcode {
            // LOOKUP
            1 => {
                let name = body.split(|&b| b == 0).next().unwrap_or_default();
                if nodeid == FUSE_ROOT_ID && name == DISK_NAME.as_bytes() {
                    let mut e = Vec::new();
                    for v in [DISK_ID, 0, 3600, 3600] {
                        e.extend_from_slice(&v.to_ne_bytes());
                    }
                    e.extend_from_slice(&[0u8; 8]);
                    e.extend_from_slice(&attr(DISK_ID, size));
                    reply(fd, unique, 0, &e);
                } else {
                    reply(fd, unique, libc::ENOENT, &[]);
                }
            }
            // FORGET, INTERRUPT, BATCH_FORGET: no answer.
            2 | 36 | 42 => {}
            // GETATTR, SETATTR
            3 | 4 => {
                let mut a = Vec::new();
                a.extend_from_slice(&3600u64.to_ne_bytes());
                a.extend_from_slice(&[0u8; 8]);
                a.extend_from_slice(&attr(nodeid, size));
                reply(fd, unique, 0, &a);
            }
            // OPEN, OPENDIR
            14 | 27 => reply(fd, unique, 0, &[0u8; 16]),
            // READ
            15 => {
                if fails() {
                    reply(fd, unique, libc::EIO, &[]);
                    continue;
                }
                let off = u64_at(body, 8) as usize;
                let len = u32_at(body, 16) as usize;
                let end = (off + len).min(data.len());
                let start = off.min(end);
                reply(fd, unique, 0, &data[start..end]);
            }
            // WRITE
            16 => {
                if fails() {
                    reply(fd, unique, libc::EIO, &[]);
                    continue;
                }
                let off = u64_at(body, 8) as usize;
                let len = u32_at(body, 16) as usize;
                let src = &body[40..40 + len];
                let end = (off + len).min(data.len());
                if off < end {
                    data[off..end].copy_from_slice(&src[..end - off]);
                }
                let mut w = Vec::new();
                w.extend_from_slice(&(len as u32).to_ne_bytes());
                w.extend_from_slice(&[0u8; 4]);
                reply(fd, unique, 0, &w);
            }
            // STATFS
            17 => {
                let mut s = vec![0u8; 80];
                s[40..44].copy_from_slice(&4096u32.to_ne_bytes());
                s[44..48].copy_from_slice(&255u32.to_ne_bytes());
                reply(fd, unique, 0, &s);
            }
            // FSYNC
            20 if fails() => reply(fd, unique, libc::EIO, &[]),
            // RELEASE, FSYNC, FLUSH, RELEASEDIR, FSYNCDIR, ACCESS
            18 | 20 | 25 | 29 | 30 | 34 => reply(fd, unique, 0, &[]),
            // READDIR: empty.
            28 => reply(fd, unique, 0, &[]),
            // DESTROY
            38 => {
                reply(fd, unique, 0, &[]);
                return;
            }
            _ => reply(fd, unique, libc::ENOSYS, &[]),
        }
    }
}
