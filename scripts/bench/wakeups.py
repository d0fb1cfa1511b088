#!/usr/bin/env python3
"""Idle wake-ups per minute of `nodemedic run`, per thread, with the power detector on and off.

Not part of the test suite. Needs root (it makes a scratch cgroup v2 for a kernfs alarm file).

    sudo python3 scripts/bench/wakeups.py --bin target/release/nodemedic [--seconds 120]

A wake-up is a context switch (`voluntary_ctxt_switches` plus `nonvoluntary_ctxt_switches`
in /proc/PID/task/TID/status, as bench.py counts them): the thread slept and was woken, or
was preempted. CPU is the thread's run time
(/proc/PID/task/TID/schedstat, ns); the process's VmRSS is read at the end of the window.
Each scenario starts the daemon with a default config (observe mode, every detector on but
the Kubernetes one: no API server; temp state dir, loopback port), waits `--settle` seconds, then counts over `--seconds`. No scrapes, no load.

Scenarios:
  vm-power-off   this machine, `[power] enabled = false`
  vm-power-on    this machine, default config (this VM has no hwmon, no thermal zone, no /dev/vcio)
  pi-kernfs      a host root whose /proc, /dev and /sys/fs are this machine's, with a Pi 5's
                 hwmon and thermal trees; the alarm is a kernfs file (a scratch cgroup's
                 `cgroup.freeze`, "0"), so the detector waits on it with poll(2)
  pi-plain       the same tree with the alarm a plain file: read every alarm_fallback_interval
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time


def threads(pid):
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                st = f.read()
        except OSError:
            continue
        # Voluntary plus involuntary, as bench.py counts them (issue 24).
        vol = int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", st, re.M).group(1)) + \
            int(re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", st, re.M).group(1))
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                cpu_ns = int(f.read().split()[0])
        except OSError:
            cpu_ns = 0
        key = f"{name}"
        while key in out:
            key += "+"
        out[key] = (vol, cpu_ns)
    return out


def cgroup2_mount():
    with open("/proc/self/mountinfo") as f:
        for line in f:
            if " - cgroup2 " in line:
                return line.split()[4]
    return None


def pi_root(base, alarm_kernfs):
    root = os.path.join(base, "root")
    os.makedirs(os.path.join(root, "sys"))
    for d in ["proc", "dev", "boot", "run"]:
        os.symlink(f"/{d}", os.path.join(root, d))
    for d in ["fs", "kernel"]:
        os.symlink(f"/sys/{d}", os.path.join(root, "sys", d))
    hw = os.path.join(root, "sys/class/hwmon")
    for n, name in [(0, "cpu_thermal"), (1, "rp1_adc"), (2, "rpi_volt")]:
        d = os.path.join(hw, f"hwmon{n}")
        os.makedirs(d)
        with open(os.path.join(d, "name"), "w") as f:
            f.write(name + "\n")
    alarm = os.path.join(hw, "hwmon2/in0_lcrit_alarm")
    if alarm_kernfs:
        os.symlink(alarm_kernfs, alarm)
    else:
        with open(alarm, "w") as f:
            f.write("0\n")
    z = os.path.join(root, "sys/class/thermal/thermal_zone0")
    os.makedirs(z)
    for name, text in [("type", "cpu-thermal"), ("temp", "52300"), ("trip_point_0_type", "critical"),
                       ("trip_point_0_temp", "110000"), ("trip_point_1_type", "active"),
                       ("trip_point_1_temp", "50000")]:
        with open(os.path.join(z, name), "w") as f:
            f.write(text + "\n")
    return root


def unit_watchdog_sec():
    unit = os.path.join(os.path.dirname(__file__), "..", "..", "systemd", "nodemedic.service")
    with open(unit) as f:
        m = re.search(r"^WatchdogSec=(\d+)s$", f.read(), re.M)
    if not m:
        sys.exit("wakeups: no WatchdogSec=<n>s in systemd/nodemedic.service")
    return int(m.group(1))


def run(binary, label, extra, seconds, settle):
    d = tempfile.mkdtemp(prefix=f"nm-wake-{label}-")
    cfg = os.path.join(d, "config.toml")
    with open(cfg, "w") as f:
        f.write(f'listen = "127.0.0.1:0"\nstate_dir = "{d}/state"\n{extra}')
    # As under the packaged unit: its WatchdogSec= paces the keep-alive thread (the notify
    # socket is a path nobody listens on; the keep-alives are sent and dropped).
    env = dict(os.environ, NOTIFY_SOCKET=os.path.join(d, "notify.sock"),
               WATCHDOG_USEC=str(unit_watchdog_sec() * 1_000_000))
    p = subprocess.Popen([binary, "run", "--config", cfg], stdout=subprocess.DEVNULL,
                         stderr=open(os.path.join(d, "log"), "w"), env=env)
    try:
        time.sleep(settle)
        a = threads(p.pid)
        time.sleep(seconds)
        b = threads(p.pid)
        with open(f"/proc/{p.pid}/status") as f:
            rss_kb = int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=10)
    per_min = {}
    for k, (v1, c1) in b.items():
        v0, c0 = a.get(k, (0, 0))
        # (wake-ups per minute, CPU ms per minute)
        per_min[k] = ((v1 - v0) * 60.0 / seconds, (c1 - c0) * 60.0 / seconds / 1e6)
    with open(os.path.join(d, "log")) as f:
        log = f.read()
    shutil.rmtree(d, ignore_errors=True)
    per_min["(VmRSS KiB)"] = (float(rss_kb), 0.0)
    return per_min, log


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--seconds", type=int, default=120)
    ap.add_argument("--settle", type=int, default=10)
    a = ap.parse_args()
    mnt = cgroup2_mount()
    scratch = os.path.join(mnt, f"nodemedic-bench-{os.getpid()}") if mnt else None
    if scratch:
        os.mkdir(scratch)
    base = tempfile.mkdtemp(prefix="nm-wake-roots-")
    only_power = "[kubernetes]\nenabled = false\n"
    scenarios = [
        ("vm-power-off", "[power]\nenabled = false\n" + only_power),
        ("vm-power-on", only_power),
    ]
    if scratch:
        r = pi_root(os.path.join(base, "k"), os.path.join(scratch, "cgroup.freeze"))
        scenarios.append(("pi-kernfs", f'host_root = "{r}"\n' + only_power))
    r = pi_root(os.path.join(base, "p"), None)
    scenarios.append(("pi-plain", f'host_root = "{r}"\n' + only_power))
    results = {}
    try:
        for label, extra in scenarios:
            print(f"running {label} ({a.seconds} s)...", file=sys.stderr)
            per, log = run(a.bin, label, extra, a.seconds, a.settle)
            results[label] = per
            for line in log.splitlines():
                if "power:" in line:
                    print(f"  {label}: {line}", file=sys.stderr)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        if scratch:
            os.rmdir(scratch)
    names = sorted({k for r in results.values() for k in r if not k.startswith("(")})
    print("wake-ups per minute / CPU ms per minute, per thread")
    print()
    print("| thread | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for n in names:
        print(f"| {n} | " + " | ".join(
            f"{r[n][0]:.1f} / {r[n][1]:.2f}" if n in r else "-" for r in results.values()) + " |")
    tot = [(sum(v for k, (v, _) in r.items() if not k.startswith("(")),
            sum(c for k, (_, c) in r.items() if not k.startswith("("))) for r in results.values()]
    print("| **total** | " + " | ".join(f"**{v:.1f} / {c:.2f}**" for v, c in tot) + " |")
    print("| VmRSS at the end (KiB) | " + " | ".join(
        f"{r['(VmRSS KiB)'][0]:.0f}" for r in results.values()) + " |")
    print(json.dumps(results), file=sys.stderr)


if __name__ == "__main__":
    main()
