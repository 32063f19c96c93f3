#!/usr/bin/env bash
# Memory and start-up time of oubli-server with N enrolled records (make resources, N=1000000
# by default): fills a store with oubli-erase-bench (random 512-d templates, exact index), then
# starts the server on it and reports the time to serving and its resident memory.
set -euo pipefail
n="${1:-1000000}"
dir="target/resources-$n"
if [ ! -f "$dir/.filled" ]; then
  rm -rf "$dir"
  target/release/oubli-erase-bench --records "$n" --erasures 1 --dir "$dir" > "$dir.fill.json"
  touch "$dir/.filled"
fi
log="$(mktemp)"
start=$(date +%s.%N)
target/release/oubli-server --data-dir "$dir/data" --key-dir "$dir/keys" --index exact \
  --policy-profile permissive --listen 127.0.0.1:0 2> "$log" &
pid=$!
trap 'kill $pid 2>/dev/null && wait $pid 2>/dev/null; rm -f "$log"' EXIT
until grep -q "serving oubli.v1" "$log"; do
  if ! kill -0 "$pid" 2>/dev/null; then cat "$log"; exit 1; fi
  sleep 0.2
done
ready=$(date +%s.%N)
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
hwm_kb=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
disk=$(du -sb "$dir/data" | cut -f1)
python3 - "$n" "$start" "$ready" "$rss_kb" "$hwm_kb" "$disk" <<'PY'
import json, sys
n, start, ready, rss, hwm, disk = sys.argv[1:]
out = {"records": int(n), "start_to_serving_s": round(float(ready) - float(start), 2),
       "rss_mb": round(int(rss) / 1024, 1), "peak_rss_mb": round(int(hwm) / 1024, 1),
       "data_dir_mb": round(int(disk) / 2**20, 1),
       "rss_bytes_per_record": round(int(rss) * 1024 / int(n), 1)}
print(json.dumps(out))
PY
