#!/usr/bin/env bash
# Runs examples/python/client.py against a fresh oubli-server (release build) on a temp data dir.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
mkfifo "$work/log"
"$repo/target/release/oubli-server" --data-dir "$work/data" --key-dir "$work/keys" --listen 127.0.0.1:0 \
  >/dev/null 2>"$work/log" &
pid=$!
exec 3<"$work/log"
addr=
while IFS= read -r line <&3; do
  case "$line" in *"serving oubli.v1"*) addr=$(grep -o '127\.0\.0\.1:[0-9]*' <<<"$line" | head -1); break ;; esac
done
cat <&3 >/dev/null &
[ -n "$addr" ] || { echo "the server did not start"; exit 1; }
echo "oubli-server on $addr (data in $work)"
# The controller trusts one capture application: the example plays it.
"$repo/target/release/oubli" capture-keys add --file "$work/keys/capture-keys.toml" --name python-example \
  --generate "$work/capture.key" >/dev/null
PYTHONPATH="$repo/target/python/deps:$repo/target/python/stubs" \
  python3 "$repo/examples/python/client.py" --server "$addr" --token-file "$work/keys/local.token" \
  --capture-key "$work/capture.key"
