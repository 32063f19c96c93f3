#!/usr/bin/env python3
"""One node against one shard whose data keys live in etcd (make bench-cluster), in one run.

A local 3-member etcd on loopback (scripts/etcd-local.sh, snapshot count 100 and one kept WAL
segment, so phase 1 can retire the segments that held the keys), then, for each mode, a fresh
release oubli-server (exact index, permissive policy) measured by `oubli load`:
- enrolment calls/s and p50/p99 with 1 and 8 clients (each acknowledgement durable: a synced
  RocksDB write, and with etcd the key's commit on a majority of members);
- a mixed run with access and erasure requests, then the erasure pipeline's step durations from
  the server's /metrics (phase 1 is the data keys' purge: with etcd, every member compacted,
  defragmented, its WAL moved past the delete and checked).
Results in target/bench-cluster/results.json. Every process started is stopped on exit.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "target" / "bench-cluster"
BIN = ROOT / "target" / "release"
ETCD = OUT / "etcd"
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
running = []


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def etcd_script(*args, env=None):
    subprocess.run([ROOT / "scripts" / "etcd-local.sh", *args, ETCD], check=True, env={**os.environ, **(env or {})})


def start_server(mode):
    d = OUT / f"server-{mode}"
    d.mkdir(parents=True)
    cmd = [BIN / "oubli-server", "--data-dir", d / "data", "--key-dir", d / "keys", "--index", "exact",
           "--policy-profile", "permissive", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
           "--submissions-per-minute", "100000", "--public-submissions-per-minute", "100000",
           "--purge-window-secs", "0"]
    if mode == "etcd":
        endpoints = (ETCD / "endpoints").read_text().strip()
        cmd += ["--cluster", f"etcd://{endpoints}", "--etcd-data-dirs", ",".join(str(ETCD / f"m{n}") for n in (1, 2, 3))]
    logf = open(d / "server.log", "w")
    proc = subprocess.Popen([str(c) for c in cmd], stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    running.append(proc)
    addr = metrics = None
    for _ in range(600):
        text = (d / "server.log").read_text()
        m = re.search(r"serving oubli\.v1.*?(127\.0\.0\.1:\d+)", text)
        mm = re.search(r"serving metrics.*?(127\.0\.0\.1:\d+)", text)
        if m and mm:
            addr, metrics = m.group(1), mm.group(1)
            break
        if proc.poll() is not None:
            sys.exit(f"oubli-server ({mode}) exited: {text[-2000:]}")
        time.sleep(0.1)
    if not addr:
        sys.exit(f"oubli-server ({mode}) did not start within 60 s")
    return proc, d, addr, metrics


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    running.remove(proc)


def load(d, addr, *args):
    cmd = [BIN / "oubli", "--json", "load", "--server", addr, "--token-file", d / "keys" / "local.token",
           "--duration", SECONDS, *args]
    out = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, text=True, timeout=900)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        sys.exit(f"`{' '.join(str(c) for c in cmd)}` failed with status {out.returncode}")
    return json.loads(lines[-1])


def mixed(d, addr, key):
    """A mixed run (its text table: the mixed mode prints no JSON) and its consistency check."""
    cmd = [BIN / "oubli", "load", "--server", addr, "--token-file", d / "keys" / "local.token",
           "--duration", SECONDS, "--clients", 4, "--capture-key", key]
    out = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         timeout=900)
    # Kept, not fatal: a run whose checks fail is a result too (its errors are in the table).
    errors = [line for line in out.stderr.splitlines() if line.startswith("  ")]
    return out.returncode == 0, out.stdout.splitlines(), errors


def steps(metrics):
    """The erasure steps' run counts and mean seconds, from /metrics."""
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for kind in ("sum", "count"):
        for step, value in re.findall(rf'oubli_erasure_step_duration_seconds_{kind}\{{step="(\w+)"\}} (\S+)', text):
            out.setdefault(step, {})[kind] = float(value)
    return {s: {"runs": int(v.get("count", 0)), "mean_s": round(v["sum"] / v["count"], 3) if v.get("count") else None}
            for s, v in out.items()}


def main():
    if OUT.exists():
        subprocess.run(["rm", "-rf", str(OUT)], check=True)
    OUT.mkdir(parents=True)
    etcd_script("start", env={"OUBLI_ETCD_SNAPSHOT_COUNT": "100", "OUBLI_ETCD_MAX_WALS": "1"})
    results = {"machine": {"cpu": cpu(), "cores": os.cpu_count()}, "seconds": SECONDS, "runs": []}
    try:
        for mode in ("node", "etcd"):
            proc, d, addr, metrics = start_server(mode)
            for clients in (1, 8):
                row = load(d, addr, "--bench", "--mix", "enroll:1", "--clients", clients, "--warmup", 1)
                results["runs"].append({"mode": mode, "op": "enroll", "clients": clients,
                                        **{k: row[k] for k in ("calls_per_s", "p50_ms", "p99_ms", "errors")}})
                log(f"{mode} enroll x{clients}: {row['calls_per_s']:.0f}/s, p50 {row['p50_ms']:.2f} ms, "
                    f"p99 {row['p99_ms']:.2f} ms")
            key = d / "capture.key"
            subprocess.run([str(BIN / "oubli"), "capture-keys", "add", "--file", str(d / "keys" / "capture-keys.toml"),
                            "--name", "bench-cluster", "--generate", str(key)], check=True, stdout=subprocess.DEVNULL)
            ok, table, errors = mixed(d, addr, key)
            # Phase 1 runs after each delete; wait (bounded) until the pipeline has run it.
            for _ in range(300):
                s = steps(metrics)
                if s.get("phase1_purge", {}).get("runs", 0) > 0 and s.get("delete", {}).get("runs", 0) > 0:
                    break
                time.sleep(1)
            s = steps(metrics)
            results["runs"].append({"mode": mode, "op": "mixed", "clients": 4, "checks_passed": ok, "table": table,
                                    "errors": errors, "steps": s})
            log("\n".join(table + errors))
            log(f"{mode} erasure steps: {s}")
            stop(proc)
    finally:
        for proc in list(running):
            stop(proc)
        etcd_script("stop")
    by = {(r["mode"], r["op"], r["clients"]): r for r in results["runs"]}
    results["ratios"] = {
        f"enroll_x{c}_etcd_over_node": round(by[("etcd", "enroll", c)]["calls_per_s"] / by[("node", "enroll", c)]["calls_per_s"], 3)
        for c in (1, 8)
    }
    (OUT / "results.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results["ratios"]))


def cpu():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
