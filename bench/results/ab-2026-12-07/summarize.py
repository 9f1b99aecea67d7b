#!/usr/bin/env python3
"""Summarize the A/B raw files in bench/results/ab-2026-12-07/.

    python3 summarize.py SITTING [MAX_OTHER_CPU]   # SITTING: s1 s2 s3 s4
"""
import json, statistics, sys
from pathlib import Path
D = Path("/work/main/bench/results/ab-2026-12-07")
P = sys.argv[1] if len(sys.argv) > 1 else "s1"
MAXNOISE = float(sys.argv[2]) if len(sys.argv) > 2 else 1e9

def load(side):
    rows = []
    f = D / f"{P}-broker-{side}.jsonl"
    if f.exists():
        for l in f.read_text().splitlines():
            if l.strip():
                r = json.loads(l); rows.append((r["workload"], r["concurrency"], r["rep"], r))
    for f in sorted(D.glob(f"{P}-proxy-{side}-r*.jsonl")):
        rnd = int(f.stem.rsplit("-r", 1)[1])
        for l in f.read_text().splitlines():
            if l.strip():
                r = json.loads(l); rows.append(("proxy", r["concurrency"], rnd, r))
    return rows

NAMES = {"lookup-service": "/v1/authorize (lookup-service)", "create-service": "token exchange (create-service)",
         "proxy": "proxy (mandate-proxy)"}
data = {s: load(s) for s in ("before", "after")}
def noise(r):
    f = r.get("foreign_cpu_pct") or 0
    if "broker_cpu_pct" in r:  # the broker ingesting the proxy's audit is part of the system under test
        f -= r["broker_cpu_pct"]
    return f
med = statistics.median
print("| workload | c | before req/s median (min–max) | after req/s median (min–max) | after/before | before p99 ms median (min–max) | after p99 ms median (min–max) | p99 after/before | n B/A | other CPU % B / A (median; max) |")
print("|---|---|---|---|---|---|---|---|---|---|")
for wl in ("lookup-service", "create-service", "proxy"):
    for c in (16, 64):
        cell = {}
        for s in ("before", "after"):
            rs = [r for (w, cc, rep, r) in data[s] if w == wl and cc == c and noise(r) <= MAXNOISE]
            cell[s] = dict(rps=[r["rps"] for r in rs], p99=[r["lat_ms"]["p99"] for r in rs],
                           err=sum(r["errors"] for r in rs), noise=[noise(r) for r in rs],
                           srv=[r["server"]["cpu_pct"] for r in rs])
        b, a = cell["before"], cell["after"]
        if not b["rps"] or not a["rps"]:
            continue
        f = lambda xs, d=0: f"{med(xs):,.{d}f} ({min(xs):,.{d}f}–{max(xs):,.{d}f})"
        print(f"| {NAMES[wl]} | {c} | {f(b['rps'])} | {f(a['rps'])} | {med(a['rps'])/med(b['rps']):.3f} | "
              f"{f(b['p99'],2)} | {f(a['p99'],2)} | {med(a['p99'])/med(b['p99']):.2f} | {len(b['rps'])}/{len(a['rps'])} | "
              f"{med(b['noise']):.0f}; {max(b['noise']):.0f} / {med(a['noise']):.0f}; {max(a['noise']):.0f} |")
print()
print("Per run (s1, s2: BEFORE first in each round; s3, s4: AFTER first):")
print()
print("| workload | c | side | round | req/s | p99 ms | errors | server CPU % | other CPU % | broker CPU % |")
print("|---|---|---|---|---|---|---|---|---|---|")
for wl in ("lookup-service", "create-service", "proxy"):
    for c in (16, 64):
        for rnd in range(1, 20):
            for s in ("before", "after"):
                for (w, cc, rep, r) in data[s]:
                    if w == wl and cc == c and rep == rnd:
                        print(f"| {wl} | {c} | {s} | {rnd} | {r['rps']:,.0f} | {r['lat_ms']['p99']:.2f} | {r['errors']} | "
                              f"{r['server']['cpu_pct']} | {noise(r):.1f} | {r.get('broker_cpu_pct', '–')} |")

print()
print(f"Paired by round (both runs with other CPU <= {MAXNOISE:g} %):")
print()
print("| workload | c | pairs | after/before per pair, median (min–max) | pairs with after slower |")
print("|---|---|---|---|---|")
for wl in ("lookup-service", "create-service", "proxy"):
    for c in (16, 64):
        rat = []
        for rnd in range(1, 20):
            b = [r for (w, cc, rep, r) in data["before"] if w == wl and cc == c and rep == rnd and noise(r) <= MAXNOISE]
            a = [r for (w, cc, rep, r) in data["after"] if w == wl and cc == c and rep == rnd and noise(r) <= MAXNOISE]
            if a and b:
                rat.append(a[0]["rps"] / b[0]["rps"])
        if rat:
            print(f"| {NAMES[wl]} | {c} | {len(rat)} | {med(rat):.3f} ({min(rat):.3f}–{max(rat):.3f}) | {sum(x < 1 for x in rat)} of {len(rat)} |")
