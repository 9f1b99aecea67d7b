#!/usr/bin/env bash
# A/B driver: alternate BEFORE (B) and AFTER (A) binaries, ROUNDS rounds, B first each round.
set -u
OUT=/work/main/bench/results/ab-2026-12-07
ROUNDS=${ROUNDS:-4}
for r in $(seq 1 "$ROUNDS"); do
  for side in before after; do
    bin=/tmp/mandate-$side-bin
    wt=/tmp/mandate-$side
    # quiet gate: wait (at most 240 s) for other sessions' compilers to finish
    for i in $(seq 1 48); do pgrep -x rustc >/dev/null || pgrep -x cc1 >/dev/null || pgrep -f 'cargo-nextest|/deps/.*-[0-9a-f]{16}' >/dev/null || break; sleep 5; done
    echo "== round $r $side gate_wait=$((i*5 - 5))s load=$(cut -d' ' -f1-3 /proc/loadavg) $(date -u +%H:%M:%S)"
    (cd "$wt" && MANDATE_BENCH_BIN=$bin python3 bench/run_mandate.py --workloads lookup-service create-service \
        --conc 16 64 --reps 1 --first-rep "$r" --duration 8 --out "$OUT/broker-$side.jsonl") || echo "FAILED broker $side r$r"
    (cd "$wt" && MANDATE_BENCH_BIN=$bin python3 bench/run_proxy.py --peers mandate-proxy \
        --conc 16 64 --reps 1 --duration 8 --out "$OUT/proxy-$side-r$r.jsonl") || echo "FAILED proxy $side r$r"
  done
done
echo "== done $(date -u +%H:%M:%S)"
