#!/usr/bin/env python3
"""Oubli's exact and HNSW indexes next to the peers a user would pick instead, on the same data.

Run through `make bench-peers` (BENCH_N=1000000 for the 1M run). Steps:
1. a venv under target/bench-peers/venv with numpy, faiss-cpu, hnswlib and matplotlib from PyPI;
2. a synthetic population from `target/release/oubli synth generate` (BENCH_N vectors of 512
   dims: BENCH_N/2 people with two photos each; the first BENCH_PROBES held-out selfies are the
   probes) and its FMR 1e-3 threshold from `oubli synth stats`;
3. the ground truth (exact top 10 per probe) with numpy;
4. this machine's memory read bandwidth (`oubli-bench --bandwidth`);
5. numpy and faiss IndexFlatIP (exact), hnswlib and faiss IndexHNSWFlat (M=16,
   ef_construction=200, a sweep of ef), each on one thread and on all cores (BENCH_THREADS,
   e.g. `2` for only the all-core runs at 1M, where single-thread builds take hours), each in
   its own process so thread settings and memory do not leak between runs; Oubli through
   `target/release/oubli-bench` (BENCH_EXACT_ONLY=1: only the exact searches, no HNSW: numpy,
   faiss flat and Oubli's exact scan, a few minutes at 100k);
6. target/bench-peers/results.json and recall-vs-qps.png (copied to results-N.json and
   recall-vs-qps-N.png, so the 100k and 1M runs can both be kept), and a table on stdout.

match_recall: of the exact top-10 hits scoring at least the FMR 1e-3 threshold, the share the
system's own top 10 holds. recall_at_10: the share of the exact top 10 it holds.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "target" / "bench-peers"
VENV = OUT / "venv"
OUBLI = ROOT / "target" / "release" / "oubli"
OUBLI_BENCH = ROOT / "target" / "release" / "oubli-bench"
K = 10
N = int(os.environ.get("BENCH_N", "100000"))
PROBES = int(os.environ.get("BENCH_PROBES", "1000"))
EFS = [int(x) for x in os.environ.get("BENCH_EF", "16,32,64,128,256,384,512").split(",")]
M, EF_CONSTRUCTION = 16, 200
CORES = os.cpu_count() or 1
THREADS = sorted({int(t) for t in (os.environ.get("BENCH_THREADS") or f"1,{CORES}").split(",")})
PEERS = ["numpy", "faiss-cpu", "hnswlib", "matplotlib"]
EXACT_ONLY = os.environ.get("BENCH_EXACT_ONLY", "") not in ("", "0")


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def venv_python():
    python = VENV / "bin" / "python"
    if not python.exists():
        log(f"creating {VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    probe = "import numpy, faiss, hnswlib, matplotlib"
    if subprocess.run([str(python), "-c", probe], capture_output=True).returncode != 0:
        log("installing " + " ".join(PEERS) + " from PyPI")
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PEERS], check=True)
    return python


def data_dir():
    """Generates the population once per size, and returns it with its FMR 1e-3 threshold."""
    data = OUT / f"data-{N}"
    if not (data / "probes.npy").exists():
        identities = N // 2
        log(f"generating {N} vectors ({identities} people x 2) with held-out selfies")
        subprocess.run(
            [str(OUBLI), "synth", "generate", "--identities", str(identities), "--samples-per-identity", "2",
             "--probes-per-identity", "1", "--seed", "5", "--out", str(data)],
            check=True, stdout=subprocess.DEVNULL)
    stats = data / "stats" / "stats.json"
    if not stats.exists():
        log("measuring the score statistics (oubli synth stats)")
        subprocess.run(
            [str(OUBLI), "synth", "stats", str(data), "--impostor-pairs", "4000000", "--out", str(data / "stats")],
            check=True, stdout=subprocess.DEVNULL)
    points = json.loads(stats.read_text())["operating_points"]
    threshold = next(p["threshold"] for p in points if abs(p["fmr"] - 1e-3) < 1e-12)
    return data, threshold


# ---------------------------------------------------------------------------------------------
# Worker side: runs inside the venv, one system and thread count per process.

def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def load(data):
    import numpy as np
    base = np.load(data / "embeddings.npy")
    probes = np.ascontiguousarray(np.load(data / "probes.npy")[:PROBES])
    return base, probes


def truth(data):
    """Exact top 10 per probe by numpy, in blocks of rows (1M x 1000 scores do not fit)."""
    import numpy as np
    path, spath = data / f"truth-{PROBES}.npy", data / f"truth-scores-{PROBES}.npy"
    if path.exists():
        return
    base, probes = load(data)
    best_rows = np.zeros((len(probes), 0), dtype=np.int64)
    best_scores = np.zeros((len(probes), 0), dtype=np.float32)
    for start in range(0, len(base), 100_000):
        scores = probes @ base[start:start + 100_000].T
        rows = np.argpartition(-scores, K - 1, axis=1)[:, :K] if scores.shape[1] > K else \
            np.tile(np.arange(scores.shape[1]), (len(probes), 1))
        best_rows = np.concatenate([best_rows, rows + start], axis=1)
        best_scores = np.concatenate([best_scores, np.take_along_axis(scores, rows, axis=1)], axis=1)
        order = np.argsort(-best_scores, axis=1, kind="stable")[:, :K]
        best_rows = np.take_along_axis(best_rows, order, axis=1)
        best_scores = np.take_along_axis(best_scores, order, axis=1)
    np.save(path, best_rows.astype(np.int64))
    np.save(spath, best_scores.astype(np.float32))


def measure(results, truth_rows, truth_scores, threshold):
    found = total = matched = matches = 0
    for got, rows, scores in zip(results, truth_rows, truth_scores):
        got = set(int(x) for x in got)
        for r, s in zip(rows, scores):
            hit = int(r) in got
            total += 1
            found += hit
            if s >= threshold:
                matches += 1
                matched += hit
    return found / max(total, 1), (matched / matches if matches else 1.0)


def worker(system, threads, data, threshold):
    import numpy as np
    base, probes = load(data)
    truth_rows = np.load(data / f"truth-{PROBES}.npy")
    truth_scores = np.load(data / f"truth-scores-{PROBES}.npy")
    n, d = base.shape
    runs = []

    def run(index, params, build_s, qps, results, rss):
        r10, mr = measure(results, truth_rows, truth_scores, threshold)
        runs.append({"system": system, "index": index, "threads": threads, "n": n, "params": params,
                     "build_s": build_s, "qps": qps, "recall_at_10": r10, "match_recall": mr, "rss_mb": rss})

    def single(search):
        started = time.perf_counter()
        out = [search(q) for q in probes]
        return out, len(probes) / (time.perf_counter() - started)

    if system == "numpy":
        def search(q):
            s = base @ q
            top = np.argpartition(-s, K)[:K]
            return top[np.argsort(-s[top])]
        results, qps = single(search)
        run("exact", {"mode": "single-probe"}, None, qps, results, None)
        started = time.perf_counter()
        s = probes @ base.T
        results = np.argpartition(-s, K, axis=1)[:, :K]
        run("exact", {"mode": "batched"}, None, len(probes) / (time.perf_counter() - started), results, None)
    elif system == "faiss":
        import faiss
        faiss.omp_set_num_threads(threads)
        before = rss_mb()
        flat = faiss.IndexFlatIP(d)
        flat.add(base)
        rss = rss_mb() - before
        results, qps = single(lambda q: flat.search(q[None, :], K)[1][0])
        run("exact", {"mode": "single-probe"}, None, qps, results, rss)
        started = time.perf_counter()
        results = flat.search(probes, K)[1]
        run("exact", {"mode": "batched"}, None, len(probes) / (time.perf_counter() - started), results, rss)
        del flat
        if EXACT_ONLY:
            print(json.dumps(runs))
            return
        before = rss_mb()
        started = time.perf_counter()
        hnsw = faiss.IndexHNSWFlat(d, M, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = EF_CONSTRUCTION
        hnsw.add(base)
        build = time.perf_counter() - started
        rss = rss_mb() - before
        for ef in EFS:
            hnsw.hnsw.efSearch = max(ef, K)
            params = {"m": M, "ef_construction": EF_CONSTRUCTION, "ef": max(ef, K)}
            if threads == 1:
                results, qps = single(lambda q: hnsw.search(q[None, :], K)[1][0])
            else:
                started = time.perf_counter()
                results = hnsw.search(probes, K)[1]
                qps = len(probes) / (time.perf_counter() - started)
            run("hnsw", params, build, qps, results, rss)
    elif system == "hnswlib":
        import hnswlib
        before = rss_mb()
        started = time.perf_counter()
        index = hnswlib.Index(space="ip", dim=d)
        index.init_index(max_elements=n, ef_construction=EF_CONSTRUCTION, M=M, random_seed=100)
        index.add_items(base, np.arange(n), num_threads=threads)
        build = time.perf_counter() - started
        rss = rss_mb() - before
        for ef in EFS:
            index.set_ef(max(ef, K))
            params = {"m": M, "ef_construction": EF_CONSTRUCTION, "ef": max(ef, K)}
            if threads == 1:
                results, qps = single(lambda q: index.knn_query(q[None, :], k=K, num_threads=1)[0][0])
            else:
                started = time.perf_counter()
                results = index.knn_query(probes, k=K, num_threads=threads)[0]
                qps = len(probes) / (time.perf_counter() - started)
            run("hnsw", params, build, qps, results, rss)
    print(json.dumps(runs))


# ---------------------------------------------------------------------------------------------
# Driver side.

def run_peer(python, system, threads, data, threshold):
    env = dict(os.environ)
    for var in ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"]:
        env[var] = str(threads)
    log(f"{system}, {threads} thread(s)")
    out = subprocess.run([str(python), __file__, "--worker", system, str(threads), str(data), str(threshold)],
                         env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_oubli(data, threshold):
    log("oubli, exact and hnsw")
    efs = ",".join(str(e) for e in EFS)
    out = subprocess.run(
        [str(OUBLI_BENCH), str(data), "--truth", str(data / f"truth-{PROBES}.npy"),
         "--truth-scores", str(data / f"truth-scores-{PROBES}.npy"), "--threshold", str(threshold),
         "--probes", str(PROBES), "--ef", efs, "--m", str(M), "--ef-construction", str(EF_CONSTRUCTION),
         "--threads", str(max(THREADS))] + (["--single-thread-build"] if 1 in THREADS else [])
        + (["--skip-hnsw"] if EXACT_ONLY else []),
        check=True, stdout=subprocess.PIPE, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    out = subprocess.run([str(OUBLI_BENCH), "--bandwidth"], check=True, stdout=subprocess.PIPE, text=True).stdout
    return {"cpu": cpu, "cores": CORES, "mem_read_gbps": json.loads(out)["mem_read_gbps"]}


def plot(python, results_path, png):
    script = r'''
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
res = json.load(open(sys.argv[1]))
fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
for ax, metric in zip(axes, ["match_recall", "recall_at_10"]):
    ax.set_prop_cycle(color=plt.cm.tab20.colors)
    series = {}
    for r in res["runs"]:
        mode = r["params"].get("mode", "") + (f" {r['params']['batch']}" if "batch" in r["params"] else "")
        key = (r["system"], r["index"], r["threads"], mode, r["params"].get("build_threads", ""))
        series.setdefault(key, []).append(r)
    for (system, index, threads, mode, bt), runs in sorted(series.items(), key=lambda kv: str(kv[0])):
        runs.sort(key=lambda r: r["params"].get("ef", 0))
        label = f"{system} {index} {threads}t" + (f" {mode}" if mode else "") + (f" build {bt}t" if bt else "")
        style = "-o" if index == "hnsw" else "s"
        ax.plot([r[metric] for r in runs], [r["qps"] for r in runs], style, label=label, markersize=4)
    ax.set_yscale("log")
    ax.set_xlabel(metric.replace("_", " "))
    ax.set_ylabel("queries per second")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(f"{metric.replace('_', ' ')} vs q/s, n = {res['runs'][0]['n']}")
axes[0].legend(fontsize=7)
fig.suptitle(f"{res['machine']['cpu']}, {res['machine']['cores']} cores, {res['machine']['mem_read_gbps']:.1f} GB/s read")
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=120)
'''
    subprocess.run([str(python), "-c", script, str(results_path), str(png)], check=True)


def table(results):
    rows = [("system", "index", "thr", "params", "build s", "q/s", "recall@10", "match rec", "rss MB")]
    for r in results["runs"]:
        p = r["params"]
        mode = p.get("mode", "") + (f" {p['batch']}" if "batch" in p else "")
        params = mode or f"ef={p.get('ef')}" + (f" b{p['build_threads']}t" if "build_threads" in p else "")
        rows.append((r["system"], r["index"], str(r["threads"]), params,
                     "" if r["build_s"] is None else f"{r['build_s']:.1f}", f"{r['qps']:.0f}",
                     f"{r['recall_at_10']:.4f}", f"{r['match_recall']:.4f}",
                     "" if r["rss_mb"] is None else f"{r['rss_mb']:.0f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        system, threads, data, threshold = sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), float(sys.argv[5])
        if system == "truth":
            truth(data)
            print("[]")
        else:
            worker(system, threads, data, threshold)
        return
    for binary in [OUBLI, OUBLI_BENCH]:
        if not binary.exists():
            sys.exit(f"{binary} is missing: run `make build` first")
    OUT.mkdir(parents=True, exist_ok=True)
    python = venv_python()
    data, threshold = data_dir()
    log(f"FMR 1e-3 threshold: {threshold:.4f}")
    run_peer(python, "truth", CORES, data, threshold)
    results = {"machine": machine(), "runs": []}
    log(f"memory read bandwidth: {results['machine']['mem_read_gbps']:.1f} GB/s")
    for system in ["numpy", "faiss"] + ([] if EXACT_ONLY else ["hnswlib"]):
        for threads in THREADS:
            results["runs"] += run_peer(python, system, threads, data, threshold)
    results["runs"] += run_oubli(data, threshold)
    path = OUT / "results.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    plot(python, path, OUT / "recall-vs-qps.png")
    (OUT / f"results-{N}.json").write_text(path.read_text())
    (OUT / f"recall-vs-qps-{N}.png").write_bytes((OUT / "recall-vs-qps.png").read_bytes())
    table(results)
    log(f"wrote {path} and {OUT / 'recall-vs-qps.png'}")


if __name__ == "__main__":
    main()
