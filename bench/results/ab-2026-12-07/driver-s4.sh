#!/usr/bin/env bash
# Sitting 4: the proxy only, AFTER first in each pair, each pair started only when the
# machine is near idle (5 s sample of /proc/stat: >= 80 % idle), waiting at most 300 s.
set -u
OUT=/work/main/bench/results/ab-2026-12-07
idle_pct() { read -r _ u n s i w q sq st _ < /proc/stat; t0=$((u+n+s+i+w+q+sq+st)); i0=$((i+w)); sleep 5
             read -r _ u n s i w q sq st _ < /proc/stat; t1=$((u+n+s+i+w+q+sq+st)); i1=$((i+w)); echo $(( 100*(i1-i0)/(t1-t0) )); }
DEADLINE=$(( $(date +%s) + ${BUDGET:-2400} ))
for r in $(seq "${FIRST:-1}" $(( ${FIRST:-1} + ${ROUNDS:-6} - 1 ))); do
  [ "$(date +%s)" -gt "$DEADLINE" ] && break
  waited=0; while [ "$(idle_pct)" -lt 80 ] && [ $waited -lt ${MAXWAIT:-300} ]; do waited=$((waited+5)); done
  for side in after before; do
    echo "== s4 round $r proxy $side waited=${waited}s load=$(cut -d' ' -f1-3 /proc/loadavg) $(date -u +%H:%M:%S)"
    (cd /tmp/mandate-$side && MANDATE_BENCH_BIN=/tmp/mandate-$side-bin python3 bench/run_proxy.py --peers mandate-proxy \
        --conc 16 64 --reps 1 --duration 8 --out "$OUT/s4-proxy-$side-r$r.jsonl") || echo "FAILED proxy $side r$r"
  done
done
echo "== done $(date -u +%H:%M:%S)"
