# Oubli: two commands on a fresh machine.
#   make demo   installs what is missing, builds, and runs the narrated demo (ARGS=--fast: smaller)
#   make test   installs what is missing, builds, checks formatting and lints (the Rust code and
#               the API), runs every test
#
# RocksDB's C++ is compiled once per machine into ~/.cache/oubli (scripts/rocksdb-cache.sh, about
# 13 minutes on 2 cores) and linked from there by every cargo call (scripts/cargo).

CARGO := scripts/cargo
# (openssl: docs/usage.md, which runs as a test, makes a TLS certificate with it. chromium: the
# receipt page's browser test, tests/it/browser.rs, opens docs/verify/index.html in it, headless.)
APT_PACKAGES := libclang-dev protobuf-compiler libprotobuf-dev openssl chromium etcd-server etcd-client
ARGS ?=

.PHONY: deps rocksdb build lint test test-heavy crash-test load resources demo bench bench-peers bench-serve bench-erase compare-deletion etcd-demo bench-etcd bench-cluster cluster-demo fmt clippy clean docs-plots fuzz-smoke fuzz fuzz-seeds python-deps python-example docs-screenshots

# Installs the system packages the build needs, only when one is missing.
deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first"; exit 1; }
	@# `make lint` runs buf from npm; Debian's npm when the machine has none.
	@command -v npm >/dev/null || { SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq npm; }
	@# The independent receipt check in the tests is Python with the `cryptography` package.
	@python3 -c 'import cryptography' 2>/dev/null || python3 -m pip install --quiet cryptography

rocksdb: deps
	@scripts/rocksdb-cache.sh >/dev/null

build: rocksdb
	$(CARGO) build --release --locked --bins

fmt: deps
	cargo fmt --all -- --check

clippy: rocksdb
	$(CARGO) clippy --locked --all-targets --features failpoints -- -D warnings

test: lint fmt clippy python-deps
	$(CARGO) test --locked --features failpoints

demo: build
	target/release/oubli demo $(ARGS)

# The etcd key store, narrated: a local 3-member etcd under target/etcd-demo (scripts/etcd-local.sh,
# loopback only, a small snapshot count so the write-ahead log can be retired), an erasure's keys
# looked for on every member's disk after each step, a member paused during the purge. The
# members are stopped at the end, whatever the outcome.
etcd-demo: build
	rm -rf target/etcd-demo
	OUBLI_ETCD_SNAPSHOT_COUNT=100 OUBLI_ETCD_MAX_WALS=1 scripts/etcd-local.sh start target/etcd-demo
	target/release/oubli cluster demo --dir target/etcd-demo $(ARGS); rc=$$?; \
	  scripts/etcd-local.sh stop target/etcd-demo; exit $$rc

# Two shards on a local 3-member etcd behind a gateway, narrated (oubli cluster walk): a person's
# access and erasure requests at each shard, an etcd member paused during phase 1, every member's
# disk scanned for the erased keys. The members are stopped at the end, whatever the outcome.
cluster-demo: build
	@# A previous run's members, if any are still up, are stopped before their PID files go.
	@[ ! -d target/cluster-demo/etcd ] || scripts/etcd-local.sh stop target/cluster-demo/etcd
	rm -rf target/cluster-demo
	OUBLI_ETCD_SNAPSHOT_COUNT=100 OUBLI_ETCD_MAX_WALS=1 scripts/etcd-local.sh start target/cluster-demo/etcd
	target/release/oubli cluster walk --dir target/cluster-demo $(ARGS); rc=$$?; \
	  scripts/etcd-local.sh stop target/cluster-demo/etcd; exit $$rc

# The key store's costs by size (one fresh local cluster per size, settings as etcd-demo):
# target/bench-etcd/results.json, one object per size.
ETCD_BENCH_SIZES ?= 1000 10000 100000
bench-etcd: build
	rm -rf target/bench-etcd && mkdir -p target/bench-etcd
	@for n in $(ETCD_BENCH_SIZES); do \
	  d=target/bench-etcd/cluster-$$n; \
	  OUBLI_ETCD_SNAPSHOT_COUNT=100 OUBLI_ETCD_MAX_WALS=1 scripts/etcd-local.sh start $$d >/dev/null || exit 1; \
	  target/release/oubli cluster bench --dir $$d --records $$n >>target/bench-etcd/results.jsonl; rc=$$?; \
	  scripts/etcd-local.sh stop $$d; rm -rf $$d; [ $$rc -eq 0 ] || exit $$rc; \
	done
	python3 -c 'import json,sys; rows=[json.loads(l) for l in open("target/bench-etcd/results.jsonl")]; json.dump({"runs": rows}, open("target/bench-etcd/results.json","w"), indent=1); [print(r) for r in rows]'

# One node against one shard whose data keys live in a local 3-member etcd, one run: enrolment
# calls/s with 1 and 8 clients, and the erasure steps' durations after a mixed run (phase 1 on
# etcd purges and checks every member). target/bench-cluster/results.json; everything it starts
# is stopped at the end.
bench-cluster: build
	python3 scripts/bench-cluster.py

# The API against buf's STANDARD lint rules (buf.yaml): the protobuf ecosystem's conventions for
# service and message names. buf comes from npm, pinned, under target/buf: nothing is installed
# system-wide, and it is installed again only when BUF_VERSION changes.
BUF_VERSION := 1.75.0
BUF_STAMP := target/buf/.installed-$(BUF_VERSION)
lint: deps $(BUF_STAMP)
	target/buf/node_modules/.bin/buf lint

$(BUF_STAMP):
	@command -v npm >/dev/null || { echo "npm not found: install Node.js (it brings npm) to lint the API"; exit 1; }
	npm install --prefix target/buf --ignore-scripts --no-audit --no-fund --silent @bufbuild/buf@$(BUF_VERSION)
	touch $@

# The Python example's packages and its gRPC stubs (grpcio-tools), under target/python: nothing
# is installed system-wide. The stubs are regenerated when a .proto changes. Playwright drives
# Debian's chromium in the browser test (scripts/browser-verify.py); it never downloads a browser.
PYTHON_PACKAGES := grpcio-tools==1.85.1 cryptography
PLAYWRIGHT_VERSION := 1.65.2
PLAYWRIGHT_STAMP := target/python/deps/.playwright-$(PLAYWRIGHT_VERSION)
python-deps: target/python/stubs/.stamp $(PLAYWRIGHT_STAMP)

$(PLAYWRIGHT_STAMP): target/python/deps/.stamp
	python3 -m pip install --quiet --disable-pip-version-check --target target/python/deps playwright==$(PLAYWRIGHT_VERSION)
	touch $@

target/python/deps/.stamp:
	python3 -m pip install --quiet --disable-pip-version-check --target target/python/deps $(PYTHON_PACKAGES)
	touch $@

target/python/stubs/.stamp: target/python/deps/.stamp $(wildcard proto/oubli/v1/*.proto)
	mkdir -p target/python/stubs
	PYTHONPATH=target/python/deps python3 -m grpc_tools.protoc -Iproto --python_out=target/python/stubs \
	  --grpc_python_out=target/python/stubs proto/oubli/v1/*.proto
	touch $@

# examples/python/client.py against a fresh server on a temp data dir.
python-example: build python-deps
	scripts/python-example.sh

bench: rocksdb
	$(CARGO) bench --locked --bench search --bench log --bench index

# The index checks at 100,000 templates (match recall through deletions, restart loading the
# graph), in release: minutes, so not part of `make test`.
test-heavy: rocksdb
	$(CARGO) test --release --locked --test it index:: -- --ignored --nocapture

# The crash harness for longer: more random kills during a bulk enrolment (make test runs 2).
CRASH_ROUNDS ?= 20
crash-test: rocksdb
	OUBLI_CRASH_ROUNDS=$(CRASH_ROUNDS) $(CARGO) test --locked --features failpoints --test it crash:: -- --nocapture

# Resident memory and start-up time of the server with RESOURCES_N records (exact index).
RESOURCES_N ?= 1000000
resources: build
	scripts/resources.sh $(RESOURCES_N)

# 8 clients, a mixed workload for 60 s on an embedded server, then the consistency check.
load: build
	target/release/oubli load --embedded --clients 8 --duration 60

# Oubli's exact and HNSW indexes next to numpy, faiss and hnswlib on the same synthetic data
# (BENCH_N=1000000 for the 1M run): target/bench-peers/results.json, recall-vs-qps.png, a table.
# BENCH_THREADS=2: only the all-core runs (single-thread HNSW builds at 1M take hours).
BENCH_N ?= 100000
BENCH_THREADS ?=
bench-peers: build
	BENCH_N=$(BENCH_N) BENCH_THREADS=$(BENCH_THREADS) python3 scripts/bench-peers.py

# The same synthetic population served by Oubli (exact and HNSW indexes) and by a Chroma server
# (`chroma run`, chromadb from PyPI into a venv under target/bench-serve), 10k and 100k records,
# 1/8/32 concurrent clients of one Rust load generator (`oubli load --bench`): search calls/s,
# p50/p99 and match recall; single-record enrolments (Oubli's synced, Chroma's defaults).
# target/bench-serve/results.json, calls-vs-clients.png and a table: 8 minutes on 2 cores (about
# 12 the first time, which also generates the populations and installs chromadb); quick:
# BENCH_SERVE_N=2000 BENCH_SERVE_CLIENTS=1,8 BENCH_SERVE_SECONDS=2 (under 2 minutes).
# BENCH_SERVE_PIN=split pins the server to the first core and the client to the last
# (docs/scaling.md#serving-measured).
BENCH_SERVE_N ?= 10000,100000
BENCH_SERVE_CLIENTS ?= 1,8,32
BENCH_SERVE_SECONDS ?= 5
BENCH_SERVE_PIN ?= none
bench-serve: build
	BENCH_SERVE_N=$(BENCH_SERVE_N) BENCH_SERVE_CLIENTS=$(BENCH_SERVE_CLIENTS) BENCH_SERVE_SECONDS=$(BENCH_SERVE_SECONDS) \
	  BENCH_SERVE_PIN=$(BENCH_SERVE_PIN) python3 scripts/bench-serve.py

# What an erasure costs as the store grows: phase-1 latency (data-key purge) and the batched
# phase-2 templates purge, through the real workflow (BENCH_N=1000000 for the 1M run).
bench-erase: build
	target/release/oubli-erase-bench --records $(BENCH_N) --dir target/bench-erase

# One person deleted from Chroma, LanceDB, milvus-lite and hnswlib (each store's documented delete
# and cleanup) and erased from Oubli (its workflow and both purges), then every file each one wrote
# searched for that person's templates: target/compare-deletion/results.md and results.json, and a
# table on stdout (docs/educators.md, section 6). The stores come from PyPI at the versions in
# scripts/compare-deletion-requirements.txt, into a venv under target/compare-deletion: installed
# again only when that file changes.
COMPARE_VENV := target/compare-deletion/venv
COMPARE_STAMP := $(COMPARE_VENV)/.installed
compare-deletion: build $(COMPARE_STAMP)
	$(CARGO) build --release --locked --example compare_deletion_oubli
	$(COMPARE_VENV)/bin/python scripts/compare-deletion.py

$(COMPARE_STAMP): scripts/compare-deletion-requirements.txt
	@[ -x $(COMPARE_VENV)/bin/python ] || python3 -m venv $(COMPARE_VENV)
	$(COMPARE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r scripts/compare-deletion-requirements.txt
	touch $@

# The receipt page's screenshots in the README and docs/educators.md (docs/verify-pass.png,
# docs/verify-fail.png), taken by the browser test from a real receipt.
docs-screenshots: rocksdb python-deps
	OUBLI_WRITE_SCREENSHOTS=1 $(CARGO) test --locked --features failpoints --test it browser:: -- --nocapture

# The DET curve and score histogram shown in the README.
docs-plots: build
	target/release/oubli synth generate --identities 10000 --samples-per-identity 5 --seed 1 --out target/docs-pop
	target/release/oubli synth stats target/docs-pop --out docs

clean:
	cargo clean

# Fuzzing (cargo-fuzz; nightly flags, see scripts/fuzz.sh): every target from the committed
# corpus. fuzz-smoke: 30 s each; fuzz: FUZZ_SECONDS each (10 minutes by default).
FUZZ_TARGETS := request note receipt proof
FUZZ_SECONDS ?= 600
fuzz-smoke: rocksdb
	scripts/fuzz.sh 30 $(FUZZ_TARGETS)

fuzz: rocksdb
	scripts/fuzz.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# Rewrites the code-defined seeds (fuzz/src/lib.rs, seeds()) into fuzz/corpus/.
fuzz-seeds: rocksdb
	OUBLI_WRITE_FUZZ_SEEDS=1 $(CARGO) test --locked --features failpoints --test it fuzz::seeds
