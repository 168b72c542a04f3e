#!/usr/bin/env python3
"""Coordination traffic of a loopback swarm (issue: swarms), per node, with default timers.

Starts N release nodes on 127.0.0.1 (default 20), the first creates an invite-only swarm and
admits the others, one small dataset is announced with `replicate:3`, and then the swarm idles
for --minutes (default 30). It reports, per node and per second over the idle window:

  - the application's coordination bytes (in + out), split as durability.md §15.1: beacons,
    membership (other ctl facts), dataset events (shard topics), anti-entropy sync, other
    requests (GET /swarms/{id} `traffic`, counted once per message as the node sees it);
  - the wire bytes of every TCP connection of each node process (ss -tin, sampled every 15 s,
    so a connection that closes loses at most one interval): everything, gossipsub copies and
    control, Kad, identify, ping, Noise and Yamux framing included;
  - the idle RSS of each node.

The reference is the spec's 10-member figure without probes and challenges (which slice S1 does
not have): about 120 B/s per node.

Usage: python3 bench/swarm_traffic.py [--nodes 20] [--minutes 30] [--binary PATH] [--json]
Build first: cargo build --release. Needs curl and ss. Standard library only.
"""
import argparse, json, os, re, shutil, signal, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from local import free_port, status_kib, wait_ready  # noqa: E402

REFERENCE_BPS = 120
CATEGORIES = ["beacons", "membership", "datasetEvents", "sync", "requests"]

def http(method, url, body=None, data_file=None):
    cmd = ["curl", "-sS", "-f", "-X", method, url]
    if body is not None:
        cmd += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    if data_file is not None:
        cmd += ["-H", "Content-Type: application/octet-stream", "--data-binary", "@" + data_file]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out) if out.strip() else None

def socket_bytes():
    """{(pid, local, peer): (sent, received)} for every TCP socket of a process."""
    out = subprocess.run(["ss", "-tinpH"], capture_output=True, text=True).stdout
    res, key = {}, None
    for line in out.splitlines():
        if not line.startswith((" ", "\t")):
            key = None
            m = re.search(r"pid=(\d+)", line)
            parts = line.split()
            if m and len(parts) >= 5:
                key = (int(m.group(1)), parts[3], parts[4])
            continue
        if key is None:
            continue
        sent = re.search(r"bytes_sent:(\d+)", line)
        recv = re.search(r"bytes_received:(\d+)", line)
        res[key] = (int(sent.group(1)) if sent else 0, int(recv.group(1)) if recv else 0)
    return res

class WireMeter:
    """Sums per-process socket byte counters across samples (sockets come and go)."""
    def __init__(self, pids):
        self.pids = set(pids)
        self.last = {}
        self.seen = set()
        self.total = {p: 0 for p in pids}
        self.sample(count=False)

    def sample(self, count=True):
        now = socket_bytes()
        for key, (s, r) in now.items():
            if key[0] not in self.pids:
                continue
            self.seen.add(key)
            ps, pr = self.last.get(key, (0, 0) if count else (s, r))
            self.total[key[0]] += max(0, s - ps) + max(0, r - pr)
        self.last = {k: v for k, v in now.items() if k[0] in self.pids}

def totals(traffic):
    return {c: traffic[c]["in"] + traffic[c]["out"] for c in CATEGORIES}

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--binary", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "cairn"))
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    for tool in ("curl", "ss"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is needed")
    if not os.path.exists(args.binary):
        raise SystemExit(f"{args.binary} not found: run cargo build --release first")
    work = tempfile.mkdtemp(prefix=f"cairn-swarm-bench-{os.getpid()}-", dir=args.workdir)
    procs, urls = [], []
    log = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr))
    try:
        bootstrap = None
        for i in range(args.nodes):
            port = free_port()
            cmd = [args.binary, "start", "--data-dir", os.path.join(work, f"n{i}"), "--api-port", str(port),
                   "--listen-ip", "127.0.0.1", "--log-level", "warn"]
            if bootstrap:
                cmd += ["--bootstrap-node", bootstrap]
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(p)
            url = f"http://127.0.0.1:{port}/api/storage/v1"
            urls.append(url)
            wait_ready(url, p)
            if bootstrap is None:
                info = http("GET", url + "/debug/info")
                bootstrap = f"{info['addrs'][0]}/p2p/{info['id']}"
        log(f"{args.nodes} nodes started")
        swarm = http("POST", urls[0] + "/swarms", {"name": "bench"})["swarmId"]
        for url in urls[1:]:
            peer = http("GET", url + "/peerid")["id"]
            invite = http("POST", f"{urls[0]}/swarms/{swarm}/invites", {"peerId": peer})["invite"]
            http("POST", f"{url}/swarms/{swarm}/join", {"invite": invite})
        deadline = time.time() + 300
        while time.time() < deadline:
            members = http("GET", f"{urls[0]}/swarms/{swarm}/members")["members"]
            if len(members) == args.nodes:
                break
            time.sleep(2)
        log(f"swarm {swarm}: {len(members)} members seen by the owner")
        payload = os.path.join(work, "dataset.bin")
        with open(payload, "wb") as f:
            f.write(os.urandom(1 << 20))
        http("POST", f"{urls[0]}/swarms/{swarm}/datasets?policy=replicate:3&filename=d.bin", data_file=payload)
        time.sleep(30)

        pids = [p.pid for p in procs]
        start = [totals(http("GET", f"{u}/swarms/{swarm}")["traffic"]) for u in urls]
        meter = WireMeter(pids)
        t0 = time.time()
        end = t0 + args.minutes * 60
        while time.time() < end:
            time.sleep(min(15, max(0.1, end - time.time())))
            meter.sample()
            for p in procs:
                if p.poll() is not None:
                    raise SystemExit(f"node {p.pid} exited with code {p.returncode}")
        elapsed = time.time() - t0
        stop = [totals(http("GET", f"{u}/swarms/{swarm}")["traffic"]) for u in urls]
        rss = [status_kib(p.pid, "VmRSS") / 1024 for p in procs]
        health = http("GET", f"{urls[0]}/swarms/{swarm}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(work, ignore_errors=True)

    per_node = []
    for a, b in zip(start, stop):
        per_node.append({c: (b[c] - a[c]) / elapsed for c in CATEGORIES})
    mean = {c: statistics.mean(n[c] for n in per_node) for c in CATEGORIES}
    app_total = sum(mean.values())
    wire = [meter.total[p] / elapsed for p in pids]
    summary = {
        "nodes": args.nodes, "seconds": round(elapsed), "members": health.get("members"),
        "app_bytes_per_node_per_s": {c: round(v, 2) for c, v in mean.items()},
        "app_total_per_node_per_s": round(app_total, 2),
        "app_total_max_node_per_s": round(max(sum(n.values()) for n in per_node), 2),
        "wire_per_node_per_s": {"mean": round(statistics.mean(wire), 1), "max": round(max(wire), 1),
                                "nodes": [round(w, 1) for w in wire]},
        "sockets_seen_per_node": round(len(meter.seen) / args.nodes, 1),
        "reference_per_node_per_s": REFERENCE_BPS,
        "idle_rss_mib": {"mean": round(statistics.mean(rss), 1), "max": round(max(rss), 1)},
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{args.nodes}-node loopback swarm, {elapsed / 60:.1f} min idle, default timers, per node (in + out):")
        for c in CATEGORIES:
            print(f"  {c:<14} {mean[c]:8.2f} B/s")
        print(f"  {'application':<14} {app_total:8.2f} B/s (max node {summary['app_total_max_node_per_s']:.2f})")
        print(f"  {'wire (all TCP)':<14} {summary['wire_per_node_per_s']['mean']:8.1f} B/s (max node {summary['wire_per_node_per_s']['max']:.1f})")
        print(f"  TCP connections seen per node during the window: {summary['sockets_seen_per_node']}")
        print(f"  reference (spec, 10 members, no probes/challenges): about {REFERENCE_BPS} B/s")
        print(f"  idle RSS {summary['idle_rss_mib']['mean']:.1f} MiB mean, {summary['idle_rss_mib']['max']:.1f} MiB max")

if __name__ == "__main__":
    main()
