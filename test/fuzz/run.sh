#!/usr/bin/env bash
# Builds the fuzz targets and runs each for a bounded time from its seeds
# (test/fuzz/seeds/<target>), then prints the figures. A crash fails the run; its input
# is kept in test/fuzz/artifacts/<target>/ and printed as base64 for reproduction:
#   base64 -d > crash && RUSTC_BOOTSTRAP=1 cargo fuzz run -s none --fuzz-dir test/fuzz <target> crash
#
# Usage: test/fuzz/run.sh [seconds per target, default 20] [target ...]
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-20}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(provider_spec cloud_config kubeconfig)

command -v cargo-fuzz > /dev/null || cargo install --locked cargo-fuzz@0.13.2
# libFuzzer's coverage flags are nightly-only options; the one stable toolchain takes them
# with RUSTC_BOOTSTRAP. Safe Rust needs no sanitizer: panics and aborts are the findings.
export RUSTC_BOOTSTRAP=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo fuzz build -s none --fuzz-dir . 2> "$work/build.log" || { cat "$work/build.log"; exit 1; }
for target in "${targets[@]}"; do
  mkdir -p "$work/corpus"
  rm -rf "$work/corpus"/*
  if ! cargo fuzz run -s none --fuzz-dir . "$target" "$work/corpus" "seeds/$target" -- \
      -max_total_time="$seconds" -seed=1 -max_len=8192 -print_final_stats=1 > "$work/log" 2>&1; then
    # The finding itself, then libFuzzer's summary (the backtrace between is long).
    grep -A 2 "panicked at" "$work/log" | head -n 20 || true
    tail -n 25 "$work/log"
    for crash in artifacts/"$target"/*; do
      [ -f "$crash" ] && echo "input $crash (base64): $(base64 -w0 "$crash")"
    done
    echo "fuzz target $target failed"
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log")
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/log")
  line=$(grep -E '^#[0-9]+' "$work/log" | tail -n 1)
  coverage=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<< "$line")
  corpus=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<< "$line")
  echo "fuzz $target: ${runs} runs in ${seconds}s (${speed}/s), ${coverage} coverage points, ${corpus} corpus inputs, 0 crashes"
done
