//! `/proc/self/mountinfo` parsing, for the hung-mount detector (which mounts to watch) and the
//! memory detector (where the cgroup hierarchies are).
//!
//! A line (proc(5), `fs/proc_namespace.c: show_mountinfo`) looks like
//!
//! ```text
//! 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//! (1)(2) (3)  (4)   (5)     (6)      (7)    (8) (9)   (10)       (11)
//! ```
//!
//! mount id, parent id, major:minor, root of the mount inside its filesystem, mount point,
//! per-mount options, zero or more optional fields ended by `-`, fstype (with a `.subtype`
//! for FUSE, e.g. `fuse.sshfs`), source, per-superblock options. The kernel escapes space,
//! tab, newline and backslash in paths, source and option values as `\ooo` octal, so fields
//! are separated by exactly one space; an empty source shows as two spaces in a row and is
//! kept as an empty field. Everything else may be arbitrary bytes, so the parser takes
//! `&[u8]` and paths come out as `PathBuf` without a UTF-8 detour.
//!
//! Why this matters: tasks touching a *hard* NFS mount whose server stalls wait in D state
//! holding kernel locks, and can take the whole node down with them. Hard is
//! the NFS default, and the kernel prints `hard` in the superblock options unless `soft` or
//! `softerr` was asked for, so [`is_hard_nfs`] reads exactly that.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// The fstypes the kernel NFS client registers (NFSv2/3 and NFSv4).
const NFS_FSTYPES: &[&str] = &["nfs", "nfs4"];

/// NFS options that turn a mount soft: requests time out instead of retrying forever
/// (nfs(5)); `softreval` is not one of them.
const NFS_SOFT_OPTIONS: &[&str] = &["soft", "softerr"];

/// Fields before the optional ones: id, parent, major:minor, root, mount point, options.
const FIXED_HEAD_FIELDS: usize = 6;

/// One mount, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountEntry {
    pub(crate) mount_id: u32,
    pub(crate) parent_id: u32,
    pub(crate) major: u32,
    pub(crate) minor: u32,
    /// The directory of the filesystem this mount shows; not `/` for a bind of a subtree.
    pub(crate) root: PathBuf,
    pub mount_point: PathBuf,
    /// Per-mount options (`rw`, `nosuid`, `relatime`, ...).
    pub(crate) mount_options: Vec<String>,
    /// Propagation tags: `shared:N`, `master:N`, `propagate_from:N`, `unbindable`.
    pub(crate) optional_fields: Vec<String>,
    /// Type with FUSE subtype, e.g. `nfs4` or `fuse.sshfs`.
    pub fstype: String,
    pub(crate) source: String,
    /// Per-superblock options (`vers=4.2`, `hard`, `proto=tcp`, ...).
    pub(crate) super_options: Vec<String>,
}

impl MountEntry {
    /// True for a bind mount of a subdirectory (kubelet's NFS volume binds look like this).
    /// A bind of a filesystem's own root cannot be told apart from the original mount.
    pub(crate) fn is_subtree_bind(&self) -> bool {
        self.root != Path::new("/")
    }

    pub(crate) fn is_nfs(&self) -> bool {
        NFS_FSTYPES.contains(&self.fstype.as_str())
    }

    /// True when `name` appears as a flag (`hard`) or key (`vers=4.2`) in either option list.
    pub(crate) fn has_option(&self, name: &str) -> bool {
        self.mount_options
            .iter()
            .chain(&self.super_options)
            .any(|o| option_name(o) == name)
    }

    #[cfg(test)]
    /// The value of `key=value` from the superblock options, falling back to mount options.
    pub(crate) fn option_value(&self, key: &str) -> Option<&str> {
        self.super_options
            .iter()
            .chain(&self.mount_options)
            .find_map(|o| match o.split_once('=') {
                Some((k, v)) if k == key => Some(v),
                _ => None,
            })
    }
}

fn option_name(option: &str) -> &str {
    option.split_once('=').map_or(option, |(k, _)| k)
}

/// An NFS mount is hard unless `soft` or `softerr` is set: hard is the NFS default, and a
/// hard mount whose server stops answering blocks every caller in D state forever.
pub(crate) fn is_hard_nfs(entry: &MountEntry) -> bool {
    entry.is_nfs() && !NFS_SOFT_OPTIONS.iter().any(|o| entry.has_option(o))
}

/// The unprivileged owner of a FUSE mount: its `user_id=` superblock option when that is not
/// 0. `fusermount` records the mounting user there, so a mount any user made for
/// themselves (sshfs, a FUSE daemon that stops answering on purpose) is told apart from one
/// root made. A FUSE mount without `user_id=` is treated as root's. Not a FUSE mount: `None`.
pub(crate) fn unprivileged_fuse_owner(entry: &MountEntry) -> Option<u32> {
    let fuse =
        entry.fstype == "fuse" || entry.fstype == "fuseblk" || entry.fstype.starts_with("fuse.");
    if !fuse {
        return None;
    }
    let uid = entry
        .super_options
        .iter()
        .chain(&entry.mount_options)
        .find_map(|o| o.strip_prefix("user_id="))?;
    match uid.parse::<u32>() {
        Ok(0) => None,
        Ok(uid) => Some(uid),
        // Unreadable: not provably root's, so not trusted as root's.
        Err(_) => Some(u32::MAX),
    }
}

/// The parsed mount table plus how many lines could not be understood.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MountTable {
    pub entries: Vec<MountEntry>,
    /// Lines skipped because they did not have the mountinfo shape.
    pub(crate) malformed: usize,
}

/// Parses the full text of `/proc/<pid>/mountinfo`. Never panics; malformed lines are skipped
/// and counted.
pub fn parse_mountinfo(text: &[u8]) -> MountTable {
    let mut table = MountTable::default();
    for line in text.split(|&b| b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_line(line) {
            Some(entry) => table.entries.push(entry),
            None => table.malformed += 1,
        }
    }
    table
}

fn parse_line(line: &[u8]) -> Option<MountEntry> {
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    if fields.len() < FIXED_HEAD_FIELDS + 4 {
        return None;
    }
    let mount_id = parse_u32(fields[0])?;
    let parent_id = parse_u32(fields[1])?;
    let (major, minor) = {
        let text = std::str::from_utf8(fields[2]).ok()?;
        let (ma, mi) = text.split_once(':')?;
        (ma.parse().ok()?, mi.parse().ok()?)
    };
    let root = path_field(fields[3])?;
    let mount_point = path_field(fields[4])?;
    let mount_options = split_options(fields[5]);

    let rest = &fields[FIXED_HEAD_FIELDS..];
    let sep = rest.iter().position(|f| *f == b"-")?;
    let optional_fields = rest[..sep].iter().map(|f| lossy(&unescape(f))).collect();
    // Exactly three fields follow the separator today; tolerate more from future kernels.
    let tail = &rest[sep + 1..];
    if tail.len() < 3 || tail[0].is_empty() {
        return None;
    }
    Some(MountEntry {
        mount_id,
        parent_id,
        major,
        minor,
        root,
        mount_point,
        mount_options,
        optional_fields,
        fstype: lossy(&unescape(tail[0])),
        source: lossy(&unescape(tail[1])),
        super_options: split_options(tail[2]),
    })
}

fn parse_u32(field: &[u8]) -> Option<u32> {
    std::str::from_utf8(field).ok()?.parse().ok()
}

/// Paths in mountinfo are always absolute; anything else means the line is damaged.
fn path_field(field: &[u8]) -> Option<PathBuf> {
    if field.first() != Some(&b'/') {
        return None;
    }
    Some(PathBuf::from(OsStr::from_bytes(&unescape(field))))
}

/// Option values escape `,` too (`seq_show_option`), so splitting before unescaping is safe.
fn split_options(field: &[u8]) -> Vec<String> {
    if field.is_empty() {
        return Vec::new();
    }
    field
        .split(|&b| b == b',')
        .map(|o| lossy(&unescape(o)))
        .collect()
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Undoes the kernel's `\ooo` octal escaping (`\040` space, `\011` tab, `\012` newline,
/// `\134` backslash). A backslash not followed by three octal digits is kept as is.
pub(crate) fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && let Some(digits) = field.get(i + 1..i + 4)
            && digits.iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let value = digits
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            // `\777` does not fit a byte and is not something the kernel emits: keep it.
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) const HARD_NFS4: &str = "812 27 0:61 / /mnt/backup rw,relatime shared:410 - nfs4 \
        nas.lan:/volume1/backup rw,vers=4.2,rsize=131072,wsize=131072,namlen=255,hard,\
        proto=tcp,timeo=600,retrans=2,sec=sys,clientaddr=192.168.1.20,local_lock=none,addr=192.168.1.10";
    pub(crate) const SOFT_NFS3: &str = "95 27 0:48 / /srv/media ro,nosuid,nodev,noexec,relatime - nfs \
        10.0.0.5:/export/media ro,vers=3,rsize=65536,wsize=65536,namlen=255,soft,proto=udp,\
        timeo=11,retrans=3,sec=sys,mountaddr=10.0.0.5,mountvers=3,mountport=20048,mountproto=udp,\
        local_lock=none,addr=10.0.0.5";
    pub(crate) const SSHFS: &str = "140 27 0:52 / /home/pi/remote\\040files rw,nosuid,nodev,relatime \
        shared:77 master:3 - fuse.sshfs pi@builder:/srv rw,user_id=1000,group_id=1000";
    pub(crate) const EXT4_ROOT: &str =
        "27 1 179:2 / / rw,noatime shared:1 - ext4 /dev/mmcblk0p2 rw";

    fn one(line: &str) -> MountEntry {
        let t = parse_mountinfo(line.as_bytes());
        assert_eq!(t.malformed, 0, "line should parse: {line}");
        assert_eq!(t.entries.len(), 1);
        t.entries.into_iter().next().unwrap()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_fuse_mounts_with_a_nonzero_user_id_have_an_unprivileged_owner() {
        let owner = |line: &str| {
            let t = parse_mountinfo(line.as_bytes());
            unprivileged_fuse_owner(&t.entries[0])
        };
        assert_eq!(owner(SSHFS), Some(1000));
        assert_eq!(
            owner("60 38 0:70 / /mnt/h rw - fuse.x x rw,user_id=0,group_id=0"),
            None
        );
        assert_eq!(
            owner("60 38 0:70 / /mnt/h rw - fuseblk /dev/sdb1 rw,user_id=65534"),
            Some(65534)
        );
        assert_eq!(
            owner("60 38 0:70 / /mnt/h rw - fuse x rw,user_id=junk"),
            Some(u32::MAX)
        );
        // No user_id= at all: root's; and the option means nothing on other filesystems.
        assert_eq!(owner("60 38 0:70 / /mnt/h rw - fuse.x x rw"), None);
        assert_eq!(
            owner("60 38 0:70 / /mnt/h rw - nfs4 nas:/x rw,user_id=1000"),
            None
        );
    }

    #[test]
    fn hard_nfs4_line_yields_every_field() {
        let e = one(HARD_NFS4);
        assert_eq!(e.mount_id, 812);
        assert_eq!(e.parent_id, 27);
        assert_eq!((e.major, e.minor), (0, 61));
        assert_eq!(e.root, PathBuf::from("/"));
        assert_eq!(e.mount_point, PathBuf::from("/mnt/backup"));
        assert_eq!(e.mount_options, strings(&["rw", "relatime"]));
        assert_eq!(e.optional_fields, strings(&["shared:410"]));
        assert_eq!(e.fstype, "nfs4");
        assert_eq!(e.source, "nas.lan:/volume1/backup");
        assert_eq!(e.super_options.len(), 13);
        assert_eq!(e.super_options[0], "rw");
        assert_eq!(e.super_options[12], "addr=192.168.1.10");
        assert_eq!(e.option_value("vers"), Some("4.2"));
        assert_eq!(e.option_value("timeo"), Some("600"));
        assert!(e.has_option("hard"));
        assert!(!e.is_subtree_bind());
        assert!(is_hard_nfs(&e));
    }

    #[test]
    fn soft_nfs3_mount_is_not_hard() {
        let e = one(SOFT_NFS3);
        assert_eq!(e.fstype, "nfs");
        assert_eq!(e.source, "10.0.0.5:/export/media");
        assert_eq!(
            e.mount_options,
            strings(&["ro", "nosuid", "nodev", "noexec", "relatime"])
        );
        assert!(e.optional_fields.is_empty());
        assert_eq!(e.option_value("proto"), Some("udp"));
        assert!(!is_hard_nfs(&e));
    }

    #[test]
    fn softerr_makes_an_nfs_mount_soft_but_softreval_does_not() {
        let softerr = HARD_NFS4.replace(",hard,", ",softerr,");
        assert!(!is_hard_nfs(&one(&softerr)));
        let softreval = HARD_NFS4.replace(",hard,", ",hard,softreval,");
        assert!(is_hard_nfs(&one(&softreval)));
    }

    #[test]
    fn nfs_without_any_hard_or_soft_option_counts_as_hard_because_hard_is_the_default() {
        let e = one("300 27 0:70 / /mnt/old rw - nfs old:/x rw,vers=3,proto=tcp");
        assert!(is_hard_nfs(&e));
    }

    #[test]
    fn soft_in_the_per_mount_options_also_counts() {
        let e = one("301 27 0:71 / /mnt/odd rw,soft - nfs4 old:/x rw,vers=4.1");
        assert!(!is_hard_nfs(&e));
    }

    #[test]
    fn non_nfs_mounts_are_never_hard_nfs() {
        assert!(!is_hard_nfs(&one(SSHFS)));
        assert!(!is_hard_nfs(&one(EXT4_ROOT)));
        // cifs has its own "hard" option, but it is not NFS.
        assert!(!is_hard_nfs(&one(
            "400 27 0:80 / /mnt/win rw - cifs //pc/share rw,vers=3.1.1,hard"
        )));
    }

    #[test]
    fn escaped_space_in_mount_point_and_several_optional_fields_are_decoded() {
        let e = one(SSHFS);
        assert_eq!(e.mount_point, PathBuf::from("/home/pi/remote files"));
        assert_eq!(e.optional_fields, strings(&["shared:77", "master:3"]));
        assert_eq!(e.fstype, "fuse.sshfs");
        assert_eq!(e.source, "pi@builder:/srv");
        assert_eq!(e.option_value("user_id"), Some("1000"));
    }

    #[test]
    fn tab_newline_and_backslash_escapes_are_decoded() {
        let e = one("50 27 0:40 / /mnt/a\\011b\\012c\\134d rw - tmpfs tmp\\040fs rw");
        assert_eq!(e.mount_point, PathBuf::from("/mnt/a\tb\nc\\d"));
        assert_eq!(e.source, "tmp fs");
    }

    #[test]
    fn escaped_comma_inside_an_option_value_stays_in_that_option() {
        let e =
            one("60 27 0:41 / /merged rw - overlay overlay rw,lowerdir=/a\\054b:/c,upperdir=/u");
        assert_eq!(
            e.super_options,
            strings(&["rw", "lowerdir=/a,b:/c", "upperdir=/u"])
        );
    }

    #[test]
    fn non_utf8_mount_point_bytes_survive() {
        let mut line = b"61 27 0:42 / /mnt/caf".to_vec();
        line.push(0xe9);
        line.extend_from_slice(b" rw - tmpfs tmpfs rw");
        let t = parse_mountinfo(&line);
        assert_eq!(t.malformed, 0);
        assert_eq!(
            t.entries[0].mount_point.as_os_str().as_bytes(),
            b"/mnt/caf\xe9"
        );
    }

    #[test]
    fn unescape_keeps_incomplete_or_non_octal_escapes() {
        assert_eq!(unescape(b"a\\04"), b"a\\04".to_vec());
        assert_eq!(unescape(b"a\\089"), b"a\\089".to_vec());
        assert_eq!(unescape(b"\\"), b"\\".to_vec());
        assert_eq!(unescape(b"\\777x"), b"\\777x".to_vec());
        assert_eq!(unescape(b"\\101\\102"), b"AB".to_vec());
    }

    #[test]
    fn bind_mount_of_a_subtree_keeps_its_root() {
        let e = one(
            "1203 1190 0:61 /volume1/backup/pods /var/lib/kubelet/pods/8f1c/volumes/\
             kubernetes.io~nfs/data rw,relatime shared:410 - nfs4 nas.lan:/volume1/backup \
             rw,vers=4.2,hard,proto=tcp",
        );
        assert_eq!(e.root, PathBuf::from("/volume1/backup/pods"));
        assert!(e.is_subtree_bind());
        assert!(is_hard_nfs(&e));
    }

    #[test]
    fn empty_source_shown_as_two_spaces_is_kept_as_an_empty_field() {
        let e = one("70 27 0:43 / /run/user/1000 rw - tmpfs  rw,size=100k");
        assert_eq!(e.fstype, "tmpfs");
        assert_eq!(e.source, "");
        assert_eq!(e.super_options, strings(&["rw", "size=100k"]));
    }

    #[test]
    fn malformed_lines_are_skipped_and_counted_while_good_lines_survive() {
        let text = format!(
            "{EXT4_ROOT}\n\
             garbage\n\
             x 27 0:1 / /a rw - tmpfs t rw\n\
             28 27 0-1 / /a rw - tmpfs t rw\n\
             29 27 0:1 relative /a rw - tmpfs t rw\n\
             30 27 0:1 / /a rw shared:1 tmpfs t rw\n\
             31 27 0:1 / /a rw - tmpfs t\n\
             32 27 0:1 / /a rw -  t rw\n\
             \n\
             {HARD_NFS4}\n"
        );
        let t = parse_mountinfo(text.as_bytes());
        assert_eq!(t.malformed, 7);
        assert_eq!(t.entries.len(), 2);
        assert_eq!(t.entries[0].mount_point, PathBuf::from("/"));
        assert_eq!(t.entries[1].fstype, "nfs4");
    }

    #[test]
    fn extra_fields_after_super_options_are_tolerated() {
        let e = one("33 27 0:1 / /a rw - tmpfs t rw future-field");
        assert_eq!(e.super_options, strings(&["rw"]));
    }

    proptest! {
        #[test]
        fn parser_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let t = parse_mountinfo(&bytes);
            let lines = bytes.split(|&b| b == b'\n').count();
            prop_assert!(t.entries.len() + t.malformed <= lines);
        }

        #[test]
        fn parser_never_panics_on_mountinfo_like_text(
            fields in proptest::collection::vec("[0-9:/a-z\\\\ ,=-]{0,12}", 0..14)
        ) {
            let _ = parse_mountinfo(fields.join(" ").as_bytes());
        }

        #[test]
        fn escaped_paths_round_trip(name in proptest::collection::vec(any::<u8>(), 1..40)) {
            let mut escaped = b"/".to_vec();
            for b in &name {
                match b {
                    b' ' | b'\t' | b'\n' | b'\\' => escaped.extend_from_slice(format!("\\{b:03o}").as_bytes()),
                    _ => escaped.push(*b),
                }
            }
            let mut expect = b"/".to_vec();
            expect.extend_from_slice(&name);
            prop_assert_eq!(unescape(&escaped), expect);
        }
    }
}
