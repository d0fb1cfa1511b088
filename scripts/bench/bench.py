#!/usr/bin/env python3
"""Measurement helper for scripts/bench.sh (benchmarks only; not part of the test suite).

Subcommands, each writing one JSON file that `table` turns into the markdown table:
  wait       wait until a URL answers 200
  footprint  RSS, CPU, wake-ups and disk writes of two processes in the same window, both
             scraped alike
  burst      wake-ups and disk writes of both while 1000 kernel records arrive at once
  delay      /dev/kmsg stall line -> nodemedic's rcu_stall counter increments on /metrics
  throughput parse the classifier throughput test's output
  preflight  parse the preflight timing test's `BENCH preflight` lines
  memory     parse the memory-pressure delay test's `BENCH memory_delay` lines
  hung       /metrics latency while hung FUSE mounts are present and being watched
  table      print the one results table from the JSON files
"""

import argparse
import http.client
import json
import math
import os
import re
import signal
import statistics
import sys
import time

MIB = 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")

# The project's own goals, as listed in BENCHMARKS.md.
GOAL_RSS_BYTES = 10 * MIB
GOAL_RSS_SHARE_OF_NODE_EXPORTER = 0.5
GOAL_DELAY_P99_MS = 50.0
GOAL_LINES_PER_SEC = 1_000_000
GOAL_BINARY_BYTES = 10 * MIB
# Issue 24: the healer's own footprint. Wake-ups are every thread's context switches
# (voluntary + involuntary), summed; writes are /proc/PID/io write_bytes.
GOAL_WAKEUPS_PER_MIN = 30
GOAL_WRITE_BYTES_PER_DAY = 256 * 1024
GOAL_CPU_SHARE_OF_NODE_EXPORTER = 0.5
# Issue 10: preflight with nothing to do, and with 100 dead sandboxes (no goal for 10).
GOAL_PREFLIGHT_MS = {0: 500.0, 100: 5000.0}

# A stall the kernel prints only after rcu_cpu_stall_timeout: always an event.
STALL_LINE = b"<4>rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n"
# Give up on one event after this long; counted as missed, never dropped silently.
EVENT_TIMEOUT_S = 5.0


def vm_rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def vm_hwm_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def cpu_ticks(pid):
    """utime + stime of the whole process (all threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # comm may contain spaces and parentheses: fields start after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def thread_runtime_ns(pid):
    """Nanoseconds on CPU per live thread (schedstat), finer than utime+stime's ticks."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                out[tid] = int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # the thread exited between listdir and open
    return out


def thread_switches(pid):
    """(comm, voluntary + involuntary context switches) per live thread, by tid. Each
    switch is one wake-up (or one preemption) of that thread."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            n = int(fields["voluntary_ctxt_switches"]) + int(fields["nonvoluntary_ctxt_switches"])
            out[tid] = (fields["Name"].strip(), n)
        except (FileNotFoundError, ProcessLookupError, KeyError, ValueError):
            pass  # the thread exited between listdir and open
    return out


def write_bytes(pid):
    """Bytes this process caused to be written to storage (all threads, live and exited):
    /proc/PID/io `write_bytes`, counted when a page is dirtied."""
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    raise RuntimeError(f"no write_bytes for pid {pid}")


def switch_delta(before, after):
    """Summed switches of every thread between two `thread_switches` readings, and the
    same per thread name. Threads born in between count whole; threads that died in
    between are lost (reported by the caller)."""
    per_name = {}
    total = 0
    for tid, (name, n) in after.items():
        d = n - before.get(tid, (name, 0))[1]
        total += d
        per_name[name] = per_name.get(name, 0) + d
    return total, per_name


def scrape(url, timeout=10):
    """One GET on a new connection, as a Prometheus server does per scrape interval."""
    m = re.match(r"http://([^/]+)(/.*)", url)
    conn = http.client.HTTPConnection(m.group(1), timeout=timeout)
    t0 = time.monotonic()
    conn.request("GET", m.group(2))
    resp = conn.getresponse()
    body = resp.read()
    elapsed = time.monotonic() - t0
    conn.close()
    if resp.status != 200:
        raise RuntimeError(f"GET {url} answered {resp.status}")
    return elapsed, len(body)


def cmd_wait(a):
    """Waits until the URL answers 200, so a window never starts on a half-started process."""
    deadline = time.monotonic() + a.timeout
    while True:
        try:
            scrape(a.url)
            return
        except (OSError, http.client.HTTPException, RuntimeError) as e:
            if time.monotonic() > deadline:
                sys.exit(f"wait: {a.url} did not answer within {a.timeout} s: {e}")
            time.sleep(0.1)


def cmd_footprint(a):
    names, pids, urls = a.name, a.pid, a.url
    if not len(names) == len(pids) == len(urls):
        sys.exit("footprint: give --name, --pid and --url once per process")
    rss = {n: [] for n in names}
    scrapes = {n: [] for n in names}
    failed = {n: [] for n in names}
    start = time.monotonic()
    ticks0 = {n: cpu_ticks(p) for n, p in zip(names, pids)}
    ns0 = {n: thread_runtime_ns(p) for n, p in zip(names, pids)}
    sw0 = {n: thread_switches(p) for n, p in zip(names, pids)}
    wb0 = {n: write_bytes(p) for n, p in zip(names, pids)}
    for k in range(a.seconds + 1):
        # Fixed schedule from the window start, so scrapes do not make the clock drift.
        delay = start + k - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        for n, p in zip(names, pids):
            rss[n].append(vm_rss_bytes(p))
        if k % a.scrape_every == 0 and k < a.seconds:
            for n, u in zip(names, urls):
                # On a shared machine another developer's hung FUSE mount can hang a
                # node_exporter scrape (its filesystem collector's statfs): counted, not fatal.
                try:
                    scrapes[n].append(scrape(u))
                except (TimeoutError, OSError) as e:
                    failed[n].append(str(e))
    wall = time.monotonic() - start
    out = {"seconds": wall, "scrape_every": a.scrape_every, "procs": {}}
    for n, p in zip(names, pids):
        ticks = cpu_ticks(p) - ticks0[n]
        ns1 = thread_runtime_ns(p)
        # Threads born in the window count whole; threads that died in it are lost.
        ns = sum(v - ns0[n].get(t, 0) for t, v in ns1.items())
        exited = len(set(ns0[n]) - set(ns1))
        sw1 = thread_switches(p)
        switches, per_thread = switch_delta(sw0[n], sw1)
        written = write_bytes(p) - wb0[n]
        out["procs"][n] = {
            "wakeups_per_min": 60.0 * switches / wall,
            "wakeups_by_thread_per_min": {k: 60.0 * v / wall for k, v in sorted(per_thread.items())},
            "switch_threads_exited": len(set(sw0[n]) - set(sw1)),
            "write_bytes": written,
            "write_bytes_per_day": written * 86400.0 / wall,
            "pid": p,
            "rss_samples": len(rss[n]),
            "rss_median": statistics.median(rss[n]),
            "rss_max": max(rss[n]),
            "rss_hwm": vm_hwm_bytes(p),
            "cpu_ticks": ticks,
            "cpu_percent": 100.0 * ticks / CLK_TCK / wall,
            "schedstat_percent": 100.0 * ns / 1e9 / wall,
            "threads_exited": exited,
            "scrapes": len(scrapes[n]),
            "scrapes_failed": len(failed[n]),
            "scrape_ms_median": 1000 * statistics.median(s[0] for s in scrapes[n]) if scrapes[n] else 0.0,
            "scrape_bytes": scrapes[n][-1][1] if scrapes[n] else 0,
        }
    write_json(a.out, out)


class MetricsPoller:
    """Reads counters from one keep-alive connection, reconnecting when it drops."""

    def __init__(self, hostport):
        self.hostport = hostport
        self.conn = None

    def text(self):
        for attempt in (1, 2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.hostport, timeout=10)
                self.conn.request("GET", "/metrics")
                resp = self.conn.getresponse()
                body = resp.read().decode()
                if resp.status != 200:
                    raise RuntimeError(f"/metrics answered {resp.status}")
                return body
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def values(self, names):
        body = self.text()
        out = {}
        for n in names:
            m = re.search(r"^" + re.escape(n) + r" ([0-9.eE+-]+)", body, re.M)
            if m is None:
                raise RuntimeError(f"{n} is not on /metrics")
            out[n] = float(m.group(1))
        return out


RCU = 'nodemedic_kernel_events_total{kind="rcu_stall"}'
RECORDS = "nodemedic_kmsg_records_total"
OWN_SUM = "nodemedic_kernel_event_detect_delay_seconds_sum"
OWN_COUNT = "nodemedic_kernel_event_detect_delay_seconds_count"


def cmd_delay(a):
    poller = MetricsPoller(a.hostport)
    names = [RCU, RECORDS, OWN_SUM, OWN_COUNT]
    first = poller.values(names)
    delays_ms, get_ms, missed, polls = [], [], 0, 0
    for _ in range(a.count):
        before = poller.values([RCU])[RCU]
        # A new fd per line: printk_devkmsg=ratelimit lets only 10 lines per fd per 5 s.
        fd = os.open("/dev/kmsg", os.O_WRONLY | os.O_CLOEXEC)
        t0 = time.monotonic()
        os.write(fd, STALL_LINE)
        os.close(fd)
        while True:
            polls += 1
            t_get = time.monotonic()
            now_value = poller.values([RCU])[RCU]
            t1 = time.monotonic()
            get_ms.append(1000 * (t1 - t_get))
            if now_value > before:
                delays_ms.append(1000 * (t1 - t0))
                break
            if t1 - t0 > EVENT_TIMEOUT_S:
                missed += 1
                break
            time.sleep(a.poll_ms / 1000)
        time.sleep(a.gap_ms / 1000)
    last = poller.values(names)
    own_n = last[OWN_COUNT] - first[OWN_COUNT]
    own_mean_ms = 1000 * (last[OWN_SUM] - first[OWN_SUM]) / own_n if own_n else None
    out = {
        "count": a.count,
        "poll_ms": a.poll_ms,
        "detected": len(delays_ms),
        "missed": missed,
        "polls": polls,
        "get_ms_median": statistics.median(get_ms) if get_ms else None,
        "median_ms": statistics.median(delays_ms) if delays_ms else None,
        "p99_ms": percentile(delays_ms, 99) if delays_ms else None,
        "max_ms": max(delays_ms) if delays_ms else None,
        "min_ms": min(delays_ms) if delays_ms else None,
        "counter_delta": last[RCU] - first[RCU],
        "records_delta": last[RECORDS] - first[RECORDS],
        "own_histogram_mean_ms": own_mean_ms,
    }
    write_json(a.out, out)


def percentile(values, p):
    """Nearest-rank percentile: a value that was actually observed."""
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


# The Raspberry Pi's routine short expedited stall (~21 jiffies during container starts):
# a real storm on a Pi is made of these. In a full run (userspace lines trusted for the
# delay test) a burst of them raises KernelRCUStall (30 in 10 min), so the writes measured
# include the ones a held condition causes; in a quick run they are read, counted and
# classified, but as untrusted userspace lines raise nothing.
BURST_LINE = (
    b"<4>rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: "
    b"{ P%d } 21 jiffies s: 1189 root: 0x1/.\n"
)


def cmd_burst(a):
    """Writes `count` kernel records to /dev/kmsg at once, then samples both processes'
    wake-ups and disk writes over a window that starts just before the burst."""
    names, pids = a.name, a.pid
    sw0 = {n: thread_switches(p) for n, p in zip(names, pids)}
    wb0 = {n: write_bytes(p) for n, p in zip(names, pids)}
    start = time.monotonic()
    for i in range(a.count):
        # A new fd per line: printk_devkmsg=ratelimit lets only 10 lines per fd per 5 s.
        fd = os.open("/dev/kmsg", os.O_WRONLY | os.O_CLOEXEC)
        os.write(fd, BURST_LINE % (1000 + i))
        os.close(fd)
    burst_s = time.monotonic() - start
    time.sleep(max(0.0, start + a.seconds - time.monotonic()))
    wall = time.monotonic() - start
    out = {"count": a.count, "burst_seconds": burst_s, "seconds": wall, "procs": {}}
    for n, p in zip(names, pids):
        sw1 = thread_switches(p)
        switches, per_thread = switch_delta(sw0[n], sw1)
        written = write_bytes(p) - wb0[n]
        out["procs"][n] = {
            "wakeups_per_min": 60.0 * switches / wall,
            "wakeups_by_thread_per_min": {k: 60.0 * v / wall for k, v in sorted(per_thread.items())},
            "switch_threads_exited": len(set(sw0[n]) - set(sw1)),
            "write_bytes": written,
            "write_bytes_per_day": written * 86400.0 / wall,
        }
    write_json(a.out, out)


THROUGHPUT = re.compile(r"classified (\S+) lines in (\S+)s: (\d+) lines/s")


def cmd_throughput(a):
    runs = []
    for path in a.logs:
        with open(path) as f:
            m = THROUGHPUT.search(f.read())
        if m is None:
            sys.exit(f"throughput: no 'classified ... lines/s' line in {path}")
        runs.append(int(m.group(3)))
    write_json(a.out, {"runs": runs, "median": statistics.median(runs)})


PREFLIGHT = re.compile(
    r"^BENCH preflight ctd=(\S+) dead=(\d+) wall_ms=([0-9.]+) report_ms=(\d+) "
    r"containerd_start_ms=(\S+) removed=(\d+)",
    re.M,
)


def cmd_preflight(a):
    """Medians per containerd version and dead-sandbox count over the runs; every run must
    have removed them all."""
    per = {}
    for path in a.logs:
        with open(path) as f:
            found = PREFLIGHT.findall(f.read())
        if not found:
            sys.exit(f"preflight: no 'BENCH preflight' line in {path}")
        for ctd, dead, wall, report, start, removed in found:
            if removed != dead:
                sys.exit(f"preflight: {path}: removed {removed} of {dead} dead sandboxes")
            per.setdefault((ctd, dead), []).append(
                {
                    "wall_ms": float(wall),
                    "report_ms": int(report),
                    "start_ms": None if start == "null" else int(start),
                }
            )
    out = {}
    for (ctd, dead), runs in per.items():
        starts = [r["start_ms"] for r in runs if r["start_ms"] is not None]
        out.setdefault(ctd, {})[dead] = {
            "runs": runs,
            "wall_median": statistics.median(r["wall_ms"] for r in runs),
            "report_median": statistics.median(r["report_ms"] for r in runs),
            "start_median": statistics.median(starts) if starts else None,
        }
    write_json(a.out, out)


MEMORY_DELAY = re.compile(r"^BENCH memory_delay daemon=(\S+) stall_to_condition_ms=(\d+)", re.M)


def cmd_memory(a):
    """Medians per daemon (2 s sampling, PSI triggers) over the runs."""
    per = {}
    for path in a.logs:
        with open(path) as f:
            found = MEMORY_DELAY.findall(f.read())
        if len(found) != 2:
            sys.exit(f"memory: expected two 'BENCH memory_delay' lines in {path}, got {found}")
        for daemon, ms in found:
            per.setdefault(daemon, []).append(int(ms))
    write_json(a.out, {d: {"runs": v, "median_ms": statistics.median(v)} for d, v in per.items()})


# --- /metrics with hung FUSE mounts ------------------------------------------------------
# The same fixture as the integration tests (tests/it/support/hangfs.rs): open /dev/fuse,
# hand its fd to mount(2) as a `fuse.*` filesystem, and never answer, not even FUSE_INIT.
# Every statfs on it then waits in the kernel (state D), as on a hard NFS mount whose
# server died. Closing the fd aborts the connection and frees every waiter.

GOAL_HUNG_METRICS_MS = 100.0
HANG_FSTYPE = b"fuse.nodemedic-hang"
HANG_SOURCE = b"nodemedic-hang"
MS_NOSUID, MS_NODEV, MNT_DETACH = 2, 4, 2
# The daemon's default pass is a 10 s interval plus a 2 s probe deadline; two passes and
# a wide margin for a loaded machine.
HUNG_DETECT_TIMEOUT_S = 60.0
# Prometheus' default scrape_timeout: a scrape slower than this counts as the target down.
# node_exporter's filesystem collector blocks in statfs on a hung mount (measured: no
# answer at all), so its scrapes are few.
COMPARE_SCRAPE_TIMEOUT_S = 10.0


def libc():
    import ctypes

    lib = ctypes.CDLL(None, use_errno=True)
    lib.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
    lib.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    return lib, ctypes


def hang_mount(lib, ctypes, path):
    """Mounts a never-answering FUSE filesystem on `path`; returns the /dev/fuse fd."""
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    # allow_other: without it the kernel answers other users' statfs itself.
    opts = f"fd={fd},rootmode=40000,user_id=0,group_id=0,allow_other".encode()
    if lib.mount(HANG_SOURCE, os.fsencode(path), HANG_FSTYPE, MS_NOSUID | MS_NODEV, opts) != 0:
        err = ctypes.get_errno()
        os.close(fd)
        raise OSError(err, f"mount fuse on {path}: {os.strerror(err)}")
    return fd


def stuck_count(body, prefix):
    return sum(
        1
        for line in body.splitlines()
        if line.startswith(f'nodemedic_mount_stuck{{mountpoint="{prefix}') and line.endswith(" 1")
    )


def metric_value(body, series):
    for line in body.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return None


def cmd_hung(a):
    lib, ctypes = libc()
    os.makedirs(a.dir, exist_ok=True)
    fds, mounted = [], []
    url = f"http://{a.hostport}/metrics"
    prefix = os.path.join(a.dir, "")
    # SIGTERM (bench.sh's cleanup) must still reach the `finally` that frees the mounts.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        for i in range(a.mounts):
            path = os.path.join(a.dir, f"m{i:02}")
            os.makedirs(path, exist_ok=True)
            fds.append(hang_mount(lib, ctypes, path))
            mounted.append(path)
        t0 = time.monotonic()
        seen = 0
        while seen < a.mounts:
            if time.monotonic() - t0 > HUNG_DETECT_TIMEOUT_S:
                sys.exit(f"hung: nodemedic reported {seen}/{a.mounts} mounts stuck after {HUNG_DETECT_TIMEOUT_S:.0f} s")
            time.sleep(0.2)
            seen = stuck_count(poll_text(url), prefix)
        detected_s = time.monotonic() - t0
        # New connection per scrape, as Prometheus does; spread over several probe passes.
        lat_ms, sizes = [], []
        for _ in range(a.scrapes):
            elapsed, size = scrape(url)
            lat_ms.append(1000 * elapsed)
            sizes.append(size)
            time.sleep(a.gap_ms / 1000)
        body = poll_text(url)
        out = {
            "mounts": a.mounts,
            "scrapes": len(lat_ms),
            "gap_ms": a.gap_ms,
            "detected_s": detected_s,
            "stuck_at_end": stuck_count(body, prefix),
            "probe_threads_stuck": metric_value(body, "nodemedic_probe_threads_stuck"),
            "condition": metric_value(body, 'nodemedic_condition{condition="NetworkMountHung"}'),
            "median_ms": statistics.median(lat_ms),
            "p99_ms": percentile(lat_ms, 99),
            "max_ms": max(lat_ms),
            "bytes_median": statistics.median(sizes),
        }
        if a.compare_url:
            cmp_ms, failed = [], 0
            for _ in range(a.compare_scrapes):
                try:
                    cmp_ms.append(1000 * scrape(a.compare_url, COMPARE_SCRAPE_TIMEOUT_S)[0])
                except (OSError, http.client.HTTPException, RuntimeError):
                    failed += 1
            out["compare"] = {
                "scrapes": len(cmp_ms),
                "failed": failed,
                "median_ms": statistics.median(cmp_ms) if cmp_ms else None,
                "max_ms": max(cmp_ms) if cmp_ms else None,
            }
        write_json(a.out, out)
    finally:
        for fd in fds:
            os.close(fd)  # aborts the connection: every blocked statfs returns ENOTCONN
        for path in mounted:
            if lib.umount2(os.fsencode(path), MNT_DETACH) != 0:
                print(f"hung: umount {path}: {os.strerror(ctypes.get_errno())}", file=sys.stderr)


def poll_text(url):
    m = re.match(r"http://([^/]+)(/.*)", url)
    conn = http.client.HTTPConnection(m.group(1), timeout=10)
    try:
        conn.request("GET", m.group(2))
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def hung_rows(dirname):
    """Table rows for the hung-mount run, or a placeholder if it did not run."""
    h = load(dirname, "hung")
    label = "/metrics latency with {} hung FUSE mounts{}"
    if h is None:
        return [[label.format(20, ""), "not measured (no /dev/fuse?)", "—", "—", "< 100 ms", "—"]], []
    n = h["mounts"]
    cmp = h.get("compare") or {}
    ne_median = ne_max = ratio_median = "—"
    if cmp:
        answered = f"{cmp['scrapes']} of {cmp['scrapes'] + cmp['failed']} answered within {COMPARE_SCRAPE_TIMEOUT_S:.0f} s"
        ne_median = answered
        if cmp["median_ms"] is not None:
            ne_median = f"{cmp['median_ms']:.2f} ms ({answered})"
            ne_max = f"max {cmp['max_ms']:.2f} ms"
            ratio_median = ratio(h["median_ms"] / cmp["median_ms"])
    all_stuck = h["stuck_at_end"] == n
    rows = [
        [
            label.format(n, f", median of {h['scrapes']} scrapes"),
            f"{h['median_ms']:.2f} ms",
            ne_median,
            ratio_median,
            "—",
            "—",
        ],
        [
            label.format(n, f", p99 of {h['scrapes']} scrapes"),
            f"{h['p99_ms']:.2f} ms (max {h['max_ms']:.2f} ms)",
            ne_max,
            "—",
            "< 100 ms",
            yes(h["p99_ms"] < GOAL_HUNG_METRICS_MS and all_stuck),
        ],
    ]
    notes = [
        f"Hung FUSE mounts: {n} never-answering mounts (raw /dev/fuse + mount(2), no FUSE_INIT "
        f"answer, as tests/it/support/hangfs.rs), all {n} reported stuck "
        f"{h['detected_s']:.1f} s after mounting; then {h['scrapes']} scrapes of /metrics, each on a new "
        f"connection, {h['gap_ms']:.0f} ms apart, while the prober kept them under watch "
        f"({h['stuck_at_end']} still stuck at the end, nodemedic_probe_threads_stuck "
        f"{h['probe_threads_stuck']}, NetworkMountHung {h['condition']})."
    ]
    if not all_stuck:
        notes.append(f"WARNING: only {h['stuck_at_end']} of {n} mounts were still reported stuck at the end.")
    if cmp:
        notes.append(
            f"node_exporter (same mounts, default collectors), scraped after nodemedic: "
            f"{cmp['failed']} of {cmp['scrapes'] + cmp['failed']} scrapes failed or took over "
            f"{COMPARE_SCRAPE_TIMEOUT_S:.0f} s (Prometheus' default scrape timeout)."
        )
    return rows, notes


def load(dirname, name):
    path = os.path.join(dirname, name + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def mib(b):
    return f"{b / MIB:.2f} MiB"


def yes(ok):
    return "yes" if ok else "**NO**"


def cmd_table(a):
    fp = load(a.dir, "footprint")
    dl = load(a.dir, "delay")
    tp = load(a.dir, "throughput")
    pf = load(a.dir, "preflight")
    with open(os.path.join(a.dir, "binary_size")) as f:
        binary = int(f.read().split()[0])
    rows = []
    notes = []
    nm, ne = fp["procs"]["nodemedic"], fp["procs"]["node_exporter"]
    win = f"{fp['seconds']:.0f} s"

    def rss_row(label, key):
        r = nm[key] / ne[key]
        ok = nm[key] < GOAL_RSS_BYTES and r <= GOAL_RSS_SHARE_OF_NODE_EXPORTER
        rows.append(
            [label, mib(nm[key]), mib(ne[key]), ratio(r), "< 10 MiB and ≤ 0.5× node_exporter", yes(ok)]
        )

    rss_row(f"RSS, median of 1 s samples over {win}", "rss_median")
    rss_row(f"RSS, max of 1 s samples over {win}", "rss_max")
    cpu_r = nm["cpu_percent"] / ne["cpu_percent"] if ne["cpu_percent"] else float("inf")
    rows.append(
        [
            f"CPU (utime+stime over {win}, % of one core)",
            f"{nm['cpu_percent']:.3f} % ({nm['cpu_ticks']} ticks)",
            f"{ne['cpu_percent']:.3f} % ({ne['cpu_ticks']} ticks)",
            ratio(cpu_r),
            "≤ 0.5× node_exporter",
            yes(cpu_r <= GOAL_CPU_SHARE_OF_NODE_EXPORTER)
            + (" (within one tick: see the schedstat row)" if abs(nm["cpu_ticks"] - ne["cpu_ticks"]) <= 1 else ""),
        ]
    )
    sched_r = nm["schedstat_percent"] / ne["schedstat_percent"] if ne["schedstat_percent"] else float("inf")
    rows.append(
        [
            f"CPU from per-thread schedstat over {win}, ns resolution (info)",
            f"{nm['schedstat_percent']:.3f} %",
            f"{ne['schedstat_percent']:.3f} %",
            ratio(sched_r),
            "—",
            "—",
        ]
    )
    for name, proc in (("nodemedic", nm), ("node_exporter", ne)):
        if proc["threads_exited"]:
            notes.append(
                f"{proc['threads_exited']} {name} thread(s) exited during the window: their "
                "CPU is in utime+stime but missing from the schedstat row."
            )
    footprint_rows(rows, notes, fp, "idle", win)
    bu = load(a.dir, "burst")
    if bu:
        footprint_rows(rows, notes, bu, f"burst of {bu['count']} kernel records", f"{bu['seconds']:.0f} s")
    rows.append(
        [
            "RSS peak since start (VmHWM, info)",
            mib(nm["rss_hwm"]),
            mib(ne["rss_hwm"]),
            ratio(nm["rss_hwm"] / ne["rss_hwm"]),
            "—",
            "—",
        ]
    )
    rows.append(
        [
            f"/metrics scrape time, median of {nm['scrapes']} scrapes (info)",
            f"{nm['scrape_ms_median']:.2f} ms ({nm['scrape_bytes']} B)"
            + (f"; {nm['scrapes_failed']} failed" if nm.get("scrapes_failed") else ""),
            f"{ne['scrape_ms_median']:.2f} ms ({ne['scrape_bytes']} B)"
            + (f"; {ne['scrapes_failed']} failed" if ne.get("scrapes_failed") else ""),
            ratio(nm["scrape_ms_median"] / ne["scrape_ms_median"]) if ne["scrape_ms_median"] else "—",
            "—",
            "—",
        ]
    )
    if dl is None:
        rows.append(["kernel-event detection delay", "not measured (BENCH_QUICK=1)", "—", "—", "< 50 ms", "—"])
    elif dl["detected"]:
        label = f"kernel-event detection delay, {dl['detected']}/{dl['count']} stall lines"
        rows.append([label + ", median", f"{dl['median_ms']:.2f} ms", "—", "—", "—", "—"])
        p99_ok = dl["p99_ms"] < GOAL_DELAY_P99_MS and dl["missed"] == 0
        rows.append([label + ", p99", f"{dl['p99_ms']:.2f} ms", "—", "—", "< 50 ms", yes(p99_ok)])
    else:
        rows.append(["kernel-event detection delay, p99", "no event detected", "—", "—", "< 50 ms", "**NO**"])
    if dl is not None:
        delay_notes(notes, dl)
    if tp:
        rows.append(
            [
                f"classifier throughput, one thread (median of {len(tp['runs'])} runs)",
                f"{tp['median']:,.0f} lines/s",
                "—",
                "—",
                "> 1,000,000 lines/s per core",
                yes(tp["median"] > GOAL_LINES_PER_SEC),
            ]
        )
        notes.append("Classifier runs: " + ", ".join(f"{r:,}" for r in tp["runs"]) + " lines/s.")
    rows.append(
        [
            "release binary size (stripped)",
            f"{mib(binary)} ({binary:,} B)",
            "—",
            "—",
            "< 10 MiB",
            yes(binary < GOAL_BINARY_BYTES),
        ]
    )
    mem = load(a.dir, "memory")
    for daemon, label in (("sampling_2s", "sampling every 2 s"), ("psi_trigger", "waiting on PSI triggers")):
        m = (mem or {}).get(daemon)
        rows.append(
            [
                f"memory stall to MemoryPressure, {label} (default timings, 30 s sustain; median of "
                f"{len(m['runs']) if m else 0} runs)",
                f"{m['median_ms'] / 1000:.1f} s" if m else "not measured",
                "—",
                "—",
                "—",
                "—",
            ]
        )
    if mem:
        notes.append(
            "Memory-pressure delay: a workload thrashing in a 64 MiB cgroup with swap (the integration "
            "tests' bed), thresholds lowered to 3% (it stalls 10-15%), default interval/window/sustain; "
            "from the first growth of the cgroup's PSI total= to the condition on /metrics. Runs (ms): "
            + "; ".join(f"{d}: " + ", ".join(str(r) for r in v["runs"]) for d, v in mem.items())
            + "."
        )
    hung, hung_notes = hung_rows(a.dir)
    rows += hung
    notes += hung_notes
    if not pf:
        rows.append(
            [
                "preflight time with 0, 10, 100 dead sandboxes",
                "not measured (BENCH_PREFLIGHT_RUNS=0)",
                "—",
                "—",
                "—",
                "—",
            ]
        )
    # Side by side: each count on every containerd version measured, oldest version first.
    for n, ctd in [(n, c) for n in (0, 10, 100) for c in sorted(pf or {})]:
        goal = GOAL_PREFLIGHT_MS.get(n)
        p = pf[ctd].get(str(n))
        if p is None:
            continue
        start = p["start_median"]
        rows.append(
            [
                f"preflight time with {n} dead sandboxes on containerd {ctd}, `nodemedic "
                f"preflight` spawn to exit (median of {len(p['runs'])} runs)",
                f"{p['wall_median']:.0f} ms (in-process {p['report_median']:.0f} ms, private "
                f"containerd start {'n/a' if start is None else f'{start:.0f}'} ms)",
                "—",
                "—",
                "—" if goal is None else f"< {goal / 1000:g} s",
                "—" if goal is None else yes(p["wall_median"] < goal),
            ]
        )
    for ctd in sorted(pf or {}):
        notes.append(
            f"Preflight runs on containerd {ctd} (wall ms), by dead sandboxes: "
            + "; ".join(
                f"{n}: " + ", ".join(f"{r['wall_ms']:.0f}" for r in pf[ctd][n]["runs"])
                for n in sorted(pf[ctd], key=int)
            )
            + ". Each run is a fresh private containerd test bed (Debian containerd, runc, CNI "
            "plugins); the dead sandboxes are records with their own active snapshots (on 2.x "
            "also their sandbox store entries), as a power cut leaves them; nodemedic's report "
            "confirmed every one removed."
        )
    head = ["measure", "nodemedic", "node_exporter", "ratio", "goal", "met?"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print()
    for n in notes:
        print("- " + n)


def delay_notes(notes, dl):
    notes.append(
        f"Detection delay: write to /dev/kmsg -> counter seen on /metrics, polled every "
        f"{dl['poll_ms']} ms on one keep-alive connection ({dl['polls']} polls, one GET took "
        f"{fmt_ms(dl['get_ms_median'])} median); up to one poll interval plus one GET is "
        f"included in every figure. min {fmt_ms(dl['min_ms'])}, "
        f"max {fmt_ms(dl['max_ms'])}, missed (> {EVENT_TIMEOUT_S:.0f} s) {dl['missed']}."
    )
    if dl["counter_delta"] != dl["count"] or dl["records_delta"] != dl["count"]:
        notes.append(
            f"WARNING: during the delay run the rcu_stall counter rose by {dl['counter_delta']:.0f} "
            f"and kmsg records by {dl['records_delta']:.0f} for {dl['count']} lines written: "
            "another writer was logging to /dev/kmsg, so some delays may be too short."
        )
    if dl["own_histogram_mean_ms"] is not None:
        notes.append(
            "nodemedic's own nodemedic_kernel_event_detect_delay_seconds (kernel record "
            f"timestamp -> counted, no HTTP) averaged {dl['own_histogram_mean_ms']:.3f} ms "
            "over the same events."
        )


def footprint_rows(rows, notes, fp, what, win):
    """Wake-ups and disk writes of both processes over one window (`fp`: footprint or
    burst JSON)."""
    nm, ne = fp["procs"]["nodemedic"], fp["procs"]["node_exporter"]
    if "wakeups_per_min" not in nm:
        return
    idle = what == "idle"
    w_nm, w_ne = nm["wakeups_per_min"], ne["wakeups_per_min"]
    rows.append(
        [
            f"wake-ups per minute, {what} (context switches of all threads over {win})",
            f"{w_nm:.1f}",
            f"{w_ne:.1f}",
            ratio(w_nm / w_ne) if w_ne else "∞",
            f"≤ {GOAL_WAKEUPS_PER_MIN}" if idle else "—",
            yes(w_nm <= GOAL_WAKEUPS_PER_MIN) if idle else "—",
        ]
    )
    b_nm, b_ne = nm["write_bytes_per_day"], ne["write_bytes_per_day"]
    rows.append(
        [
            f"disk writes, {what} (/proc/PID/io write_bytes over {win}, per day at that rate)",
            f"{kib(b_nm)}/day ({nm['write_bytes']:,} B)",
            f"{kib(b_ne)}/day ({ne['write_bytes']:,} B)",
            ratio(b_nm / b_ne) if b_ne else ("—" if not b_nm else "∞"),
            f"≤ {GOAL_WRITE_BYTES_PER_DAY // 1024} KiB/day" if idle else "—",
            yes(b_nm <= GOAL_WRITE_BYTES_PER_DAY) if idle else "—",
        ]
    )
    by = ", ".join(f"{k} {v:.1f}" for k, v in nm["wakeups_by_thread_per_min"].items() if v >= 0.05)
    notes.append(f"nodemedic wake-ups per minute by thread, {what}: {by}.")
    for name, proc in (("nodemedic", nm), ("node_exporter", ne)):
        if proc["switch_threads_exited"]:
            notes.append(
                f"{proc['switch_threads_exited']} {name} thread(s) exited during the {what} window: "
                "their context switches are missing from its wake-up figure."
            )


def kib(b):
    return f"{b / 1024:,.1f} KiB"


def ratio(r):
    """nodemedic / node_exporter, to two significant digits (scrape times differ 1000x)."""
    return "∞" if math.isinf(r) else f"{r:.2g}"


def fmt_ms(v):
    return "n/a" if v is None else f"{v:.2f} ms"


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("footprint")
    f.add_argument("--name", action="append", required=True)
    f.add_argument("--pid", action="append", type=int, required=True)
    f.add_argument("--url", action="append", required=True)
    f.add_argument("--seconds", type=int, required=True)
    f.add_argument("--scrape-every", type=int, required=True)
    f.add_argument("--out", required=True)
    f.set_defaults(fn=cmd_footprint)
    w = sub.add_parser("wait")
    w.add_argument("url")
    w.add_argument("--timeout", type=float, default=30.0)
    w.set_defaults(fn=cmd_wait)
    d = sub.add_parser("delay")
    d.add_argument("--hostport", required=True)
    d.add_argument("--count", type=int, required=True)
    d.add_argument("--poll-ms", type=float, default=1.0)
    d.add_argument("--gap-ms", type=float, default=20.0)
    d.add_argument("--out", required=True)
    d.set_defaults(fn=cmd_delay)
    b = sub.add_parser("burst")
    b.add_argument("--name", action="append", required=True)
    b.add_argument("--pid", action="append", type=int, required=True)
    b.add_argument("--count", type=int, default=1000)
    b.add_argument("--seconds", type=int, default=60)
    b.add_argument("--out", required=True)
    b.set_defaults(fn=cmd_burst)
    t = sub.add_parser("throughput")
    t.add_argument("--out", required=True)
    t.add_argument("logs", nargs="+")
    t.set_defaults(fn=cmd_throughput)
    pr = sub.add_parser("preflight")
    pr.add_argument("--out", required=True)
    pr.add_argument("logs", nargs="+")
    pr.set_defaults(fn=cmd_preflight)
    me = sub.add_parser("memory")
    me.add_argument("--out", required=True)
    me.add_argument("logs", nargs="+")
    me.set_defaults(fn=cmd_memory)
    h = sub.add_parser("hung")
    h.add_argument("--hostport", required=True)
    h.add_argument("--dir", required=True)
    h.add_argument("--mounts", type=int, default=20)
    h.add_argument("--scrapes", type=int, default=300)
    h.add_argument("--gap-ms", type=float, default=50.0)
    h.add_argument("--compare-url")
    h.add_argument("--compare-scrapes", type=int, default=3)
    h.add_argument("--out", required=True)
    h.set_defaults(fn=cmd_hung)
    tb = sub.add_parser("table")
    tb.add_argument("--dir", required=True)
    tb.set_defaults(fn=cmd_table)
    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
