#!/usr/bin/env python3
"""HTTP exhaustion benchmark (issue 18, point 3): what share of /metrics probes a scraper
gets while the endpoint is attacked.

  never-read  N clients (one loopback address each, 127.0.0.2...) pipeline GET /metrics
              requests and never read a byte; a dropped one reconnects at once.
  slowloris   N connections spread over A addresses send one header byte per second and
              never finish their request; a dropped one reconnects at once.

  python3 http_abuse.py table FILE...   prints the results saved from earlier runs as a
                                        markdown table.

Probes come from 127.0.0.1, one every --probe-every seconds, each a fresh connection with
`Connection: close`; a probe counts as served when a 200 with its whole body arrives within
--probe-timeout. The attack runs in a child process, so the probes never wait for it
(Python's GIL would otherwise starve them). Prints one JSON object. Linux only (every 127/8
address is this host).
"""

import argparse
import errno
import json
import selectors
import socket
import multiprocessing
import time

REQ = b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n"


def connect_from(src, hostport):
    host, port = hostport.rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.setblocking(False)
    try:
        s.connect((host, int(port)))
    except BlockingIOError:
        pass
    return s


class Attack:
    """Keeps `count` hostile connections open, reconnecting any the server closes."""

    def __init__(self, kind, hostport, count, addresses):
        self.kind = kind
        self.hostport = hostport
        self.count = count
        self.addresses = addresses
        self.sel = selectors.DefaultSelector()
        self.conns = {}
        self.reconnects = multiprocessing.Value("l", 0)
        self.stop = multiprocessing.Event()

    def source(self, i):
        n = i % self.addresses
        return "127.0.%d.%d" % (n // 250, 2 + n % 250)

    def open(self, i):
        s = connect_from(self.source(i), self.hostport)
        self.conns[i] = (s, 0)
        # Slowloris: watch for the server closing us (readable = EOF). Never-read: we never
        # read, so the only sign of a close is a failed send.
        if self.kind == "slowloris":
            self.sel.register(s, selectors.EVENT_READ, i)

    def close(self, i):
        s, _ = self.conns.pop(i)
        try:
            self.sel.unregister(s)
        except (KeyError, ValueError):
            pass
        s.close()

    def run(self):
        for i in range(self.count):
            self.open(i)
        tick = 0
        while not self.stop.is_set():
            tick += 1
            for i in list(self.conns):
                s, sent = self.conns[i]
                try:
                    if self.kind == "never-read":
                        # Keep the pipe full: a few requests per round, never a read.
                        s.send(REQ * 8)
                    elif tick % 10 == 0:
                        # One header byte a second, never the blank line that ends them.
                        part = b"GET /metrics HTTP/1.1\r\nX-a: " if sent == 0 else b"a"
                        s.send(part)
                        self.conns[i] = (s, sent + 1)
                except BlockingIOError:
                    pass
                except OSError as e:
                    if e.errno in (errno.ENOTCONN, errno.EINPROGRESS):
                        continue
                    self.close(i)
                    self.reconnects.value += 1
                    self.open(i)
            for key, _ in self.sel.select(timeout=0.1):
                i = key.data
                s, _ = self.conns.get(i, (None, 0))
                if s is None:
                    continue
                try:
                    if s.recv(4096):
                        continue
                except BlockingIOError:
                    continue
                except OSError:
                    pass
                self.close(i)
                self.reconnects.value += 1
                self.open(i)
            if not self.sel.get_map():
                time.sleep(0.1)
        for i in list(self.conns):
            self.close(i)


def probe(hostport, timeout):
    host, port = hostport.rsplit(":", 1)
    t0 = time.monotonic()
    try:
        s = socket.create_connection((host, int(port)), timeout=timeout, source_address=("127.0.0.1", 0))
        s.settimeout(timeout)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if time.monotonic() - t0 > timeout:
                break
        s.close()
        ok = data.startswith(b"HTTP/1.1 200") and data.rstrip().endswith(b"# EOF")
    except OSError:
        ok = False
    return ok, time.monotonic() - t0


def table(files):
    print("| attack | clients / addresses | probes | served | p50 | p99 | goal >= 95% |")
    print("|---|---|---|---|---|---|---|")
    for f in files:
        with open(f) as fh:
            r = json.load(fh)
        ms = lambda v: "-" if v is None else "%.1f ms" % v
        print("| %s | %d / %d | %d | %.1f%% | %s | %s | %s |" % (
            r["attack"], r["clients"], r["addresses"], r["probes"], r["served_pct"],
            ms(r["p50_ms"]), ms(r["p99_ms"]), "yes" if r["served_pct"] >= 95.0 else "**NO**"))


def main():
    import sys
    if len(sys.argv) > 1 and sys.argv[1] == "table":
        table(sys.argv[2:])
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--hostport", required=True)
    p.add_argument("--attack", choices=["never-read", "slowloris", "none"], required=True)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--addresses", type=int, default=32, help="source addresses the clients use")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--warmup", type=float, default=3.0, help="attack alone before probing")
    p.add_argument("--probe-every", type=float, default=0.1)
    p.add_argument("--probe-timeout", type=float, default=2.0)
    a = p.parse_args()

    attack = None
    if a.attack != "none":
        attack = Attack(a.attack, a.hostport, a.clients, a.addresses)
        t = multiprocessing.Process(target=attack.run, daemon=True)
        t.start()
        time.sleep(a.warmup)
    results = []
    end = time.monotonic() + a.seconds
    while time.monotonic() < end:
        ok, took = probe(a.hostport, a.probe_timeout)
        results.append((ok, took))
        time.sleep(max(0.0, a.probe_every - took))
    if attack:
        attack.stop.set()
        t.join(timeout=10)
        if t.is_alive():
            t.kill()
    served = sum(1 for ok, _ in results if ok)
    lat = sorted(took for ok, took in results if ok)
    print(json.dumps({
        "attack": a.attack,
        "clients": a.clients,
        "addresses": a.addresses,
        "probes": len(results),
        "served": served,
        "served_pct": round(100.0 * served / max(1, len(results)), 1),
        "p50_ms": round(1000 * lat[len(lat) // 2], 1) if lat else None,
        "p99_ms": round(1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))], 1) if lat else None,
        "attacker_reconnects": attack.reconnects.value if attack else 0,
    }))


if __name__ == "__main__":
    main()
