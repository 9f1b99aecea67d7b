#!/usr/bin/env python3
"""Dynamic PostgreSQL logins: Mandate beside OpenBao's database secrets engine.

    ../shared/bench/openbao/pg.sh start
    MANDATE_BENCH_BIN=/path/to/release/mandate python3 bench/run_db.py \
        --out-dir bench/results/db-YYYY-MM-DD [--reps 3] [--seq-n 100] [--duration 10] [--openbao]
    python3 bench/run_db.py --floor-only --out-dir ...     # the database's own cost, nothing else

Same PostgreSQL as `run_openbao.py db` (pg.sh: 127.0.0.1:5432, superuser
`bao_admin`, database `bench`, group role `agent_readers` with SELECT on
`widgets`). Per Mandate repetition a fresh broker (`mandate server`,
SQLite, audit on, throwaway data dir) gets the tool `bench-db`:

    engine {"kind": "postgres", "roles": [{"name": "readonly", "member_of": ["agent_readers"]}]}

its admin DSN postgres://bao_admin:…@127.0.0.1:5432/bench as the tool's
sealed secret, and agent `dbbot` (workload JWT of spiffe://bench.local/agent/0)
allowed the tool. Then:

  db-seq      (sequential, --seq-n times) a fresh task naming `readonly`
              (created untimed), then timed: POST /v1/tasks/{id}/credentials/
              bench-db/readonly (issue: one new login), then timed: POST
              /v1/tasks/{id}/complete (revoke: the answer comes after the
              login is dropped and confirmed gone). OpenBao's analogues:
              GET database/creds/agent-ro and PUT sys/leases/revoke of that
              lease. p50/p99/max per repetition, same percentile rule as
              run_openbao.py.
  db-issue    peer-loadgen POSTs the credentials endpoint of one task at c8
              for --duration s (each answer a new login), --pid of the broker,
              --also-comm postgres (PostgreSQL's CPU counts as the system
              under test, not as foreign load). A run with foreign CPU above
              --max-foreign % of a core is kept as contaminated and repeated.
              peer-loadgen's foreign_cpu_pct misses PostgreSQL backends that
              start and end during the run (the engine opens and closes admin
              connections under load), so the verdict uses
              foreign_cpu_pct_corrected: machine busy minus the broker, every
              postgres process and the reaped backends, and the load generator.
  db-complete the task of the db-issue run completed: time of the call (it
              answers after every login is dropped), logins before and the
              count of `mnd_%` roles left in pg_roles after.

Once per repetition a credential is proved against PostgreSQL (psql with
its url, SELECT count(*) FROM widgets). Before each measured part the
machine must be quiet (load average below --max-load and machine-wide busy
below --quiet-pct of a core for 4 windows of 1.5 s; bounded wait).

With --openbao the OpenBao script (`run_openbao.py db --reps 1`, a fresh
raft+audit server each time) runs between Mandate's repetitions in the same
sitting, order M O / O M / M O ..., its records in openbao.jsonl (its own
quiet and foreign limits: QUIET_MAX_WAIT_S is set from --max-quiet-wait,
FOREIGN_MAX_PCT passes through from the environment).

--floor: the statements Mandate runs, straight into the same PostgreSQL over
one psql session (no broker), sequentially, sent as the engine sends them:
issue = CREATE ROLE … LOGIN PASSWORD '<SCRAM verifier>' VALID UNTIL …; GRANT
agent_readers TO …; COMMENT ON ROLE … as one message (one implicit transaction); revoke = the existence
check, ALTER ROLE … NOLOGIN alone, the other four default revocation
statements as one message, and the verify-gone check. psql's
\\timing per statement, summed per group: the database's share.

Everything lands as JSON lines in --out-dir: mandate.jsonl, openbao.jsonl,
floor.jsonl, summary.json, and server-rN.out (the broker's log).
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jwt as pyjwt
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_mandate import ADDR, BIN, ISS, SHARED, rss_mb, start  # noqa: E402

PG = "127.0.0.1:5432"
ADMIN_DSN = "postgres://bao_admin:bench-only-password@127.0.0.1:5432/bench"
TOOL, ROLE, GROUP = "bench-db", "readonly", "agent_readers"
CRED = f"/v1/tasks/{{}}/credentials/{TOOL}/{ROLE}"


# ------------------------------------------------------------ the machine ----

def sys_snap():
    """(all jiffies, idle + iowait jiffies) of the whole machine."""
    v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return sum(v), v[3] + v[4]


def busy_pct(a, b) -> float:
    """Machine-wide CPU busy between two sys_snap()s, % of one core."""
    return round((1 - (b[1] - a[1]) / max(b[0] - a[0], 1)) * 100 * os.cpu_count(), 1)


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def wait_quiet(max_load: float, quiet_pct: float, max_wait: float) -> dict:
    """Wait (bounded) until the 1-minute load average is below max_load and
    the machine is below quiet_pct of a core busy for 4 windows of 1.5 s in
    a row: other builds and benchmarks share these 2 cores."""
    t0 = time.time()
    streak, busy = 0, 0.0
    while time.time() - t0 < max_wait:
        a = sys_snap()
        time.sleep(1.5)
        busy = busy_pct(a, sys_snap())
        streak = streak + 1 if busy < quiet_pct and loadavg() < max_load else 0
        if streak >= 4:
            break
    return {"quiet_wait_s": round(time.time() - t0, 1), "quiet_ok": streak >= 4,
            "busy_before_pct": busy, "loadavg_before": loadavg()}


def psql_admin(sql: str) -> str:
    """As the local postgres superuser (trusted on loopback by pg.sh's pg_hba)."""
    return subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-h", "127.0.0.1", "-p", "5432", "-d",
                           "bench", "-tAc", sql], capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()


def mnd_roles() -> int:
    return int(psql_admin("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'mnd\\_%'"))


def proc_cpu_s(pid, children: bool = False) -> float:
    """CPU seconds of a process (and, with children, of its reaped children)."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    t = int(f[11]) + int(f[12]) + (int(f[13]) + int(f[14]) if children else 0)
    return t / os.sysconf("SC_CLK_TCK")


def pg_cpu_s() -> float:
    """CPU seconds of every postgres process, and the backends the postmaster has reaped."""
    pm = int(Path("/tmp/peer/pg/data/postmaster.pid").read_text().split()[0])
    tot = proc_cpu_s(pm, children=True)
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and d.name != str(pm):
            try:
                if (d / "comm").read_text().strip() == "postgres":
                    tot += proc_cpu_s(d.name)
            except OSError:
                pass
    return tot


def pg_sessions() -> int:
    """Sessions PostgreSQL has opened on `bench` (pg_stat_database.sessions, PostgreSQL 14+)."""
    return int(psql_admin("SELECT sessions FROM pg_stat_database WHERE datname = 'bench'"))


def pq(v: list[float], p: float) -> float:
    """Percentile in ms, the rule of run_openbao.py (nearest rank by rounding)."""
    v = sorted(v)
    return round(v[min(len(v) - 1, round(p / 100 * (len(v) - 1)))] * 1000, 2)


# ------------------------------------------------------------ the broker ----

class Broker:
    def __init__(self, jwt_dir: Path, rep: int, out: Path):
        self.work = Path(tempfile.mkdtemp(prefix="mandate-db-"))
        self.out, self.rep = out, rep
        os.environ.setdefault("MANDATE_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())
        self.proc, root = start(self.work, jwt_dir)
        self.root = root
        self.pid = self.proc.pid
        try:
            self._seed(jwt_dir, root)
        except BaseException:
            self.stop()
            raise

    def _seed(self, jwt_dir: Path, root: str):
        self.http = requests.Session()
        admin = {"Authorization": f"Bearer {root}"}
        jwts = (jwt_dir / "jwts.txt").read_text().split()
        sub = pyjwt.decode(jwts[0], options={"verify_signature": False})["sub"]
        for path, body in [
            ("/v1/owners", {"name": "bench"}),
            ("/v1/tools", {"name": TOOL, "audience": "urn:mandate:db:bench", "owner": "bench",
                           "environment": "staging", "sensitivity": "internal", "max_ttl_secs": 3600,
                           "actions": [ROLE],
                           "engine": {"kind": "postgres", "roles": [{"name": ROLE, "member_of": [GROUP]}]}}),
            ("/v1/secrets", {"name": "bench-db-admin", "tool": TOOL, "class": "database", "owner": "bench",
                             "value": ADMIN_DSN}),
            ("/v1/agents", {"name": "dbbot", "owner": "bench", "environment": "staging",
                            "allowed_tools": [TOOL]}),
            ("/v1/agents/dbbot/bindings", {"issuer": ISS, "subject": sub}),
        ]:
            r = self.http.post(ADDR + path, json=body, headers=admin, timeout=10)
            if not r.ok:
                raise SystemExit(f"{path}: {r.status_code} {r.text}")
        r = self.http.post(ADDR + "/oauth/token", timeout=10, data={
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": jwts[0]})
        if not r.ok:
            raise SystemExit(f"login: {r.status_code} {r.text}")
        self.session = r.json()["access_token"]
        self.h = {"Authorization": f"Bearer {self.session}"}

    def task(self, intent: str) -> str:
        r = self.http.post(ADDR + "/v1/tasks", headers=self.h, timeout=10, json={
            "intent": intent, "ttl_secs": 3600, "scope": [{"tool": TOOL, "actions": [ROLE]}]})
        if r.status_code != 201:
            raise SystemExit(f"task: {r.status_code} {r.text}")
        return r.json()["id"]

    def issue(self, task: str) -> tuple[float, dict]:
        t = time.perf_counter()
        r = self.http.post(ADDR + CRED.format(task), headers=self.h, json={}, timeout=30)
        dt = time.perf_counter() - t
        if r.status_code != 201:
            raise SystemExit(f"issue: {r.status_code} {r.text}")
        return dt, r.json()

    def complete(self, task: str) -> float:
        t = time.perf_counter()
        r = self.http.post(ADDR + f"/v1/tasks/{task}/complete", headers=self.h, json={}, timeout=600)
        dt = time.perf_counter() - t
        if r.status_code != 200:
            raise SystemExit(f"complete: {r.status_code} {r.text}")
        return dt

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        if (self.work / "server.out").exists():
            shutil.copy(self.work / "server.out", self.out / f"server-r{self.rep}.out")
        shutil.rmtree(self.work, ignore_errors=True)


def prove(b: Broker) -> dict:
    """A credential connects and reads what its group grants; after the
    task's completion it is gone from pg_roles."""
    task = b.task("prove a login works")
    _, j = b.issue(task)
    chk = subprocess.run(["psql", j["url"], "-tAc", "SELECT count(*) FROM widgets"],
                         capture_output=True, text=True, timeout=30)
    works = chk.returncode == 0 and chk.stdout.strip().isdigit()
    print("issued credential works:", works, chk.stdout.strip(), chk.stderr.strip()[:200], flush=True)
    b.complete(task)
    gone = psql_admin(f"SELECT count(*) FROM pg_roles WHERE rolname = '{j['login']}'") == "0"
    return {"credential_works": works, "credential_gone_after_complete": gone}


def mandate_rep(a, rep: int, out: Path) -> list[dict]:
    meta = {"peer": "mandate", "config": "sqlite-audit", "bin": str(BIN), "rep": rep}
    leftover = mnd_roles()
    if leftover:
        raise SystemExit(f"{leftover} mnd_ roles already in pg_roles (an earlier broker's); drop them first")
    b = Broker(Path(a.jwt_dir), rep, out)
    recs = []
    try:
        proof = prove(b)
        tasks = [b.task(f"sequential {i}") for i in range(a.seq_n)]  # untimed
        warm = b.task("warm")
        b.issue(warm)  # one untimed issue and revoke: the engine built, an admin connection pooled
        b.complete(warm)
        q = wait_quiet(a.max_load, a.quiet_pct, a.max_quiet_wait)
        up = uptime()
        s0 = sys_snap()
        iss, rev = [], []
        for t in tasks:
            dt, _ = b.issue(t)
            iss.append(dt)
            rev.append(b.complete(t))
        busy = busy_pct(s0, sys_snap())
        # The bare stack in the same minute: this client's round trip to
        # the broker doing nothing (GET /healthz), and the engine's
        # statements straight into PostgreSQL.
        hz = []
        for _ in range(a.seq_n):
            t0 = time.perf_counter()
            b.http.get(ADDR + "/healthz", headers=b.h, timeout=10).raise_for_status()
            hz.append(time.perf_counter() - t0)
        pg = pg_seq(a.seq_n)
        rec = dict(meta, workload="db-seq", n=a.seq_n, uptime=up, machine_busy_pct=busy,
                   **proof, **q,
                   issue_ms={"p50": pq(iss, 50), "p99": pq(iss, 99), "max": pq(iss, 100)},
                   revoke_ms={"p50": pq(rev, 50), "p99": pq(rev, 99), "max": pq(rev, 100)},
                   http_floor_ms={"p50": pq(hz, 50), "p99": pq(hz, 99)},
                   pg_floor_ms={"issue": pg["issue_ms"], "revoke": pg["revoke_ms"]},
                   broker_rss_mb=round(rss_mb(b.pid), 1))
        recs.append(rec)
        emit(out / "mandate.jsonl", rec)

        for attempt in range(1, a.retries + 2):
            task = b.task("throughput")
            q = wait_quiet(a.max_load, a.quiet_pct, a.max_quiet_wait)
            up = uptime()
            tmp = b.work / "lg.json"
            tmp.unlink(missing_ok=True)
            pg0, sess0, m0, br0, t0 = pg_cpu_s(), pg_sessions(), sys_snap(), proc_cpu_s(b.pid), time.monotonic()
            subprocess.run([a.loadgen, "--url", ADDR + CRED.format(task), "-X", "POST", "--body", "{}",
                            "-H", f"Authorization: Bearer {b.session}", "-c", "8", "-d", str(a.duration),
                            "--warmup", "1", "-n", "20000", "--pid", str(b.pid), "--also-comm", "postgres",
                            "--label", f"mandate/db-issue/c8/r{rep}", "--json-out", str(tmp)],
                           check=True, stdout=subprocess.DEVNULL, timeout=200)
            pg1, sess1, m1, br1, t1 = pg_cpu_s(), pg_sessions(), sys_snap(), proc_cpu_s(b.pid), time.monotonic()
            lg = json.loads(tmp.read_text().splitlines()[-1])
            lg.update(meta, workload="db-issue", attempt=attempt, uptime=up, **q)
            # peer-loadgen's postgres figure sums the backends alive at its start and end; backends
            # that lived and died in between (connections opened and closed under load) land in its
            # foreign figure. Counted here over the whole call (warm-up included) from the postmaster's
            # reaped children too, with PostgreSQL's own count of sessions opened.
            dt = t1 - t0
            machine = busy_pct(m0, m1)
            lg["pg_cpu_pct_with_exited"] = round(100 * (pg1 - pg0) / dt, 1)
            lg["broker_cpu_pct_call"] = round(100 * (br1 - br0) / dt, 1)
            lg["machine_busy_pct_call"] = machine
            lg["pg_sessions_opened"] = sess1 - sess0
            lg["foreign_cpu_pct_corrected"] = round(max(0.0, machine - lg["pg_cpu_pct_with_exited"]
                                                        - lg["broker_cpu_pct_call"]
                                                        - (lg.get("client_cpu_pct") or 0)), 1)
            lg["contaminated"] = lg["foreign_cpu_pct_corrected"] > a.max_foreign or not q["quiet_ok"]
            emit(out / ("mandate.jsonl" if not lg["contaminated"] else "mandate.jsonl.contaminated"), lg)
            print(json.dumps({k: lg.get(k) for k in ("workload", "rep", "attempt", "rps", "ok", "errors",
                                                     "foreign_cpu_pct", "foreign_cpu_pct_corrected",
                                                     "pg_cpu_pct_with_exited", "pg_sessions_opened",
                                                     "contaminated")}),
                  flush=True)
            # Every login of that run belongs to `task`: completing it drops them all.
            before = mnd_roles()
            q = wait_quiet(a.max_load, a.quiet_pct, a.max_quiet_wait)
            dt = b.complete(task)
            left = mnd_roles()
            crec = dict(meta, workload="db-complete", attempt=attempt, logins=before, complete_s=round(dt, 3),
                        pg_roles_left=left, **q)
            emit(out / "mandate.jsonl", crec)
            print(json.dumps(crec), flush=True)
            if not lg["contaminated"]:
                recs += [lg, crec]
                break
    finally:
        b.stop()
    return recs


def emit(path: Path, rec: dict):
    with path.open("a") as f:
        f.write(json.dumps(rec, sort_keys=True) + "\n")


def openbao_rep(a, rep: int, out: Path):
    """One `run_openbao.py db` repetition (a fresh OpenBao), its records tagged with our rep."""
    tmp = out / f"openbao-r{rep}.raw.jsonl"
    env = dict(os.environ, BAO_BIN=os.environ.get("BAO_BIN", "/tmp/peer/bao"),
               QUIET_MAX_WAIT_S=str(int(a.max_quiet_wait)))
    up = uptime()
    subprocess.run([sys.executable, "run_openbao.py", "--out", str(tmp), "--jwt-dir", a.jwt_dir, "db", "--reps",
                    "1", "--seq-n", str(a.seq_n), "--duration", str(a.duration)],
                   cwd=SHARED / "openbao", env=env, check=True, timeout=1800)
    for line in tmp.read_text().splitlines():
        r = json.loads(line)
        r.update(rep=rep, uptime=up)
        emit(out / "openbao.jsonl", r)
    cont = Path(str(tmp) + ".contaminated")
    if cont.exists():
        for line in cont.read_text().splitlines():
            r = json.loads(line)
            r.update(rep=rep)
            emit(out / "openbao.jsonl.contaminated", r)


# ---------------------------------------------------------------- floor ----

def scram_verifier(password: str) -> str:
    """What the engine sends instead of a password (derived untimed here)."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 4096)
    client = hmac.new(salted, b"Client Key", "sha256").digest()
    server = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = lambda b: base64.b64encode(b).decode()
    return f"SCRAM-SHA-256$4096:{b64(salt)}${b64(hashlib.sha256(client).digest())}:{b64(server)}"


def pg_seq(n: int) -> dict:
    """The engine's statements straight into PostgreSQL over one psql
    session, n issues and revokes: psql's per-statement times summed."""
    lines = ["\\timing on", "\\set QUIET on"]
    for i in range(n):
        name = f"flr_{os.getpid()}_{i}"
        # `\;` makes psql send the statements as one message, as the engine does.
        lines += ["\\echo ISSUE",
                  f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{scram_verifier(os.urandom(32).hex())}' "
                  f"VALID UNTIL '2099-01-01 00:00:00+00' \\; GRANT \"{GROUP}\" TO \"{name}\" \\; "
                  f"COMMENT ON ROLE \"{name}\" IS 'mandate role=readonly';",
                  "\\echo REVOKE",
                  f"SELECT 1 FROM pg_roles WHERE rolname = '{name}';",
                  f"ALTER ROLE \"{name}\" NOLOGIN;",
                  f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{name}' \\; "
                  f"REASSIGN OWNED BY \"{name}\" TO CURRENT_USER \\; DROP OWNED BY \"{name}\" \\; "
                  f"DROP ROLE IF EXISTS \"{name}\";",
                  f"SELECT 1 FROM pg_roles WHERE rolname = '{name}';",
                  "\\echo END"]
    script = "\n".join(lines) + "\n"
    env = dict(os.environ, PGPASSWORD="bench-only-password")
    t0 = time.perf_counter()
    p = subprocess.run(["psql", "-h", "127.0.0.1", "-p", "5432", "-U", "bao_admin", "-d", "bench", "-X", "-q",
                        "-v", "ON_ERROR_STOP=1"], input=script, capture_output=True, text=True, env=env,
                       timeout=600, check=True)
    wall = time.perf_counter() - t0
    # psql's "Time: x ms" per statement (round trip included), summed per group.
    iss, rev, group, acc = [], [], None, 0.0
    for line in p.stdout.splitlines():
        if line in ("ISSUE", "REVOKE", "END"):
            if group == "ISSUE":
                iss.append(acc / 1000)
            elif group == "REVOKE":
                rev.append(acc / 1000)
            group, acc = line, 0.0
            continue
        m = re.match(r"Time: ([\d.]+) ms", line)
        if m:
            acc += float(m.group(1))
    return {"wall_s": round(wall, 2),
            "issue_ms": {"p50": pq(iss, 50), "p99": pq(iss, 99), "max": pq(iss, 100)},
            "revoke_ms": {"p50": pq(rev, 50), "p99": pq(rev, 99), "max": pq(rev, 100)}}


def floor(a, out: Path):
    """The engine's statements straight into PostgreSQL, then pgbench."""
    q = wait_quiet(a.max_load, a.quiet_pct, a.max_quiet_wait)
    up = uptime()
    rec = {"peer": "postgres-direct", "workload": "db-floor", "n": a.seq_n, "uptime": up, **q, **pg_seq(a.seq_n),
           "issue_statements": "one message: CREATE ROLE … LOGIN PASSWORD '<SCRAM verifier>' VALID UNTIL …; GRANT agent_readers; "
                               "COMMENT ON ROLE",
           "revoke_statements": "exists; ALTER ROLE NOLOGIN; one message: pg_terminate_backend; REASSIGN OWNED; "
                                "DROP OWNED; DROP ROLE IF EXISTS; exists"}
    emit(out / "floor.jsonl", rec)
    print(json.dumps(rec), flush=True)
    floor_c8(a, out)
    return rec


def floor_c8(a, out: Path):
    """Issue throughput of the database itself: pgbench, 8 clients on 8
    connections opened once, each transaction the engine's issue (CREATE
    ROLE … LOGIN PASSWORD '<SCRAM verifier>' VALID UNTIL …; GRANT
    agent_readers; COMMENT ON ROLE as one message), for --duration s; then every role it made dropped."""
    pgbench = Path(os.path.realpath(shutil.which("pg_ctl") or "/usr/lib/postgresql/15/bin/pg_ctl")).parent / "pgbench"
    script = Path(tempfile.mkdtemp(prefix="mandate-floor-")) / "issue.sql"
    script.write_text("\\set r random(1, 9000000000000)\n"
                      "CREATE ROLE \"flr_:r\" LOGIN PASSWORD ':scram' VALID UNTIL '2099-01-01 00:00:00+00' \\; "
                      f"GRANT \"{GROUP}\" TO \"flr_:r\" \\; COMMENT ON ROLE \"flr_:r\" IS 'mandate role=readonly';\n")
    q = wait_quiet(a.max_load, a.quiet_pct, a.max_quiet_wait)
    up = uptime()
    env = dict(os.environ, PGPASSWORD="bench-only-password")
    pg0, m0, t0 = pg_cpu_s(), sys_snap(), time.monotonic()
    p = subprocess.run([str(pgbench), "-h", "127.0.0.1", "-p", "5432", "-U", "bao_admin", "-n", "-c", "8", "-j", "1",
                        "-D", f"scram={scram_verifier('pgbench')}",
                        "-T", str(int(a.duration)), "-f", str(script), "bench"],
                       capture_output=True, text=True, env=env, timeout=120)
    dt = time.monotonic() - t0
    pg_pct, machine = round(100 * (pg_cpu_s() - pg0) / dt, 1), busy_pct(m0, sys_snap())
    made = int(psql_admin("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'flr\\_%'"))
    t1 = time.monotonic()
    psql_admin("DO $$ DECLARE r text; BEGIN FOR r IN SELECT rolname FROM pg_roles WHERE rolname LIKE 'flr\\_%' "
               "LOOP EXECUTE format('DROP ROLE %I', r); END LOOP; END $$")
    drop_s = time.monotonic() - t1
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", p.stdout)
    lat = re.search(r"latency average = ([\d.]+) ms", p.stdout)
    rec = {"peer": "postgres-direct", "workload": "db-floor-issue-c8", "uptime": up, **q,
           "tps": float(tps.group(1)) if tps else None, "lat_avg_ms": float(lat.group(1)) if lat else None,
           "roles_made": made, "drop_all_s": round(drop_s, 2), "pg_cpu_pct": pg_pct, "machine_busy_pct": machine,
           "pgbench_rc": p.returncode, "pgbench_tail": p.stdout.strip().splitlines()[-4:] + p.stderr.strip().splitlines()[-3:]}
    emit(out / "floor.jsonl", rec)
    print(json.dumps(rec), flush=True)
    shutil.rmtree(script.parent, ignore_errors=True)


# -------------------------------------------------------------- summary ----

def summarize(out: Path) -> dict:
    def load(name):
        f = out / name
        return [json.loads(l) for l in f.read_text().splitlines()] if f.exists() else []
    s = {}
    for peer, recs in (("mandate", load("mandate.jsonl")), ("openbao", load("openbao.jsonl"))):
        seq = [r for r in recs if r["workload"] == "db-seq"]
        thr = [r for r in recs if r["workload"] == "db-issue" and not r.get("contaminated")]
        d = {"reps": len(seq)}
        for k in ("issue_ms", "revoke_ms"):
            for p in ("p50", "p99"):
                v = [r[k][p] for r in seq]
                if v:
                    d[f"{k}_{p}"] = {"median": statistics.median(v), "per_rep": v}
        fl = [r for r in seq if "http_floor_ms" in r]
        if fl:
            # Per rep: the client's round trip plus PostgreSQL's own time.
            d["bare_stack_ms"] = {k: {"median": statistics.median(
                [r["http_floor_ms"]["p50"] + r["pg_floor_ms"][k]["p50"] for r in fl]),
                "per_rep": [round(r["http_floor_ms"]["p50"] + r["pg_floor_ms"][k]["p50"], 2) for r in fl]}
                for k in ("issue", "revoke")}
            d["http_floor_ms_p50"] = [r["http_floor_ms"]["p50"] for r in fl]
        if thr:
            d["issue_c8_rps"] = {"median": statistics.median([r["rps"] for r in thr]),
                                 "per_rep": [r["rps"] for r in thr],
                                 "p50_ms": [r["lat_ms"]["p50"] for r in thr],
                                 "p99_ms": [r["lat_ms"]["p99"] for r in thr],
                                 "server_cpu_pct": [r["server"]["cpu_pct"] for r in thr],
                                 "postgres_cpu_pct": [r.get("also_cpu_pct") for r in thr],
                                 "foreign_cpu_pct": [r.get("foreign_cpu_pct") for r in thr],
                                 "errors": [r.get("errors") for r in thr]}
        # Every throughput run, the ones marked contaminated too, with what shared the machine.
        every = recs + load(f"{peer}.jsonl.contaminated")
        every = [r for r in every if r["workload"] == "db-issue"]
        if every:
            d["issue_c8_every_run"] = [{k: r.get(k) for k in (
                "rep", "attempt", "rps", "contaminated", "quiet_ok", "foreign_cpu_pct", "foreign_cpu_pct_corrected",
                "pg_cpu_pct_with_exited", "also_cpu_pct", "pg_sessions_opened")} | {"p50_ms": r["lat_ms"]["p50"],
                "p99_ms": r["lat_ms"]["p99"], "server_cpu_pct": r["server"]["cpu_pct"]} for r in every]
        ends = [r for r in recs if r["workload"] in ("db-complete", "db-revoke-prefix")]
        if ends:
            d["bulk_revoke"] = [{k: r.get(k) for k in ("rep", "logins", "leases", "complete_s", "revoke_prefix_s",
                                                      "pg_roles_left")} for r in ends]
        s[peer] = d
    m, o = s.get("mandate", {}), s.get("openbao", {})
    if m.get("issue_ms_p50") and o.get("issue_ms_p50"):
        s["ratios"] = {
            "issue_p50_openbao_over_mandate": round(o["issue_ms_p50"]["median"] / m["issue_ms_p50"]["median"], 2),
            "revoke_p50_openbao_over_mandate": round(o["revoke_ms_p50"]["median"] / m["revoke_ms_p50"]["median"], 2)}
        if m.get("issue_c8_rps") and o.get("issue_c8_rps"):
            s["ratios"]["issue_c8_mandate_over_openbao"] = round(
                m["issue_c8_rps"]["median"] / o["issue_c8_rps"]["median"], 2)
    fl = load("floor.jsonl")
    if fl:
        s["floor"] = [{k: r[k] for k in ("workload", "issue_ms", "revoke_ms", "tps", "lat_avg_ms", "pg_cpu_pct",
                                         "machine_busy_pct", "uptime") if k in r} for r in fl]
    (out / "summary.json").write_text(json.dumps(s, indent=1, sort_keys=True) + "\n")
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--jwt-dir", default="/tmp/peer/jwt")
    ap.add_argument("--loadgen", default="/tmp/peer/loadgen-target/release/peer-loadgen")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--first-rep", type=int, default=1)
    ap.add_argument("--seq-n", type=int, default=100)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--openbao", action="store_true", help="alternate with run_openbao.py db in this sitting")
    ap.add_argument("--floor", action="store_true", help="also the statements straight into PostgreSQL")
    ap.add_argument("--floor-only", action="store_true")
    ap.add_argument("--floor-c8-only", action="store_true")
    ap.add_argument("--summary-only", action="store_true")
    ap.add_argument("--max-load", type=float, default=1.5, help="quiet: 1-minute load average below this")
    ap.add_argument("--quiet-pct", type=float, default=25, help="quiet: machine busy below this %% of a core")
    ap.add_argument("--max-quiet-wait", type=float, default=300)
    ap.add_argument("--max-foreign", type=float, default=25,
                    help="a throughput run with more foreign CPU (%% of a core) is contaminated and repeated")
    ap.add_argument("--retries", type=int, default=2)
    a = ap.parse_args()
    out = Path(a.out_dir).resolve()  # the OpenBao script runs in its own directory
    out.mkdir(parents=True, exist_ok=True)
    if not a.summary_only:
        psql_admin("SELECT 1")  # pg.sh's server is up
        emit(out / "sitting.jsonl", {"event": "start", "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                     "uptime": uptime(), "bin": str(BIN), "argv": sys.argv[1:]})
        if a.floor_only:
            floor(a, out)
        elif a.floor_c8_only:
            floor_c8(a, out)
        else:
            for rep in range(a.first_rep, a.first_rep + a.reps):
                order = ["mandate", "openbao"] if rep % 2 else ["openbao", "mandate"]
                for who in order:
                    if who == "mandate":
                        mandate_rep(a, rep, out)
                    elif a.openbao:
                        openbao_rep(a, rep, out)
            if a.floor:
                floor(a, out)
        emit(out / "sitting.jsonl", {"event": "end", "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                     "uptime": uptime()})
    print(json.dumps(summarize(out), indent=1, sort_keys=True))


if __name__ == "__main__":
    sys.exit(main())
