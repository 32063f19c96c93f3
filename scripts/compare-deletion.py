#!/usr/bin/env python3
"""Deleting one person from the vector stores people use, and from Oubli, then looking at the disk.

Run through `make compare-deletion` (which builds Oubli, makes the venv under
target/compare-deletion/venv with the pinned stores, and runs this with the venv's Python). Steps:
1. a synthetic population from `oubli synth generate` (IDENTITIES people, SAMPLES photos each);
2. Oubli's row: examples/compare_deletion_oubli.rs puts it into a real store, erases one person
   through the rights workflow, runs both purges, and writes the stored forms of that person's
   records (sealed rows, wrapped data keys, read before the erasure) to scan for;
3. the same population into Chroma, LanceDB, milvus-lite and hnswlib, each in its own process
   (so that the store has closed its files before the scan), the same person deleted with the
   store's documented delete, then its documented cleanup;
4. every file under each store's directory read once and searched for the person's templates;
5. target/compare-deletion/results.json and results.md, and the table on stdout.

A template counts as found in a file when 16 consecutive float32 values of it occur there, each
within TOLERANCE (1e-6: a cosine index's re-normalisation of these unit vectors moves a value by
less than 1e-7, so its copies are found too), or when a 64-byte window of its float16 bytes does;
"whole" when all 512 values do, at one place; "byte-identical" when a 64-byte window of its
float32 bytes as inserted occurs unchanged. Oubli's sealed records and wrapped keys are searched
for as bytes (any 64-byte window of each). Every file is read once, whatever its format. The
control is a template (for Oubli, also a sealed record and a wrapped key) of another person,
never deleted: it must be found, or the scan proves nothing. Every face is synthetic.
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "target" / "compare-deletion"
OUBLI = ROOT / "target" / "release" / "oubli"
OUBLI_ROW = ROOT / "target" / "release" / "examples" / "compare_deletion_oubli"
IDENTITIES = int(os.environ.get("COMPARE_IDENTITIES", "1000"))
SAMPLES = 5
WINDOW = 64
TOLERANCE = 1e-6
COLLECTION = "faces"
DISTRIBUTIONS = ["chromadb", "lancedb", "pylance", "pymilvus", "milvus-lite", "hnswlib", "numpy", "pyarrow"]


def log(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# The stores. Each function gets an empty directory, the templates (float32, row i has id i) and
# the rows of the person to delete; it inserts everything, deletes the person with the store's
# documented delete, runs the documented cleanup, closes the store, and returns what it ran.
# ---------------------------------------------------------------------------------------------

def run_chroma(directory: Path, vectors: np.ndarray, person: list[int]) -> list[str]:
    import chromadb
    from chromadb.config import Settings

    client = chromadb.PersistentClient(path=str(directory), settings=Settings(anonymized_telemetry=False))
    collection = client.create_collection(COLLECTION, metadata={"hnsw:space": "cosine"})
    for start in range(0, len(vectors), 1000):
        rows = range(start, min(start + 1000, len(vectors)))
        collection.add(ids=[str(i) for i in rows], embeddings=vectors[rows.start:rows.stop])
    collection.delete(ids=[str(i) for i in person])
    left = collection.get(ids=[str(i) for i in person])["ids"]
    assert not left, f"chroma still returns {left}"
    count = collection.count()
    del collection, client
    # The documented way to shrink the database: `chroma vacuum` on the persistent directory,
    # with no client holding it.
    chroma = Path(sys.executable).parent / "chroma"
    subprocess.run([str(chroma), "vacuum", "--path", str(directory), "--force"], check=True,
                   stdout=subprocess.DEVNULL, timeout=600)
    return [f"`collection.delete(ids=...)` ({count:,} left)", "`chroma vacuum --path DIR --force`"]


def run_lancedb(directory: Path, vectors: np.ndarray, person: list[int]) -> list[str]:
    import lancedb
    import pyarrow as pa

    db = lancedb.connect(str(directory))
    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    table = db.create_table(COLLECTION, data=pa.table({
        "id": pa.array(range(len(vectors)), type=pa.int64()),
        "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
    }))
    predicate = "id IN (" + ", ".join(str(i) for i in person) + ")"
    table.delete(predicate)
    assert table.count_rows(predicate) == 0
    # optimize() compacts the files and prunes old versions; timedelta(0) makes every version but
    # the latest eligible, and delete_unverified also removes files younger than the default
    # seven days (the documentation's "cleanup").
    table.optimize(cleanup_older_than=timedelta(0), delete_unverified=True)
    versions = len(table.list_versions())
    count = table.count_rows()
    return [f"`table.delete(\"id IN (...)\")` ({count:,} left)",
            f"`table.optimize(cleanup_older_than=timedelta(0), delete_unverified=True)` ({versions} version left)"]


def run_milvus(directory: Path, vectors: np.ndarray, person: list[int]) -> list[str]:
    from pymilvus import MilvusClient

    client = MilvusClient(str(directory / "milvus.db"))
    client.create_collection(COLLECTION, dimension=vectors.shape[1], metric_type="COSINE")
    for start in range(0, len(vectors), 1000):
        stop = min(start + 1000, len(vectors))
        client.insert(COLLECTION, [{"id": i, "vector": vectors[i].tolist()} for i in range(start, stop)])
    client.flush(COLLECTION)
    client.delete(COLLECTION, ids=person)
    client.flush(COLLECTION)
    steps = ["`client.delete(ids=...)`", "`client.flush()`"]
    try:
        job = client.compact(COLLECTION)
        # Wait for the compaction, bounded: 60 polls, 0.5 s apart.
        state = "unknown"
        for _ in range(60):
            state = str(client.get_compaction_state(job))
            if "Completed" in state:
                break
            time.sleep(0.5)
        steps.append(f"`client.compact()`, then `get_compaction_state`: {state}")
    except Exception as error:  # earlier milvus-lite releases answered UNIMPLEMENTED
        steps.append(f"`client.compact()` refused: {type(error).__name__}: {str(error).splitlines()[0][:80]}")
    left = client.get(COLLECTION, ids=person)
    assert not left, f"milvus-lite still returns {left}"
    client.close()
    return steps


def run_hnswlib(directory: Path, vectors: np.ndarray, person: list[int]) -> list[str]:
    import hnswlib

    index = hnswlib.Index(space="cosine", dim=vectors.shape[1])
    index.init_index(max_elements=len(vectors), ef_construction=200, M=16, allow_replace_deleted=True)
    index.add_items(vectors, np.arange(len(vectors)))
    for label in person:
        index.mark_deleted(label)
    index.set_ef(64)
    labels, _ = index.knn_query(vectors[person], k=10)
    assert not set(labels.flatten()) & set(person), "hnswlib still returns a deleted template"
    index.save_index(str(directory / "faces.bin"))
    return ["`index.mark_deleted(label)` for each", "`index.save_index(path)`",
            "(no compaction exists: deleted slots are reused only by `add_items(..., replace_deleted=True)`)"]


STORES: dict[str, Callable[[Path, np.ndarray, list[int]], list[str]]] = {
    "Chroma": run_chroma,
    "LanceDB": run_lancedb,
    "milvus-lite": run_milvus,
    "hnswlib": run_hnswlib,
}
VERSIONS = {"Chroma": "chromadb", "LanceDB": "lancedb", "milvus-lite": "milvus-lite", "hnswlib": "hnswlib"}


# ---------------------------------------------------------------------------------------------
# The scan.
# ---------------------------------------------------------------------------------------------

def windows(data: bytes) -> list[bytes]:
    return [data[i:i + WINDOW] for i in range(0, len(data) - WINDOW + 1, WINDOW)]


def files_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and not p.is_symlink())


class FloatView:
    """A file's bytes read as float32 little-endian at each of the 4 alignments, sorted, so that
    the positions of values near a given one are found by binary search."""

    def __init__(self, data: bytes):
        self.views = []
        for offset in range(4):
            count = (len(data) - offset) // 4
            values = np.frombuffer(data, dtype="<f4", offset=offset, count=count) if count > 0 else np.empty(0, "<f4")
            order = np.argsort(values)
            self.views.append((values, order, values[order]))

    def matches(self, window: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each alignment, the values and the positions where `window` occurs within TOLERANCE.
        Candidates are found by the window's largest value (a value near zero would match every
        zero and denormal in the file), then checked whole, in chunks."""
        anchor = int(np.argmax(np.abs(window)))
        out = []
        with np.errstate(invalid="ignore", over="ignore"):
            for values, order, ordered in self.views:
                # float32 bounds: a float64 one would make numpy convert the whole array each call.
                lo = np.searchsorted(ordered, np.float32(window[anchor] - TOLERANCE), "left")
                hi = np.searchsorted(ordered, np.float32(window[anchor] + TOLERANCE), "right")
                starts = order[lo:hi].astype(np.int64) - anchor
                starts = starts[(starts >= 0) & (starts + len(window) <= len(values))]
                hits = []
                for chunk in range(0, len(starts), 65536):
                    part = starts[chunk:chunk + 65536]
                    near = np.abs(values[part[:, None] + np.arange(len(window))] - window) <= TOLERANCE
                    hits.append(part[near.all(axis=1)])
                out.append((values, np.concatenate(hits) if hits else np.empty(0, np.int64)))
        return out


class Needle:
    """One thing to look for in every file. `exact`: byte strings, found if any of their 64-byte
    windows (or, when shorter, the whole string) occurs. `template`: a float32 vector, found if
    any 16 consecutive values of it occur within TOLERANCE (any store's renormalisation of a unit
    vector moves each value by far less); `whole` when all of it does, at one place; `exact_bytes`
    when a 64-byte window of its float32 bytes, as given, occurs unchanged."""

    def __init__(self, name: str, exact: list[bytes], template: np.ndarray | None = None):
        self.name = name
        self.parts = [w for form in exact for w in (windows(form) or [form])]
        self.template = template
        self.exact_template = windows(template.tobytes()) if template is not None else []
        self.found_in: set[str] = set()
        self.whole_found = False
        self.exact_found = False

    def search_floats(self, file: str, floats: FloatView) -> None:
        if self.template is None:
            return
        step = WINDOW // 4
        for start in range(0, len(self.template) - step + 1, step):
            for values, hits in floats.matches(self.template[start:start + step]):
                if len(hits) == 0:
                    continue
                self.found_in.add(file)
                for hit in hits:
                    begin = hit - start
                    whole = values[begin:begin + len(self.template)] if begin >= 0 else values[:0]
                    if len(whole) == len(self.template) and np.all(np.abs(whole - self.template) <= TOLERANCE):
                        self.whole_found = True
                        return


class ExactIndex:
    """Every needle's exact byte windows by their first 8 bytes: one pass over a file at each of
    the 8 byte offsets finds them all (a byte-string search per window is far slower)."""

    def __init__(self, needles: list[Needle]):
        self.by_prefix: dict[int, list[tuple[Needle, bytes, bool]]] = {}
        for needle in needles:
            for part, marks_exact in [(p, False) for p in needle.parts] + [(p, True) for p in needle.exact_template]:
                assert len(part) >= 8, f"{needle.name}: a needle shorter than 8 bytes"
                key = int.from_bytes(part[:8], "little")
                self.by_prefix.setdefault(key, []).append((needle, part, marks_exact))
        self.keys = np.array(sorted(self.by_prefix), dtype="<u8")

    def search(self, data: bytes, file: str) -> None:
        for offset in range(8):
            count = (len(data) - offset) // 8
            if count <= 0 or len(self.keys) == 0:
                continue
            words = np.frombuffer(data, dtype="<u8", offset=offset, count=count)
            for index in np.nonzero(np.isin(words, self.keys))[0]:
                position = offset + 8 * int(index)
                for needle, part, marks_exact in self.by_prefix[int(words[index])]:
                    if data[position:position + len(part)] == part:
                        if marks_exact:
                            needle.exact_found = True
                        else:
                            needle.found_in.add(file)


def scan(directories: list[Path], needles: list[Needle]) -> dict[str, Any]:
    files, total = 0, 0
    started = time.monotonic()
    exact = ExactIndex(needles)
    for directory in directories:
        for path in files_under(directory):
            data = path.read_bytes()
            files += 1
            total += len(data)
            name = str(path.relative_to(directory.parent))
            exact.search(data, name)
            if any(n.template is not None for n in needles):
                floats = FloatView(data)
                for needle in needles:
                    needle.search_floats(name, floats)
    return {"files": files, "bytes": total, "seconds": round(time.monotonic() - started, 2)}


def template_needles(prefix: str, vectors: np.ndarray, rows: list[int]) -> list[Needle]:
    """A template: float32 (within TOLERANCE) and float16 (exact bytes)."""
    return [Needle(f"{prefix} row {i}", [vectors[i].astype("<f2").tobytes()], vectors[i].astype("<f4"))
            for i in rows]


def summary(needles: list[Needle]) -> dict[str, Any]:
    return {
        "found": sum(1 for n in needles if n.found_in),
        "whole": sum(1 for n in needles if n.whole_found),
        "exact_bytes": sum(1 for n in needles if n.exact_found),
        "of": len(needles),
        "files": sorted({f for n in needles for f in n.found_in}),
    }


# ---------------------------------------------------------------------------------------------
# The runs.
# ---------------------------------------------------------------------------------------------

def population() -> Path:
    pop = OUT / f"pop-{IDENTITIES}x{SAMPLES}"
    if not (pop / "labels.npy").exists():
        log(f"generating {IDENTITIES} synthetic people x {SAMPLES} photos")
        subprocess.run([str(OUBLI), "synth", "generate", "--identities", str(IDENTITIES), "--samples-per-identity",
                        str(SAMPLES), "--seed", "1", "--out", str(pop)], check=True, stdout=subprocess.DEVNULL)
    return pop


def oubli_row(pop: Path, vectors: np.ndarray) -> tuple[dict[str, Any], int, list[int], int]:
    work = OUT / "oubli"
    needles_file = OUT / "oubli-needles.json"
    log("Oubli: enrol, erase one person through the rights workflow, both purges")
    started = time.monotonic()
    subprocess.run([str(OUBLI_ROW), "--population", str(pop), "--dir", str(work), "--out", str(needles_file)],
                   check=True, timeout=1800)
    seconds = round(time.monotonic() - started, 1)
    stored = json.loads(needles_file.read_text())
    person_rows = [r["row"] for r in stored["records"]]
    control = stored["control"]
    plain = template_needles("person", vectors, person_rows)
    sealed = [Needle(f"sealed {r['record_id']}", [bytes.fromhex(r["sealed"])]) for r in stored["records"]]
    wrapped = [Needle(f"wrapped key {r['record_id']}", [bytes.fromhex(r["wrapped_key"])]) for r in stored["records"]]
    control_plain = template_needles("control", vectors, [control["row"]])
    control_sealed = [Needle("control sealed", [bytes.fromhex(control["sealed"])])]
    control_wrapped = [Needle("control wrapped key", [bytes.fromhex(control["wrapped_key"])])]
    stats = scan([Path(stored["data_dir"]), Path(stored["key_dir"])],
                 plain + sealed + wrapped + control_plain + control_sealed + control_wrapped)
    row = {
        "store": "Oubli",
        "version": "this tree (" + git_head() + ")",
        "steps": [f"erasure request by the person's {len(person_rows)} photos, identity checked by the privacy "
                  f"desk, matched {stored['matched']}", "phase 1 (data keys) and phase 2 (templates) purges, "
                  f"request {stored['state']}"],
        "seconds": seconds,
        "person": summary(plain),
        "sealed": summary(sealed),
        "wrapped_keys": summary(wrapped),
        "control": summary(control_plain),
        "control_sealed": summary(control_sealed),
        "control_wrapped": summary(control_wrapped),
        "scan": stats,
        "scanned": "data dir and key dir",
    }
    return row, stored["person"], person_rows, control["row"]


def store_row(name: str, vectors_file: Path, vectors: np.ndarray, person_rows: list[int], control: int) -> dict[str, Any]:
    directory = OUT / "stores" / name
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    steps_file = OUT / "stores" / f"{name}.steps.json"
    log(f"{name}: insert {len(vectors)}, delete {len(person_rows)}, documented cleanup")
    started = time.monotonic()
    subprocess.run([sys.executable, __file__, "--store", name, "--vectors", str(vectors_file), "--dir", str(directory),
                    "--person", ",".join(map(str, person_rows)), "--steps", str(steps_file)], check=True, timeout=1800)
    seconds = round(time.monotonic() - started, 1)
    plain = template_needles("person", vectors, person_rows)
    control_plain = template_needles("control", vectors, [control])
    stats = scan([directory], plain + control_plain)
    return {
        "store": name,
        "version": metadata.version(VERSIONS[name]),
        "steps": json.loads(steps_file.read_text()),
        "seconds": seconds,
        "person": summary(plain),
        "control": summary(control_plain),
        "scan": stats,
        "scanned": "the store's directory",
    }


def git_head() -> str:
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def versions() -> dict[str, str]:
    found = {}
    for name in DISTRIBUTIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def cell(s: dict[str, Any]) -> str:
    text = f"{s['found']} of {s['of']}"
    if s["found"] and "exact_bytes" in s:
        text += f" ({s['whole']} whole, {s['exact_bytes']} byte-identical)"
    return text


def yes(s: dict[str, Any]) -> str:
    return "yes" if s["found"] else "no"


def table(rows: list[dict[str, Any]], n: int) -> str:
    lines = [
        f"| store | delete and cleanup run | the person's {n} templates on disk after | control found | files | bytes |",
        "| --- | --- | --- | --- | ---: | ---: |",
    ]
    for r in rows:
        person, control = cell(r["person"]), yes(r["control"])
        if r["store"] == "Oubli":
            person = (f"plaintext {person}; sealed records {cell(r['sealed'])}; "
                      f"wrapped data keys {cell(r['wrapped_keys'])}")
            control = (f"plaintext {control} (sealed); sealed record {yes(r['control_sealed'])}; "
                       f"wrapped key {yes(r['control_wrapped'])}")
        lines.append(f"| {r['store']} {r['version']} | {'; '.join(r['steps'])} | {person} | {control} "
                     f"| {r['scan']['files']} | {r['scan']['bytes']:,} |")
    return "\n".join(lines)


def child(args: argparse.Namespace) -> int:
    vectors = np.load(args.vectors)
    person = [int(x) for x in args.person.split(",")]
    steps = STORES[args.store](Path(args.dir), vectors, person)
    Path(args.steps).write_text(json.dumps(steps, indent=2) + "\n")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=sorted(STORES), help="(internal) run one store in this process")
    parser.add_argument("--vectors")
    parser.add_argument("--dir")
    parser.add_argument("--person")
    parser.add_argument("--steps")
    parser.add_argument("--only", help="comma-separated stores to run (default: all)")
    args = parser.parse_args()
    if args.store:
        return child(args)

    OUT.mkdir(parents=True, exist_ok=True)
    pop = population()
    vectors = np.load(pop / "embeddings.npy").astype("<f4")
    rows = []
    oubli, person, person_rows, control = oubli_row(pop, vectors)
    rows.append(oubli)
    vectors_file = OUT / "vectors.npy"
    np.save(vectors_file, vectors)
    chosen = args.only.split(",") if args.only else list(STORES)
    for name in chosen:
        rows.append(store_row(name, vectors_file, vectors, person_rows, control))
    results = {
        "measured_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "system": platform.platform()},
        "population": {"identities": IDENTITIES, "samples_per_identity": SAMPLES, "seed": 1,
                       "templates": len(vectors), "person": person, "person_rows": person_rows, "control_row": control},
        "scan": {"window_bytes": WINDOW, "float32_tolerance": TOLERANCE,
                 "forms": ["float32 LE within the tolerance", "float16 LE bytes"]},
        "versions": versions(),
        "rows": rows,
    }
    (OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    text = table(rows, len(person_rows))
    (OUT / "results.md").write_text(
        f"Measured {results['measured_at']} on {results['machine']['cpu']} ({results['machine']['cores']} cores), "
        f"{len(vectors)} synthetic templates ({IDENTITIES} people x {SAMPLES}), person {person} deleted.\n\n"
        + text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
