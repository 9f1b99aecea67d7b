#!/usr/bin/env bash
# Mandate and OpenBao side by side, in one sitting (see docs/benchmarks.md).
# Needs /tmp/peer/{bao,jwt,loadgen-target} as set up by the peer benchmark
# kit's README ($PEER_BENCH, outside this repository).
PEER_BENCH=${PEER_BENCH:-../shared/bench}
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)   # absolute: the OpenBao step runs from another directory
cargo build --release -q -p mandate-cli
python3 bench/run_mandate.py --out "$OUT/mandate.jsonl" --reps 1 --first-rep 1
(cd "$PEER_BENCH/openbao" && BAO_BIN=${BAO_BIN:-/tmp/peer/bao} python3 run_openbao.py \
  --out "$OUT/openbao.jsonl" suite --configs raft-audit \
  --workloads jwt-login create-service lookup-service --conc 16 64 --reps 2)
python3 bench/run_mandate.py --out "$OUT/mandate.jsonl" --reps 2 --first-rep 2 --grants 1000000 \
  | tee "$OUT/grants.json"
python3 "$PEER_BENCH/openbao/summarize.py" "$OUT/openbao.jsonl" "$OUT/mandate.jsonl" > "$OUT/summary.md"
