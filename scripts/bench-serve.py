#!/usr/bin/env python3
"""The same synthetic population served by Oubli (exact and HNSW indexes) and by a Chroma server,
measured by one Rust client (`oubli load --bench`) over each one's own API.

Run through `make bench-serve`. Steps:
1. a venv under target/bench-serve/venv with chromadb (pinned: CHROMADB below) and matplotlib;
2. for each size in BENCH_SERVE_N (10000,100000): a population from `oubli synth generate`
   (N/2 people, two photos each, seed 5, as `make bench-peers`), its FMR 1e-3 threshold from
   `oubli synth stats`, the first BENCH_SERVE_PROBES held-out selfies as probes and their exact
   top 10 (numpy, float32);
3. Oubli: a release `oubli-server` on 127.0.0.1 with a fresh data dir under target/bench-serve/
   (`--index exact`, the permissive policy so the population's scraped records are admitted,
   every other setting its default), the population enrolled through EnrollStream (`oubli synth
   enroll`), one pass over the probes for their hits, then searches at each client count in
   BENCH_SERVE_CLIENTS (1,8,32); restarted with `--index hnsw` (the graph built at open, default
   M 16, ef_construction 200, ef_search 512): the same, then unary enrolments at each client
   count; restarted with `--index exact`: unary enrolments;
4. Chroma: `chroma run` on a fresh path, one collection in the "ip" space (distance 1 - dot:
   Oubli's inner product on unit vectors), every other setting its default (HNSW M 16,
   ef_construction 100, ef_search 100), the population added through its Python client in its
   largest batches with each record's provenance as metadata; then the same probe pass,
   searches, and single-record adds from the same Rust client;
5. target/bench-serve/results.json, calls-vs-clients.png, and a markdown table on stdout.

Each measured row is BENCH_SERVE_WARMUP seconds of calls (1), then BENCH_SERVE_SECONDS (5)
counted (the calls that end within them). A quick run: BENCH_SERVE_N=2000
BENCH_SERVE_CLIENTS=1,8 BENCH_SERVE_SECONDS=2 (about a minute and a half). Every client is a closed loop of calls on its own connection (HTTP/2 for Oubli's gRPC,
HTTP/1.1 keep-alive for Chroma), so N clients keep N calls in flight.

match_recall: of the exact top-10 hits scoring at least the FMR 1e-3 threshold, the share the
system's own top 10 holds (computed for Oubli's exact index too, as a check: it is 1.0 unless two
scores tie at the 10th place). Null for enrolment rows.

Pinning (BENCH_SERVE_PIN): "none" (default) leaves server and client to the scheduler on every
core; "split" runs the server on the first core and the client on the last (taskset). At the
first size, the rows at 1 and at the most clients are also measured in the other mode, for the
exact index and for Chroma, and kept under machine.pinning.probe (BENCH_SERVE_PIN_PROBE=0 skips
them).
"""
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "target" / "bench-serve"
VENV = OUT / "venv"
LOGS = OUT / "logs"
OUBLI = ROOT / "target" / "release" / "oubli"
SERVER = ROOT / "target" / "release" / "oubli-server"
CHROMADB = "1.5.9"
PACKAGES = [f"chromadb=={CHROMADB}", "matplotlib"]
K = 10
DIM = 512
NS = [int(x) for x in os.environ.get("BENCH_SERVE_N", "10000,100000").split(",") if x.strip()]
CLIENTS = sorted({int(x) for x in os.environ.get("BENCH_SERVE_CLIENTS", "1,8,32").split(",") if x.strip()})
SECONDS = int(os.environ.get("BENCH_SERVE_SECONDS", "5"))
WARMUP = int(os.environ.get("BENCH_SERVE_WARMUP", "1"))
PROBES = int(os.environ.get("BENCH_SERVE_PROBES", "1000"))
PIN = os.environ.get("BENCH_SERVE_PIN", "none")
PIN_PROBE = os.environ.get("BENCH_SERVE_PIN_PROBE", "1") != "0"
CORES = os.cpu_count() or 1


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def cpus(mode, role):
    """The CPU list `role` ("server" or "client") is pinned to in `mode`, or None."""
    if mode != "split" or CORES < 2:
        return None
    return "0" if role == "server" else str(CORES - 1)


def pinned(cmd, mode, role):
    c = cpus(mode, role)
    return (["taskset", "-c", c] if c else []) + [str(x) for x in cmd]


# ---------------------------------------------------------------------------------------------
# Worker side: runs inside the venv (numpy, chromadb, matplotlib).

def prep(data, probes_n):
    """The first probes_n probes, and their exact top 10 (rows and scores) by numpy."""
    import numpy as np
    probes_path = data / f"probes-{probes_n}.npy"
    truth_path, scores_path = data / f"truth-{probes_n}.npy", data / f"truth-scores-{probes_n}.npy"
    if truth_path.exists() and probes_path.exists():
        return
    base = np.load(data / "embeddings.npy")
    probes = np.ascontiguousarray(np.load(data / "probes.npy")[:probes_n])
    np.save(probes_path, probes)
    rows, scores = [], []
    for start in range(0, len(probes), 100):
        s = probes[start:start + 100] @ base.T
        top = np.argpartition(-s, K - 1, axis=1)[:, :K]
        top_s = np.take_along_axis(s, top, axis=1)
        order = np.argsort(-top_s, axis=1, kind="stable")
        rows.append(np.take_along_axis(top, order, axis=1))
        scores.append(np.take_along_axis(top_s, order, axis=1))
    np.save(truth_path, np.concatenate(rows).astype(np.int64))
    np.save(scores_path, np.concatenate(scores).astype(np.float32))


def recall(data, probes_n, hits_path, threshold, id_map):
    """match_recall and recall@10 of a hits file (oubli: ids mapped to rows by record_ids.txt;
    chroma: the ids are the rows)."""
    import numpy as np
    truth_rows = np.load(data / f"truth-{probes_n}.npy")
    truth_scores = np.load(data / f"truth-scores-{probes_n}.npy")
    to_row = None
    if id_map != "-":
        to_row = {line.strip(): i for i, line in enumerate(open(id_map)) if line.strip()}
    hits = [json.loads(line) for line in open(hits_path) if line.strip()]
    found = total = matched = matches = 0
    for h in hits:
        got = {to_row[i] if to_row is not None else int(i) for i in h["ids"]}
        for r, s in zip(truth_rows[h["row"]], truth_scores[h["row"]]):
            hit = int(r) in got
            total += 1
            found += hit
            if s >= threshold:
                matches += 1
                matched += hit
    print(json.dumps({"match_recall": matched / matches if matches else 1.0, "recall_at_10": found / max(total, 1),
                      "probes": len(hits), "matches": matches}))


def chroma_load(port, data):
    """A collection in the ip space, the population added in Chroma's largest batches with each
    record's provenance as metadata, indexed; prints its id."""
    import chromadb
    import numpy as np
    client = chromadb.HttpClient(host="127.0.0.1", port=int(port))
    collection = client.create_collection("bench", configuration={"hnsw": {"space": "ip"}},
                                          embedding_function=None)
    base = np.load(data / "embeddings.npy")
    metadatas = [json.loads(line) for line in open(data / "provenance.jsonl") if line.strip()]
    batch = client.get_max_batch_size()
    started = time.perf_counter()
    for start in range(0, len(base), batch):
        end = min(start + batch, len(base))
        collection.add(ids=[str(i) for i in range(start, end)], embeddings=base[start:end],
                       metadatas=metadatas[start:end])
    # (A local `chroma run` answers the indexing-status call with "not implemented": there is no
    # index build to wait for, and the probes' match recall shows what its queries see.)
    if collection.count() != len(base):
        sys.exit(f"chroma holds {collection.count()} records, not {len(base)}")
    print(json.dumps({"id": str(collection.id), "count": collection.count(), "batch": batch,
                      "load_s": time.perf_counter() - started,
                      "hnsw": (getattr(collection, "configuration_json", None) or {}).get("hnsw")}))


def plot(results_path, png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    res = json.load(open(results_path))
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for ax, op in zip(axes, ["search", "enroll"]):
        series = {}
        for r in res["runs"]:
            if r["op"] == op:
                series.setdefault((r["system"], r["index"], r["records"]), []).append(r)
        sizes = sorted({records for (_, _, records) in series})
        colors = {("oubli", "exact"): "tab:orange", ("oubli", "hnsw"): "tab:green", ("chroma", "hnsw"): "tab:blue"}
        for (system, index, records), runs in sorted(series.items()):
            runs.sort(key=lambda r: r["clients"])
            ax.plot([r["clients"] for r in runs], [r["calls_per_s"] for r in runs],
                    ["-", "--", ":", "-."][sizes.index(records) % 4], marker="o" if system == "oubli" else "s",
                    color=colors.get((system, index)), label=f"{system} {index}, {records:,} records")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ticks = sorted({r["clients"] for r in res["runs"]})
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(c) for c in ticks])
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(f"{op} calls per second")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(f"{op}" + (" (Oubli: synced writes; Chroma: its defaults)" if op == "enroll" else ", k = 10"))
        ax.legend(fontsize=8)
    m = res["machine"]
    fig.suptitle(f"{m['cpu']}, {m['cores']} cores; pinning: {m['pinning']['mode']}")
    fig.tight_layout()
    fig.savefig(png, dpi=120)


# ---------------------------------------------------------------------------------------------
# Driver side.

def venv_python():
    python = VENV / "bin" / "python"
    if not python.exists():
        log(f"creating {VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    probe = f"import chromadb, matplotlib, numpy; assert chromadb.__version__ == {CHROMADB!r}"
    if subprocess.run([str(python), "-c", probe], capture_output=True).returncode != 0:
        log("installing " + " ".join(PACKAGES) + " from PyPI")
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *PACKAGES],
                       check=True)
    return python


def worker(python, *args):
    out = subprocess.run([str(python), __file__, "--worker", *[str(a) for a in args]], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    lines = [line for line in out.splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else None


def data_dir(n):
    data = OUT / f"data-{n}"
    if not (data / "probes.npy").exists():
        log(f"generating {n} vectors ({n // 2} people x 2) with held-out selfies")
        subprocess.run([str(OUBLI), "synth", "generate", "--identities", str(n // 2), "--samples-per-identity", "2",
                        "--probes-per-identity", "1", "--seed", "5", "--out", str(data)],
                       check=True, stdout=subprocess.DEVNULL)
    stats = data / "stats" / "stats.json"
    if not stats.exists():
        log("measuring the score statistics (oubli synth stats)")
        subprocess.run([str(OUBLI), "synth", "stats", str(data), "--impostor-pairs", "4000000",
                        "--out", str(data / "stats")], check=True, stdout=subprocess.DEVNULL)
    points = json.loads(stats.read_text())["operating_points"]
    return data, next(p["threshold"] for p in points if abs(p["fmr"] - 1e-3) < 1e-12)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One server process started here, stopped by its own PID (SIGTERM, then SIGKILL), with
    bounded waits."""
    running = []

    def __init__(self, name, cmd):
        LOGS.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = LOGS / f"{name}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        Server.running.append(self)
        log(f"started {name} (pid {self.proc.pid}): {' '.join(cmd)}")

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                log(f"{self.name} (pid {self.proc.pid}) did not stop in 60 s: killing it")
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.log.close()
        if self in Server.running:
            Server.running.remove(self)

    @classmethod
    def stop_all(cls):
        for s in list(cls.running):
            s.stop()


def wait_until(ready, what, server, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            sys.exit(f"{what} exited early; see {server.log_path}")
        if ready():
            return
        time.sleep(0.25)
    sys.exit(f"{what} not ready after {timeout} s; see {server.log_path}")


class Oubli:
    def __init__(self, n):
        self.base = OUT / f"oubli-{n}"
        shutil.rmtree(self.base, ignore_errors=True)
        self.base.mkdir(parents=True)
        self.n = n
        self.server = None

    def client(self):
        return [OUBLI, "--server", self.addr, "--token-file", self.base / "keys" / "local.token"]

    def start(self, index, mode):
        port = free_port()
        self.addr = f"127.0.0.1:{port}"
        cmd = [SERVER, "--data-dir", self.base / "data", "--key-dir", self.base / "keys", "--listen", self.addr,
               "--index", index, "--policy-profile", "permissive", "--dimension", DIM]
        started = time.perf_counter()
        self.server = Server(f"oubli-{self.n}-{index}-{mode}", pinned(cmd, mode, "server"))
        stats = [str(x) for x in self.client()] + ["stats"]

        def ready():
            # The port may take connections while the HNSW graph is still being built at open:
            # a call that does not answer in time is "not yet", not a failure.
            try:
                return subprocess.run(stats, capture_output=True, timeout=20).returncode == 0
            except subprocess.TimeoutExpired:
                return False
        wait_until(ready, "oubli-server", self.server, 900)
        log(f"oubli-server ({index}) serving after {time.perf_counter() - started:.1f} s")

    def stop(self):
        self.server.stop()


class Chroma:
    def __init__(self, n, python):
        self.path = OUT / f"chroma-{n}"
        shutil.rmtree(self.path, ignore_errors=True)
        self.n, self.python, self.server = n, python, None

    def start(self, mode):
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        cmd = [VENV / "bin" / "chroma", "run", "--path", self.path, "--port", port, "--host", "127.0.0.1"]
        self.server = Server(f"chroma-{self.n}-{mode}", pinned(cmd, mode, "server"))

        def ready():
            try:
                with urllib.request.urlopen(self.url + "/api/v2/heartbeat", timeout=5) as r:
                    return r.status == 200
            except OSError:
                return False
        wait_until(ready, "chroma", self.server, 120)
        self.port = port

    def stop(self):
        self.server.stop()


def load(client_cmd, op, clients, mode, extra=(), results=None, duration=SECONDS, warmup=WARMUP):
    """One `oubli load --bench` run; returns its JSON line."""
    cmd = [*client_cmd, "--json", "load", "--bench", "--mix", f"{op}:1", "--clients", clients,
           "--duration", duration, "--warmup", warmup, *extra]
    if results:
        cmd += ["--results", results]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(pinned(cmd, mode, "client"), stdout=subprocess.PIPE, text=True, timeout=600)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        sys.exit(f"`{' '.join(str(c) for c in cmd)}` failed with status {out.returncode} and printed no result")
    row = json.loads(lines[-1])
    # The client's own CPU time over its run, in cores: what it took from the server's machine.
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    row["client_cores"] = cpu / max(duration + warmup, 1)
    if row["errors"]:
        log(f"  {row['errors']} errors: {row['error_samples']}")
    return row


def record(results, system, index, n, op, row, recall=None, mode=None):
    entry = {"system": system, "index": index, "records": n, "clients": row["clients"], "op": op,
             "calls_per_s": row["calls_per_s"], "p50_ms": row["p50_ms"], "p99_ms": row["p99_ms"],
             "match_recall": recall, "p999_ms": row["p999_ms"], "mean_ms": row["mean_ms"], "calls": row["calls"],
             "throttled": row["throttled"], "errors": row["errors"], "client_cores": row["client_cores"]}
    log(f"  {system} {index} {n} {op} x{row['clients']}: {row['calls_per_s']:.0f}/s, p50 {row['p50_ms']:.2f} ms, "
        f"p99 {row['p99_ms']:.2f} ms" + ("" if recall is None else f", match recall {recall:.4f}")
        + f", client {row['client_cores']:.2f} cores")
    if mode is None:
        results["runs"].append(entry)
    else:
        entry["pinning"] = mode
        results["machine"]["pinning"]["probe"].append(entry)
    return entry


def searches(results, system, index, n, client_cmd, extra, recall_value, mode):
    for c in CLIENTS:
        record(results, system, index, n, "search", load(client_cmd, "search", c, mode, extra), recall_value)


def bench_oubli(python, results, n, data, threshold, probe):
    probes = data / f"probes-{PROBES}.npy"
    extra = ["--probes", probes]
    o = Oubli(n)
    o.start("exact", PIN)
    started = time.perf_counter()
    subprocess.run([str(x) for x in o.client()] + ["synth", "enroll", str(data), "--batch", "5000"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log(f"enrolled {n} records through EnrollStream in {time.perf_counter() - started:.1f} s")
    ids = data / "record_ids.txt"
    recalls = {}
    for index in ["exact", "hnsw"]:
        if index == "hnsw":
            o.start("hnsw", PIN)
        hits = OUT / f"hits-oubli-{index}-{n}.jsonl"
        load(o.client(), "search", max(CLIENTS), PIN, extra, results=hits, duration=1, warmup=0)
        recalls[index] = worker(python, "recall", data, PROBES, hits, threshold, ids)
        log(f"oubli {index} at {n}: {recalls[index]}")
        searches(results, "oubli", index, n, o.client(), extra, recalls[index]["match_recall"], PIN)
        if index == "exact" and probe:
            o.stop()
            other = "none" if PIN == "split" else "split"
            o.start("exact", other)
            load(o.client(), "search", max(CLIENTS), other, extra, duration=1, warmup=0)
            for c in sorted({1, max(CLIENTS)}):
                record(results, "oubli", "exact", n, "search", load(o.client(), "search", c, other, extra),
                       recalls[index]["match_recall"], mode=other)
        if index == "hnsw":
            for c in CLIENTS:
                record(results, "oubli", "hnsw", n, "enroll", load(o.client(), "enroll", c, PIN))
        o.stop()
    o.start("exact", PIN)
    for c in CLIENTS:
        record(results, "oubli", "exact", n, "enroll", load(o.client(), "enroll", c, PIN))
    o.stop()
    return recalls


def bench_chroma(python, results, n, data, threshold, probe):
    probes = data / f"probes-{PROBES}.npy"
    ch = Chroma(n, python)
    ch.start(PIN)
    loaded = worker(python, "chroma-load", ch.port, data)
    log(f"chroma: {loaded}")

    def extra():
        return ["--probes", probes, "--chroma", ch.url, "--collection", loaded["id"]]
    hits = OUT / f"hits-chroma-{n}.jsonl"
    load([OUBLI], "search", max(CLIENTS), PIN, extra(), results=hits, duration=1, warmup=0)
    rec = worker(python, "recall", data, PROBES, hits, threshold, "-")
    log(f"chroma at {n}: {rec}")
    searches(results, "chroma", "hnsw", n, [OUBLI], extra(), rec["match_recall"], PIN)
    if probe:
        ch.stop()
        other = "none" if PIN == "split" else "split"
        ch.start(other)
        load([OUBLI], "search", max(CLIENTS), other, extra(), duration=1, warmup=0)
        for c in sorted({1, max(CLIENTS)}):
            record(results, "chroma", "hnsw", n, "search", load([OUBLI], "search", c, other, extra()),
                   rec["match_recall"], mode=other)
        ch.stop()
        ch.start(PIN)
    for c in CLIENTS:
        record(results, "chroma", "hnsw", n, "enroll", load([OUBLI], "enroll", c, PIN, extra()))
    ch.stop()
    return rec, loaded


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    what = {"none": "nothing pinned: server and client share every core, as the scheduler decides",
            "split": f"server on CPU {cpus('split', 'server')}, client on CPU {cpus('split', 'client')} (taskset)"}
    return {"cpu": cpu, "cores": CORES, "pinning": {
        "mode": PIN, "server_cpus": cpus(PIN, "server"), "client_cpus": cpus(PIN, "client"),
        "what": what.get(PIN, PIN), "probe": []}}


def table(results):
    rows = [("system", "index", "records", "op", "clients", "calls/s", "p50 ms", "p99 ms", "match recall")]
    for r in results["runs"]:
        rows.append((r["system"], r["index"], f"{r['records']:,}", r["op"], str(r["clients"]),
                     f"{r['calls_per_s']:,.0f}", f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}",
                     "" if r["match_recall"] is None else f"{r['match_recall']:.4f}"))
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "|".join("---" for _ in rows[0]) + "|")
    for row in rows[1:]:
        print("| " + " | ".join(row) + " |")
    probe = results["machine"]["pinning"]["probe"]
    if probe:
        print(f"\npinning: {results['machine']['pinning']['what']}; the same rows in the other mode:\n")
        print("| system | index | records | clients | pinning | calls/s | p50 ms | p99 ms |")
        print("|---|---|---|---|---|---|---|---|")
        for r in probe:
            print(f"| {r['system']} | {r['index']} | {r['records']:,} | {r['clients']} | {r['pinning']} | "
                  f"{r['calls_per_s']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        name, args = sys.argv[2], sys.argv[3:]
        if name == "prep":
            prep(Path(args[0]), int(args[1]))
            print("{}")
        elif name == "recall":
            recall(Path(args[0]), int(args[1]), Path(args[2]), float(args[3]), args[4])
        elif name == "chroma-load":
            chroma_load(args[0], Path(args[1]))
        elif name == "plot":
            plot(args[0], args[1])
        return
    for binary in [OUBLI, SERVER]:
        if not binary.exists():
            sys.exit(f"{binary} is missing: run `make build` first")
    if PIN not in ("none", "split"):
        sys.exit("BENCH_SERVE_PIN is none or split")
    if PIN == "split" and (CORES < 2 or not shutil.which("taskset")):
        sys.exit("BENCH_SERVE_PIN=split needs two cores and taskset")
    probe_pinning = PIN_PROBE and CORES >= 2 and shutil.which("taskset") is not None
    OUT.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    python = venv_python()
    results = {"machine": machine(), "chromadb": CHROMADB, "settings": {
        "seconds": SECONDS, "warmup_s": WARMUP, "probes": PROBES, "k": K, "clients": CLIENTS,
        "oubli": "oubli-server defaults but --policy-profile permissive and --index; HNSW m 16, "
                 "ef_construction 200, ef_search 512",
        "chroma": "chroma run defaults; collection space ip (1 - dot), HNSW max_neighbors 16, ef_construction 100, "
                  "ef_search 100"}, "runs": []}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped"))
    try:
        for i, n in enumerate(NS):
            data, threshold = data_dir(n)
            worker(python, "prep", data, PROBES)
            log(f"--- {n} records; FMR 1e-3 threshold {threshold:.4f}")
            bench_oubli(python, results, n, data, threshold, probe_pinning and i == 0)
            bench_chroma(python, results, n, data, threshold, probe_pinning and i == 0)
    finally:
        Server.stop_all()
    results["elapsed_s"] = time.perf_counter() - began
    path = OUT / "results.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    worker(python, "plot", path, OUT / "calls-vs-clients.png")
    table(results)
    log(f"wrote {path} and {OUT / 'calls-vs-clients.png'} in {results['elapsed_s']:.0f} s")


if __name__ == "__main__":
    main()
