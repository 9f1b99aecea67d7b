#!/usr/bin/env python3
"""The credential-injection proxy under load, beside nginx and the bare upstream.

    python3 bench/run_proxy.py --out bench/results/proxy.jsonl [--conc 16 64] [--reps 3]

One sitting, one upstream: nginx ($PEER_BENCH/nginx/nginx.conf, 2 workers)
serves a static 1 KiB body on :18081 and proxies to it with a static
`Authorization` header on :18080. Mandate's broker (`mandate server`, SQLite,
audit on) runs on :8300 and `mandate proxy` on :8400 in front of the same
upstream, so each row differs only in what sits between client and upstream:

  direct        GET :18081/items/1                  (no proxy)
  nginx-proxy   GET :18080/items/1                  (static header, no auth)
  hyper-passthrough GET :8500/items/1            (static header, no auth: the
                bare tokio/hyper stack Mandate's proxy is built on,
                `cargo build --release -p mandate-proxy --example passthrough`)
  mandate-proxy GET :8400/items/items/1  Bearer AT  (JWT check against the JWKS,
                revocation set, route -> action, Cedar decision, secret
                injection, echo redaction, tool.invoked audit shipped to the
                broker and committed to its hash chain)

The agent token is one task's token reused, as an agent would reuse it
(the verified-token cache hits after the first call, and the proxy reuses
its Cedar decision for identical inputs within a second); `--tokens N`
rotates through N tokens of N tasks instead, or of one task with
`--one-task`. With more tokens than requests per second, no token recurs
within a second, so every request is a fresh Cedar decision. Runs are
interleaved per repetition.
"""

import argparse
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_mandate import ADDR, BIN, ISS, ROOT, SHARED, loadgen, rss_mb, start  # noqa: E402

PROXY_PORT = int(os.environ.get("MANDATE_BENCH_PROXY_PORT", "8400"))
PROXY = f"http://127.0.0.1:{PROXY_PORT}"
PASSTHROUGH = "http://127.0.0.1:8500"
UPSTREAM = "http://127.0.0.1:18081"
NGINX = "http://127.0.0.1:18080"


def start_nginx(work: Path) -> Path:
    ngx = Path("/tmp/ngx")
    (ngx / "logs").mkdir(parents=True, exist_ok=True)
    (ngx / "body.txt").write_text("x" * 1024)
    conf = (SHARED / "nginx/nginx.conf").read_text()
    subprocess.run(["nginx", "-c", str(SHARED / "nginx/nginx.conf"), "-p", str(ngx)], check=True)
    wait_ok(UPSTREAM + "/items/1", "nginx did not start: " + conf[:80])
    return ngx / "nginx.pid"


def wait_ok(url: str, failure: str, tries: int = 50):
    for _ in range(tries):
        try:
            if requests.get(url, timeout=1).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise SystemExit(failure)


def seed(root: str, jwt: str, n_tokens: int, one_task: bool = False) -> list[str]:
    h = {"Authorization": f"Bearer {root}"}

    def post(path, body, headers=h):
        r = requests.post(ADDR + path, json=body, headers=headers, timeout=10)
        if not r.ok:
            raise SystemExit(f"{path}: {r.status_code} {r.text}")
        return r.json()

    post("/v1/owners", {"name": "bench"})
    post("/v1/tools", {"name": "items", "audience": "https://items.bench.local", "owner": "bench",
                       "environment": "staging", "sensitivity": "internal", "max_ttl_secs": 3600,
                       "actions": ["items:read"], "upstream": UPSTREAM,
                       "routes": [{"method": "GET", "path": "/items/{id}", "action": "items:read",
                                   "resource": "item:{id}"}],
                       "delivery": {"mode": "inject", "inject": {"kind": "bearer"}}})
    post("/v1/secrets", {"name": "items-key", "tool": "items", "class": "tool", "owner": "bench",
                         "value": "upstream-static-secret-0123456789"})
    post("/v1/agents", {"name": "proxy-bench", "owner": "bench", "environment": "staging",
                        "allowed_tools": ["items"]})
    post("/v1/agents/proxy-bench/bindings", {"issuer": ISS, "subject": "spiffe://bench.local/agent/0"})
    session = requests.post(ADDR + "/oauth/token", timeout=10, data={
        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": jwt}).json()["access_token"]
    tokens = []
    http = requests.Session()
    task = None
    for _ in range(n_tokens):
        if task is None or not one_task:
            task = post("/v1/tasks", {"intent": "proxy benchmark", "ttl_secs": 3600,
                                      "scope": [{"tool": "items", "actions": ["items:read"],
                                                 "resources": ["item:*"]}]},
                        headers={"Authorization": f"Bearer {session}"})
        r = http.post(ADDR + "/oauth/token", timeout=10, data={
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token": session,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt", "task_id": task["id"],
            "resource": "https://items.bench.local", "scope": "items:read"})
        r.raise_for_status()
        tokens.append(r.json()["access_token"])
    return tokens


def start_proxy(work: Path, root: str, workers: int | None = None):
    tok = requests.post(ADDR + "/v1/admin/tokens", json={"rights": ["proxy"], "description": "bench proxy"},
                        headers={"Authorization": f"Bearer {root}"}, timeout=10).json()["token"]
    (work / "proxy.token").write_text(tok)
    os.chmod(work / "proxy.token", 0o600)
    (work / "proxy.toml").write_text(f"""
listen = "127.0.0.1:{PROXY_PORT}"
broker = "{ADDR}"
token_file = "{work / 'proxy.token'}"
spool_dir = "{work / 'spool'}"
""")
    out = open(work / "proxy.out", "w")
    env = dict(os.environ, RUST_LOG="warn")
    if workers:
        env["MANDATE_PROXY_WORKER_THREADS"] = str(workers)
    p = subprocess.Popen([str(BIN), "proxy", "--config", str(work / "proxy.toml")],
                         stdout=out, stderr=out, env=env)
    wait_ok(PROXY + "/readyz", "proxy did not become ready; see " + str(work / "proxy.out"), tries=100)
    return p


def start_passthrough(work: Path):
    exe = ROOT / "target/release/examples/passthrough"
    if not exe.exists():
        raise SystemExit(f"{exe} is missing: cargo build --release -p mandate-proxy --example passthrough")
    p = subprocess.Popen([str(exe), "127.0.0.1:8500", UPSTREAM], stdout=open(work / "passthrough.out", "w"),
                         stderr=subprocess.STDOUT)
    wait_ok(PASSTHROUGH + "/items/1", "passthrough did not start; see " + str(work / "passthrough.out"))
    return p


def cpu_ticks(pid: int) -> int:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "bench/results/proxy.jsonl"))
    ap.add_argument("--jwt-dir", default="/tmp/peer/jwt")
    ap.add_argument("--loadgen", default="/tmp/peer/loadgen-target/release/peer-loadgen")
    ap.add_argument("--conc", nargs="*", type=int, default=[16, 64])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--tokens", type=int, default=1)
    ap.add_argument("--one-task", action="store_true",
                    help="mint all --tokens from one task (distinct tokens, one set of task facts)")
    ap.add_argument("--warmup", type=float, default=2)
    ap.add_argument("--proxy-workers", type=int, help="the proxy's tokio worker threads (default: one per core)")
    ap.add_argument("--peers", nargs="*", default=["direct", "nginx-proxy", "mandate-proxy"])
    a = ap.parse_args()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mandate-proxy-bench-"))
    jwt = (Path(a.jwt_dir) / "jwts.txt").read_text().split()[0]
    ngx_pid = start_nginx(work)
    os.environ["MANDATE_MASTER_KEY"] = base64.b64encode(os.urandom(32)).decode()
    broker, root = start(work, Path(a.jwt_dir))
    proxy = passthrough = None
    try:
        if "hyper-passthrough" in a.peers:
            passthrough = start_passthrough(work)
        tokens = seed(root, jwt, a.tokens, a.one_task)
        (work / "tokens.txt").write_text("\n".join(tokens) + "\n")
        proxy = start_proxy(work, root, a.proxy_workers)
        r = requests.get(PROXY + "/items/items/1", headers={"Authorization": f"Bearer {tokens[0]}"}, timeout=5)
        if r.status_code != 200 or len(r.content) != 1024:
            raise SystemExit(f"proxy smoke request failed: {r.status_code} {r.text[:200]}")
        targets = {
            "direct": ["--url", UPSTREAM + "/items/1"],
            "nginx-proxy": ["--url", NGINX + "/items/1"],
            "hyper-passthrough": ["--url", PASSTHROUGH + "/items/1"] + (["--pid", str(passthrough.pid)] if passthrough else []),
            "mandate-proxy": ["--url", PROXY + "/items/items/1", "--tokens-file", str(work / "tokens.txt"),
                              "--token-header", "Authorization", "--token-prefix", "Bearer ",
                              "--pid", str(proxy.pid)],
        }
        for rep in range(1, a.reps + 1):
            for c in a.conc:
                for peer in a.peers:
                    b0 = cpu_ticks(broker.pid)
                    t0 = time.time()
                    loadgen(a.loadgen, targets[peer] + ["-c", str(c), "-d", str(a.duration), "--warmup", str(a.warmup),
                                                        "--also-comm", "nginx",
                                                        "--label", f"{peer}/c{c}/r{rep}"],
                            {"peer": peer, "workload": "proxy-1k", "config": f"tokens-{a.tokens}" + ("-one-task" if a.one_task else "")
                             + (f"-w{a.proxy_workers}" if a.proxy_workers else ""), "rep": rep}, out)
                    # The broker ingests the proxy's audit batches: report its share too.
                    pct = 100 * (cpu_ticks(broker.pid) - b0) / os.sysconf("SC_CLK_TCK") / (time.time() - t0)
                    lines = out.read_text().splitlines()
                    last = json.loads(lines[-1])
                    last["broker_cpu_pct"] = round(pct, 1)
                    last["proxy_rss_mb"] = round(rss_mb(proxy.pid), 1) if peer == "mandate-proxy" else None
                    lines[-1] = json.dumps(last, sort_keys=True)
                    out.write_text("\n".join(lines) + "\n")
                    time.sleep(1)
        time.sleep(1.5)  # let the last audit batch land
        env = dict(os.environ, MANDATE_ADDR=ADDR, MANDATE_TOKEN=root)
        subprocess.run([str(BIN), "audit", "verify"], env=env, check=True)
    finally:
        for p in (proxy, broker, passthrough):
            if p:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
        subprocess.run(["kill", Path(ngx_pid).read_text().strip()], check=False)
        shutil.rmtree(work, ignore_errors=True)  # gigabytes of database and spool


if __name__ == "__main__":
    sys.exit(main())
