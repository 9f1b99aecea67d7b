#!/usr/bin/env python3
"""The anomaly detector's cost and speed, in one sitting.

    python3 bench/run_anomaly.py [--reps 3] [--duration 8] [--conc 16] [--refusal] [--criterion]

1. Cost on the request path: `/v1/authorize` (run_mandate.py's
   lookup-service) and the proxy (run_proxy.py's mandate-proxy) with the
   detector on and off (MANDATE_ANOMALY_ENABLED), interleaved on/off,
   off/on, … so drift hits both; medians of req/s and p99.
2. `--refusal`: from a triggering request (one token from a second client
   address, production: the detector suspends the task) to every token of
   the task and its delegated child refused at the proxy, 20 runs
   (`trigger_to_refusal_over_20_runs` in crates/mandate-proxy/tests/proxy/anomalies.rs).
3. `--criterion`: the detector alone, events/s (`cargo bench -p mandate-anomaly`).

Records go to --out-dir (one JSONL file per load and mode); the summary is printed.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load(script: str, args: list[str], mode: str, out: Path):
    env = dict(os.environ, MANDATE_ANOMALY_ENABLED="true" if mode == "on" else "false")
    subprocess.run([sys.executable, str(ROOT / "bench" / script), "--out", str(out)] + args,
                   check=True, env=env)


def summary(out_dir: Path):
    rows = []
    for name in ("authorize", "proxy"):
        by_mode = {}
        for mode in ("on", "off"):
            f = out_dir / f"{name}-{mode}.jsonl"
            recs = [json.loads(l) for l in f.read_text().splitlines() if l.strip()] if f.exists() else []
            recs = [r for r in recs if r.get("peer", "mandate").startswith("mandate")]
            by_mode[mode] = recs
        if not by_mode["on"] or not by_mode["off"]:
            continue
        med = {m: statistics.median(r["rps"] for r in by_mode[m]) for m in by_mode}
        p99 = {m: statistics.median(r["lat_ms"]["p99"] for r in by_mode[m]) for m in by_mode}
        rows.append((name, [round(r["rps"]) for r in by_mode["on"]], [round(r["rps"]) for r in by_mode["off"]],
                     med["on"], med["off"], med["on"] / med["off"], p99["on"], p99["off"]))
    print("| load | on req/s (runs) | off req/s (runs) | on median | off median | on / off | p99 ms on / off |")
    print("|---|---|---|---|---|---|---|")
    for name, on, off, mon, moff, ratio, pon, poff in rows:
        print(f"| {name} | {' / '.join(map(str, on))} | {' / '.join(map(str, off))} | "
              f"{mon:,.0f} | {moff:,.0f} | {ratio:.3f} | {pon:.2f} / {poff:.2f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out-dir", default=str(ROOT / "bench/results" / time.strftime("anomaly-%Y-%m-%d")))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=8)
    ap.add_argument("--conc", type=int, default=16)
    ap.add_argument("--loads", nargs="*", default=["authorize", "proxy"])
    ap.add_argument("--jwt-dir", default="/tmp/peer/jwt", help="workload JWTs ($PEER_BENCH/openbao/gen_jwts.py)")
    ap.add_argument("--refusal", action="store_true", help="also time trigger to refusal, 20 runs")
    ap.add_argument("--criterion", action="store_true", help="also the detector alone (events/s)")
    ap.add_argument("--summary-only", action="store_true")
    a = ap.parse_args()
    out_dir = Path(a.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not a.summary_only:
        common = ["--conc", str(a.conc), "--reps", "1", "--duration", str(a.duration), "--jwt-dir", a.jwt_dir]
        for rep in range(1, a.reps + 1):
            modes = ["on", "off"] if rep % 2 else ["off", "on"]
            for mode in modes:
                if "authorize" in a.loads:
                    load("run_mandate.py", common + ["--workloads", "lookup-service", "--first-rep", str(rep)],
                         mode, out_dir / f"authorize-{mode}.jsonl")
                if "proxy" in a.loads:
                    load("run_proxy.py", common + ["--peers", "mandate-proxy"], mode, out_dir / f"proxy-{mode}.jsonl")
        if a.refusal:
            r = subprocess.run(["cargo", "test", "--release", "-q", "-p", "mandate-proxy", "--test", "anomalies",
                                "trigger_to_refusal_over_20_runs", "--", "--ignored", "--nocapture"],
                               cwd=ROOT, capture_output=True, text=True)
            line = next((l for l in r.stderr.splitlines() if l.startswith("trigger_to_refusal_ms")), r.stderr[-2000:])
            print(line)
            (out_dir / "refusal.txt").write_text(line + "\n")
        if a.criterion:
            subprocess.run(["cargo", "bench", "-p", "mandate-anomaly", "--bench", "detector"], cwd=ROOT, check=True)
    summary(out_dir)


if __name__ == "__main__":
    sys.exit(main())
