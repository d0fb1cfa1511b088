//! Filesystem errors and read-only remounts: ext4 and jbd2 (fs/ext4/super.c's error
//! wrappers, fs/jbd2), XFS (fs/xfs: shutdowns, corruption, log and metadata I/O errors),
//! btrfs (its `error`, `critical`, `alert` and `emergency` levels, and warnings that name
//! a checksum or I/O failure). The device each names is the block device the filesystem
//! sits on; the storage detector attributes it to mounts.

use super::oops::detail;
use super::*;

fn fs_head(kind: EventKind, fs: &str, device: &str, mut f: Fields, msg: &str) -> Option<Head> {
    f.fs = Some(fs.to_string());
    f.device = Some(device.to_string());
    f.detail = Some(detail(msg));
    Head::new(kind, Role::Splat, f)
}

/// ext4 messages (`EXT4-fs (%s): ...` from ext4_msg) that report damage or lost data; the
/// rest (mounted, quota, options, orphans) are not errors.
const EXT4_MSG_ERRORS: &[&str] = &[
    "I/O error while writing superblock",
    "previous I/O error to superblock detected",
    "This should not happen!! Data will be lost",
    "Delayed block allocation failed for inode %u at logical offset %u with max blocks %u with error %d",
    "failed to convert unwritten extents to written extents -- potential data loss!  (inode %u, error %d)",
    "error restoring inline_data for inode -- potential data loss! (inode %u, error %d)",
    "journal bmap failed: block %u ret %d",
    "shut down requested (%d)",
];

/// ext4_warning() messages that are I/O failures or corruption (the others are limits).
const EXT4_WARNING_ERRORS: &[&str] = &[
    "I/O error %d writing to inode %u starting block %u)",
    // ext4_end_bio() before 4.x's rework (with the error from 3.x), then without it.
    "I/O error %d writing to inode %u (offset %u size %u starting block %u)",
    "I/O error writing to inode %u (offset %u size %u starting block %u)",
    "Error %d while reading MMP block %u",
    "error %d reading directory index block",
    "Corrupt directory, running e2fsck is recommended",
];

/// `EXT4-fs ...` and `EXT3-fs ...` (old kernels' own ext3 driver).
pub(super) fn ext4_head(line: &str) -> Option<Head> {
    if let Some(c) = kmatch("EXT4-fs error (device %w): %w:%u: %s", line) {
        let mut f = Fields {
            function: c.string(1),
            ..Fields::default()
        };
        ext4_context(c.get(3), &mut f);
        return fs_head(EventKind::FsError, "ext4", c.get(0), f, c.get(3));
    }
    if let Some(c) = kmatch("EXT4-fs error (device %w) in %w:%u: %s", line) {
        let f = Fields {
            function: c.string(1),
            ..Fields::default()
        };
        return fs_head(EventKind::FsError, "ext4", c.get(0), f, c.get(3));
    }
    if let Some(c) = kmatch("EXT4-fs error (device %w): %s", line) {
        return fs_head(
            EventKind::FsError,
            "ext4",
            c.get(0),
            Fields::default(),
            c.get(1),
        );
    }
    if let Some(c) = kmatch("EXT4-fs (%w): %s", line) {
        let msg = c.get(1);
        if msg == "Remounting filesystem read-only" {
            return fs_head(
                EventKind::FsReadonly,
                "ext4",
                c.get(0),
                Fields::default(),
                msg,
            );
        }
        if kmatch_any(EXT4_MSG_ERRORS, msg).is_some() {
            return fs_head(EventKind::FsError, "ext4", c.get(0), Fields::default(), msg);
        }
        return None;
    }
    if let Some(c) = kmatch("EXT4-fs warning (device %w): %w:%u: %s", line) {
        let mut f = Fields {
            function: c.string(1),
            ..Fields::default()
        };
        let msg = ext4_context(c.get(3), &mut f);
        if kmatch_any(EXT4_WARNING_ERRORS, msg).is_some() {
            return fs_head(EventKind::FsError, "ext4", c.get(0), f, c.get(3));
        }
        return None;
    }
    if let Some(c) = kmatch("EXT4-fs: %w:%u: aborting transaction: %s in %w", line) {
        let f = Fields {
            function: c.string(0),
            fs: Some("ext4".into()),
            detail: Some(detail(line)),
            ..Fields::default()
        };
        return Head::new(EventKind::FsError, Role::Splat, f);
    }
    if line.starts_with("EXT4: jbd2_journal_dirty_metadata failed: ") {
        let f = Fields {
            fs: Some("ext4".into()),
            detail: Some(detail(line)),
            ..Fields::default()
        };
        return Head::new(EventKind::FsError, Role::Splat, f);
    }
    if let Some(c) = kmatch("EXT3-fs error (device %w): %s", line) {
        return fs_head(
            EventKind::FsError,
            "ext3",
            c.get(0),
            Fields::default(),
            c.get(1),
        );
    }
    if let Some(c) = kmatch("EXT3-fs (%w): error: remounting filesystem read-only", line) {
        let msg = "remounting filesystem read-only";
        return fs_head(
            EventKind::FsReadonly,
            "ext3",
            c.get(0),
            Fields::default(),
            msg,
        );
    }
    None
}

/// `inode #12: block 34: comm ls: path x: <message>` before an ext4 message: the inode,
/// the block (as the sector field) and the task; returns the message.
fn ext4_context<'a>(mut rest: &'a str, f: &mut Fields) -> &'a str {
    if let Some(c) = kmatch("inode #%u: %s", rest) {
        f.inode = c.u64(0);
        rest = c.get(1);
    }
    if let Some(c) = kmatch("block %u: %s", rest) {
        f.sector = c.u64(0);
        rest = c.get(1);
    }
    if let Some(c) = kmatch("comm %c: %s", rest) {
        f.comm = c.string(0);
        rest = c.get(1);
    }
    rest
}

/// jbd2 (fs/jbd2): the journal aborted, or its blocks cannot be read or written; with the
/// conversion that names the journal's device, `<bdev>-<journal inode>` (`mmcblk0p2-8`).
const JBD2_ERRORS: &[(&str, Option<usize>)] = &[
    ("Aborting journal on device %w.", Some(0)),
    (
        "JBD2: Detected IO errors while flushing file data on %w",
        Some(0),
    ),
    (
        "JBD2: Detected IO errors %d while flushing file data on %w",
        Some(1),
    ),
    (
        "JBD2: I/O error when updating journal superblock for %w.",
        Some(0),
    ),
    (
        "JBD2: previous I/O error detected for journal superblock update for %w.",
        Some(0),
    ),
    // jbd2_write_superblock() before 6.x, and in 3.x.
    (
        "JBD2: Error %d detected when updating journal superblock for %w.",
        Some(1),
    ),
    (
        "JBD2: I/O error detected when updating journal superblock for %w.",
        Some(0),
    ),
    // jbd2_log_wait_commit() on an aborted journal, 2.6 to 3.x (KERN_EMERG, no device).
    ("journal commit I/O error", None),
    ("JBD2: journal transaction %u on %w is corrupt.", Some(1)),
    ("JBD2: IO error %d recovering block %u in log", None),
    ("JBD2: Invalid checksum %s", None),
    ("JBD2: corrupted journal superblock", None),
    ("JBD2: Failed to read block at offset %u", None),
    ("JBD2: bad block at offset %u", None),
    ("JBD2: recovery failed", None),
    ("JBD2: journal recovery failed", None),
    ("JBD2: error %d scanning journal", None),
    (
        "JBD2: recovery pass %u ended at transaction %u, expected %u",
        None,
    ),
    // jbd2_journal_bmap(), journal_load_superblock(), jbd2_journal_init_inode()...
    ("%w: journal block not found at offset %u on %w", Some(2)),
    ("%w: Cannot read journal superblock", None),
    ("%w: Cannot locate journal superblock", None),
];

pub(super) fn jbd2_head(line: &str) -> Option<Head> {
    let (i, c) = JBD2_ERRORS
        .iter()
        .enumerate()
        .find_map(|(i, (f, _))| kmatch(f, line).map(|c| (i, c)))?;
    let function_led = JBD2_ERRORS[i].0.starts_with('%');
    if function_led && !(c.get(0).starts_with("jbd2_") || c.get(0).starts_with("journal_")) {
        return None;
    }
    let mut f = Fields {
        fs: Some("jbd2".into()),
        detail: Some(detail(line)),
        ..Fields::default()
    };
    if let Some(d) = JBD2_ERRORS[i].1.map(|n| c.get(n)) {
        // `mmcblk0p2-8`: the block device, then the journal's inode number (`dm-3:8`
        // in 3.x).
        let bdev = match d.rsplit_once(['-', ':']) {
            Some((b, ino)) if !b.is_empty() && ino.bytes().all(|x| x.is_ascii_digit()) => b,
            _ => d,
        };
        f.device = Some(bdev.to_string());
    }
    Head::new(EventKind::FsError, Role::Splat, f)
}

/// XFS (`XFS (<dev>): <message>`): shutdowns, corruption, log and metadata I/O errors.
const XFS_ERRORS: &[&str] = &[
    "User initiated shutdown received.",
    "Filesystem has been shut down due to log error (0x%x).",
    "Corruption detected. Unmount and run xfs_repair",
    "Corruption warning: Metadata has LSN %s",
    "Corruption Alert: Buffer at daddr 0x%x had permanent write failures!",
    "Metadata %s detected at %s",
    "Internal error %s at line %u of file %s.  Caller %s",
    "log I/O error %d",
    "log mount/recovery failed: error %d",
    "metadata I/O error in \"%s\" at daddr 0x%x len %u error %d",
    "AAIEEE! Log failed size checks. Abort!",
    "ctx ticket reservation ran out. Need to up reservation",
    "ran out of log space tail %s",
    "Transforming an alert into a BUG.",
    "xfs_do_force_shutdown(0x%x) called from line %u of file %s.  Return address = %s",
    "%w: daddr 0x%x out of range, EOFS 0x%x",
    "%w: unmount record failed",
    "%w: corrupt iclog ring",
    "%w: invalid magic num",
    "%w: unexpected magic num",
    "%w: head has wrapped tail.",
    "%w: ran out of iclog space",
    "%w: ran out of log space",
    "%w: tail wrapped",
    "%w: head behind tail",
];

/// What XFS prints after an error: advice, and the first bytes of the bad buffer.
const XFS_FOLLOW_UPS: &[&str] = &[
    "Please unmount the filesystem and rectify the problem(s)",
    "Please unmount the filesystem and rectify the problem(s).",
    "Please run xfs_repair to determine the extent of the problem.",
    "Unmount and run xfs_repair",
    "First %u bytes of corrupted metadata buffer:",
    "%w: will fix summary counters at next mount",
];

pub(super) fn xfs_head(line: &str) -> Option<Head> {
    let c = kmatch("XFS (%w): %s", line)?;
    let msg = c.get(1);
    let shutdown = msg.ends_with("Shutting down filesystem.")
        || msg.ends_with("Shutting down filesystem")
        || msg.ends_with("Shutting down filesystem!");
    if !shutdown && kmatch_any(XFS_ERRORS, msg).is_none() {
        return None;
    }
    fs_head(EventKind::FsError, "xfs", c.get(0), Fields::default(), msg)
}

/// btrfs warnings that report a checksum or I/O failure of the storage.
const BTRFS_WARNING_ERRORS: &[&str] = &[
    "csum failed",
    "checksum verify failed",
    "unexpected block io error",
    "i/o error",
    "bad tree block",
    "parent transid verify failed",
    "read error",
    "csum hole found",
];

/// btrfs errors about a mount's options or device scanning (fs/btrfs/super.c
/// btrfs_parse_param(), btrfs_check_mountopts_zoned(), volumes.c device_list_add()): the
/// operator's `mount` fails and says so; nothing is wrong with the storage.
const BTRFS_MOUNT_MESSAGES: &[&str] = &[
    "unrecognized mount option '%s'",
    "unrecognized %s value %s",
    "support for %s not compiled in%s",
    "cannot disable free space tree%s",
    "invalid value %d for %w",
    "zoned: space cache v1 is not supported",
    "zoned: NODATACOW not supported",
    "failed to parse compression option '%s'",
    "invalid read policy or value %s",
    "device %s belongs to fsid %s, and the fs is already mounted%s",
    "device %s already registered with a higher generation, found %u expect %u",
    "device %s has incomplete metadata_uuid change, please use btrfstune to complete",
];

/// `BTRFS <level> (device sdb[ state X]): <message>`, `BTRFS: error (device sdb) in
/// <function>:<line>: errno=<N> <text>` (btrfs_handle_fs_error).
pub(super) fn btrfs_head(line: &str) -> Option<Head> {
    if let Some(line) = btrfs_without_state(line)
        && let Some(c) = kmatch("BTRFS: error (device %w) in %w:%u: errno=%d %s", &line)
    {
        let f = Fields {
            function: c.string(1),
            error: c.i32(3),
            ..Fields::default()
        };
        return fs_head(EventKind::FsError, "btrfs", c.get(0), f, c.get(4));
    }
    let line = btrfs_without_state(line)?;
    let c = kmatch("BTRFS %w (device %w): %s", &line)?;
    let (level, msg) = (c.get(0), c.get(2));
    // __btrfs_handle_fs_error() after an error: the filesystem is now read-only.
    if level == "info" && msg == "forced readonly" {
        return fs_head(
            EventKind::FsReadonly,
            "btrfs",
            c.get(1),
            Fields::default(),
            msg,
        );
    }
    if kmatch_any(BTRFS_MOUNT_MESSAGES, msg).is_some() {
        return None;
    }
    let error = match level {
        "error" | "critical" | "alert" | "emergency" => true,
        // The message is the kernel's own text after the level and device.
        "warning" => BTRFS_WARNING_ERRORS.iter().any(|w| msg.contains(w)),
        _ => false,
    };
    if !error {
        return None;
    }
    fs_head(
        EventKind::FsError,
        "btrfs",
        c.get(1),
        Fields::default(),
        msg,
    )
}

/// The line without the ` state EA` 6.x prints after the device (`(device sdb state EA)`);
/// None when that part is not a state.
fn btrfs_without_state(line: &str) -> Option<std::borrow::Cow<'_, str>> {
    let Some(at) = line.find(" state ") else {
        return Some(std::borrow::Cow::Borrowed(line));
    };
    let rest = &line[at + 7..];
    let end = rest.find(')')?;
    if !rest[..end].bytes().all(|b| b.is_ascii_alphanumeric()) {
        // ` state ` elsewhere in the message: leave the line as it is.
        return Some(std::borrow::Cow::Borrowed(line));
    }
    Some(std::borrow::Cow::Owned(format!(
        "{}{}",
        &line[..at],
        &rest[end..]
    )))
}

/// `Kernel panic - not syncing:` reasons of filesystems: ext4's errors=panic, btrfs.
pub(super) fn fs_panic(reason: &str) -> Option<(EventKind, Fields)> {
    let (fs, device) =
        if let Some(c) = kmatch("EXT4-fs (device %w): panic forced after error", reason) {
            ("ext4", c.string(0))
        } else if let Some(r) = btrfs_without_state(reason)
            && let Some(c) = kmatch("BTRFS panic (device %w) in %s", &r)
        {
            ("btrfs", c.string(0))
        } else {
            return None;
        };
    let f = Fields {
        fs: Some(fs.to_string()),
        device,
        detail: Some(detail(reason)),
        ..Fields::default()
    };
    Some((EventKind::FsError, f))
}

/// Follow-ups of a filesystem error: XFS's advice and buffer dump, and stack dumps.
pub(super) fn fs_continuation(t: &str) -> Option<Fields> {
    if let Some(c) = kmatch("XFS (%w): %s", t)
        && kmatch_any(XFS_FOLLOW_UPS, c.get(1)).is_some()
    {
        return Some(Fields::default());
    }
    // print_hex_dump: `00000000: 58 46 53 42 00 00 10 00  XFSB....`
    if let Some((off, rest)) = t.split_once(": ")
        && off.len() >= 4
        && off.bytes().all(|b| b.is_ascii_hexdigit())
        && rest
            .split(' ')
            .take(4)
            .all(|w| w.len() == 2 && w.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Some(Fields::default());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::classify::tests::*;

    #[test]
    fn ext4_errors_carry_device_function_inode_and_comm() {
        assert_head(
            "EXT4-fs error (device loop0): ext4_lookup:1855: inode #12: comm ls: deleted inode referenced: 13",
            EventKind::FsError,
            Fields {
                fs: s("ext4"),
                device: s("loop0"),
                function: s("ext4_lookup"),
                inode: Some(12),
                comm: s("ls"),
                detail: s("inode #12: comm ls: deleted inode referenced: 13"),
                ..Fields::default()
            },
        );
        assert_head(
            "EXT4-fs (mmcblk0p2): Remounting filesystem read-only",
            EventKind::FsReadonly,
            Fields {
                fs: s("ext4"),
                device: s("mmcblk0p2"),
                detail: s("Remounting filesystem read-only"),
                ..Fields::default()
            },
        );
        let v = verdict("Aborting journal on device dm-0-8.");
        assert_eq!(v.kind, Some(EventKind::FsError));
        assert_eq!(v.fields.device.as_deref(), Some("dm-0"));
        // Mount notices are not errors.
        for line in [
            "EXT4-fs (mmcblk0p2): mounted filesystem with ordered data mode. Quota mode: none.",
            "EXT4-fs (sda1): re-mounted. Opts: (null)",
            "EXT4-fs warning (device sda1): ext4_dx_add_entry:2461: Directory (ino: 1234) index full, reach max htree level :2",
        ] {
            assert_eq!(verdict(line), LineVerdict::none(), "{line:?}");
        }
    }

    #[test]
    fn xfs_shutdown_with_its_advice_is_one_event() {
        let (verdicts, events) = run(&[
            "XFS (loop1): User initiated shutdown received.",
            "XFS (loop1): Log I/O Error (0x6) detected at xfs_fs_goingdown+0x59/0xf0 [xfs] (fs/xfs/xfs_fsops.c:470).  Shutting down filesystem.",
            "XFS (loop1): Please unmount the filesystem and rectify the problem(s)",
        ]);
        assert!(!verdicts[1].continuation, "a second error is its own event");
        assert!(verdicts[2].continuation);
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].fields.device.as_deref(), Some("loop1"));
        assert_eq!(events[1].lines, 2);
    }

    #[test]
    fn btrfs_levels_decide() {
        assert_eq!(
            verdict("BTRFS error (device sdb state EA): bdev /dev/sdb errs: wr 1, rd 0, flush 0, corrupt 0, gen 0").kind,
            Some(EventKind::FsError)
        );
        assert_eq!(
            verdict("BTRFS warning (device sdb): csum failed root 5 ino 257 off 0 csum 0x1 expected csum 0x2 mirror 1").kind,
            Some(EventKind::FsError)
        );
        assert_eq!(
            verdict("BTRFS info (device sdb): using crc32c (crc32c-generic) checksum algorithm"),
            LineVerdict::none()
        );
    }

    #[test]
    fn older_kernels_journal_and_writeback_errors_name_their_device() {
        for (line, fs, dev) in [
            (
                "JBD2: Error -5 detected when updating journal superblock for sdb1-8.",
                "jbd2",
                Some("sdb1"),
            ),
            (
                "JBD2: I/O error detected when updating journal superblock for dm-3:8.",
                "jbd2",
                Some("dm-3"),
            ),
            ("Aborting journal on device dm-3:8.", "jbd2", Some("dm-3")),
            ("journal commit I/O error", "jbd2", None),
            (
                "EXT4-fs warning (device sdb8): ext4_end_bio:258: I/O error writing to inode 8520021 (offset 0 size 4096 starting block 155716958)",
                "ext4",
                Some("sdb8"),
            ),
            (
                "EXT4-fs warning (device sda1): ext4_end_bio:332: I/O error -5 writing to inode 12 (offset 8192 size 4096 starting block 34)",
                "ext4",
                Some("sda1"),
            ),
        ] {
            let v = verdict(line);
            assert_eq!(v.kind, Some(EventKind::FsError), "{line:?}");
            assert_eq!(v.fields.fs.as_deref(), Some(fs), "{line:?}");
            assert_eq!(v.fields.device.as_deref(), dev, "{line:?}");
        }
        for line in [
            "journal commit I/O error in myapp",
            "JBD2: Error x detected when updating journal superblock for sdb1-8.",
        ] {
            assert_eq!(verdict(line), LineVerdict::none(), "{line:?}");
        }
    }

    #[test]
    fn btrfs_forced_readonly_is_a_read_only_switch_of_its_device() {
        for line in [
            "BTRFS info (device sdb1 state EA): forced readonly",
            "BTRFS info (device sdb1): forced readonly",
        ] {
            assert_head(
                line,
                EventKind::FsReadonly,
                Fields {
                    fs: s("btrfs"),
                    device: s("sdb1"),
                    detail: s("forced readonly"),
                    ..Fields::default()
                },
            );
        }
        for line in [
            "BTRFS warning (device sdb1): forced readonly",
            "BTRFS info (device sdb1): forced readonly by the operator",
        ] {
            assert_eq!(verdict(line), LineVerdict::none(), "{line}");
        }
    }
}
