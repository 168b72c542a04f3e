#!/usr/bin/env python3
"""Erasure-coding benchmarks of a cairn node (issue: erasure-coded datasets), each against a
baseline measured in the same run, on the same filesystem.

  (a) protected upload (POST /data?k=8&m=8, CID returned once durable) of a file vs the floor of
      the foundation's upload benchmark: max(openssl dgst -sha256 FILE, dd ... conv=fsync);
      target <= 2.6x (parity doubles the bytes hashed and written)
  (b) peak RSS of the node during the protected upload
  (c) the in-memory figures of `cargo bench -p cairn-core --bench erasure` (our encode vs a bare
      reed-solomon-simd encode, and the rebuild of one row: time and bytes read), unless
      --no-core

Usage: python3 bench/erasure.py [--size 1GiB] [--k 8] [--m 8] [--repeat 3] [--workdir DIR]
                                [--binary PATH] [--no-core] [--json]
Build first: cargo build --release. Needs curl, openssl and dd. Standard library only.
"""
import argparse, json, os, shutil, signal, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from local import free_port, measure_floor, parse_size, status_kib, timed, wait_ready, write_random  # noqa: E402

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="1GiB")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--m", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", default=None, help="directory on the disk to measure (default: a temp dir under /var/tmp)")
    ap.add_argument("--binary", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "cairn"))
    ap.add_argument("--no-core", action="store_true", help="skip cargo bench -p cairn-core --bench erasure")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    size = parse_size(args.size)
    for tool in ("curl", "openssl", "dd"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is needed")
    if not os.path.exists(args.binary):
        raise SystemExit(f"{args.binary} not found: run cargo build --release first")
    base_dir = args.workdir or ("/var/tmp" if os.path.isdir("/var/tmp") else None)
    work = tempfile.mkdtemp(prefix=f"cairn-ec-bench-{os.getpid()}-", dir=base_dir)
    rounds, proc = [], None
    try:
        payload = os.path.join(work, "payload.bin")
        write_random(payload, size)
        for r in range(args.repeat):
            rec = {"loadavg_1m": float(open("/proc/loadavg").read().split()[0])}
            rec.update(measure_floor(payload, work))

            data_dir = os.path.join(work, f"node-{r}")
            port = free_port()
            url = f"http://127.0.0.1:{port}/api/storage/v1"
            proc = subprocess.Popen([args.binary, "start", "--data-dir", data_dir, "--api-port", str(port),
                                     "--log-level", "warn", "--storage-quota", str(4 * size + (1 << 30))],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_ready(url, proc)
            t = time.perf_counter()
            out = subprocess.run(["curl", "-sf", "-X", "POST", "-T", payload, "-H", "Expect:",
                                  f"{url}/data?k={args.k}&m={args.m}"], check=True, capture_output=True, text=True)
            rec["protected_upload_s"] = time.perf_counter() - t
            rec["peak_rss_mib"] = status_kib(proc.pid, "VmHWM") / 1024
            cid = out.stdout.strip()
            manifest = json.loads(subprocess.run(["curl", "-sf", f"{url}/data/{cid}/network/manifest"],
                                                 check=True, capture_output=True, text=True).stdout)
            assert manifest["manifest"]["protected"], manifest
            rec["read_s"] = timed(["curl", "-sf", "-o", "/dev/null", f"{url}/data/{cid}"])
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc = None
            shutil.rmtree(data_dir, ignore_errors=True)
            rec["ratio"] = rec["protected_upload_s"] / rec["floor_s"]
            rounds.append(rec)
            if not args.json:
                print(f"round {r}: protected upload {rec['protected_upload_s']:.2f}s floor {rec['floor_s']:.2f}s "
                      f"(openssl {rec['openssl_s']:.2f}s, dd {rec['dd_fsync_s']:.2f}s) ratio {rec['ratio']:.2f}; "
                      f"read {rec['read_s']:.2f}s; peak RSS {rec['peak_rss_mib']:.0f} MiB; load {rec['loadavg_1m']}",
                      file=sys.stderr)
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    med = lambda k: statistics.median(x[k] for x in rounds)
    mib = size / (1 << 20)
    summary = {
        "size_bytes": size, "k": args.k, "m": args.m,
        "protected_upload_s": med("protected_upload_s"), "floor_s": med("floor_s"),
        "protected_upload_ratio": med("ratio"), "protected_upload_target": 2.6,
        "protected_upload_mib_s": mib / med("protected_upload_s"),
        "read_s": med("read_s"), "peak_rss_mib": max(x["peak_rss_mib"] for x in rounds),
        "rounds": rounds,
    }
    if not args.no_core:
        root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
        env = dict(os.environ, CAIRN_BENCH_MIB=str(size >> 20))
        out = subprocess.run(["cargo", "bench", "-q", "-p", "cairn-core", "--bench", "erasure"], cwd=root, env=env,
                             check=True, capture_output=True, text=True)
        summary["core"] = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"(a) protected upload {args.k}+{args.m}: {summary['protected_upload_mib_s']:.0f} MiB/s, "
              f"{summary['protected_upload_ratio']:.2f}x the floor (target <= 2.6x)")
        print(f"(b) peak RSS during the protected upload {summary['peak_rss_mib']:.0f} MiB")
        for line in summary.get("core", []):
            print(f"(c) {line}")

if __name__ == "__main__":
    main()
