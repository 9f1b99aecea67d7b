#!/usr/bin/env bash
# Sitting 3: the proxy only, AFTER first in each pair (order control for sitting 2), ROUNDS pairs.
set -u
OUT=/work/main/bench/results/ab-2026-12-07
for r in $(seq 1 "${ROUNDS:-6}"); do
  for side in after before; do
    echo "== s3 round $r proxy $side load=$(cut -d' ' -f1-3 /proc/loadavg) $(date -u +%H:%M:%S)"
    (cd /tmp/mandate-$side && MANDATE_BENCH_BIN=/tmp/mandate-$side-bin python3 bench/run_proxy.py --peers mandate-proxy \
        --conc 16 64 --reps 1 --duration 8 --out "$OUT/s3-proxy-$side-r$r.jsonl") || echo "FAILED proxy $side r$r"
  done
done
echo "== done $(date -u +%H:%M:%S)"
