#!/usr/bin/env python3
""""Our side" of the p2p transfer benchmark, for compare.py (see docs/benchmarks.md).

Starts 1 seeder and N leecher cairn nodes as separate processes on 127.0.0.1, imports FILE into
the seeder (untimed), waits until every leecher is connected to it (untimed), then times from the
moment the leechers are told to fetch (POST /data/{cid}/network on each) until the last one holds
the complete dataset, every block verified against the tree and stored. Afterwards (untimed) it
reads every copy back and checks it against the payload's SHA-256, and stops its nodes.

Prints one JSON object: {"seconds": s, "peak_rss_mib_seeder": x, "peak_rss_mib_leecher_max": y,
"cpu_seconds_seeder": c, "cpu_seconds_leecher_max": d} (CPU time used during the timed part).
`--perf FILE` records a system-wide `perf` profile of the timed part.

  python3 bench/p2p.py --file FILE --leechers 1 --workdir DIR [--binary target/release/cairn]

Standard library only. Build first: cargo build --release.
"""
import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

BASE = "/api/storage/v1"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, data=None, timeout=600, length=None):
    req = urllib.request.Request(url, data=data, method=method)
    if length is not None:
        req.add_header("Content-Length", str(length))
        req.add_header("Content-Type", "application/octet-stream")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.read()
    except urllib.error.HTTPError as e:
        sys.exit(f"{method} {url}: HTTP {e.code}: {e.read().decode(errors='replace').strip()}")


def peak_rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid):
    """User + system CPU time of a process so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


class Node:
    def __init__(self, binary, workdir, name, bootstrap=None):
        self.api = free_port()
        self.url = f"http://127.0.0.1:{self.api}{BASE}"
        args = [binary, "start", "--data-dir", os.path.join(workdir, name), "--api-port", str(self.api),
                "--listen-ip", "127.0.0.1", "--listen-port", "0", "--log-level", "warn"]
        if bootstrap:
            args += ["--bootstrap-node", bootstrap]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(os.path.join(workdir, name + ".log"), "wb"))

    def wait_ready(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"a node exited early with code {self.proc.returncode}")
            try:
                return json.loads(http("GET", self.url + "/debug/info", timeout=5))
            except OSError:
                time.sleep(0.05)
        sys.exit("a node did not become ready")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--file", required=True)
    ap.add_argument("--leechers", type=int, default=1)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--binary", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "cairn"))
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--json", action="store_true", help="accepted for symmetry; output is always JSON")
    ap.add_argument("--perf", metavar="FILE", help="record a system-wide `perf record -g` profile of the timed part into FILE")
    a = ap.parse_args()
    own_workdir = a.workdir is None
    workdir = a.workdir or tempfile.mkdtemp(prefix=f"cairn-p2p-{os.getpid()}-")
    os.makedirs(workdir, exist_ok=True)
    nodes = []
    try:
        seeder = Node(a.binary, workdir, "seeder")
        nodes.append(seeder)
        info = seeder.wait_ready()
        addr = next(x for x in info["addrs"] if x.startswith("/ip4/127.0.0.1/tcp/"))
        boot = f"{addr}/p2p/{info['id']}"
        with open(a.file, "rb") as f:
            cid = http("POST", seeder.url + "/data", data=f, length=os.path.getsize(a.file)).decode().strip()
        leechers = [Node(a.binary, workdir, f"leecher{i}", boot) for i in range(a.leechers)]
        nodes += leechers
        for n in leechers:
            n.wait_ready()
        deadline = time.time() + 60
        for n in leechers:
            while not json.loads(http("GET", n.url + "/debug/info"))["connections"]:
                if time.time() > deadline:
                    sys.exit("a leecher did not connect to the seeder")
                time.sleep(0.02)

        ids = [None] * len(leechers)
        profiler = None
        if a.perf:
            profiler = subprocess.Popen(["perf", "record", "-a", "-g", "-F", "1999", "-o", a.perf],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)  # perf's start-up; the profile thus holds 0.5 s of idle before t0
        cpu_before = [cpu_seconds(n.proc.pid) for n in nodes]
        t0 = time.monotonic()

        errors = []

        def start(i, n):
            try:
                ids[i] = json.loads(http("POST", f"{n.url}/data/{cid}/network"))["downloadId"]
            except BaseException as e:  # sys.exit in a thread only ends the thread
                errors.append(f"leecher {i}: {e}")

        threads = [threading.Thread(target=start, args=(i, n)) for i, n in enumerate(leechers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            sys.exit("starting a download failed: " + "; ".join(errors))
        pending = set(range(len(leechers)))
        while pending:
            for i in list(pending):
                p = json.loads(http("GET", f"{leechers[i].url}/data/{cid}/network/progress/{ids[i]}"))
                if not p["active"]:
                    pending.discard(i)
            if time.monotonic() - t0 > a.timeout:
                sys.exit("the transfer timed out")
            if pending:
                time.sleep(0.005)
        seconds = time.monotonic() - t0
        cpu_used = [cpu_seconds(n.proc.pid) - c for n, c in zip(nodes, cpu_before)]
        if profiler:
            profiler.send_signal(signal.SIGINT)
            profiler.wait()
        print(f"transfer done in {seconds:.3f} s", file=sys.stderr)

        want = hashlib.sha256()
        with open(a.file, "rb") as f:
            for b in iter(lambda: f.read(1 << 20), b""):
                want.update(b)
        for n in leechers:
            h = hashlib.sha256()
            with urllib.request.urlopen(f"{n.url}/data/{cid}", timeout=600) as r:
                for b in iter(lambda: r.read(1 << 20), b""):
                    h.update(b)
            if h.hexdigest() != want.hexdigest():
                sys.exit("a leecher's copy does not match the payload")
        result = {
            "seconds": round(seconds, 4),
            "peak_rss_mib_seeder": round(peak_rss_mib(seeder.proc.pid), 1),
            "peak_rss_mib_leecher_max": round(max(peak_rss_mib(n.proc.pid) for n in leechers), 1),
            "cpu_seconds_seeder": round(cpu_used[0], 2),
            "cpu_seconds_leecher_max": round(max(cpu_used[1:]), 2),
        }
    finally:
        for n in nodes:
            n.stop()
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
