#!/usr/bin/env python3
"""Delegation cascade: revoke a task with N delegated children, through the proxy.

    MANDATE_BENCH_BIN=target/release/mandate python3 bench/run_cascade.py \
        --out-dir bench/results/cascade-YYYY-MM-DD \
        [--runs 1000=20 10000=20] [--quiet-runs 1000=10 10000=10] [--conc 16 64] [--reps 3] \
        [--checkers 2] [--quiet-pct 25 --max-quiet-wait 20] [--perf DIR] \
        [--relay-runs 100=20 1000=20] [--relay-light-runs 100=10 1000=10] [--audit-flush-ms MS]

One sitting: nginx serves a static 1 KiB body on :18081 (the upstream, as in
run_proxy.py), the broker (`target/release/mandate server`, SQLite, audit on)
runs on :8300 and `mandate proxy` on :8400 in front of nginx (other ports:
MANDATE_BENCH_PORT, MANDATE_BENCH_PROXY_PORT). The tool
`items` has the route GET /items/{id} -> items:read. Agent `lead` (workload
JWT of spiffe://bench.local/agent/0) owns the root task; agent `helper`
(agent/1) receives every child: each child is one RFC 8693 exchange

    grant_type=token-exchange, subject_token=<root task's access token>,
    subject_token_type=access_token, actor_token=<helper's session>,
    actor_token_type=jwt, resource=https://items.bench.local

which creates a new child task and answers its first access token.

Per run (the tree is rebuilt every run; setup is not measured):
  1. root task, its token (plain exchange), N children (32 connections);
  2. every child token once through the proxy: all must be answered 200
     (this also warms the proxy's verified-token cache, as live agents would);
  3. settle: wait until the broker and proxy are idle (the proxy's
     tool.invoked batches committed), then, at most --max-quiet-wait
     seconds, until the machine is below --quiet-pct of a core busy (other
     work shares these cores); busy_before_pct and quiet_ok say how it went;
  4. --checkers processes (default 2) hold C keep-alive connections to the
     proxy in all, each with its share of the tokens; at t0 the main process
     sends POST /v1/tasks/{root}/revoke on an open keep-alive connection and
     the checkers start cycling through the tokens, each token retried until
     the proxy refuses it;
  5. recorded: revoke_call_ms (t0 until the answer), last_ok_ms (the last
     time any child was still served: a lower bound of the propagation),
     first_refused_ms, all_refused_ms (the time by which every child had
     been refused: an upper bound, it includes the checkers' own sweep
     time), served_after_first_refusal (answers of 200 to requests sent
     after the first refusal was received: 0 means the proxy flipped the
     whole subtree at once, so the propagation lies between last_ok_ms and
     first_refused_ms), the checkers' request rate, the refusal codes, and
     foreign_cpu_pct (CPU used during the run by anything but the broker,
     the proxy and this script: a noisy-neighbour detector).
"Quiet" runs (--quiet-runs) time only the revoke call, with nothing else
running, then check every child once. With --perf DIR the quiet runs are
profiled instead (perf record of the broker over the revoke call; recorded
as mode=perf and left out of the summary); so are the exchange runs, each
profiled over the whole run (exchange-KIND-cC-rREP.data).

Relayed token (--relay-runs N=runs, --relay-light-runs N=runs): a root
task of `lead` with a plain token, a second token of it bound by DPoP
(RFC 9449: the exchange carries a `DPoP` proof, ES256, fresh P-256 key),
and N children. Every child's token and the root's plain token once through
the proxy (all 200), settle as above, then at t0 the bound token is sent to
the proxy as `Authorization: Bearer` without a proof: the proxy refuses it
(401 dpop_required, recorded as relay_answer) and ships the misuse evidence
with its next audit batch (every audit_flush_ms, 200 by default;
--audit-flush-ms sets MANDATE_PROXY_AUDIT_FLUSH_MS); the broker, started
with MANDATE_ON_MISUSE=staging=suspend,production=suspend (the bench tool
is staging), suspends the task, which revokes the root's tokens and its
children. Recorded from t0: suspended_logged_ms (the broker's "task
suspended for token misuse" log line, wall clock, written after the
suspension's write), and
  relay-checked  the checkers (as above, 64 connections) cycle through the
                 children's tokens and the root's plain token from t0:
                 first_refused_ms, last_ok_ms, all_refused_ms,
                 root_plain_refused_ms, served_after_first_refusal;
  relay-light    one connection cycles over three tokens (the root's plain
                 token, the first and the last child; 2 ms pause a round)
                 until all three are refused: probe_refused_ms; then every token once, all must
                 be refused (after_codes).
A relay run with foreign CPU above --max-foreign, or that never found the
machine quiet before it, is marked contaminated and run again (at most
--retries times); the summary leaves those out. Records: relay.jsonl.

Then token-exchange throughput with peer-loadgen (form POSTs from a bodies
file, one body reused), same sitting, interleaved A/B/B/A per repetition:
  plain      helper's session exchanges for its own task (task_id)
  delegated  the root token + helper's session as actor: a new child each time
A run whose foreign CPU (the load generator's noisy-neighbour figure) is
above --max-foreign % of a core is marked contaminated and run again (at
most --retries times); the summary leaves contaminated runs out.
With --runs and --quiet-runs empty only the exchange runs (and the relay
runs, if asked for); --reps 0 skips the exchange.

Everything lands as JSON lines in --out-dir: cascade.jsonl, exchange.jsonl,
plus server.out / proxy.out (the broker's and proxy's logs).
"""

import argparse
import asyncio
import base64
import http.client
import json
import multiprocessing as mp
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import jwt as pyjwt
import requests
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_mandate import ADDR, BIN, ISS, PORT, ROOT, b64u, loadgen, rss_mb, start  # noqa: E402
from run_proxy import PROXY, PROXY_PORT, UPSTREAM, cpu_ticks, start_nginx, start_proxy  # noqa: E402

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
AUD = "https://items.bench.local"
FORM = "content-type: application/x-www-form-urlencoded"


# ------------------------------------------------- a small HTTP/1.1 client ----

class Conn:
    """One keep-alive HTTP/1.1 connection (asyncio streams; Content-Length or chunked bodies)."""

    def __init__(self, url: str):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port
        self.r = self.w = None

    async def open(self):
        self.r, self.w = await asyncio.open_connection(self.host, self.port)

    async def request(self, method: str, path: str, headers: str = "", body: bytes = b"") -> tuple[int, bytes]:
        if self.w is None:
            await self.open()
        head = f"{method} {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n{headers}"
        if body or method == "POST":
            head += f"content-length: {len(body)}\r\n"
        self.w.write(head.encode() + b"\r\n" + body)
        try:
            raw = await self.r.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.w = None  # the server closed an idle connection: once more on a new one
            await self.open()
            self.w.write(head.encode() + b"\r\n" + body)
            raw = await self.r.readuntil(b"\r\n\r\n")
        status = int(raw[9:12])
        lower = raw.lower()
        i = lower.find(b"\r\ncontent-length:")
        if i >= 0:
            n = int(lower[i + 17:lower.index(b"\r\n", i + 2)])
            data = await self.r.readexactly(n) if n else b""
        elif b"transfer-encoding: chunked" in lower:
            data = b""
            while True:
                size = int((await self.r.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self.r.readexactly(size + 2)
                if size == 0:
                    break
                data += chunk[:-2]
        else:
            data = b""
        if b"\r\nconnection: close" in lower:
            self.w.close()
            self.w = None
        return status, data

    def close(self):
        if self.w:
            self.w.close()


async def post_many(bodies: list[bytes], conc: int) -> list[tuple[int, bytes]]:
    """POST each form body to the broker's /oauth/token over `conc` connections."""
    out: list = [None] * len(bodies)
    nxt = iter(range(len(bodies)))

    async def worker():
        c = Conn(ADDR)
        for i in nxt:
            out[i] = await c.request("POST", "/oauth/token", FORM + "\r\n", bodies[i])
        c.close()

    await asyncio.gather(*(worker() for _ in range(conc)))
    return out


async def proxy_once(tokens: list[str], conc: int) -> dict[int, int]:
    """Every token once through the proxy; a count per status."""
    counts: dict[int, int] = {}
    nxt = iter(tokens)

    async def worker():
        c = Conn(PROXY)
        for t in nxt:
            st, _ = await c.request("GET", "/items/items/1", f"authorization: Bearer {t}\r\n")
            counts[st] = counts.get(st, 0) + 1
        c.close()

    await asyncio.gather(*(worker() for _ in range(conc)))
    return counts


# ------------------------------------------------------------ the checker ----

def checker(tokens: list[str], conc: int, ready, go, results, limit_s: float, who: int = 0):
    """Runs in its own process: cycle through the tokens until every one is refused."""

    async def main():
        conns = [Conn(PROXY) for _ in range(conc)]
        await asyncio.gather(*(c.open() for c in conns))
        ready.set()
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        start = time.monotonic()
        n = len(tokens)
        last_ok = [0.0] * n
        last_ok_sent = [0.0] * n
        refused_at = [0.0] * n
        ok_sends: list[float] = []
        codes: dict[str, int] = {}
        sample = None
        pending = list(range(n))
        sent = 0
        # Tokens still to refuse go round a ring; each worker takes the next one.
        from collections import deque
        ring = deque(pending)

        async def worker(c: Conn):
            nonlocal sent, sample
            while ring and time.monotonic() - start < limit_s:
                i = ring.popleft()
                sent_at = time.monotonic()
                st, body = await c.request("GET", "/items/items/1", f"authorization: Bearer {tokens[i]}\r\n")
                t = time.monotonic()
                sent += 1
                if st == 200:
                    last_ok[i] = t
                    last_ok_sent[i] = sent_at
                    ok_sends.append(sent_at)
                    ring.append(i)
                elif st not in (401, 403):  # not a refusal of the token (say, an upstream hiccup): again
                    codes[f"other-{st}"] = codes.get(f"other-{st}", 0) + 1
                    ring.append(i)
                else:
                    refused_at[i] = t
                    key = str(st)
                    try:
                        key += ":" + json.loads(body)["error"]["code"]
                    except Exception:
                        pass
                    codes[key] = codes.get(key, 0) + 1
                    if sample is None:
                        sample = body[:300].decode(errors="replace")

        await asyncio.gather(*(worker(c) for c in conns))
        end = time.monotonic()
        for c in conns:
            c.close()
        results.put({"start": start, "end": end, "last_ok": max(last_ok), "last_ok_sent": max(last_ok_sent),
                     "ok_sends": ok_sends, "refused": [x for x in refused_at if x], "refused_at": refused_at, "who": who,
                     "never_refused": sum(1 for x in refused_at if not x), "requests": sent, "codes": codes,
                     "sample": sample})

    asyncio.run(main())


# ------------------------------------------------------------------ setup ----

def sys_snap() -> tuple[int, int]:
    """(all jiffies, idle + iowait jiffies) of the whole machine."""
    v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return sum(v), v[3] + v[4]


def busy_between(a: tuple[int, int], b: tuple[int, int]) -> float:
    """Machine-wide CPU busy between two sys_snap()s, % of one core."""
    return (1 - (b[1] - a[1]) / max(b[0] - a[0], 1)) * 100 * os.cpu_count()


def self_ticks() -> int:
    """CPU ticks of this process and its reaped children (the checker)."""
    t = os.times()
    return round((t.user + t.system + t.children_user + t.children_system) * os.sysconf("SC_CLK_TCK"))


def settle(pids: list[int], quiet_pct: float, max_quiet_s: float, window: float = 0.5) -> dict:
    """Before a run: wait (at most 60 s) until the broker and proxy are idle
    (the proxy ships its tool.invoked batches, the broker commits them), then
    (at most max_quiet_s) until the machine as a whole is below quiet_pct of
    one core for two windows in a row: other work shares these cores (a
    build next door). The last window's machine-wide busy % is recorded."""
    tck = os.sysconf("SC_CLK_TCK")
    t0 = time.monotonic()
    while time.monotonic() - t0 < 60:
        a = sum(cpu_ticks(p) for p in pids)
        time.sleep(window)
        if 100 * (sum(cpu_ticks(p) for p in pids) - a) / tck / window < 5:
            break
    t1 = time.monotonic()
    streak, busy = 0, 0.0
    while True:
        a = sys_snap()
        time.sleep(window)
        busy = busy_between(a, sys_snap())
        streak = streak + 1 if busy < quiet_pct else 0
        if streak >= 2 or time.monotonic() - t1 > max_quiet_s:
            break
    return {"settle_s": round(t1 - t0, 1), "quiet_wait_s": round(time.monotonic() - t1, 1),
            "quiet_ok": streak >= 2, "busy_before_pct": round(busy, 1)}


class World:
    def __init__(self, root: str, jwts: list[str]):
        self.root = root
        self.h = {"Authorization": f"Bearer {root}"}
        self.http = requests.Session()
        subs = {pyjwt.decode(t, options={"verify_signature": False})["sub"]: t for t in jwts[:2]}
        self.post("/v1/owners", {"name": "bench"})
        self.post("/v1/tools", {"name": "items", "audience": AUD, "owner": "bench",
                                "environment": "staging", "sensitivity": "internal", "max_ttl_secs": 3600,
                                "actions": ["items:read"], "upstream": UPSTREAM,
                                "routes": [{"method": "GET", "path": "/items/{id}", "action": "items:read",
                                            "resource": "item:{id}"}],
                                "delivery": {"mode": "inject", "inject": {"kind": "bearer"}}})
        self.post("/v1/secrets", {"name": "items-key", "tool": "items", "class": "tool", "owner": "bench",
                                  "value": "upstream-static-secret-0123456789"})
        sessions = []
        for name, (sub, assertion) in zip(["lead", "helper"], subs.items()):
            self.post("/v1/agents", {"name": name, "owner": "bench", "environment": "staging",
                                     "allowed_tools": ["items"]})
            self.post(f"/v1/agents/{name}/bindings", {"issuer": ISS, "subject": sub})
            r = self.http.post(ADDR + "/oauth/token", timeout=10, data={
                "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion})
            r.raise_for_status()
            sessions.append(r.json()["access_token"])
        self.lead, self.helper = sessions

    def post(self, path, body, token=None):
        h = {"Authorization": f"Bearer {token}"} if token else self.h
        r = self.http.post(ADDR + path, json=body, headers=h, timeout=60)
        if not r.ok:
            raise SystemExit(f"{path}: {r.status_code} {r.text[:500]}")
        return r.json()

    def plain_body(self, session: str, task: str) -> str:
        return urllib.parse.urlencode({"grant_type": EXCHANGE, "subject_token": session,
                                       "subject_token_type": JWT_TYPE, "task_id": task,
                                       "resource": AUD, "scope": "items:read"})

    def delegated_body(self, root_token: str) -> str:
        return urllib.parse.urlencode({"grant_type": EXCHANGE, "subject_token": root_token,
                                       "subject_token_type": ACCESS, "actor_token": self.helper,
                                       "actor_token_type": JWT_TYPE, "resource": AUD, "scope": "items:read"})

    def task(self, session: str, intent: str) -> str:
        return self.post("/v1/tasks", {"intent": intent, "ttl_secs": 3600,
                                       "scope": [{"tool": "items", "actions": ["items:read"],
                                                  "resources": ["item:*"]}]}, token=session)["id"]

    def root_task(self) -> tuple[str, str]:
        """A task of `lead` and a token of it (plain exchange)."""
        task = self.task(self.lead, "cascade benchmark")
        r = self.http.post(ADDR + "/oauth/token", data=self.plain_body(self.lead, task), timeout=10,
                           headers={"content-type": "application/x-www-form-urlencoded"})
        r.raise_for_status()
        return task, r.json()["access_token"]

    def bound_token(self, task: str) -> str:
        """A second token of `lead`'s task, DPoP-bound (RFC 9449) to a fresh P-256 key."""
        proof = dpop_proof(*dpop_key(), "POST", ADDR + "/oauth/token")
        r = self.http.post(ADDR + "/oauth/token", data=self.plain_body(self.lead, task), timeout=10,
                           headers={"content-type": "application/x-www-form-urlencoded", "DPoP": proof})
        if not r.ok or r.json().get("token_type", "").lower() != "dpop":
            raise SystemExit(f"DPoP-bound exchange: {r.status_code} {r.text[:300]}")
        return r.json()["access_token"]

    def tree(self, n: int, task: str | None = None, token: str | None = None) -> tuple[str, list[str], float]:
        if task is None:
            task, token = self.root_task()
        body = self.delegated_body(token).encode()
        t = time.monotonic()
        answers = asyncio.run(post_many([body] * n, 32))
        took = time.monotonic() - t
        bad = [a for a in answers if a[0] != 200]
        if bad:
            raise SystemExit(f"{len(bad)} of {n} delegations failed, e.g. {bad[0][0]} {bad[0][1][:300]!r}")
        return task, [json.loads(a[1])["access_token"] for a in answers], took


def dpop_key() -> tuple[ec.EllipticCurvePrivateKey, dict]:
    k = ec.generate_private_key(ec.SECP256R1())
    pub = k.public_key().public_numbers()
    return k, {"kty": "EC", "crv": "P-256", "x": b64u(pub.x), "y": b64u(pub.y)}


def dpop_proof(key, jwk: dict, method: str, url: str) -> str:
    """A DPoP proof: ES256 JWS, typ dpop+jwt, the public key in the header."""
    return pyjwt.encode({"jti": os.urandom(16).hex(), "htm": method, "htu": url, "iat": int(time.time())},
                        key, algorithm="ES256", headers={"typ": "dpop+jwt", "jwk": jwk})


def revoke_conn() -> http.client.HTTPConnection:
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=120)
    c.request("GET", "/readyz")
    c.getresponse().read()
    return c


def revoke(c: http.client.HTTPConnection, root: str, task: str) -> tuple[float, int, list]:
    # The route reads no body: send none (content-length: 0).
    hdr = {"Authorization": f"Bearer {root}"}
    t0 = time.monotonic()
    c.request("POST", f"/v1/tasks/{task}/revoke", body=b"", headers=hdr)
    resp = c.getresponse()
    data = resp.read()
    t1 = time.monotonic()
    if resp.status != 200:
        raise SystemExit(f"revoke: {resp.status} {data[:300]!r}")
    return t0, t1, json.loads(data).get("revoked_subtree", [])


def one_run(w: World, n: int, rep: int, quiet: bool, conc: int, limit_s: float, broker_pid: int,
            proxy_pid: int, quiet_pct: float, max_quiet_s: float, perf_dir: Path | None = None,
            checkers: int = 1) -> dict:
    task, kids, create_s = w.tree(n)
    pre = asyncio.run(proxy_once(kids, 64))
    if pre != {200: n}:
        raise SystemExit(f"before the revoke, not every child was served: {pre}")
    calm = settle([broker_pid, proxy_pid], quiet_pct, max_quiet_s)
    c = revoke_conn()
    rec = {"workload": f"cascade-{n}", "children": n, "rep": rep, "mode": "quiet" if quiet else "checked",
           "children_create_s": round(create_s, 2), "children_create_rps": round(n / create_s), **calm}
    perf = None
    if perf_dir and quiet:
        # Profile the broker over the revoke call only (not a measured run:
        # perf costs the broker time).
        rec["mode"] = "perf"
        perf_dir.mkdir(parents=True, exist_ok=True)
        perf = subprocess.Popen(["perf", "record", "-F", "2999", "--call-graph", "dwarf,32768", "-p",
                                 str(broker_pid), "-o", str(perf_dir / f"revoke-{n}-{rep}.data")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.5)
    b0, p0, s0, m0 = cpu_ticks(broker_pid), cpu_ticks(proxy_pid), self_ticks(), sys_snap()
    if quiet:
        t0, t1, sub = revoke(c, w.root, task)
        if perf:
            time.sleep(0.2)
            perf.send_signal(signal.SIGINT)
            perf.wait(timeout=120)
        time.sleep(0.5)
        post = asyncio.run(proxy_once(kids, 64))
        rec.update({"revoke_call_ms": round((t1 - t0) * 1000, 2), "subtree": len(sub),
                    "after_codes": {str(k): v for k, v in post.items()}})
    else:
        # `checkers` processes, each with its share of the tokens and of the
        # connections: one Python process alone sweeps ~10k tokens a second,
        # which is most of the upper bound at 10,000 children.
        ctx = mp.get_context("fork")
        go, results = ctx.Event(), ctx.Queue()
        readies, procs = [], []
        for k in range(checkers):
            ready = ctx.Event()
            procs.append(ctx.Process(target=checker, args=(kids[k::checkers], max(1, conc // checkers), ready, go,
                                                           results, limit_s)))
            readies.append(ready)
            procs[-1].start()
        if not all(r.wait(30) for r in readies):
            raise SystemExit("checker did not connect")
        go.set()
        t0, t1, sub = revoke(c, w.root, task)
        parts = [results.get(timeout=limit_s + 60) for _ in procs]
        for p in procs:
            p.join()
        refused = sorted(x for q in parts for x in q["refused"])
        codes: dict[str, int] = {}
        for q in parts:
            for k, v in q["codes"].items():
                codes[k] = codes.get(k, 0) + v
        # An answer of 200 to a request sent after some child had already
        # been refused (that answer received) would mean the proxy does not
        # flip the whole subtree at once.
        first = refused[0] if refused else None
        r = {"start": min(q["start"] for q in parts), "end": max(q["end"] for q in parts),
             "last_ok": max(q["last_ok"] for q in parts), "last_ok_sent": max(q["last_ok_sent"] for q in parts),
             "served_after_first_refusal": sum(1 for q in parts for x in q["ok_sends"] if first and x > first),
             "never_refused": sum(q["never_refused"] for q in parts), "requests": sum(q["requests"] for q in parts),
             "codes": codes, "sample": next((q["sample"] for q in parts if q["sample"]), None)}
        rec.update({
            "revoke_call_ms": round((t1 - t0) * 1000, 2), "subtree": len(sub),
            "checker_start_ms": round((r["start"] - t0) * 1000, 2),
            "first_refused_ms": round((refused[0] - t0) * 1000, 2) if refused else None,
            "last_ok_ms": round((r["last_ok"] - t0) * 1000, 2) if r["last_ok"] else None,
            "last_ok_sent_ms": round((r["last_ok_sent"] - t0) * 1000, 2) if r["last_ok_sent"] else None,
            "served_after_first_refusal": r["served_after_first_refusal"],
            "all_refused_ms": round((refused[-1] - t0) * 1000, 2) if not r["never_refused"] else None,
            "never_refused": r["never_refused"], "checker_requests": r["requests"], "checkers": checkers,
            "checker_rps": round(r["requests"] / max(r["end"] - r["start"], 1e-6)),
            "codes": r["codes"], "refusal_sample": r["sample"]})
    dt = max(time.monotonic() - t0, 1e-3)
    tck = os.sysconf("SC_CLK_TCK")
    own = [cpu_ticks(broker_pid) - b0, cpu_ticks(proxy_pid) - p0, self_ticks() - s0]
    rec["broker_cpu_pct"] = round(100 * own[0] / tck / dt, 1)
    rec["proxy_cpu_pct"] = round(100 * own[1] / tck / dt, 1)
    # CPU used during the run by anything but the broker, the proxy, this
    # script and its checker (a noisy-neighbour detector, % of one core).
    m1 = sys_snap()
    busy_ticks = ((m1[0] - m0[0]) - (m1[1] - m0[1])) / max(m1[0] - m0[0], 1) * dt * tck * os.cpu_count()
    rec["foreign_cpu_pct"] = round(max(0.0, 100 * (busy_ticks - sum(own)) / tck / dt), 1)
    c.close()
    if len(sub) != n:
        raise SystemExit(f"revoked_subtree has {len(sub)} entries, expected {n}")
    return rec


def suspended_at(log: Path, task: str, tries: int = 20) -> tuple[float | None, int | None]:
    """The broker's `task suspended for token misuse` log line for `task`:
    its wall-clock time (logged after the suspension's write) and subtree size."""
    import datetime
    import re
    for _ in range(tries):
        for line in reversed(log.read_text(errors="replace").splitlines()):
            if "task suspended for token misuse" not in line or task not in line:
                continue
            try:
                j = json.loads(line)
                ts = re.sub(r"(\.\d{6})\d*", r"\1", j["timestamp"]).replace("Z", "+00:00")
                f = j.get("fields", j)
                return datetime.datetime.fromisoformat(ts).timestamp(), f.get("subtree")
            except (ValueError, KeyError):
                return None, None
        time.sleep(0.1)
    return None, None


def relay_run(w: World, n: int, rep: int, quiet: bool, conc: int, limit_s: float, broker_pid: int,
              proxy_pid: int, quiet_pct: float, max_quiet_s: float, checkers: int, server_log: Path) -> dict:
    """A relayed token: the root's DPoP-bound token presented to the proxy as
    a plain bearer token. The proxy refuses it (401 dpop_required) and ships
    the misuse with its next audit batch; the broker suspends the task
    (on_misuse = suspend), which revokes the root's tokens and its N
    children. Measured: from that request until the proxy refuses the
    root's other (plain) token and every child's."""
    task, root_tok = w.root_task()
    bound = w.bound_token(task)
    _, kids, create_s = w.tree(n, task, root_tok)
    tokens = kids + [root_tok]  # the root's plain token last
    pre = asyncio.run(proxy_once(tokens, 64))
    if pre != {200: n + 1}:
        raise SystemExit(f"before the relay, not every token was served: {pre}")
    calm = settle([broker_pid, proxy_pid], quiet_pct, max_quiet_s)
    rc = http.client.HTTPConnection("127.0.0.1", PROXY_PORT, timeout=30)
    rc.request("GET", "/readyz")
    rc.getresponse().read()
    rec = {"workload": f"relay-{n}", "children": n, "rep": rep, "mode": "relay-light" if quiet else "relay-checked",
           "children_create_s": round(create_s, 2), "children_create_rps": round(n / create_s), **calm}
    hdr = {"Authorization": f"Bearer {bound}"}

    def relay() -> tuple[float, float, float]:
        w0, t0 = time.time(), time.monotonic()
        rc.request("GET", "/items/items/1", headers=hdr)
        resp = rc.getresponse()
        data = resp.read()
        t1 = time.monotonic()
        try:
            code = json.loads(data)["error"]["code"]
        except Exception:
            code = data[:100].decode(errors="replace")
        rec["relay_answer"] = f"{resp.status}:{code}"
        return w0, t0, t1

    b0, p0, s0, m0 = cpu_ticks(broker_pid), cpu_ticks(proxy_pid), self_ticks(), sys_snap()
    if quiet:
        # Light probe: one connection cycling over the root's plain token and
        # two children (first and last made) until all three are refused,
        # then every token once (all must be refused).
        w0, t0, t1 = relay()
        pc = http.client.HTTPConnection("127.0.0.1", PROXY_PORT, timeout=30)
        probe = {0: tokens[-1], 1: kids[0], 2: kids[-1]}
        refused: dict[int, float] = {}
        sent = 0
        while len(refused) < len(probe) and time.monotonic() - t0 < limit_s:
            for i, tok in probe.items():
                if i in refused:
                    continue
                pc.request("GET", "/items/items/1", headers={"Authorization": f"Bearer {tok}"})
                r = pc.getresponse()
                body = r.read()
                sent += 1
                if r.status in (401, 403):
                    refused[i] = time.monotonic()
                    rec.setdefault("refusal_sample", body[:200].decode(errors="replace"))
            time.sleep(0.002)  # light: about 1,000 requests a second, 3 ms resolution
        pc.close()
        end = time.monotonic()
        time.sleep(0.3)
        post = asyncio.run(proxy_once(tokens, 64))
        rec.update({"relay_call_ms": round((t1 - t0) * 1000, 2),
                    "root_plain_refused_ms": round((refused[0] - t0) * 1000, 1) if 0 in refused else None,
                    "probe_refused_ms": round((max(refused.values()) - t0) * 1000, 1)
                    if len(refused) == len(probe) else None,
                    "probe_requests": sent, "probe_rps": round(sent / max(end - t0, 1e-6)),
                    "after_codes": {str(k): v for k, v in post.items()}})
    else:
        ctx = mp.get_context("fork")
        go, results = ctx.Event(), ctx.Queue()
        readies, procs = [], []
        for k in range(checkers):
            ready = ctx.Event()
            procs.append(ctx.Process(target=checker, args=(tokens[k::checkers], max(1, conc // checkers), ready,
                                                           go, results, limit_s, k)))
            readies.append(ready)
            procs[-1].start()
        if not all(r.wait(30) for r in readies):
            raise SystemExit("checker did not connect")
        go.set()
        w0, t0, t1 = relay()
        parts = [results.get(timeout=limit_s + 60) for _ in procs]
        for p in procs:
            p.join()
        refused = sorted(x for q in parts for x in q["refused"])
        codes: dict[str, int] = {}
        for q in parts:
            for k, v in q["codes"].items():
                codes[k] = codes.get(k, 0) + v
        root_k = (len(tokens) - 1) % checkers  # the checker that held the root's plain token
        root_at = None
        for q in parts:
            if q.get("who") == root_k:
                root_at = q["refused_at"][-1] or None
        first = refused[0] if refused else None
        never = sum(q["never_refused"] for q in parts)
        start, end = min(q["start"] for q in parts), max(q["end"] for q in parts)
        last_ok = max(q["last_ok"] for q in parts)
        rec.update({
            "relay_call_ms": round((t1 - t0) * 1000, 2),
            "checker_start_ms": round((start - t0) * 1000, 2),
            "first_refused_ms": round((first - t0) * 1000, 1) if first else None,
            "last_ok_ms": round((last_ok - t0) * 1000, 1) if last_ok else None,
            "all_refused_ms": round((refused[-1] - t0) * 1000, 1) if refused and not never else None,
            "root_plain_refused_ms": round((root_at - t0) * 1000, 1) if root_at else None,
            "served_after_first_refusal": sum(1 for q in parts for x in q["ok_sends"] if first and x > first),
            "never_refused": never, "checker_requests": sum(q["requests"] for q in parts), "checkers": checkers,
            "checker_rps": round(sum(q["requests"] for q in parts) / max(end - start, 1e-6)),
            "codes": codes, "refusal_sample": next((q["sample"] for q in parts if q["sample"]), None)})
    dt = max(time.monotonic() - t0, 1e-3)
    tck = os.sysconf("SC_CLK_TCK")
    own = [cpu_ticks(broker_pid) - b0, cpu_ticks(proxy_pid) - p0, self_ticks() - s0]
    rec["broker_cpu_pct"] = round(100 * own[0] / tck / dt, 1)
    rec["proxy_cpu_pct"] = round(100 * own[1] / tck / dt, 1)
    m1 = sys_snap()
    busy_ticks = ((m1[0] - m0[0]) - (m1[1] - m0[1])) / max(m1[0] - m0[0], 1) * dt * tck * os.cpu_count()
    rec["foreign_cpu_pct"] = round(max(0.0, 100 * (busy_ticks - sum(own)) / tck / dt), 1)
    at, subtree = suspended_at(server_log, task)
    rec["suspended_logged_ms"] = round((at - w0) * 1000, 1) if at else None
    rec["suspended_subtree"] = subtree
    rc.close()
    if not rec["relay_answer"].startswith("401:dpop_required"):
        raise SystemExit(f"relay answered {rec['relay_answer']}, expected 401 dpop_required")
    return rec


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summarize(recs: list[dict], modes=("checked", "quiet"),
              keys=("revoke_call_ms", "last_ok_ms", "all_refused_ms", "first_refused_ms", "checker_rps",
                    "children_create_rps", "served_after_first_refusal", "busy_before_pct",
                    "foreign_cpu_pct")) -> list[dict]:
    out = []
    for n in sorted({r["children"] for r in recs}):
        for mode in modes:
            rs = [r for r in recs if r["children"] == n and r["mode"] == mode]
            if not rs:
                continue
            s = {"children": n, "mode": mode, "runs": len(rs)}
            for k in keys:
                v = [r[k] for r in rs if r.get(k) is not None]
                if v:
                    s[k] = {"p50": round(pct(v, 0.5), 1), "p99": round(pct(v, 0.99), 1),
                            "min": round(min(v), 1), "max": round(max(v), 1)}
            out.append(s)
    return out


def parse_runs(items: list[str]) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in (x.split("=") for x in items)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out-dir", default=str(ROOT / "bench/results/cascade"))
    ap.add_argument("--jwt-dir", default="/tmp/peer/jwt")
    ap.add_argument("--loadgen", default="/tmp/peer/loadgen-target/release/peer-loadgen")
    ap.add_argument("--runs", nargs="*", default=["1000=20", "10000=20"], help="N=runs with the checker")
    ap.add_argument("--quiet-runs", nargs="*", default=["1000=10", "10000=10"],
                    help="N=runs timing only the revoke call")
    ap.add_argument("--check-conc", type=int, default=64, help="the checkers' connections to the proxy, in all")
    ap.add_argument("--checkers", type=int, default=2, help="checker processes (tokens split between them)")
    ap.add_argument("--limit", type=float, default=60, help="give up on a child after this many seconds")
    ap.add_argument("--conc", nargs="*", type=int, default=[16, 64], help="exchange throughput concurrency")
    ap.add_argument("--reps", type=int, default=3, help="exchange throughput repetitions")
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--quiet-pct", type=float, default=25,
                    help="before each run, wait for the machine to be below this %% of one core busy")
    ap.add_argument("--max-quiet-wait", type=float, default=20, help="... but at most this many seconds")
    ap.add_argument("--max-foreign", type=float, default=25,
                    help="an exchange run with more foreign CPU (%% of a core) is marked contaminated and repeated")
    ap.add_argument("--retries", type=int, default=2, help="... at most this many times")
    ap.add_argument("--relay-runs", nargs="*", default=[],
                    help="N=runs of a relayed DPoP-bound token (root with N children) under checker load")
    ap.add_argument("--relay-light-runs", nargs="*", default=[],
                    help="N=runs of the same with a light probe (one connection, three tokens) instead")
    ap.add_argument("--audit-flush-ms", type=int,
                    help="the proxy's audit_flush_ms (MANDATE_PROXY_AUDIT_FLUSH_MS; default: the proxy's, 200)")
    ap.add_argument("--perf", metavar="DIR",
                    help="profile the broker (perf record) over each quiet revoke and each exchange "
                         "run; those runs are recorded as mode=perf, not measurements")
    a = ap.parse_args()
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jwts = (Path(a.jwt_dir) / "jwts.txt").read_text().split()
    work = Path(tempfile.mkdtemp(prefix="mandate-cascade-"))
    ngx_pid = start_nginx(work)
    os.environ["MANDATE_MASTER_KEY"] = base64.b64encode(os.urandom(32)).decode()
    relaying = bool(a.relay_runs or a.relay_light_runs)
    if relaying:
        # The bench tool and agents are staging: misuse there must suspend.
        os.environ.setdefault("MANDATE_ON_MISUSE", "staging=suspend,production=suspend")
    if a.audit_flush_ms:
        os.environ["MANDATE_PROXY_AUDIT_FLUSH_MS"] = str(a.audit_flush_ms)
    broker = proxy = None
    try:
        broker, root = start(work, Path(a.jwt_dir))
        w = World(root, jwts)
        proxy = start_proxy(work, root)
        cascade_file = out / "cascade.jsonl"
        recs = []
        meta = {"peer": "mandate", "config": "sqlite-audit", "bin": str(BIN),
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if relaying:
            meta.update(on_misuse=os.environ["MANDATE_ON_MISUSE"], audit_flush_ms=a.audit_flush_ms or 200)
        # Round robin over (size, mode) so drift in the machine's load spreads over all of them.
        groups = [[(n, False)] * k for n, k in parse_runs(a.runs)]
        groups += [[(n, True)] * k for n, k in parse_runs(a.quiet_runs)]
        plan = [g[i] for i in range(max(map(len, groups), default=0)) for g in groups if i < len(g)]
        reps: dict = {}
        for n, quiet in plan:
            reps[(n, quiet)] = reps.get((n, quiet), 0) + 1
            try:
                rec = dict(meta, **one_run(w, n, reps[(n, quiet)], quiet, a.check_conc, a.limit, broker.pid,
                                           proxy.pid, a.quiet_pct, a.max_quiet_wait,
                                           Path(a.perf) if a.perf else None, a.checkers))
            except (ConnectionError, http.client.HTTPException) as e:
                # Kept as a record (the run is lost, not hidden); the next run goes on if both servers live.
                rec = dict(meta, workload=f"cascade-{n}", children=n, rep=reps[(n, quiet)], mode="error",
                           error=repr(e), broker_alive=broker.poll() is None, proxy_alive=proxy.poll() is None,
                           at=time.strftime("%H:%M:%S"))
                print(json.dumps(rec), flush=True)
                with cascade_file.open("a") as f:
                    f.write(json.dumps(rec, sort_keys=True) + "\n")
                if not (rec["broker_alive"] and rec["proxy_alive"]):
                    raise
                continue
            rec["broker_rss_mb"] = round(rss_mb(broker.pid), 1)
            recs.append(rec)
            with cascade_file.open("a") as f:
                f.write(json.dumps(rec, sort_keys=True) + "\n")
            print(json.dumps({k: rec.get(k) for k in ("workload", "mode", "rep", "revoke_call_ms", "last_ok_ms",
                                                        "all_refused_ms", "checker_rps", "busy_before_pct",
                                                        "foreign_cpu_pct")}),
                  flush=True)

        # Relayed tokens: round robin over (size, mode), as above.
        groups = [[(n, False)] * k for n, k in parse_runs(a.relay_runs)]
        groups += [[(n, True)] * k for n, k in parse_runs(a.relay_light_runs)]
        plan = [g[i] for i in range(max(map(len, groups), default=0)) for g in groups if i < len(g)]
        relay_file, relays, reps = out / "relay.jsonl", [], {}
        for n, light in plan:
            reps[(n, light)] = reps.get((n, light), 0) + 1
            # A run that shared the machine (foreign CPU above --max-foreign, or
            # never quiet before) is kept, marked, and run again (--retries).
            for attempt in range(a.retries + 1):
                rec = dict(meta, **relay_run(w, n, reps[(n, light)], light, a.check_conc, a.limit, broker.pid,
                                             proxy.pid, a.quiet_pct, a.max_quiet_wait, a.checkers,
                                             work / "server.out"))
                rec["broker_rss_mb"] = round(rss_mb(broker.pid), 1)
                rec["attempt"] = attempt + 1
                rec["contaminated"] = rec["foreign_cpu_pct"] > a.max_foreign or not rec["quiet_ok"]
                relays.append(rec)
                with relay_file.open("a") as f:
                    f.write(json.dumps(rec, sort_keys=True) + "\n")
                print(json.dumps({k: rec.get(k) for k in (
                    "workload", "mode", "rep", "relay_answer", "suspended_logged_ms", "first_refused_ms",
                    "last_ok_ms", "all_refused_ms", "root_plain_refused_ms", "probe_refused_ms", "after_codes",
                    "busy_before_pct", "foreign_cpu_pct", "contaminated")}), flush=True)
                if not rec["contaminated"]:
                    break

        # Token exchange throughput: plain vs delegated, same sitting, A/B/B/A.
        plain_task = w.task(w.helper, "plain exchange benchmark")
        (work / "plain.txt").write_text(w.plain_body(w.helper, plain_task) + "\n")
        tp_task, tp_token = w.root_task()
        (work / "delegated.txt").write_text(w.delegated_body(tp_token) + "\n")
        xfile = out / "exchange.jsonl"
        for rep in range(1, a.reps + 1):
            order = ["plain", "delegated"] if rep % 2 else ["delegated", "plain"]
            for c in a.conc:
                for kind in (order if c == a.conc[0] else order[::-1]):
                    # A run the load generator saw sharing the machine (foreign CPU
                    # above --max-foreign % of a core) is kept, marked, and run again
                    # (at most --retries times).
                    for attempt in range(a.retries + 1):
                        calm = settle([broker.pid, proxy.pid], a.quiet_pct, a.max_quiet_wait)
                        perf = None
                        if a.perf:
                            # Profile the broker over the whole run (warm-up included); the
                            # run is marked perf and is not a measurement.
                            Path(a.perf).mkdir(parents=True, exist_ok=True)
                            perf = subprocess.Popen(
                                ["perf", "record", "-F", "999", "--call-graph", "dwarf,16384", "-p",
                                 str(broker.pid), "-o", str(Path(a.perf) / f"exchange-{kind}-c{c}-r{rep}.data")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                            time.sleep(1.5)
                        loadgen(a.loadgen, ["--url", ADDR + "/oauth/token", "-X", "POST", "-H", FORM,
                                            "--bodies-file", str(work / f"{kind}.txt"), "-c", str(c),
                                            "-d", str(a.duration), "--warmup", "2", "--pid", str(broker.pid),
                                            "--label", f"mandate/exchange-{kind}/c{c}/r{rep}"],
                                {"peer": "mandate", "config": "sqlite-audit", "workload": f"exchange-{kind}",
                                 "rep": rep, "attempt": attempt + 1}, xfile)
                        lines = xfile.read_text().splitlines()
                        last = json.loads(lines[-1])
                        if perf:
                            perf.send_signal(signal.SIGINT)
                            perf.wait(timeout=300)
                            last["mode"] = "perf"
                        last.update(calm)
                        last["contaminated"] = (last.get("foreign_cpu_pct") or 0) > a.max_foreign
                        lines[-1] = json.dumps(last, sort_keys=True)
                        xfile.write_text("\n".join(lines) + "\n")
                        time.sleep(1)
                        if not last["contaminated"] or perf:
                            break
        # The throughput root now has every delegated child of those runs: time its revoke too.
        big = None
        if a.reps:
            c = revoke_conn()
            t0, t1, sub = revoke(c, root, tp_task)
            big = dict(meta, workload="cascade-throughput-root", mode="quiet", children=len(sub),
                       revoke_call_ms=round((t1 - t0) * 1000, 2))
            with cascade_file.open("a") as f:
                f.write(json.dumps(big, sort_keys=True) + "\n")

        summary = {"cascade": summarize(recs), "throughput_root_revoke": big}
        if relays:
            summary["relay"] = summarize([r for r in relays if not r["contaminated"]], ("relay-checked", "relay-light"),
                                         ("relay_call_ms", "suspended_logged_ms", "first_refused_ms", "last_ok_ms",
                                          "all_refused_ms", "root_plain_refused_ms", "probe_refused_ms",
                                          "served_after_first_refusal", "checker_rps", "busy_before_pct",
                                          "foreign_cpu_pct"))
        xs = [json.loads(l) for l in xfile.read_text().splitlines()] if xfile.exists() else []
        xs = [x for x in xs if not x.get("contaminated") and x.get("mode") != "perf"]
        ratios = {}
        for cc in a.conc:
            def rps(kind):
                return [x["rps"] for x in xs if x.get("workload") == f"exchange-{kind}" and x.get("concurrency") == cc]
            p, d = rps("plain"), rps("delegated")
            if p and d:
                ratios[f"c{cc}"] = {"plain_rps": p, "delegated_rps": d,
                                    "plain_median": statistics.median(p), "delegated_median": statistics.median(d),
                                    "ratio_of_medians": round(statistics.median(d) / statistics.median(p), 3)}
        summary["exchange"] = ratios
        (out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
        print(json.dumps(summary, indent=1, sort_keys=True))
    finally:
        for p in (proxy, broker):
            if p:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
        for name in ("server.out", "proxy.out"):
            if (work / name).exists():
                shutil.copy(work / name, out / name)
        subprocess.run(["kill", Path(ngx_pid).read_text().strip()], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
