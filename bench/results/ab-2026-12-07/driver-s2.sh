#!/usr/bin/env bash
# Sitting 2: pairs interleaved per workload group (B then A, each group), ROUNDS rounds.
# Run under setsid with this session's autogroup at nice -10 (see summary.md).
set -u
OUT=/work/main/bench/results/ab-2026-12-07
ROUNDS=${ROUNDS:-4}
FIRST=${FIRST:-1}
for r in $(seq "$FIRST" $((FIRST + ROUNDS - 1))); do
  for wl in lookup-service create-service proxy; do
    for side in before after; do
      bin=/tmp/mandate-$side-bin
      wt=/tmp/mandate-$side
      echo "== s2 round $r $wl $side load=$(cut -d' ' -f1-3 /proc/loadavg) $(date -u +%H:%M:%S)"
      if [ "$wl" = proxy ]; then
        (cd "$wt" && MANDATE_BENCH_BIN=$bin python3 bench/run_proxy.py --peers mandate-proxy \
            --conc 16 64 --reps 1 --duration 8 --out "$OUT/s2-proxy-$side-r$r.jsonl") || echo "FAILED proxy $side r$r"
      else
        (cd "$wt" && MANDATE_BENCH_BIN=$bin python3 bench/run_mandate.py --workloads "$wl" \
            --conc 16 64 --reps 1 --first-rep "$r" --duration 8 --out "$OUT/s2-broker-$side.jsonl") || echo "FAILED $wl $side r$r"
      fi
    done
  done
done
echo "== done $(date -u +%H:%M:%S)"
