#!/usr/bin/env python3
"""Mandate under load, tagged to line up with the peer kit's OpenBao rows.

    python3 bench/run_mandate.py --out bench/results/mandate.jsonl [--conc 16 64] [--reps 3]

Starts `target/release/mandate server` on 127.0.0.1:8300 with a throwaway
data dir (SQLite, audit on: every grant and decision is committed before its
response), trusts the ES256 issuer made by $PEER_BENCH/openbao/gen_jwts.py,
seeds 100 agents bound to the JWT subjects, then drives peer-loadgen:

  jwt-login       POST /oauth/token  grant_type=jwt-bearer   (OpenBao: auth/jwt/login)
  create-service  POST /oauth/token  token exchange -> grant  (OpenBao: durable token create)
  lookup-service  POST /v1/authorize Cedar decision, audited  (OpenBao: token lookup-self)

Each record carries peer=mandate, config=sqlite-audit, workload, rep.
`--grants N` afterwards mints N more grants at c64 and records RSS.
`--postgres` keeps the broker's state in a throwaway PostgreSQL cluster
(default durability: fsync and synchronous_commit on) instead of SQLite;
records then say config=postgres-audit, and the postgres processes' CPU is
in the "other CPU" column.
"""

import argparse
import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import shutil

import requests
from cryptography.hazmat.primitives import serialization

ROOT = Path(__file__).resolve().parent.parent
# The binary under test (an A/B sets another build).
BIN = Path(os.environ.get("MANDATE_BENCH_BIN", ROOT / "target/release/mandate"))
# The peer benchmark kit (peer-loadgen, the OpenBao scripts) lives outside
# this repository: $PEER_BENCH, by default beside the checkout.
SHARED = Path(os.environ.get("PEER_BENCH", ROOT.parent / "shared" / "bench"))
# Another broker on this machine (someone else's benchmark) may hold 8300.
PORT = int(os.environ.get("MANDATE_BENCH_PORT", "8300"))
ADDR = f"http://127.0.0.1:{PORT}"
ISS = "https://issuer.bench.local"
FORM = "content-type: application/x-www-form-urlencoded"


def b64u(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()


def jwks_from_pem(pem: bytes) -> dict:
    pub = serialization.load_pem_public_key(pem).public_numbers()
    return {"keys": [{"kty": "EC", "crv": "P-256", "kid": "bench-1", "alg": "ES256",
                      "x": b64u(pub.x), "y": b64u(pub.y)}]}


PG_PORT = 15432


def start_postgres(work: Path) -> str:
    """initdb + pg_ctl start in `work/pg` (as the postgres user when root); the URL."""
    bindir = Path(os.path.realpath(shutil.which("pg_ctl") or "/usr/lib/postgresql/15/bin/pg_ctl")).parent
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    pg = work / "pg"
    pg.mkdir()
    if as_user:
        subprocess.run(["chown", "-R", "postgres:", str(work)], check=True)
    subprocess.run(as_user + [str(bindir / "initdb"), "-D", str(pg / "data"), "-A", "trust", "-U", "mandate",
                              "--locale=C", "-E", "UTF8"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(as_user + [str(bindir / "pg_ctl"), "-D", str(pg / "data"), "-l", str(pg / "server.log"), "-w",
                              "-o", f"-c listen_addresses=127.0.0.1 -p {PG_PORT} -k {pg}", "start"],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", "mandate", "mandate"],
                   check=True)
    return f"postgres://mandate@127.0.0.1:{PG_PORT}/mandate"


def stop_postgres(work: Path):
    bindir = Path(os.path.realpath(shutil.which("pg_ctl") or "/usr/lib/postgresql/15/bin/pg_ctl")).parent
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run(as_user + [str(bindir / "pg_ctl"), "-D", str(work / "pg" / "data"), "-m", "fast", "stop"],
                   check=False, stdout=subprocess.DEVNULL)


def start(work: Path, jwt_dir: Path, database_url: str | None = None):
    (work / "jwks.json").write_text(json.dumps(jwks_from_pem((jwt_dir / "jwt_pub.pem").read_bytes())))
    (work / "mandate.toml").write_text(f"""
listen = "127.0.0.1:{PORT}"
data_dir = "{work / 'data'}"
trust_domain = "bench.local"
session_ttl_secs = 3600
task_max_ttl_secs = 28800
log_format = "json"

[[issuers]]
issuer = "{ISS}"
jwks_file = "{work / 'jwks.json'}"
audiences = ["mandate-bench"]
""")
    out = open(work / "server.out", "w")
    env = dict(os.environ, RUST_LOG="warn")
    if database_url:
        env["MANDATE_DATABASE_URL"] = database_url
    p = subprocess.Popen([str(BIN), "server", "--config", str(work / "mandate.toml")],
                         stdout=subprocess.PIPE, stderr=out, env=env, text=True)
    root = None
    for line in p.stdout:
        if line.strip().startswith("mdt_"):
            root = line.strip()
            break
    if not root:
        raise SystemExit("server printed no root token; see " + str(work / "server.out"))
    for _ in range(100):
        try:
            if requests.get(ADDR + "/readyz", timeout=1).ok:
                return p, root
        except requests.RequestException:
            time.sleep(0.1)
    raise SystemExit("server did not become ready")


def seed(root: str, work: Path, jwts: list[str], pool: int):
    h = {"Authorization": f"Bearer {root}"}
    def post(path, body):
        r = requests.post(ADDR + path, json=body, headers=h, timeout=10)
        r.raise_for_status()
        return r.json()
    post("/v1/owners", {"name": "bench"})
    post("/v1/tools", {"name": "github", "audience": "https://api.github.com", "owner": "bench",
                       "environment": "staging", "sensitivity": "internal", "max_ttl_secs": 900,
                       "actions": ["issues:read", "issues:write"]})
    for i in range(100):
        post("/v1/agents", {"name": f"agent-{i}", "owner": "bench", "environment": "staging",
                            "allowed_tools": ["github"]})
        post(f"/v1/agents/agent-{i}/bindings", {"issuer": ISS, "subject": f"spiffe://bench.local/agent/{i}"})
    (work / "login_bodies.txt").write_text("".join(
        urllib.parse.urlencode({"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": t}) + "\n"
        for t in jwts))
    session = requests.post(ADDR + "/oauth/token", data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                                                         "assertion": jwts[0]}, timeout=10).json()["access_token"]
    task = requests.post(ADDR + "/v1/tasks", headers={"Authorization": f"Bearer {session}"}, timeout=10, json={
        "intent": "benchmark", "ttl_secs": 28800,
        "scope": [{"tool": "github", "actions": ["issues:read", "issues:write"], "resources": ["repo:acme/*"]}]}).json()
    exchange = urllib.parse.urlencode({
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token": session,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt", "task_id": task["id"],
        "resource": "https://api.github.com", "scope": "issues:read"})
    (work / "exchange_body.txt").write_text(exchange + "\n")
    bodies = []
    for _ in range(pool):
        r = requests.post(ADDR + "/oauth/token", data=exchange, timeout=10,
                          headers={"content-type": "application/x-www-form-urlencoded"})
        r.raise_for_status()
        bodies.append(json.dumps({"token": r.json()["access_token"], "audience": "https://api.github.com",
                                  "action": "issues:read",
                                  "resource": "repo:acme/widgets"}, separators=(",", ":")))
    (work / "authorize_bodies.txt").write_text("\n".join(bodies) + "\n")
    # /v1/authorize answers only verifiers (an admin token with the `verify` right).
    verifier = post("/v1/admin/tokens", {"rights": ["verify"], "description": "bench gateway"})["token"]
    (work / "verifier.txt").write_text(verifier)


def loadgen(lg: str, args: list[str], meta: dict, out: Path):
    cmd = [lg] + args + ["--json-out", str(out)]
    for k, v in meta.items():
        cmd += ["--meta", f"{k}={v}"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "bench/results/mandate.jsonl"))
    ap.add_argument("--jwt-dir", default="/tmp/peer/jwt")
    ap.add_argument("--loadgen", default="/tmp/peer/loadgen-target/release/peer-loadgen")
    ap.add_argument("--conc", nargs="*", type=int, default=[16, 64])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--first-rep", type=int, default=1)
    ap.add_argument("--duration", type=float, default=15)
    ap.add_argument("--workloads", nargs="*", default=["jwt-login", "create-service", "lookup-service"])
    ap.add_argument("--grants", type=int, default=0, help="then mint this many grants and report RSS")
    ap.add_argument("--postgres", action="store_true", help="state in a throwaway PostgreSQL cluster")
    a = ap.parse_args()
    config = "postgres-audit" if a.postgres else "sqlite-audit"
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    jwts = (Path(a.jwt_dir) / "jwts.txt").read_text().split()
    work = Path(tempfile.mkdtemp(prefix="mandate-bench-"))
    database_url = start_postgres(work) if a.postgres else None
    p, root = start(work, Path(a.jwt_dir), database_url)
    try:
        seed(root, work, jwts, pool=1000)
        rss_idle = round(rss_mb(p.pid), 1)
        targets = {
            "jwt-login": ["--url", ADDR + "/oauth/token", "-X", "POST", "-H", FORM,
                          "--bodies-file", str(work / "login_bodies.txt")],
            "create-service": ["--url", ADDR + "/oauth/token", "-X", "POST", "-H", FORM,
                               "--bodies-file", str(work / "exchange_body.txt")],
            "lookup-service": ["--url", ADDR + "/v1/authorize", "-X", "POST",
                               "-H", "Authorization: Bearer " + (work / "verifier.txt").read_text(),
                               "--bodies-file", str(work / "authorize_bodies.txt")],
        }
        for rep in range(a.first_rep, a.first_rep + a.reps):
            for wl in a.workloads:
                for c in a.conc:
                    meta = {"peer": "mandate", "version": "0.1.0", "config": config, "workload": wl,
                            "rep": rep, "rss_idle_mb": rss_idle}
                    loadgen(a.loadgen, targets[wl] + ["-c", str(c), "-d", str(a.duration), "--warmup", "2",
                                                      "--pid", str(p.pid), "--also-comm", "postgres",
                                                      "--label", f"mandate/{config}/{wl}/c{c}/r{rep}"],
                            meta, out)
                    time.sleep(1)
        if a.grants:
            # The load generator runs at most 120 s per call: mint in chunks.
            t0, done, chunk = time.time(), 0, 250_000
            while done < a.grants:
                n = min(chunk, a.grants - done)
                loadgen(a.loadgen, targets["create-service"] + ["-c", "64", "-d", "120", "--warmup", "0",
                                                                "-n", str(n), "--pid", str(p.pid),
                                                                "--label", f"mandate/grants-{done + n}"],
                        {"peer": "mandate", "config": config, "workload": "bulk-grants", "rep": 1},
                        work / "grants.jsonl")
                done += n
            if database_url:
                db = int(subprocess.run(["psql", database_url, "-At", "-c", "SELECT pg_database_size('mandate')"],
                                        check=True, capture_output=True, text=True).stdout)
            else:
                db = sum(f.stat().st_size for f in (work / "data").glob("mandate.db*"))
            print(json.dumps({"grants": a.grants, "seconds": round(time.time() - t0, 1),
                              "rss_after_mb": round(rss_mb(p.pid), 1), "db_mb": round(db / 2**20, 1)}))
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
        if a.postgres:
            stop_postgres(work)
        # A run leaves gigabytes of database behind; the numbers are in --out.
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
