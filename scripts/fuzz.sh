#!/usr/bin/env bash
# Runs each fuzz target for SECONDS (cargo-fuzz, libFuzzer, AddressSanitizer), starting from the
# committed corpus in fuzz/corpus/<target>. New inputs go to fuzz/target/corpus/<target> (not
# committed); a crash is written to fuzz/artifacts/<target>/ and fails the run. Usage:
#   scripts/fuzz.sh SECONDS target...
# Fuzzing needs nightly compiler flags: the machine's nightly toolchain if it has one, else the
# stable compiler with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=$1
shift
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  export RUSTC_BOOTSTRAP=1
fi
scripts/cargo "${toolchain[@]}" fuzz build
for target in "$@"; do
  work=fuzz/target/corpus/$target
  mkdir -p "$work"
  echo "== fuzz $target for ${seconds}s"
  log=fuzz/target/fuzz-$target.log
  if ! scripts/cargo "${toolchain[@]}" fuzz run "$target" "$work" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1 >"$log" 2>&1; then
    grep -E -A20 'panicked|ERROR' "$log" | head -40
    echo "fuzz $target: crash, input in fuzz/artifacts/$target/ (full output: $log)"
    exit 1
  fi
  grep -E '^(Done|stat::(number_of_executed_units|new_units_added|peak_rss_mb))' "$log"
done
