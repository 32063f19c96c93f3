#!/usr/bin/env bash
# Build RocksDB's static library once per machine, outside the clone, and print the directory
# that holds it. Every cargo call of the project then links it (ROCKSDB_LIB_DIR, ROCKSDB_STATIC,
# SNAPPY_LIB_DIR, SNAPPY_STATIC) instead of compiling RocksDB's C++ again (~13 min on 2 cores).
#
# The cache is keyed by the librocksdb-sys version pinned in Cargo.lock and by the features the
# crate enables, so a dependency bump builds a new entry rather than linking a stale library.
# The library is built by librocksdb-sys's own build script (in a scratch crate), so it is exactly
# the code the crate would have compiled. Concurrent callers serialise on a lock file.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
features="snappy"   # keep in step with the rocksdb features in Cargo.toml
version=$(awk '/^name = "librocksdb-sys"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$here/Cargo.lock")
[ -n "$version" ] || { echo "rocksdb-cache: librocksdb-sys not found in Cargo.lock" >&2; exit 1; }

root=${OUBLI_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/oubli}
entry="$root/librocksdb-sys-$version-$features"
lib="$entry/lib"

if [ -f "$lib/librocksdb.a" ] && [ -f "$lib/libsnappy.a" ]; then
  echo "$lib"; exit 0
fi

mkdir -p "$entry"
exec 9>"$entry/.lock"
flock 9
if [ -f "$lib/librocksdb.a" ] && [ -f "$lib/libsnappy.a" ]; then
  echo "$lib"; exit 0
fi

echo "rocksdb-cache: building RocksDB $version ($features) once for this machine into $entry" >&2
echo "rocksdb-cache: this takes about 13 minutes on 2 cores; later builds reuse it" >&2
scratch="$entry/build"
rm -rf "$scratch"
mkdir -p "$scratch/src"
cat >"$scratch/Cargo.toml" <<TOML
[package]
name = "oubli-rocksdb-cache"
version = "0.0.0"
edition = "2021"
publish = false
[dependencies]
librocksdb-sys = { version = "=$version", default-features = false, features = ["static", "bindgen-runtime", "$features"] }
[workspace]
TOML
echo 'fn main() {}' >"$scratch/src/main.rs"
(
  cd "$scratch"
  # The scratch build must compile RocksDB itself, whatever the caller's environment says.
  env -u ROCKSDB_LIB_DIR -u ROCKSDB_STATIC -u SNAPPY_LIB_DIR -u SNAPPY_STATIC -u CARGO_TARGET_DIR \
    cargo build --release --quiet >&2
)
out=$(dirname "$(find "$scratch/target/release/build" -name librocksdb.a -path '*librocksdb-sys-*/out/*' | head -n 1)")
[ -f "$out/librocksdb.a" ] && [ -f "$out/libsnappy.a" ] || { echo "rocksdb-cache: build produced no library" >&2; exit 1; }
tmp="$entry/lib.tmp.$$"
rm -rf "$tmp"; mkdir -p "$tmp"
cp "$out/librocksdb.a" "$out/libsnappy.a" "$tmp/"
mv "$tmp" "$lib"
rm -rf "$scratch"
echo "$lib"
