#!/usr/bin/env python3
"""Generates the scanner benchmark tree: 10,000 files, 200 MB, an agent
monorepo's mix, deterministic (seeded).

    python3 bench/scan_tree.py [--out /tmp/mandate-scan-tree] [--files 10000] [--mb 200]

Content, by share of files:
  55 %  code: real Python source (this interpreter's standard library,
        tests included, in consecutive chunks) and this repository's Rust
  15 %  config: YAML / TOML / .env / MCP JSON with secret-looking names,
        `${VAR}` references and placeholders (no credentials)
  10 %  lockfiles: npm `integrity` sha512 hashes, Cargo checksums
  10 %  notebooks: JSON cells with escaped source and base64 PNG outputs
  10 %  prose: Markdown with commit hashes, digests, UUIDs
Every 100th file gets one planted credential (100 in all), so the rules'
regexes run as they would in a real tree, not only the keyword pass.
"""

import argparse
import base64
import json
import os
import random
import shutil
import sysconfig
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def source_pool(limit=48 << 20):
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py"))
    files += sorted((ROOT / "crates").rglob("*.rs"))
    pool, size = [], 0
    for f in files:
        if "corpus" in f.parts or "site-packages" in f.parts:
            continue
        try:
            text = f.read_text("utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        pool.append(text)
        size += len(text)
        if size > limit:
            break
    return "\n".join(pool)


class Gen:
    def __init__(self, seed):
        self.r = random.Random(seed)
        self.code = source_pool()
        self.at = 0

    def rnd(self, n, alphabet=ALNUM):
        return "".join(self.r.choice(alphabet) for _ in range(n))

    def chunk(self, n):
        if self.at + n > len(self.code):
            self.at = 0
        s = self.code[self.at : self.at + n]
        self.at += n
        return s

    def github(self):
        body = self.rnd(30)
        n = zlib.crc32(body.encode())
        tail = ""
        for _ in range(6):
            tail = B62[n % 62] + tail
            n //= 62
        return "ghp_" + body + tail

    def planted(self):
        return self.r.choice([
            lambda: f"OPENAI_API_KEY=sk-proj-{self.rnd(74)}T3BlbkFJ{self.rnd(74)}",
            lambda: f'GITHUB_TOKEN = "{self.github()}"',
            lambda: f"AWS_ACCESS_KEY_ID=AKIA{self.rnd(16, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567')}",
            lambda: f"DATABASE_URL=postgres://app:{self.rnd(18)}@db.internal:5432/app",
            lambda: f'client = Anthropic(api_key="sk-ant-api03-{self.rnd(93)}AA")',
            lambda: f"SLACK_BOT_TOKEN=xoxb-{self.rnd(12, '0123456789')}-{self.rnd(13, '0123456789')}-{self.rnd(24)}",
            lambda: f'db_password = "{self.rnd(22)}"',
        ])()

    def config(self, size):
        lines = []
        while sum(map(len, lines)) < size:
            k = self.r.choice(["api_key", "token", "password", "secret", "endpoint", "timeout", "model", "max_tokens"])
            v = self.r.choice(["${%s}" % k.upper(), "<your-%s>" % k, "changeme", str(self.r.randint(1, 9999)),
                               "https://api.internal/v1/%s" % k, "gpt-4o-mini", "${{ secrets.%s }}" % k.upper()])
            lines.append(f"{k}_{self.r.randint(0, 99)}: {v}")
        return "\n".join(lines)

    def lockfile(self, size):
        out = []
        while sum(map(len, out)) < size:
            h = base64.b64encode(self.r.randbytes(64)).decode()
            name = self.rnd(8).lower()
            out.append(f'    "node_modules/{name}": {{\n      "version": "1.{self.r.randint(0, 20)}.0",\n'
                       f'      "resolved": "https://registry.npmjs.org/{name}/-/{name}-1.0.0.tgz",\n'
                       f'      "integrity": "sha512-{h}"\n    }},')
        return "{\n" + "\n".join(out) + "\n}"

    def notebook(self, size):
        cells = []
        while sum(len(json.dumps(c)) for c in cells) < size:
            src = self.chunk(self.r.randint(300, 3000)).splitlines(keepends=True)
            png = base64.b64encode(self.r.randbytes(self.r.randint(500, 6000))).decode()
            cells.append({"cell_type": "code", "execution_count": 1, "id": self.rnd(8).lower(), "metadata": {},
                          "outputs": [{"output_type": "display_data", "data": {"image/png": png}, "metadata": {}}],
                          "source": src})
        return json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}, indent=1)

    def prose(self, size):
        out = []
        while sum(map(len, out)) < size:
            out.append(self.r.choice([
                f"Fixed in commit {self.r.randbytes(20).hex()}; see the release notes.",
                f"Image digest sha256:{self.r.randbytes(32).hex()}.",
                f"Request {self.r.randbytes(16).hex()[:8]}-{self.r.randbytes(2).hex()}-4{self.r.randbytes(2).hex()[1:]}-a{self.r.randbytes(2).hex()[1:]}-{self.r.randbytes(6).hex()} timed out.",
                "Set your API key with `export OPENAI_API_KEY=<your-api-key>` before running the agent.",
                self.chunk(400).replace("\n", " "),
            ]))
        return "\n\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/mandate-scan-tree")
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    g = Gen(a.seed)
    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    mean = a.mb * 1_000_000 // a.files
    total = 0
    for i in range(a.files):
        size = int(mean * g.r.uniform(0.2, 1.8))
        kind = g.r.random()
        d = out / f"pkg{i % 50:02d}" / f"mod{i % 7}"
        if kind < 0.55:
            path, text = d / f"file{i}.py", g.chunk(size)
        elif kind < 0.70:
            path, text = d / f"config{i}.yaml", g.config(size)
        elif kind < 0.80:
            path, text = d / f"package-lock{i}.json", g.lockfile(size)
        elif kind < 0.90:
            path, text = d / f"notebook{i}.ipynb", g.notebook(size)
        else:
            path, text = d / f"notes{i}.md", g.prose(size)
        if i % 100 == 0:
            lines = text.split("\n")
            lines.insert(len(lines) // 2, g.planted())
            text = "\n".join(lines)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = text.encode()
        path.write_bytes(data)
        total += len(data)
    print(f"{a.files} files, {total / 1e6:.1f} MB in {out}")


main()
