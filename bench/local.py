#!/usr/bin/env python3
"""Local benchmarks of a cairn node (issue: foundation), each against a baseline measured in the
same run, on the same filesystem.

  (a) upload of a file through REST (CID returned once durable) vs the physical floor:
      max(openssl dgst -sha256 FILE, dd if=FILE of=COPY bs=4M conv=fsync); target <= 1.3x
  (b) local download of the dataset through REST vs `cat FILE > /dev/null`
  (c) idle RSS of a started node; target <= 50 MiB
  (d) peak RSS of the node during the upload; target <= 200 MiB

After each timed download the dataset is downloaded once more, untimed, and its length and SHA-256
are checked against the payload's; a mismatch stops the run with "VERIFY FAILED".

Usage: python3 bench/local.py [--size 1GiB] [--repeat 3] [--workdir DIR] [--binary PATH] [--json]
Build first: cargo build --release. Needs curl and openssl. Standard library only.
"""
import argparse, hashlib, json, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

def parse_size(s):
    units = {"KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "KB": 10**3, "MB": 10**6, "GB": 10**9, "B": 1}
    s = s.strip().upper()
    for u, m in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if s.endswith(u):
            return int(float(s[: -len(u)]) * m)
    return int(s)

def timed(cmd, **kw):
    t = time.perf_counter()
    subprocess.run(cmd, check=True, **kw)
    return time.perf_counter() - t

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0

def wait_ready(url, proc, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"node exited early with code {proc.returncode}")
        r = subprocess.run(["curl", "-sf", "-o", "/dev/null", url + "/space"])
        if r.returncode == 0:
            return
        time.sleep(0.1)
    raise SystemExit("node did not become ready")

def write_random(path, size):
    """Writes `size` random bytes to `path`, 16 MiB at a time; returns their SHA-256 (hex)."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 24)
            chunk = os.urandom(n)
            h.update(chunk)
            f.write(chunk)
            left -= n
    return h.hexdigest()

def verify_download(url, size, sha256_hex):
    """Downloads `url` again (untimed), hashing the stream; exits loudly unless the bytes are
    exactly the payload's (same length, same SHA-256)."""
    h = hashlib.sha256()
    got = 0
    with subprocess.Popen(["curl", "-sSf", url], stdout=subprocess.PIPE) as p:
        while True:
            chunk = p.stdout.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
            got += len(chunk)
        rc = p.wait()
    if rc != 0:
        raise SystemExit(f"VERIFY FAILED: curl {url} exited with code {rc} after {got} bytes")
    if got != size:
        raise SystemExit(f"VERIFY FAILED: downloaded {got} bytes, uploaded {size}")
    if h.hexdigest() != sha256_hex:
        raise SystemExit(f"VERIFY FAILED: downloaded SHA-256 {h.hexdigest()} != payload {sha256_hex}")

def measure_floor(payload, work):
    """The upload floor of the same run: max(openssl dgst -sha256, dd conv=fsync) of `payload`."""
    copy = os.path.join(work, "copy.bin")
    rec = {"openssl_s": timed(["openssl", "dgst", "-sha256", payload], stdout=subprocess.DEVNULL),
           "dd_fsync_s": timed(["dd", f"if={payload}", f"of={copy}", "bs=4M", "conv=fsync"], stderr=subprocess.DEVNULL)}
    os.remove(copy)
    rec["floor_s"] = max(rec["openssl_s"], rec["dd_fsync_s"])
    return rec

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="1GiB")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", default=None, help="directory on the disk to measure (default: a temp dir under /var/tmp)")
    ap.add_argument("--binary", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "cairn"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    size = parse_size(args.size)
    for tool in ("curl", "openssl", "dd"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is needed")
    if not os.path.exists(args.binary):
        raise SystemExit(f"{args.binary} not found: run cargo build --release first")
    base_dir = args.workdir or ("/var/tmp" if os.path.isdir("/var/tmp") else None)
    work = tempfile.mkdtemp(prefix=f"cairn-bench-{os.getpid()}-", dir=base_dir)
    rounds = []
    proc = None
    try:
        payload = os.path.join(work, "payload.bin")
        payload_sha256 = write_random(payload, size)
        for r in range(args.repeat):
            rec = {"loadavg_1m": float(open("/proc/loadavg").read().split()[0])}
            rec.update(measure_floor(payload, work))

            data_dir = os.path.join(work, f"node-{r}")
            port = free_port()
            url = f"http://127.0.0.1:{port}/api/storage/v1"
            proc = subprocess.Popen([args.binary, "start", "--data-dir", data_dir, "--api-port", str(port), "--log-level", "warn"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_ready(url, proc)
            time.sleep(2.0)
            rec["idle_rss_mib"] = status_kib(proc.pid, "VmRSS") / 1024

            t = time.perf_counter()
            out = subprocess.run(["curl", "-sf", "-X", "POST", "-T", payload, "-H", "Expect:", url + "/data"],
                                 check=True, capture_output=True, text=True)
            rec["upload_s"] = time.perf_counter() - t
            cid = out.stdout.strip()
            rec["peak_rss_mib"] = status_kib(proc.pid, "VmHWM") / 1024

            rec["cat_s"] = timed(f"cat '{payload}' > /dev/null", shell=True)
            rec["download_s"] = timed(["curl", "-sf", "-o", "/dev/null", f"{url}/data/{cid}"])
            # Untimed: the bytes served are the bytes uploaded.
            verify_download(f"{url}/data/{cid}", size, payload_sha256)

            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc = None
            shutil.rmtree(data_dir, ignore_errors=True)
            rec["upload_ratio"] = rec["upload_s"] / rec["floor_s"]
            rec["download_ratio"] = rec["download_s"] / rec["cat_s"]
            rounds.append(rec)
            if not args.json:
                print(f"round {r}: upload {rec['upload_s']:.2f}s floor {rec['floor_s']:.2f}s "
                      f"(openssl {rec['openssl_s']:.2f}s, dd {rec['dd_fsync_s']:.2f}s) ratio {rec['upload_ratio']:.2f}; "
                      f"download {rec['download_s']:.2f}s cat {rec['cat_s']:.2f}s ratio {rec['download_ratio']:.2f}; "
                      f"idle RSS {rec['idle_rss_mib']:.1f} MiB, peak RSS {rec['peak_rss_mib']:.1f} MiB, load {rec['loadavg_1m']}",
                      file=sys.stderr)
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    med = lambda k: statistics.median(x[k] for x in rounds)
    mib = size / (1 << 20)
    summary = {
        "size_bytes": size,
        "upload_s": med("upload_s"), "upload_mib_s": mib / med("upload_s"), "floor_s": med("floor_s"),
        "upload_ratio": med("upload_ratio"), "upload_target": 1.3,
        "download_s": med("download_s"), "download_mib_s": mib / med("download_s"), "cat_s": med("cat_s"),
        "download_ratio": med("download_ratio"),
        "idle_rss_mib": med("idle_rss_mib"), "idle_rss_target_mib": 50,
        "peak_rss_mib": max(x["peak_rss_mib"] for x in rounds), "peak_rss_target_mib": 200,
        "rounds": rounds,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"(a) upload {summary['upload_mib_s']:.0f} MiB/s, {summary['upload_ratio']:.2f}x the floor (target <= 1.3x)")
        print(f"(b) download {summary['download_mib_s']:.0f} MiB/s, {summary['download_ratio']:.2f}x cat")
        print(f"(c) idle RSS {summary['idle_rss_mib']:.1f} MiB (target <= 50)")
        print(f"(d) peak RSS during upload {summary['peak_rss_mib']:.1f} MiB (target <= 200)")

if __name__ == "__main__":
    main()
