#!/usr/bin/env bash
# Runs the engine spike for both engines, alternating, at 1 KiB and 256 KiB values.
# Usage: scripts/engine-spike/run.sh [total MiB per run, default 1024] [rounds, default 2]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
total=${1:-1024}
rounds=${2:-2}
cargo build --release -q
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for round in $(seq "$rounds"); do
  for value in 1024 262144; do
    # Batches of about 64 KiB of values for small ones, 4 values for large ones.
    batch=$((value < 65536 ? 64 : 4))
    for engine in fjall redb; do
      rm -rf "$work/db"
      ./target/release/engine-spike "$engine" "$work/db" 100 "$value" "$total" "$batch"
    done
  done
done
