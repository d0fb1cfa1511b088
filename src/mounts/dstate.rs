//! D-state census: how many tasks sit in uninterruptible sleep, and on what.
//!
//! A hung hard NFS mount shows up as a growing crowd of tasks in state
//! `D` whose `/proc/<pid>/wchan` names an NFS or SUNRPC wait (`rpc_wait_bit_killable`,
//! `nfs_wait_bit_killable`, ...); a dead FUSE daemon leaves them in `fuse_get_req` or
//! `request_wait_answer`. Counting them per wait class tells a storage hang apart from a
//! disk or driver stall (class `other`).
//!
//! Parsing and classification are pure. The `/proc` walk sits behind [`TaskSource`]; the
//! real one reads only `/proc/<pid>/stat` and `/proc/<pid>/wchan` (and the per-thread ones
//! under `task/`). Those files are generated from kernel task structures, so reading them
//! never touches a watched mount and cannot hang, unlike `cwd`, `exe`, `fd/` or `cmdline`.
//!
//! Only state `D` counts: FUSE requests that reached the daemon are first waited for
//! *interruptibly* (`S` in `request_wait_answer`), and every healthy FUSE daemon idles in
//! `S` in `fuse_dev_do_read`; counting `S` would report every idle daemon as hung.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
#[cfg(any(test, feature = "fakes"))]
use std::sync::atomic::{AtomicUsize, Ordering};
#[cfg(any(test, feature = "fakes"))]
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

#[cfg(test)]
/// Task ids kept per class: enough to name the culprits in an event without flooding it.
pub(crate) const DEFAULT_MAX_IDS_PER_CLASS: usize = 64;

/// Tasks read per walk at most. A Pi running k3s has a few thousand threads; beyond this
/// the walk itself becomes a load problem, so the census stays partial.
const MAX_TASKS_PER_WALK: usize = 65_536;

/// A stat line is a few hundred bytes; one buffer of this size serves the whole walk.
const STAT_BUF_BYTES: usize = 1024;

/// `/proc/<pid>/stat` state letter of uninterruptible (including killable) sleep.
const STATE_UNINTERRUPTIBLE: char = 'D';

/// Wait-channel prefixes of the NFS client, SUNRPC and the NFS lock client.
const NFS_WCHAN_PREFIXES: &[&str] = &[
    "nfs_", "nfs3_", "nfs4_", "nfs41_", "__nfs", "rpc_", "__rpc_", "rpcauth_", "xprt_", "nlmclnt_",
];
/// Wait-channel prefixes and names of the FUSE client.
const FUSE_WCHAN_PREFIXES: &[&str] = &["fuse_", "__fuse_"];
const FUSE_WCHAN_NAMES: &[&str] = &["request_wait_answer", "wait_answer_interruptible"];

/// The fields of `/proc/<pid>/stat` the census needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskStat {
    pub pid: u32,
    /// The command name, which may itself contain spaces and parentheses.
    pub comm: String,
    pub state: char,
    pub(crate) ppid: u32,
}

/// Parses `/proc/<pid>/stat`. The comm is delimited by the first `(` and the *last* `)`,
/// because comm may contain `)` (`1234 (a) b) D 1 ...`).
pub fn parse_stat(text: &str) -> Option<TaskStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    if close < open {
        return None;
    }
    let pid = text[..open].trim().parse().ok()?;
    let comm = text[open + 1..close].to_owned();
    let mut rest = text[close + 1..].split_whitespace();
    let mut state_chars = rest.next()?.chars();
    let state = state_chars.next()?;
    if state_chars.next().is_some() {
        return None;
    }
    let ppid = rest.next()?.parse().ok()?;
    Some(TaskStat {
        pid,
        comm,
        state,
        ppid,
    })
}

/// What a blocked task waits on, judged by its wait channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum WaitClass {
    Nfs,
    Fuse,
    Other,
}

/// Classifies a `/proc/<pid>/wchan` symbol. Compiler suffixes (`.isra.0`, `.constprop.0`)
/// and offsets (`+0x1c/0x40`) are ignored; `0` or an empty string (running) is `Other`.
pub fn classify_wchan(symbol: &str) -> WaitClass {
    let symbol = symbol.trim();
    let base = symbol.split(['.', '+']).next().unwrap_or(symbol);
    if NFS_WCHAN_PREFIXES.iter().any(|p| base.starts_with(p)) {
        WaitClass::Nfs
    } else if FUSE_WCHAN_PREFIXES.iter().any(|p| base.starts_with(p))
        || FUSE_WCHAN_NAMES.contains(&base)
    {
        WaitClass::Fuse
    } else {
        WaitClass::Other
    }
}

/// Blocked tasks of one wait class.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClassTally {
    pub count: usize,
    /// The first `max_ids` task ids seen, in walk order.
    pub ids: Vec<u32>,
}

/// Uninterruptible tasks per wait class.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Census {
    pub(crate) tasks_seen: usize,
    /// Tasks whose stat text did not parse (should stay 0).
    pub unparsable: usize,
    pub nfs: ClassTally,
    pub fuse: ClassTally,
    pub other: ClassTally,
}

impl Census {
    #[cfg(test)]
    pub(crate) fn tally(&self, class: WaitClass) -> &ClassTally {
        match class {
            WaitClass::Nfs => &self.nfs,
            WaitClass::Fuse => &self.fuse,
            WaitClass::Other => &self.other,
        }
    }

    #[cfg(test)]
    pub(crate) fn blocked_total(&self) -> usize {
        self.nfs.count + self.fuse.count + self.other.count
    }

    fn tally_mut(&mut self, class: WaitClass) -> &mut ClassTally {
        match class {
            WaitClass::Nfs => &mut self.nfs,
            WaitClass::Fuse => &mut self.fuse,
            WaitClass::Other => &mut self.other,
        }
    }
}

/// Counts tasks in state `D` per wait class over `(task id, stat text, wchan text)` tuples,
/// keeping at most `max_ids` ids per class.
pub(crate) fn census<'a, I>(tasks: I, max_ids: usize) -> Census
where
    I: IntoIterator<Item = (u32, &'a str, &'a str)>,
{
    let mut c = Census::default();
    for (id, stat, wchan) in tasks {
        c.tasks_seen += 1;
        let Some(parsed) = parse_stat(stat) else {
            c.unparsable += 1;
            continue;
        };
        if parsed.state != STATE_UNINTERRUPTIBLE {
            continue;
        }
        let tally = c.tally_mut(classify_wchan(wchan));
        tally.count += 1;
        if tally.ids.len() < max_ids {
            tally.ids.push(id);
        }
    }
    c
}

/// The raw text of one task's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawTask {
    /// The thread id (equal to the pid for a process's main thread).
    pub(crate) id: u32,
    pub(crate) stat: String,
    /// Empty unless the task is in D state ([`ProcTaskSource`] reads it only then).
    pub(crate) wchan: String,
}

/// Where task files come from.
pub trait TaskSource {
    /// One pass over the tasks. Tasks that vanish during the pass are left out.
    fn tasks(&self) -> io::Result<Vec<RawTask>>;
}

/// Runs one census over `source`.
pub fn take_census(source: &dyn TaskSource, max_ids: usize) -> io::Result<Census> {
    let tasks = source.tasks()?;
    Ok(census(
        tasks
            .iter()
            .map(|t| (t.id, t.stat.as_str(), t.wchan.as_str())),
        max_ids,
    ))
}

/// Reads `<root>/<pid>/{stat,wchan}`, or with threads `<root>/<pid>/task/<tid>/{stat,wchan}`.
#[derive(Debug, Clone)]
pub struct ProcTaskSource {
    root: PathBuf,
    threads: bool,
}

impl ProcTaskSource {
    /// A source rooted at `root` (normally `/proc`) that walks every thread: a daemon's
    /// worker threads block on a mount as readily as its main thread.
    pub fn new(root: impl Into<PathBuf>) -> ProcTaskSource {
        ProcTaskSource {
            root: root.into(),
            threads: true,
        }
    }

    #[cfg(test)]
    /// Only main threads (`<root>/<pid>`): a cheaper walk.
    pub(crate) fn processes_only(mut self) -> ProcTaskSource {
        self.threads = false;
        self
    }

    /// Reads one task's `stat`, and its `wchan` only when the task is in D state: the
    /// census classifies nothing else, and skipping the second open/read/close for every
    /// running or sleeping task is most of the walk's cost. `buf` is reused across tasks.
    fn read_task(dir: &mut PathBuf, id: u32, buf: &mut Vec<u8>) -> Option<RawTask> {
        // A task that exits mid-walk makes these reads fail (ENOENT/ESRCH): skip it.
        dir.push("stat");
        let ok = read_into(dir, buf);
        dir.pop();
        ok.ok()?;
        let stat = String::from_utf8_lossy(buf).into_owned();
        let wchan = if state_of(&stat) == Some(STATE_UNINTERRUPTIBLE) {
            dir.push("wchan");
            let ok = read_into(dir, buf);
            dir.pop();
            match ok {
                Ok(()) => String::from_utf8_lossy(buf).into_owned(),
                Err(_) => String::new(),
            }
        } else {
            String::new()
        };
        Some(RawTask { id, stat, wchan })
    }
}

/// The state letter of a stat line, without parsing the rest.
fn state_of(stat: &str) -> Option<char> {
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

fn read_into(path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    fs::File::open(path)?.read_to_end(buf).map(drop)
}

fn numeric_entries(dir: &Path) -> io::Result<Vec<u32>> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        if let Some(id) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

impl TaskSource for ProcTaskSource {
    fn tasks(&self) -> io::Result<Vec<RawTask>> {
        let pids = numeric_entries(&self.root).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("list tasks in {}: {e}", self.root.display()),
            )
        })?;
        let mut out = Vec::new();
        let mut buf = Vec::with_capacity(STAT_BUF_BYTES);
        let mut dir = self.root.clone();
        for pid in pids {
            if out.len() >= MAX_TASKS_PER_WALK {
                break;
            }
            dir.push(pid.to_string());
            if !self.threads {
                out.extend(Self::read_task(&mut dir, pid, &mut buf));
                dir.pop();
                continue;
            }
            dir.push("task");
            // A process that exited has no task/ any more.
            let tids = numeric_entries(&dir).unwrap_or_default();
            for tid in tids {
                if out.len() >= MAX_TASKS_PER_WALK {
                    break;
                }
                dir.push(tid.to_string());
                out.extend(Self::read_task(&mut dir, tid, &mut buf));
                dir.pop();
            }
            dir.pop();
            dir.pop();
        }
        Ok(out)
    }
}

#[cfg(any(test, feature = "fakes"))]
/// A [`TaskSource`] serving tasks the test sets, counting how often it was read.
#[derive(Debug, Default)]
pub struct FakeTaskSource {
    tasks: Mutex<Vec<RawTask>>,
    reads: AtomicUsize,
}

#[cfg(any(test, feature = "fakes"))]
impl FakeTaskSource {
    pub fn new(tasks: Vec<RawTask>) -> FakeTaskSource {
        FakeTaskSource {
            tasks: Mutex::new(tasks),
            reads: AtomicUsize::new(0),
        }
    }

    /// What the next walks return.
    pub fn set(&self, tasks: Vec<RawTask>) {
        *self.tasks.lock().unwrap_or_else(PoisonError::into_inner) = tasks;
    }

    pub fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }
}

#[cfg(any(test, feature = "fakes"))]
impl TaskSource for FakeTaskSource {
    fn tasks(&self) -> io::Result<Vec<RawTask>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        Ok(self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NFS_STUCK: &str = "4711 (rsync) D 4700 4700 1203 0 -1 4194560 912 0 0 0 3 41 0 0 20 0 1 0 \
        88123 12345678 912 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 2 0 0 53 0 0";
    const FUSE_STUCK: &str = "5120 (stat) D 5100 5120 1203 34816 5120 4194304 95 0 0 0 0 0 0 0 20 0 1 \
        0 990001 8417280 180 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
    const SLEEPING: &str = "1 (systemd) S 0 1 1 0 -1 4194560 41230 1938102 118 1622 281 160 9870 2877 \
        20 0 1 0 5 173182976 3062 18446744073709551615 1 1 0 0 0 0 671173123 4096 1260 0 0 0 17 0 0 0 0 0 0";

    #[test]
    fn stat_fields_are_read_from_an_ordinary_line() {
        assert_eq!(
            parse_stat(NFS_STUCK),
            Some(TaskStat {
                pid: 4711,
                comm: "rsync".into(),
                state: 'D',
                ppid: 4700
            })
        );
    }

    #[test]
    fn comm_with_spaces_and_closing_parentheses_is_taken_up_to_the_last_paren() {
        let s = parse_stat("812 (tmux: server) S 1 812 812 0 -1 4194560 0").unwrap();
        assert_eq!(
            (s.pid, s.comm.as_str(), s.state, s.ppid),
            (812, "tmux: server", 'S', 1)
        );
        let s = parse_stat("99 (a) b) (c)) D 98 99").unwrap();
        assert_eq!((s.comm.as_str(), s.state, s.ppid), ("a) b) (c)", 'D', 98));
        let s = parse_stat("7 () R 2 0").unwrap();
        assert_eq!((s.comm.as_str(), s.state), ("", 'R'));
    }

    #[test]
    fn damaged_stat_lines_do_not_parse() {
        for bad in [
            "",
            "4711 rsync D 1",
            "x (rsync) D 1",
            "4711 (rsync)",
            "4711 (rsync) DD 1",
            "4711 (rsync) D",
            "4711 (rsync) D x",
            "4711 )rsync( D 1",
        ] {
            assert_eq!(parse_stat(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn nfs_and_sunrpc_wait_channels_are_class_nfs() {
        for w in [
            "rpc_wait_bit_killable",
            "nfs_wait_bit_killable",
            "__rpc_execute",
            "nfs4_wait_clnt_recover",
            "nfs3_proc_getattr",
            "nfs_page_async_flush",
            "__nfs_revalidate_inode",
            "nlmclnt_block",
            "rpc_wait_bit_killable.isra.0",
            "xprt_reserve\n",
        ] {
            assert_eq!(classify_wchan(w), WaitClass::Nfs, "{w:?}");
        }
    }

    #[test]
    fn fuse_wait_channels_are_class_fuse() {
        for w in [
            "fuse_get_req",
            "request_wait_answer",
            "__fuse_simple_request",
            "fuse_wait_on_page_writeback",
            "request_wait_answer+0x1c4/0x2a0",
        ] {
            assert_eq!(classify_wchan(w), WaitClass::Fuse, "{w:?}");
        }
    }

    #[test]
    fn everything_else_is_class_other_including_nfsd_and_lookalikes() {
        for w in [
            "io_schedule",
            "folio_wait_bit_common",
            "jbd2_log_wait_commit",
            "nfsd",
            "nfsd4_cb_recall",
            "rpcbind_x",
            "0",
            "",
            "fusexx",
            "my_request_wait_answer",
        ] {
            assert_eq!(classify_wchan(w), WaitClass::Other, "{w:?}");
        }
    }

    #[test]
    fn census_counts_only_uninterruptible_tasks_per_class() {
        let tasks = vec![
            (4711, NFS_STUCK, "rpc_wait_bit_killable"),
            (4712, NFS_STUCK, "nfs_wait_bit_killable"),
            (5120, FUSE_STUCK, "fuse_get_req"),
            (300, "300 (kworker/u8:2+flush-179:0) D 2 0", "io_schedule"),
            (1, SLEEPING, "ep_poll"),
            (777, "777 (sshfs) S 1 777", "fuse_dev_do_read"),
            (8, "garbage", "rpc_wait_bit_killable"),
        ];
        let c = census(tasks, DEFAULT_MAX_IDS_PER_CLASS);
        assert_eq!(c.tasks_seen, 7);
        assert_eq!(c.unparsable, 1);
        assert_eq!(
            c.nfs,
            ClassTally {
                count: 2,
                ids: vec![4711, 4712]
            }
        );
        assert_eq!(
            c.fuse,
            ClassTally {
                count: 1,
                ids: vec![5120]
            }
        );
        assert_eq!(
            c.other,
            ClassTally {
                count: 1,
                ids: vec![300]
            }
        );
        assert_eq!(c.blocked_total(), 4);
        assert_eq!(c.tally(WaitClass::Fuse).count, 1);
    }

    #[test]
    fn census_keeps_counting_past_the_id_bound() {
        let stats: Vec<String> = (0..10).map(|i| format!("{i} (cp) D 1 1")).collect();
        let c = census(
            stats
                .iter()
                .enumerate()
                .map(|(i, s)| (i as u32, s.as_str(), "rpc_wait_bit_killable")),
            3,
        );
        assert_eq!(c.nfs.count, 10);
        assert_eq!(c.nfs.ids, vec![0, 1, 2]);
    }

    #[test]
    fn take_census_reads_the_source_once() {
        let src = FakeTaskSource::new(vec![RawTask {
            id: 5120,
            stat: FUSE_STUCK.into(),
            wchan: "fuse_get_req".into(),
        }]);
        let c = take_census(&src, 8).unwrap();
        assert_eq!(c.fuse.ids, vec![5120]);
        assert_eq!(src.reads(), 1);
    }

    /// A private proc tree: processes 10 (two threads, one stuck) and 20 (gone mid-walk).
    fn fake_proc_tree() -> PathBuf {
        let root = std::env::temp_dir().join(format!(
            "nodemedic-dstate-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&root);
        let write = |rel: &str, text: &str| {
            let p = root.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        };
        write("10/stat", "10 (backup (nightly)) S 1 10");
        write("10/wchan", "do_wait");
        write("10/task/10/stat", "10 (backup (nightly)) S 1 10");
        write("10/task/10/wchan", "do_wait");
        write("10/task/11/stat", "11 (backup (nightly)) D 1 10");
        write("10/task/11/wchan", "rpc_wait_bit_killable");
        fs::create_dir_all(root.join("20")).unwrap(); // exited: no task/ and no stat
        fs::create_dir_all(root.join("self")).unwrap(); // not a pid
        write("cpuinfo", "x");
        root
    }

    #[test]
    fn proc_source_walks_threads_and_skips_vanished_and_non_numeric_entries() {
        let root = fake_proc_tree();
        let tasks = ProcTaskSource::new(&root).tasks().unwrap();
        let ids: Vec<u32> = tasks.iter().map(|t| t.id).collect();
        assert_eq!(ids, vec![10, 11]);
        assert_eq!(tasks[1].wchan, "rpc_wait_bit_killable");
        assert_eq!(
            tasks[0].wchan, "",
            "wchan is only read for tasks in D state"
        );
        let c = take_census(&ProcTaskSource::new(&root), 8).unwrap();
        assert_eq!(c.nfs.ids, vec![11]);

        let procs = ProcTaskSource::new(&root).processes_only().tasks().unwrap();
        assert_eq!(procs.len(), 1);
        assert_eq!(procs[0].stat, "10 (backup (nightly)) S 1 10");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn proc_source_names_the_root_when_it_cannot_be_listed() {
        let err = ProcTaskSource::new("/nonexistent/proc")
            .tasks()
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("/nonexistent/proc"));
    }

    #[test]
    fn real_proc_shows_this_test_thread_and_parses_every_task() {
        let tasks = ProcTaskSource::new("/proc").tasks().unwrap();
        let me = std::process::id();
        assert!(tasks.iter().any(|t| t.id == me));
        let c = census(
            tasks
                .iter()
                .map(|t| (t.id, t.stat.as_str(), t.wchan.as_str())),
            8,
        );
        assert_eq!(c.unparsable, 0);
        assert_eq!(c.tasks_seen, tasks.len());
    }

    proptest! {
        #[test]
        fn stat_parser_never_panics(text in "\\PC{0,80}") {
            let _ = parse_stat(&text);
        }

        #[test]
        fn any_comm_round_trips(comm in "[^\\n]{0,16}", state in "[RSDZTtIXPW]", pid in any::<u32>()) {
            let text = format!("{pid} ({comm}) {state} 1 2 3");
            let s = parse_stat(&text).unwrap();
            prop_assert_eq!(s.pid, pid);
            prop_assert_eq!(s.comm, comm);
            prop_assert_eq!(s.state.to_string(), state);
        }

        #[test]
        fn classifier_never_panics(symbol in "\\PC{0,40}") {
            let _ = classify_wchan(&symbol);
        }
    }
}

#[cfg(test)]
mod walk_cost {
    use super::*;

    /// Not a test: prints the cost of one walk of this machine's /proc
    /// (`cargo test --release --lib -- --ignored --nocapture census_walk_cost`).
    #[test]
    #[ignore]
    fn census_walk_cost() {
        let src = ProcTaskSource::new("/proc");
        let n = 200;
        let t0 = std::time::Instant::now();
        let mut tasks = 0;
        for _ in 0..n {
            tasks = take_census(&src, 16).unwrap().tasks_seen;
        }
        let per = t0.elapsed() / n;
        println!("census walk: {tasks} tasks, {per:?} per walk");
    }
}
