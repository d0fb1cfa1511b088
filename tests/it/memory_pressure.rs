//! The memory detector inside the running daemon, fed real signals.
//!
//! With PSI: a workload thrashing in a memory-limited cgroup, named as `[memory]
//! watched_cgroup`, must raise `MemoryPressure`; stopping it must clear the condition, but
//! not before the calm period. Everything asserted about stalls uses the kernel's `total=`
//! counters, never the `avg10` that refreshes every 2 s. Needs root, a memory-limited
//! cgroup, cgroup2 with PSI, `cc` and `mkswap`/`swapon` (skips loudly elsewhere, fails under
//! CI). Runs serially: it turns on machine-wide swap.
//!
//! Without PSI (the Raspberry Pi default): a fixture host root with no `proc/pressure` and
//! a low MemAvailable must raise the condition through the fallback, and `check` must say
//! how to enable PSI.
//!
//! # The pressure recipe
//! A memory limit alone gives little pressure: without swap the kernel OOM-kills, and page
//! cache is cheap to drop. What stalls steadily: a 64 MiB limit, swap to push the excess
//! to, and one process writing random pages of a 192 MiB mapping, so about two writes in
//! three fault a page back in from swap. Measured on the 6.18 test VM: the cgroup's `some`
//! stall grows by 10-15% of wall time from the first seconds on, and nothing is OOM-killed.
//!
//! # Per-cgroup PSI on a hybrid hierarchy
//! `memory.pressure` exists only on cgroup2, but PSI is kept per cgroup2 group whether or not
//! the memory controller is attached there. So where memory is a v1 controller (the
//! `/sys/fs/cgroup/memory` + `/sys/fs/cgroup/unified` layout), the workload joins two
//! groups: a v1 memory group that limits it and an empty cgroup2 group whose
//! `memory.pressure` measures it. That cgroup2 directory is what `watched_cgroup` names.
//! On a pure cgroup2 machine one group does both (`memory.max`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::kernel_kmsg::metric;
use super::support::{BIN, Daemon, is_root, remove_cgroups, require};

/// The workload's memory limit: a third of its mapping, so most writes fault.
const LIMIT_BYTES: u64 = 64 << 20;
/// The mapping the workload writes to at random.
const MAPPING_MIB: u64 = 192;
/// Room for the 128 MiB that does not fit under the limit, with a wide margin: a full
/// swap would end in an OOM kill instead of pressure.
const SWAP_BYTES: u64 = 1 << 30;
/// Stall share that raises the condition in this test: the workload stalls 10-15% of the
/// time, so 3% still raises on a busy CI machine where it gets less CPU.
const RAISE_PERCENT: u32 = 3;
/// Short timings so the test takes seconds: sample every second, judge 4 s windows...
const INTERVAL: &str = "1s";
const WINDOW: Duration = Duration::from_secs(4);
/// ...raise after 3 s over the threshold...
const SUSTAIN: Duration = Duration::from_secs(3);
/// ...and clear after 6 s calm.
const CALM: Duration = Duration::from_secs(6);
/// Populating 192 MiB through swap and then a window plus sustain: ~15 s on the test VM.
const RAISE_DEADLINE: Duration = Duration::from_secs(90);
/// A window for the stall ratio to fall, the calm period, and slack for a loaded machine.
const CLEAR_DEADLINE: Duration = Duration::from_secs(60);
/// How far the daemon's last sample may lag a scrape on a loaded machine.
const SAMPLE_LAG: Duration = Duration::from_secs(5);
/// `nodemedic_memory_stall_seconds_total` is a float sum of increments; allow 1 ms of
/// rounding against the kernel's microseconds.
const COUNTER_SLACK_US: f64 = 1000.0;
/// How often the test polls the daemons and the cgroup's counters.
const POLL: Duration = Duration::from_millis(250);

/// Random page writes over a mapping; waits for one byte on stdin first, so the test can
/// move it into its cgroups before it allocates anything that would be charged elsewhere.
const WORKLOAD_C: &str = r#"
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv) {
    char go;
    if (argc != 2 || read(0, &go, 1) != 1) return 2;
    size_t len = (size_t)strtoul(argv[1], 0, 10) << 20;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    unsigned char *p = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 3;
    /* 4 KiB pages: a huge page would turn one fault into 2 MiB of swap-in. */
    madvise(p, len, MADV_NOHUGEPAGE);
    size_t pages = len / page;
    for (size_t i = 0; i < pages; i++) p[i * page] = 1;
    uint64_t x = 88172645463325252ull; /* xorshift64 */
    for (;;) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[(x % pages) * page] += 1;
    }
}
"#;

/// Where the memory limit goes.
#[derive(Debug, Clone)]
enum Limiter {
    /// A v1 memory hierarchy (`/sys/fs/cgroup/memory`): hybrid layout.
    V1(PathBuf),
    /// cgroup2 with the memory controller: the watched group limits itself.
    V2,
}

/// What this machine offers, or why the test cannot run.
fn layout() -> Result<(Limiter, PathBuf), String> {
    if !is_root() {
        return Err("root".into());
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
    let cg2 = nodemedic::memory::detector::cgroup2_mount(&mountinfo)
        .map(PathBuf::from)
        .ok_or("a cgroup2 mount (for per-cgroup PSI)")?;
    if std::fs::read_to_string("/proc/pressure/memory").is_err() {
        return Err("PSI (/proc/pressure/memory; boot with psi=1)".into());
    }
    for tool in ["cc", "mkswap", "swapon", "swapoff"] {
        if !command_exists(tool) {
            return Err(format!("the `{tool}` command"));
        }
    }
    let v1 = PathBuf::from("/sys/fs/cgroup/memory");
    if v1.join("memory.limit_in_bytes").exists() {
        return Ok((Limiter::V1(v1), cg2));
    }
    let controllers = std::fs::read_to_string(cg2.join("cgroup.controllers")).unwrap_or_default();
    if controllers.split_whitespace().any(|c| c == "memory") {
        return Ok((Limiter::V2, cg2));
    }
    Err("a memory cgroup controller (v1 /sys/fs/cgroup/memory or cgroup2 memory)".into())
}

fn command_exists(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/sbin".into(), "/usr/sbin".into()])
        .any(|d| d.join(name).is_file())
}

/// Swap, cgroups and the workload, torn down in reverse on drop, whether the test passed,
/// failed or panicked halfway through setting up.
struct PressureBed {
    dir: tempfile::TempDir,
    /// cgroup2 directory whose `memory.pressure` the daemons watch.
    watched: PathBuf,
    /// The group holding the limit, for its OOM-kill count.
    limited: PathBuf,
    limiter: Limiter,
    /// Created cgroup directories, removed in reverse order.
    cgroups: Vec<PathBuf>,
    swap: Option<PathBuf>,
    workload_bin: PathBuf,
    workload: Option<Child>,
}

impl PressureBed {
    fn new(limiter: Limiter, cg2: &Path) -> PressureBed {
        let name = format!("nodemedic-it-thrash-{}", std::process::id());
        let mut bed = PressureBed {
            dir: tempfile::tempdir().unwrap(),
            watched: cg2.join(&name),
            limited: PathBuf::new(),
            limiter: limiter.clone(),
            cgroups: Vec::new(),
            swap: None,
            workload_bin: PathBuf::new(),
            workload: None,
        };
        bed.build_workload();
        bed.swap_on();
        bed.mkdir_cgroup(bed.watched.clone());
        assert!(
            bed.watched.join("memory.pressure").exists(),
            "{} has no memory.pressure: per-cgroup PSI is off (cgroup_disable=pressure?)",
            bed.watched.display()
        );
        bed.limited = match &limiter {
            Limiter::V1(root) => {
                let g = root.join(&name);
                bed.mkdir_cgroup(g.clone());
                write(&g.join("memory.limit_in_bytes"), &LIMIT_BYTES.to_string());
                g
            }
            Limiter::V2 => {
                let ctl = cg2.join("cgroup.subtree_control");
                let enabled = std::fs::read_to_string(&ctl).unwrap_or_default();
                if !enabled.split_whitespace().any(|c| c == "memory") {
                    write(&ctl, "+memory");
                }
                write(&bed.watched.join("memory.max"), &LIMIT_BYTES.to_string());
                bed.watched.clone()
            }
        };
        bed
    }

    fn build_workload(&mut self) {
        let src = self.dir.path().join("thrash.c");
        std::fs::write(&src, WORKLOAD_C).unwrap();
        let bin = self.dir.path().join("thrash");
        run(Command::new("cc").arg("-O2").arg("-o").arg(&bin).arg(&src));
        self.workload_bin = bin;
    }

    /// A swap file of written zeros (swapon refuses files with holes), private to root.
    fn swap_on(&mut self) {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.dir.path().join("swap");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..SWAP_BYTES / chunk.len() as u64 {
            f.write_all(&chunk).unwrap();
        }
        f.sync_all().unwrap();
        drop(f);
        run(Command::new("mkswap").arg(&path));
        run(Command::new("swapon").arg(&path));
        self.swap = Some(path);
    }

    fn mkdir_cgroup(&mut self, dir: PathBuf) {
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        self.cgroups.push(dir);
    }

    /// Starts the workload and moves it into every group before it touches any memory.
    fn start_workload(&mut self) {
        let child = Command::new(&self.workload_bin)
            .arg(MAPPING_MIB.to_string())
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id().to_string();
        let mut groups = vec![self.watched.clone()];
        if let Limiter::V1(_) = self.limiter {
            groups.push(self.limited.clone());
        }
        self.workload = Some(child);
        for g in groups {
            write(&g.join("cgroup.procs"), &pid);
        }
        let child = self.workload.as_mut().unwrap();
        child.stdin.take().unwrap().write_all(b"g").unwrap();
    }

    /// Kills the workload and reaps it; its cgroups are then empty.
    fn stop_workload(&mut self) {
        if let Some(mut c) = self.workload.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Panics (with why) if the workload died: an OOM kill means the recipe failed.
    fn assert_workload_alive(&mut self) {
        let c = self.workload.as_mut().expect("workload started");
        if let Some(status) = c.try_wait().unwrap() {
            panic!(
                "the thrashing workload exited ({status}); OOM kills in its cgroup: {} \
                 (was the swap file used? swapon --show)",
                self.oom_kills()
            );
        }
    }

    fn oom_kills(&self) -> u64 {
        let (file, key) = match self.limiter {
            Limiter::V1(_) => ("memory.oom_control", "oom_kill"),
            Limiter::V2 => ("memory.events", "oom_kill"),
        };
        std::fs::read_to_string(self.limited.join(file))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The watched group's `(some, full)` stall totals in microseconds.
    fn stall_us(&self) -> (u64, u64) {
        let text = std::fs::read_to_string(self.watched.join("memory.pressure")).unwrap();
        let total = |kind: &str| {
            text.lines()
                .find(|l| l.starts_with(kind))
                .and_then(|l| l.split_whitespace().find_map(|f| f.strip_prefix("total=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no `{kind} ... total=` in:\n{text}"))
        };
        (total("some"), total("full"))
    }
}

impl Drop for PressureBed {
    fn drop(&mut self) {
        self.stop_workload();
        remove_cgroups(std::mem::take(&mut self.cgroups), "memory_pressure");
        if let Some(swap) = self.swap.take() {
            // Before the temp dir goes: swapoff pulls back what the workload left behind.
            match Command::new("swapoff").arg(&swap).status() {
                Ok(s) if s.success() => {}
                other => eprintln!(
                    "memory_pressure: swapoff {} failed ({other:?}); run it by hand",
                    swap.display()
                ),
            }
        }
    }
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write(path: &Path, value: &str) {
    std::fs::write(path, value)
        .unwrap_or_else(|e| panic!("write {value} to {}: {e}", path.display()));
}

fn memory_config(watched: &Path) -> String {
    format!(
        "[kernel]\nenabled = false\n[mounts]\nenabled = false\n[memory]\ninterval = \"{INTERVAL}\"\n\
         window = \"{}s\"\nsustain = \"{}s\"\ncalm = \"{}s\"\nraise_full_percent = {RAISE_PERCENT}\n\
         raise_some_percent = {RAISE_PERCENT}\nwatched_cgroup = \"{}\"\n",
        WINDOW.as_secs(),
        SUSTAIN.as_secs(),
        CALM.as_secs(),
        watched.display()
    )
}

/// A host root whose system-wide PSI never moves (and a copy of the real meminfo), while
/// `sys` leads to the real /sys: only the watched cgroup can raise anything there.
fn calm_system_root(dir: &Path) {
    let proc = dir.join("proc");
    std::fs::create_dir_all(proc.join("pressure")).unwrap();
    std::fs::write(
        proc.join("pressure/memory"),
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=1000\n\
         full avg10=0.00 avg60=0.00 avg300=0.00 total=500\n",
    )
    .unwrap();
    std::fs::copy("/proc/meminfo", proc.join("meminfo")).unwrap();
    std::os::unix::fs::symlink("/sys", dir.join("sys")).unwrap();
}

/// A host root whose system-wide PSI *is* the watched cgroup's (a symlink to its
/// `memory.pressure`): calm while the cgroup is empty, so the daemon settles into waiting
/// on PSI triggers, and the workload's stall is what wakes it.
fn trigger_root(dir: &Path, watched: &Path) {
    let proc = dir.join("proc");
    std::fs::create_dir_all(proc.join("pressure")).unwrap();
    std::os::unix::fs::symlink(
        watched.join("memory.pressure"),
        proc.join("pressure/memory"),
    )
    .unwrap();
    std::fs::copy("/proc/meminfo", proc.join("meminfo")).unwrap();
    std::os::unix::fs::symlink("/sys", dir.join("sys")).unwrap();
}

const PRESSURE_ON: &str = "nodemedic_condition{condition=\"MemoryPressure\"} 1";
const PRESSURE_OFF: &str = "nodemedic_condition{condition=\"MemoryPressure\"} 0";
const WATCHED_SOME: &str = "nodemedic_memory_stall_seconds_total{scope=\"watched\",kind=\"some\"}";

/// The daemon's watched-scope stall counter must be the kernel's own `total=`: no lower
/// than a reading `SAMPLE_LAG` before the scrape, no higher than one right after it.
fn assert_counter_tracks_the_cgroup(who: &str, metrics: &str, lower_us: u64, upper_us: u64) {
    let us = metric(metrics, WATCHED_SOME) * 1e6;
    assert!(
        us + COUNTER_SLACK_US >= lower_us as f64 && us <= upper_us as f64 + COUNTER_SLACK_US,
        "{who}: {WATCHED_SOME} = {us} us, but the cgroup's some total= was {lower_us} us \
         before and {upper_us} us after"
    );
}

fn memory_pressure_condition(d: &Daemon) -> serde_json::Value {
    let s = d.status();
    s["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "MemoryPressure")
        .cloned()
        .unwrap_or_else(|| panic!("no MemoryPressure condition in /status: {s}"))
}

#[test]
fn serial_a_thrashing_watched_cgroup_raises_memory_pressure_and_it_clears_after_calm() {
    let found = layout();
    let what = found.as_ref().err().cloned().unwrap_or_default();
    if !require(found.is_ok(), &what) {
        return;
    }
    let (limiter, cg2) = found.unwrap();
    let mut bed = PressureBed::new(limiter, &cg2);
    let cfg = memory_config(&bed.watched);
    // The real host: system PSI and the watched cgroup, as in production.
    let host = Daemon::start(&cfg, &[]);
    // System PSI frozen calm: a raise here can only come from the watched cgroup.
    let fixture = tempfile::tempdir().unwrap();
    calm_system_root(fixture.path());
    let calm = Daemon::start(
        &format!("host_root = \"{}\"\n{cfg}", fixture.path().display()),
        &[],
    );
    // Waits on PSI triggers until the workload stalls (issue 24), instead of sampling.
    let trig_root = tempfile::tempdir().unwrap();
    trigger_root(trig_root.path(), &bed.watched);
    let trig = Daemon::start(
        &format!("host_root = \"{}\"\n{cfg}", trig_root.path().display()),
        &[],
    );
    let daemons = [
        ("real host", &host),
        ("calm system", &calm),
        ("trigger", &trig),
    ];

    // The trigger daemon is calm and waiting on the kernel before the workload starts.
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let info = &trig.status()["detectors"]["memory"]["info"];
        if info["waiting_for_trigger"] == true {
            assert_eq!(info["psi_trigger"], true, "{info}");
            assert_eq!(info["trigger_wakeups"], 0, "{info}");
            break;
        }
        assert!(
            Instant::now() < end,
            "the trigger daemon never waited on PSI: {info}"
        );
        std::thread::sleep(POLL);
    }

    // Baseline: all have a full window of the idle cgroup and raise nothing.
    let end = Instant::now() + Duration::from_secs(30);
    for (who, d) in daemons {
        loop {
            let s = d.status();
            if !s["detectors"]["memory"]["info"]["readings"]["watched"].is_null() {
                break;
            }
            assert!(Instant::now() < end, "{who}: no watched-cgroup window: {s}");
            std::thread::sleep(POLL);
        }
        let m = d.metrics();
        assert!(
            m.contains(PRESSURE_OFF),
            "{who}: pressure before the workload:\n{m}"
        );
    }

    let (some0, _) = bed.stall_us();
    let started = Instant::now();
    bed.start_workload();
    let mut history = vec![(started, some0)];
    let mut raised = [None, None, None];
    let mut woken = None;
    while raised.iter().any(Option::is_none) {
        assert!(
            started.elapsed() < RAISE_DEADLINE,
            "MemoryPressure not raised within {RAISE_DEADLINE:?} (real host: {:?}, calm system: \
             {:?}, trigger: {:?}); watched cgroup some total= grew {} us; calm daemon:\n{}",
            raised[0],
            raised[1],
            raised[2],
            bed.stall_us().0 - some0,
            calm.metrics()
        );
        bed.assert_workload_alive();
        std::thread::sleep(POLL);
        history.push((Instant::now(), bed.stall_us().0));
        for (i, (_, d)) in daemons.iter().enumerate() {
            if raised[i].is_none() && d.metrics().contains(PRESSURE_ON) {
                raised[i] = Some(started.elapsed());
            }
        }
        if woken.is_none() && trig.status()["detectors"]["memory"]["info"]["trigger_wakeups"] != 0 {
            woken = Some(started.elapsed());
        }
    }
    eprintln!("MemoryPressure raised after {raised:?} (real host, calm system, trigger)");
    // From the stall's start (the first poll that saw the cgroup's some total= grow) to
    // the condition: the figure BENCHMARKS.md reports for the trigger path.
    let stall_began = history
        .iter()
        .find(|(_, v)| *v > some0)
        .map(|(t, _)| t.duration_since(started))
        .unwrap_or_default();
    for (i, (who, _)) in daemons.iter().enumerate() {
        let r = raised[i].unwrap();
        eprintln!(
            "BENCH memory_pressure daemon={} stall_to_condition_ms={} (stall began {} ms after the workload started; sustain {} s, interval {INTERVAL})",
            who.replace(' ', "_"),
            r.saturating_sub(stall_began).as_millis(),
            stall_began.as_millis(),
            SUSTAIN.as_secs()
        );
    }
    eprintln!(
        "BENCH memory_pressure trigger_woken_ms={:?} (after the workload started; seen by polling /status every {POLL:?})",
        woken.map(|w| w.as_millis())
    );
    let info = &trig.status()["detectors"]["memory"]["info"];
    assert!(
        info["trigger_wakeups"].as_u64().unwrap_or(0) >= 1,
        "the trigger daemon must have been woken by the kernel: {info}"
    );

    // The stall behind it, from total= deltas: raising on the watched cgroup alone takes
    // the threshold's share of stall over at least the sustain period.
    let (some_now, full_now) = bed.stall_us();
    let stalled = Duration::from_micros(some_now - some0);
    let least = SUSTAIN.mul_f64(f64::from(RAISE_PERCENT) / 100.0);
    assert!(
        stalled >= least,
        "the cgroup stalled only {stalled:?} (full total= {full_now} us) yet the calm-system \
         daemon raised; at least {least:?} is needed"
    );
    eprintln!(
        "watched cgroup stalled {stalled:?} in {:?}",
        started.elapsed()
    );
    for (who, d) in daemons {
        let lower = history
            .iter()
            .rev()
            .find(|(t, _)| t.elapsed() >= SAMPLE_LAG)
            .map_or(some0, |(_, v)| *v);
        let m = d.metrics();
        let upper = bed.stall_us().0;
        assert_counter_tracks_the_cgroup(who, &m, lower, upper);
        let c = memory_pressure_condition(d);
        let reason = c["reason"].as_str().unwrap();
        assert!(
            ["MemoryStallSome", "MemoryStallFull"].contains(&reason),
            "{who}: {c}"
        );
        assert!(
            c["message"]
                .as_str()
                .unwrap()
                .contains("watched cgroup some"),
            "{who}: {c}"
        );
        assert_eq!(d.status()["detectors"]["memory"]["info"]["source"], "psi");
    }
    let c = memory_pressure_condition(&calm);
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("some 0.0%, full 0.0%"),
        "the calm daemon's system PSI must read zero: {c}"
    );
    bed.assert_workload_alive();
    assert_eq!(bed.oom_kills(), 0, "the workload's cgroup saw OOM kills");

    // Stop: the stall totals stop growing, and the condition clears no sooner than the calm
    // period (plus the window for the ratio to fall) after that.
    bed.stop_workload();
    let stopped = Instant::now();
    let (some_stop, _) = bed.stall_us();
    let mut cleared = [None, None, None];
    while cleared.iter().any(Option::is_none) {
        assert!(
            stopped.elapsed() < CLEAR_DEADLINE,
            "MemoryPressure not cleared within {CLEAR_DEADLINE:?} of stopping the workload \
             (real host: {:?}, calm system: {:?}, trigger: {:?}):\n{}",
            cleared[0],
            cleared[1],
            cleared[2],
            host.metrics()
        );
        std::thread::sleep(POLL);
        for (i, (_, d)) in daemons.iter().enumerate() {
            if cleared[i].is_none() && d.metrics().contains(PRESSURE_OFF) {
                cleared[i] = Some(stopped.elapsed());
            }
        }
    }
    eprintln!("MemoryPressure cleared {cleared:?} after the workload stopped");
    let (some_end, _) = bed.stall_us();
    assert_eq!(some_end, some_stop, "an empty cgroup must not stall");
    for (i, (who, d)) in daemons.iter().enumerate() {
        let after = cleared[i].unwrap();
        assert!(
            after >= CALM,
            "{who}: cleared {after:?} after the stop, inside the {CALM:?} calm period"
        );
        // The counter has caught up with the now constant total exactly.
        assert_counter_tracks_the_cgroup(who, &d.metrics(), some_end, some_end);
    }
}

/// `/proc/meminfo` of a 4 GB board; `available_kb` sets MemAvailable. No swap.
fn meminfo(available_kb: u64) -> String {
    format!(
        "MemTotal:        4000000 kB\nMemFree:          {} kB\nMemAvailable:     {available_kb} kB\n\
         Buffers:           10000 kB\nCached:           200000 kB\nSwapTotal:             0 kB\n\
         SwapFree:              0 kB\n",
        available_kb / 2
    )
}

/// Replaces a fixture file in one step, so the daemon never reads half of it.
fn replace(path: &Path, content: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn without_psi_files_low_mem_available_raises_memory_pressure_and_check_names_the_fix() {
    // A Raspberry Pi kernel without psi=1: no proc/pressure at all.
    let root = tempfile::tempdir().unwrap();
    let proc = root.path().join("proc");
    std::fs::create_dir_all(&proc).unwrap();
    // 4% available: under the 10% default raise threshold.
    const LOW_KB: u64 = 160_000;
    replace(&proc.join("meminfo"), &meminfo(LOW_KB));
    std::fs::write(
        proc.join("vmstat"),
        "pgmajfault 100\npswpin 0\npswpout 0\noom_kill 0\n",
    )
    .unwrap();
    let sustain = Duration::from_secs(2);
    let calm = Duration::from_secs(2);
    let tables = format!(
        "[kernel]\nenabled = false\n[mounts]\nenabled = false\n[memory]\ninterval = \"500ms\"\n\
         sustain = \"{}s\"\ncalm = \"{}s\"\n",
        sustain.as_secs(),
        calm.as_secs()
    );
    let host_root = format!("host_root = \"{}\"\n", root.path().display());

    // `check`, one pass: not raised yet (not sustained), but the missing PSI and its fix.
    let cfg_path = root.path().join("check.toml");
    let state = root.path().join("state");
    std::fs::write(
        &cfg_path,
        format!("{host_root}state_dir = \"{}\"\n{tables}", state.display()),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--json", "--config", cfg_path.to_str().unwrap()])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let signal = json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["area"] == "memory" && r["item"] == "signal")
        .cloned()
        .unwrap_or_else(|| panic!("no memory signal row: {json}"));
    assert_eq!(signal["status"], "warn", "{signal}");
    let detail = signal["detail"].as_str().unwrap();
    assert!(
        detail.contains("MemAvailable") && detail.contains("psi=1"),
        "{detail}"
    );

    let t0 = Instant::now();
    let d = Daemon::start(&format!("{host_root}{tables}"), &[]);
    let m = d
        .wait_metrics(Duration::from_secs(20), |m| m.contains(PRESSURE_ON))
        .unwrap_or_else(|| panic!("fallback did not raise MemoryPressure:\n{}", d.metrics()));
    let raised_after = t0.elapsed();
    assert!(
        raised_after >= sustain,
        "raised after {raised_after:?}, before the {sustain:?} sustain period"
    );
    assert_eq!(
        metric(&m, "nodemedic_memory_available_bytes"),
        (LOW_KB * 1024) as f64
    );
    let c = memory_pressure_condition(&d);
    assert_eq!(c["reason"], "MemAvailableLow", "{c}");
    assert!(c["message"].as_str().unwrap().contains("psi=1"), "{c}");
    let info = &d.status()["detectors"]["memory"]["info"];
    assert_eq!(info["source"], "fallback", "{info}");
    assert!(info["fix"].as_str().unwrap().contains("psi=1"), "{info}");

    // Memory comes back (40%): clears, but only after the calm period.
    let freed = Instant::now();
    replace(&proc.join("meminfo"), &meminfo(1_600_000));
    d.wait_metrics(Duration::from_secs(20), |m| m.contains(PRESSURE_OFF))
        .unwrap_or_else(|| panic!("fallback did not clear:\n{}", d.metrics()));
    let cleared_after = freed.elapsed();
    assert!(
        cleared_after >= calm,
        "cleared after {cleared_after:?}, inside the {calm:?} calm period"
    );
}

/// Benchmark, not a check (`cargo test --release --test it -- --ignored --nocapture
/// memory_pressure_delay_with_default_timings`, run by scripts/bench.sh): from the start of
/// a real stall to `MemoryPressure`, with the default interval, window and sustain, for a
/// daemon that samples every 2 s and one that waits on PSI triggers. Only the thresholds
/// are lowered to what the test workload reliably stalls (its 10-15% would straddle the
/// default 10% full). Prints `BENCH memory_delay` lines.
#[test]
#[ignore]
fn memory_pressure_delay_with_default_timings() {
    let found = layout();
    let what = found.as_ref().err().cloned().unwrap_or_default();
    if !require(found.is_ok(), &what) {
        return;
    }
    let (limiter, cg2) = found.unwrap();
    let mut bed = PressureBed::new(limiter, &cg2);
    let cfg = format!(
        "[kernel]\nenabled = false\n[mounts]\nenabled = false\n[limits]\nenabled = false\n\
         [runtime]\nenabled = false\n[memory]\nraise_full_percent = {RAISE_PERCENT}\n\
         raise_some_percent = {RAISE_PERCENT}\nwatched_cgroup = \"{}\"\n",
        bed.watched.display()
    );
    let sampling_root = tempfile::tempdir().unwrap();
    calm_system_root(sampling_root.path());
    let sampling = Daemon::start(
        &format!("host_root = \"{}\"\n{cfg}", sampling_root.path().display()),
        &[],
    );
    let trig_root = tempfile::tempdir().unwrap();
    trigger_root(trig_root.path(), &bed.watched);
    let trig = Daemon::start(
        &format!("host_root = \"{}\"\n{cfg}", trig_root.path().display()),
        &[],
    );
    let end = Instant::now() + Duration::from_secs(60);
    while trig.status()["detectors"]["memory"]["info"]["waiting_for_trigger"] != true
        || sampling.status()["detectors"]["memory"]["info"]["readings"]["watched"].is_null()
    {
        assert!(Instant::now() < end, "the daemons never settled");
        std::thread::sleep(POLL);
    }
    let (some0, _) = bed.stall_us();
    let started = Instant::now();
    bed.start_workload();
    let mut began = None;
    let mut raised = [None, None];
    let mut timeline: Vec<(Duration, String)> = Vec::new();
    while raised.iter().any(Option::is_none) {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "not raised: {raised:?}"
        );
        bed.assert_workload_alive();
        std::thread::sleep(POLL);
        if began.is_none() && bed.stall_us().0 > some0 {
            began = Some(started.elapsed());
        }
        for (i, d) in [&sampling, &trig].iter().enumerate() {
            if raised[i].is_none() && d.metrics().contains(PRESSURE_ON) {
                raised[i] = Some(started.elapsed());
            }
        }
        let info = &trig.status()["detectors"]["memory"]["info"];
        let now = format!(
            "wakeups {} waiting {} | {}",
            info["trigger_wakeups"], info["waiting_for_trigger"], info["message"]
        );
        if timeline.last().map(|(_, l)| l) != Some(&now) {
            timeline.push((started.elapsed(), now));
        }
    }
    for (t, l) in &timeline {
        eprintln!("trigger daemon at {:>6} ms: {l}", t.as_millis());
    }
    let began = began.unwrap_or_default();
    for (i, who) in ["sampling_2s", "psi_trigger"].iter().enumerate() {
        eprintln!(
            "BENCH memory_delay daemon={who} stall_to_condition_ms={} stall_began_ms={}",
            raised[i].unwrap().saturating_sub(began).as_millis(),
            began.as_millis()
        );
    }
}
