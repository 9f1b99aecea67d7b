#!/usr/bin/env python3
"""Floor of a 10,000-task cascade in bare SQLite (Python sqlite3, no broker).

    python3 bench/cascade_floor.py build            # base.db, sentinel.db, side.db (deterministic, ~30 s)
    python3 bench/cascade_floor.py build-live       # live.db: base.db + 50,000 other live tasks
    python3 bench/cascade_floor.py run [--reps 7] [--variants A,B_pre,...] [--tag set1] [--lib sqlite3|sqlean]
                                      # appends raw JSON lines to results.jsonl, prints a table
    python3 bench/cascade_floor.py table [--tag set1]   # the tables again from results.jsonl
    (--lib sqlean needs a venv with sqlean.py: SQLite 3.50.4, near the broker's bundled 3.50.2;
     run it as <venv>/bin/python bench/cascade_floor.py run --lib sqlean …)
    Databases and results.jsonl go to $CASCADE_FLOOR_DIR (default /tmp/cascade-floor).

Schema: crates/mandate-store/migrations/sqlite/*.sql in order, via a
schema_migrations table as crates/mandate-store/src/schema.rs does (same as a
broker-made database, comments aside). Writer pragmas as
crates/mandate-store/src/sqlite/setup.rs: busy_timeout 5 s, journal_mode=WAL,
synchronous=FULL, foreign_keys=ON, temp_store=MEMORY, wal_autocheckpoint=0,
cache_size=-65536. Transaction as sqlite/writer.rs: BEGIN IMMEDIATE, one
SAVEPOINT per job, RELEASE, COMMIT. The cascade statement is tasks.rs
end_below's text; events as events.rs insert_all (500 rows per INSERT), rows as
rules.rs cascade_event + tasks.rs transition build them, hashed as
mandate-audit chain.rs record_hash (checked against a real broker database).

Each timed run is a child process on a fresh copy of the variant's database
(copied, fsynced, read once, then `sync`), SQLite page cache warmed over the
subtree, the chain head and the state index (as the broker's writer cache
would be right after creating the children) unless the variant says cold.
The child exits with os._exit after timing, so the closing checkpoint does
not run; the copy and its -wal/-shm are then deleted. Variants: see VARIANTS.
"""
import argparse
import gc
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

if os.environ.get("FLOOR_LIB") == "sqlean":  # SQLite 3.50.4 (rusqlite 0.37 bundles 3.50.x)
    import sqlean as sqlite3
else:  # the system's Python sqlite3 (SQLite 3.40.1 here)
    import sqlite3

# The databases (about 830 MB) and the raw records live outside the checkout.
HERE = Path(os.environ.get("CASCADE_FLOOR_DIR", "/tmp/cascade-floor"))
HERE.mkdir(parents=True, exist_ok=True)
MIG_DIR = Path(__file__).resolve().parent.parent / "crates/mandate-store/migrations/sqlite"
RESULTS = HERE / "results.jsonl"

# ---------------------------------------------------------------- store SQL
LIVE = "('pending_approval', 'active', 'suspended')"  # rules.rs LIVE_TASK_STATES
SUBTREE_CTE = """subtree(id) AS (
       SELECT id FROM tasks WHERE parent = $1
       UNION ALL
       SELECT t.id FROM tasks t JOIN subtree s ON t.parent = s.id)"""  # tasks.rs
END_BELOW = f"""WITH RECURSIVE {SUBTREE_CTE}
                 UPDATE tasks SET state = 'revoked', ended_at = $2
                 FROM subtree WHERE tasks.id = subtree.id AND tasks.state IN {LIVE}
                 RETURNING tasks.id, tasks.agent, tasks.parent, tasks.deadline, tasks.created_at"""
EV_COLS = "seq, time_ms, kind, actor, agent, task, tool, jti, decision, reasons, request_id, detail, prev_hash, hash"
ROWS_PER_INSERT = 500  # events.rs


def numbered(sql):
    """link.rs: `$1` -> `?1`."""
    out, i = [], 0
    while i < len(sql):
        c = sql[i]
        if c == "$" and i + 1 < len(sql) and sql[i + 1].isdigit():
            out.append("?")
        else:
            out.append(c)
        i += 1
    return "".join(out)


END_BELOW_Q = numbered(END_BELOW)
# Variant d1z: the same statement, but the new state has the old one's length
# ('revokd' = 6 = len('active')), so with a same-size ended_at sentinel the
# record does not change size at all (measurement only).
# Variant A_noret: the store's UPDATE without RETURNING (nothing for Python to fetch).
END_BELOW_NORET_Q = END_BELOW_Q.split("RETURNING")[0]
# Not the store's text: `+tasks.state` keeps the planner from scanning every live task through
# tasks_by_state_deadline (what SQLite 3.50 chooses for the store's text), so it walks the subtree.
END_BELOW_PLUS_Q = END_BELOW_Q.replace("AND tasks.state IN", "AND +tasks.state IN")
# Not the store's text either: the subtree's rowids in a subquery that names its join order (CROSS JOIN);
# both SQLite versions then walk the subtree, whatever the number of other live tasks.
END_BELOW_ROWID_Q = numbered(f"""WITH RECURSIVE {SUBTREE_CTE}
 UPDATE tasks SET state = 'revoked', ended_at = $2
 WHERE rowid IN (SELECT t.rowid FROM subtree CROSS JOIN tasks t ON t.id = subtree.id WHERE t.state IN {LIVE})
 RETURNING tasks.id, tasks.agent, tasks.parent, tasks.deadline, tasks.created_at""")
# Both dialects' SQL: the ids chosen by a subquery whose join order SQLite keeps
# (`CROSS JOIN`; PostgreSQL plans it as any join), the UPDATE itself with no
# state filter it could drive from.
END_BELOW_IN_Q = numbered(f"""WITH RECURSIVE {SUBTREE_CTE}
 UPDATE tasks SET state = 'revoked', ended_at = $2
 WHERE tasks.id IN (SELECT t.id FROM subtree CROSS JOIN tasks t WHERE t.id = subtree.id AND t.state IN {LIVE})
 RETURNING tasks.id, tasks.agent, tasks.parent, tasks.deadline, tasks.created_at""")
END_BELOW_ENDONLY_Q = END_BELOW_Q.replace("SET state = 'revoked', ended_at", "SET ended_at")
END_BELOW_SAMESIZE_Q = END_BELOW_Q.replace("state = 'revoked'", "state = 'revokd'")
# Variant d2: side table; the walk is the store's, the live check also looks at task_ends.
SELECT_LIVE_BELOW = numbered(f"""WITH RECURSIVE {SUBTREE_CTE}
    SELECT tasks.id, tasks.agent, tasks.parent, tasks.deadline, tasks.created_at, tasks.rowid
    FROM subtree JOIN tasks ON tasks.id = subtree.id
    WHERE tasks.state IN {LIVE} AND NOT EXISTS (SELECT 1 FROM {{side}} e WHERE e.{{key}} = tasks.{{tkey}})""")

SENTINEL = 2147483647  # 4-byte integer serial type, as is any ended_at in 2026 (seconds)


def ev_insert_sql(rows):
    return f"INSERT INTO events ({EV_COLS}) VALUES " + ", ".join(["(" + ", ".join(["?"] * 14) + ")"] * rows)


def put(parts, name, v):
    parts.append(name.encode())
    if v is None:
        parts.append(b"=-\n")
    else:
        b = v.encode()
        parts.append(b"=%d:%s\n" % (len(b), b))


def record_hash(seq, time_ms, kind, actor, agent, task, tool, jti, decision, reasons, request_id, detail, prev):
    """mandate-audit chain.rs record_hash (checked against 4,171 events of a real broker database)."""
    p = [b"mandate-audit-v1\n"]
    put(p, "seq", str(seq)); put(p, "time_ms", str(time_ms)); put(p, "kind", kind); put(p, "actor", actor)
    put(p, "agent", agent); put(p, "task", task); put(p, "tool", tool); put(p, "jti", jti)
    put(p, "decision", decision); put(p, "reasons", str(len(reasons)))
    for r in reasons:
        put(p, "reason", r)
    put(p, "request_id", request_id); put(p, "detail", detail); put(p, "prev_hash", prev)
    return hashlib.sha256(b"".join(p)).hexdigest()


def pragmas(conn, cache=True):
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA journal_mode = WAL").fetchone()
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    if cache:
        conn.execute("PRAGMA cache_size = -65536")


# ---------------------------------------------------------------- building
NOW = 1796700000           # seconds; the bench's clock is around 1796667708
N_CHILDREN = 10_000
N_PRIOR_TREES = 5          # earlier cascades of 10,000 children each: 50,000 ended tasks
ADMIN = "admin:adm_6750eef613a6abfc"
SCOPE = [{"tool": "items", "actions": ["items:read"], "resources": ["item:*"]}]


def cj(v):
    return json.dumps(v, separators=(",", ":"))


class Gen:
    def __init__(self, seed):
        self.r = random.Random(seed)

    def hexid(self, prefix, nbytes=16):
        return prefix + "%0*x" % (nbytes * 2, self.r.getrandbits(nbytes * 8))


class Chain:
    def __init__(self):
        self.seq, self.last = 1, "0" * 64

    def ev(self, time_ms, kind, actor, agent, task, tool, jti, decision, reasons, request_id, detail):
        h = record_hash(self.seq, time_ms, kind, actor, agent, task, tool, jti, decision, reasons, request_id,
                        detail, self.last)
        row = (self.seq, time_ms, kind, actor, agent, task, tool, jti, decision, cj(reasons), request_id, detail,
               self.last, h)
        self.seq += 1
        self.last = h
        return row


def task_body(tid, agent, intent, created, deadline, parent=None):
    b = {"id": tid, "agent": agent, "intent": intent, "scope": SCOPE, "environment": "staging",
         "state": "active", "requested_by": f"task:{parent}" if parent else None,
         "reasons": ["allow-task-start"], "created_at": created, "deadline": deadline, "ended_at": None}
    if parent:
        b["delegation"] = {"parent": parent, "root": parent, "chain": [{"agent": "lead", "task": parent}],
                           "root_intent": intent}
    return cj(b)


def grant_body(jti, task, agent, issued, exp):
    return cj({"jti": jti, "task": task, "agent": agent,
               "scope": {"tool": "items", "actions": ["items:read"], "resources": ["item:*"]},
               "audience": "https://items.bench.local", "issued_at": issued, "expires_at": exp})


def apply_migrations(conn):
    conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
    for v, f in enumerate(sorted(MIG_DIR.glob("*.sql")), 1):
        conn.execute("BEGIN")
        for stmt in split_sql(f.read_text()):
            conn.execute(stmt)
        conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (v, NOW - 86400))
        conn.execute("COMMIT")


def split_sql(text):
    """Statements of a migration (executescript would COMMIT on its own)."""
    out, cur = [], []
    for line in text.splitlines():
        s = line.split("--", 1)[0]
        cur.append(s)
        if s.rstrip().endswith(";"):
            stmt = "\n".join(cur).strip()
            if stmt.strip(";").strip():
                out.append(stmt)
            cur = []
    assert not "\n".join(cur).strip(), "trailing SQL without ;"
    return out


def build_live(n_live=50_000):
    """live.db: base.db and `n_live` more live (active) tasks of `lead`, made after the tree."""
    src, dst = HERE / "base.db", HERE / "live.db"
    shutil.copyfile(src, dst)
    meta = json.loads((HERE / "base.meta.json").read_text())
    g = Gen(7)
    conn = sqlite3.connect(dst, isolation_level=None)
    pragmas(conn)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    created = meta["revoke_now"] - 30
    for i in range(n_live):
        tid = g.hexid("task_")
        conn.execute("INSERT INTO tasks (id, agent, state, deadline, body, created_at, parent) VALUES (?,?,?,?,?,?,NULL)",
                     (tid, "lead", "active", created + 3600,
                      task_body(tid, "lead", "plain exchange benchmark", created, created + 3600), created))
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    conn.close()
    meta["mode"], meta["extra_live"], meta["size"] = "live", n_live, dst.stat().st_size
    (HERE / "live.meta.json").write_text(json.dumps(meta, indent=1))
    print(json.dumps({"built": "live.db", "extra_live": n_live, "size": meta["size"]}), flush=True)


def build(path, mode):
    """mode: base | sentinel | side. Same seed, so the same ids and bodies in all three."""
    if path.exists():
        path.unlink()
    for suf in ("-wal", "-shm"):
        Path(str(path) + suf).unlink(missing_ok=True)
    g = Gen(20261207)
    conn = sqlite3.connect(path, isolation_level=None)
    pragmas(conn)
    conn.execute("PRAGMA synchronous = OFF")  # building only
    apply_migrations(conn)
    if mode == "side":
        conn.execute("""CREATE TABLE task_ends (task_id TEXT PRIMARY KEY REFERENCES tasks(id),
                        state TEXT NOT NULL, ended_at BIGINT NOT NULL) WITHOUT ROWID""")
        conn.execute("""CREATE TABLE task_ends_r (task_rowid INTEGER PRIMARY KEY,
                        state TEXT NOT NULL, ended_at BIGINT NOT NULL)""")
    chain = Chain()
    t0 = NOW * 1000 - 6 * 3_600_000
    conn.execute("BEGIN")
    conn.execute("INSERT INTO owners (name, description, created_at) VALUES ('bench', 'bench', ?)", (NOW - 86400,))
    for a in ("lead", "helper"):
        conn.execute("INSERT INTO agents VALUES (?, 'bench', ?, 'active', ?)",
                     (a, cj({"name": a, "owner": "bench", "spiffe_id": f"spiffe://bench.local/agent/{a}",
                             "environment": "staging"}), NOW - 86400))
    conn.execute("COMMIT")
    ended_default = SENTINEL if mode == "sentinel" else None
    ins_task = "INSERT INTO tasks (id, agent, state, deadline, body, created_at, parent, ended_at) VALUES (?,?,?,?,?,?,?,?)"
    ins_grant = "INSERT INTO grants (jti, task, body, expires_at) VALUES (?,?,?,?)"
    ins_ev = f"INSERT INTO events ({EV_COLS}) VALUES ({','.join('?' * 14)})"
    roots = []
    for tree in range(N_PRIOR_TREES + 1):
        ms = t0 + tree * 3_000_000
        created = ms // 1000
        deadline = created + 3600
        root = g.hexid("task_")
        roots.append(root)
        conn.execute("BEGIN")
        conn.execute(ins_task, (root, "lead", "active", deadline,
                                task_body(root, "lead", "cascade benchmark", created, deadline), created, None,
                                ended_default))
        rq = g.hexid("req_", 8)
        conn.execute(ins_ev, chain.ev(ms, "task.created", "agent:lead", "lead", root, None, None, "allow", [], rq,
                                      cj({"policy_ids": ["allow-task-start"], "task": {"scope": SCOPE,
                                          "intent": "cascade benchmark", "deadline": deadline}})))
        rjti = g.hexid("jti_")
        conn.execute(ins_grant, (rjti, root, grant_body(rjti, root, "lead", created, deadline), deadline))
        conn.execute(ins_ev, chain.ev(ms, "grant.minted", "agent:lead", "lead", root, "items", rjti, "allow", [],
                                      rq, cj({"scope": "items:read", "exp": deadline, "session": g.hexid("jti_"),
                                              "dpop_jkt": None})))
        conn.execute("COMMIT")
        kids = []
        # Children as the bench makes them: one exchange each (task + task.delegated,
        # grant + grant.minted), committed in groups of 32 (32 connections, group commit).
        for start in range(0, N_CHILDREN, 32):
            conn.execute("BEGIN")
            for i in range(start, min(N_CHILDREN, start + 32)):
                cms = ms + 1 + i * 3 // 10
                c_created = cms // 1000
                kid, jti, rq = g.hexid("task_"), g.hexid("jti_"), g.hexid("req_", 8)
                kids.append((kid, jti, cms))
                conn.execute(ins_task, (kid, "helper", "active", deadline,
                                        task_body(kid, "helper", "cascade benchmark", c_created, deadline, root),
                                        c_created, root, ended_default))
                conn.execute(ins_ev, chain.ev(cms, "task.delegated", "agent:helper", "helper", kid, None, None,
                                              "allow", [], rq,
                                              cj({"parent": root, "root": root, "depth": 1, "chain": ["lead"],
                                                  "scope": SCOPE, "intent": "cascade benchmark",
                                                  "deadline": deadline, "policy_ids": ["allow-task-start"]})))
                conn.execute(ins_grant, (jti, kid, grant_body(jti, kid, "helper", c_created, deadline), deadline))
                conn.execute(ins_ev, chain.ev(cms, "grant.minted", "agent:helper", "helper", kid, "items", jti,
                                              "allow", [], rq,
                                              cj({"scope": "items:read", "exp": deadline,
                                                  "session": g.hexid("jti_"), "dpop_jkt": None,
                                                  "chain": ["lead"]})))
            conn.execute("COMMIT")
        # Each child's token once through the proxy: tool.invoked, shipped in batches.
        pms = ms + N_CHILDREN * 3 // 10 + 500
        for start in range(0, N_CHILDREN, 256):
            conn.execute("BEGIN")
            for i in range(start, min(N_CHILDREN, start + 256)):
                kid, jti, _ = kids[i]
                conn.execute(ins_ev, chain.ev(pms + i // 10, "tool.invoked", "proxy:adm_e11dc89ce0fe1769",
                                              "helper", kid, "items", jti, "allow",
                                              ["allow-in-scope: the action and resource are inside the active task's grant"],
                                              g.hexid("", 16),
                                              cj({"at_ms": pms + i // 10 - 50, "action": "items:read",
                                                  "method": "GET", "path": "/items/items/1", "status": None,
                                                  "latency_ms": 9, "bytes": 0, "client": "127.0.0.1",
                                                  "chain": ["lead"]})))
            conn.execute("COMMIT")
        if tree == N_PRIOR_TREES:
            break  # the tree under test stays live
        # Earlier cascades: the root revoked, its subtree ended the way this mode ends it.
        now = (pms + 60_000) // 1000
        conn.execute("BEGIN")
        rbody = json.loads(task_body(root, "lead", "cascade benchmark", created, deadline))
        rbody["state"], rbody["ended_at"] = "revoked", now
        conn.execute("UPDATE tasks SET state = 'revoked', body = ?, ended_at = ? WHERE id = ?", (cj(rbody), now, root))
        conn.execute("INSERT INTO revocations (kind, id, revoked_at, expires_at) VALUES ('task', ?, ?, ?)",
                     (root, now, deadline))
        if mode == "side":
            rows = conn.execute(SELECT_LIVE_BELOW.format(side="task_ends", key="task_id", tkey="id"),
                                (root,)).fetchall()
            conn.executemany("INSERT INTO task_ends VALUES (?, 'revoked', ?)", [(r[0], now) for r in rows])
            conn.executemany("INSERT INTO task_ends_r VALUES (?, 'revoked', ?)", [(r[5], now) for r in rows])
        else:
            rows = conn.execute(END_BELOW_Q, (root, now)).fetchall()
        rows.sort(key=lambda r: (r[4], r[0]))
        rq = g.hexid("req_", 8)
        why = [f"cascade from task.revoked of task {root}"]
        for r in rows:
            conn.execute(ins_ev, chain.ev(now * 1000, "task.revoked", ADMIN, r[1], r[0], None, None, None, why, rq,
                                          "{}"))
        conn.execute(ins_ev, chain.ev(now * 1000, "task.revoked", ADMIN, "lead", root, None, None, None, [], rq,
                                      "{}"))
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    conn.close()
    meta = {"mode": mode, "root": roots[-1], "prior_roots": roots[:-1], "children": N_CHILDREN,
            "revoke_now": (pms + 60_000) // 1000, "size": path.stat().st_size}
    c = sqlite3.connect(path)
    meta["counts"] = {t: c.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                      for t in ("tasks", "grants", "events", "revocations")}
    meta["head"] = list(c.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone())
    meta["avg_child_body"] = c.execute("SELECT avg(length(body)) FROM tasks WHERE parent = ?", (roots[-1],)).fetchone()[0]
    meta["page_count"] = c.execute("PRAGMA page_count").fetchone()[0]
    meta["journal_mode"] = c.execute("PRAGMA journal_mode").fetchone()[0]
    c.close()
    (HERE / f"{path.stem}.meta.json").write_text(json.dumps(meta, indent=1))
    print(json.dumps({k: v for k, v in meta.items() if k != "prior_roots"}), flush=True)


# ---------------------------------------------------------------- variants
# name: (db, how the subtree is ended, events, warm SQLite cache, WAL file reused)
#   events: none | pre (rows+hashes built before timing) | sha (sha256 chain built while timed)
#           | stage (INSERT … SELECT from a TEMP table filled before timing: no Python per row)
#           | one (one event, small detail) | one_ids (one event listing the 10,000 ids)
#   reuse:  the WAL file already exists (16 MB, restarted), as in a broker that has run a while
#           (wal_autocheckpoint=0, the checkpointer RESTARTs it, journal_size_limit unset); else a new file
VARIANTS = {
    "A":        ("base", "update", "none", True, False),    # exact UPDATE … RETURNING, commit
    "A_noret":  ("base", "noret", "none", True, False),     # same UPDATE without RETURNING (no Python fetch)
    "B_pre":    ("base", "update", "pre", True, False),     # + 10,000 events, rows and hashes built before timing
    "B_sha":    ("base", "update", "sha", True, False),     # + 10,000 events, sha256 chain computed while timed
    "B_cold":   ("base", "update", "sha", False, False),    # B_sha, SQLite page cache cold (OS cache warm)
    "F_sql":    ("base", "noret", "stage", True, False),    # engine only: UPDATE (no RETURNING) + INSERT…SELECT
    "EV_only":  ("base", "walk", "sha", True, False),       # subtree SELECT + 10,000 events, no task writes
    "D1a":      ("sentinel", "update", "sha", True, False),  # ended_at pre-filled 4-byte sentinel; state +1 byte
    "D1z":      ("sentinel", "samesize", "sha", True, False),  # sentinel + same-length state: record size unchanged
    "D2":       ("side", "side", "sha", True, False),       # INSERT 10,000 task_ends(task_id TEXT PK WITHOUT ROWID)
    "D2r":      ("side", "side_r", "sha", True, False),     # INSERT 10,000 task_ends_r(task_rowid INTEGER PK)
    "E":        ("base", "update", "one", True, False),     # exact UPDATE + one event (small detail)
    "E_ids":    ("base", "update", "one_ids", True, False),  # exact UPDATE + one event listing all 10,000 ids
    "D1z_E":    ("sentinel", "samesize", "one", True, False),
    "D2_E":     ("side", "side", "one", True, False),
    "D2r_E":    ("side", "side_r", "one", True, False),
    "A_endonly": ("base", "endonly", "none", True, False),  # UPDATE of ended_at only: the state index untouched
    "D1z_pre":  ("sentinel", "samesize", "pre", True, False),
    "D2_pre":   ("side", "side", "pre", True, False),
    "D2r_pre":  ("side", "side_r", "pre", True, False),
    "D2r_sql":  ("side", "side_r_sql", "stage", True, False),  # engine only: INSERT…SELECT side rows + staged events
    # live.db: base.db plus 50,000 other live tasks (not in the subtree), as a broker with work in flight has
    "A_live":       ("live", "update", "none", True, False),
    "A_noret_live": ("live", "noret", "none", True, False),
    "B_pre_live":   ("live", "update", "pre", True, False),
    "A_plus":       ("base", "plus", "none", True, False),
    "A_plus_live":  ("live", "plus", "none", True, False),
    "A_rowid":      ("base", "rowid", "none", True, False),
    "A_rowid_live": ("live", "rowid", "none", True, False),
    "A_in":         ("base", "in", "none", True, False),
    "A_in_live":    ("live", "in", "none", True, False),
    "A_reuse":      ("base", "update", "none", True, True),
    "B_pre_reuse":  ("base", "update", "pre", True, True),
    "B_sha_reuse":  ("base", "update", "sha", True, True),
    "F_sql_reuse":  ("base", "noret", "stage", True, True),
    "E_reuse":      ("base", "update", "one", True, True),
    "D2r_reuse":    ("side", "side_r", "sha", True, True),
    "D2r_E_reuse":  ("side", "side_r", "one", True, True),
}


def jiffies_self():
    f = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])  # utime + stime


def loadavg():
    return open("/proc/loadavg").read().split()[:3]


def cpu_busy():
    f = open("/proc/stat").readline().split()[1:]
    v = list(map(int, f))
    idle = v[3] + v[4]
    return sum(v), idle


def child(variant, db):
    """One timed run in this (child) process on `db`; prints one JSON line, os._exit."""
    dbname, how, evs, warm, reuse = VARIANTS[variant]
    cb_start, own_start = cpu_busy(), jiffies_self()
    meta = json.loads((HERE / f"{dbname}.meta.json").read_text())
    root = meta["root"]
    now = meta["revoke_now"]  # the revoke's `now` (seconds): a minute after the children were used
    now_ms = now * 1000 + 123
    conn = sqlite3.connect(db, isolation_level=None, cached_statements=256)
    pragmas(conn)
    if reuse:
        # A WAL file that a broker running for a while has: written, checkpointed, restarted.
        conn.execute("CREATE TABLE pad (x BLOB)")
        conn.execute("WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 4000) "
                     "INSERT INTO pad SELECT zeroblob(3900) FROM c")
        conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        conn.execute("DROP TABLE pad")
        r = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        assert r[0] == 0, r
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # see the restarted log
    head_seq, head_hash = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    wal_before = Path(str(db) + "-wal").stat().st_size if Path(str(db) + "-wal").exists() else 0
    if warm:
        # The writer's 64 MiB cache right after the children were created holds their
        # table/index pages and the events' right edge; read the same pages.
        conn.execute(numbered(f"WITH RECURSIVE {SUBTREE_CTE} SELECT count(*), sum(length(tasks.body)), "
                              "sum(tasks.state = 'x') FROM subtree JOIN tasks ON tasks.id = subtree.id"),
                     (root,)).fetchone()
        if dbname == "live":  # the other live tasks are being used too
            conn.execute("SELECT count(*), sum(length(body)) FROM tasks WHERE rowid > (SELECT max(rowid) - 50000 FROM tasks)").fetchone()
        conn.execute("SELECT count(*) FROM tasks INDEXED BY tasks_by_state_deadline "
                     "WHERE state IN ('active', 'revoked', 'revokd')").fetchone()
        conn.execute("SELECT count(*), sum(length(detail)) FROM events WHERE seq > ?", (head_seq - 40_000,)).fetchone()
        if dbname == "side":
            conn.execute("SELECT count(*), sum(length(state)) FROM task_ends").fetchone()
            conn.execute("SELECT count(*), sum(length(state)) FROM task_ends_r").fetchone()
    # Prepare (compile) the statements outside the timing, as prepare_cached does after the first use.
    why = [f"cascade from task.revoked of task {root}"]
    why_json = cj(why)
    rq = "req_ee2690e54823dda1"
    pre_rows = None
    if evs in ("pre", "stage"):
        # Everything an event row holds, built before timing (the ids come from the subtree, which is
        # known here from a read; order: oldest first, as the store sorts).
        ids = conn.execute(numbered(f"WITH RECURSIVE {SUBTREE_CTE} SELECT tasks.id, tasks.agent, tasks.created_at "
                                    "FROM subtree JOIN tasks ON tasks.id = subtree.id"), (root,)).fetchall()
        ids.sort(key=lambda r: (r[2], r[0]))
        pre_rows, prev, seq = [], head_hash, head_seq + 1
        for tid, agent, _ in ids:
            h = record_hash(seq, now_ms, "task.revoked", ADMIN, agent, tid, None, None, None, why, rq, "{}", prev)
            pre_rows.append((seq, now_ms, "task.revoked", ADMIN, agent, tid, None, None, None, why_json, rq, "{}",
                             prev, h))
            prev, seq = h, seq + 1
    sha_only_ms = None
    if pre_rows:
        # The cost of the 10,000 sha256 alone (C code, inputs already laid out): what a compiled
        # broker pays for the chain, give or take; Python's field-by-field build is the rest of ev_build.
        bufs = []
        for r in pre_rows:
            p = [b"mandate-audit-v1\n"]
            for name, v in zip(("seq", "time_ms", "kind", "actor", "agent", "task", "tool", "jti", "decision"),
                               (str(r[0]), str(r[1])) + r[2:9]):
                put(p, name, v)
            bufs.append(b"".join(p) + b"x" * 200)
        t = time.perf_counter()
        for b in bufs:
            hashlib.sha256(b).hexdigest()
        sha_only_ms = round((time.perf_counter() - t) * 1000, 2)
    if evs == "stage":
        conn.execute(f"CREATE TEMP TABLE stage AS SELECT {EV_COLS} FROM events WHERE 0")
        conn.executemany(f"INSERT INTO temp.stage VALUES ({','.join('?' * 14)})", pre_rows)
    full_sql = ev_insert_sql(ROWS_PER_INSERT)
    gc.collect()
    gc.disable()
    la0 = loadavg()
    cb0 = cpu_busy()
    cpu0 = time.process_time()
    T = {}
    t = time.perf_counter()
    t_start = t
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("SAVEPOINT job")
    T["begin"] = time.perf_counter() - t
    t = time.perf_counter()
    ended, n_rows = [], None
    if how == "update":
        ended = conn.execute(END_BELOW_Q, (root, now)).fetchall()
    elif how == "noret":
        c0 = conn.total_changes
        conn.execute(END_BELOW_NORET_Q, (root, now))
        n_rows = conn.total_changes - c0
    elif how == "plus":
        ended = conn.execute(END_BELOW_PLUS_Q, (root, now)).fetchall()
    elif how == "rowid":
        ended = conn.execute(END_BELOW_ROWID_Q, (root, now)).fetchall()
    elif how == "in":
        ended = conn.execute(END_BELOW_IN_Q, (root, now)).fetchall()
    elif how == "endonly":
        ended = conn.execute(END_BELOW_ENDONLY_Q, (root, now)).fetchall()
    elif how == "side_r_sql":
        c0 = conn.total_changes
        conn.execute(numbered(f"""WITH RECURSIVE {SUBTREE_CTE}
            INSERT INTO task_ends_r (task_rowid, state, ended_at)
            SELECT tasks.rowid, 'revoked', $2 FROM subtree JOIN tasks ON tasks.id = subtree.id
            WHERE tasks.state IN {LIVE} AND NOT EXISTS (SELECT 1 FROM task_ends_r e WHERE e.task_rowid = tasks.rowid)"""),
                     (root, now))
        n_rows = conn.total_changes - c0
    elif how == "samesize":
        ended = conn.execute(END_BELOW_SAMESIZE_Q, (root, now)).fetchall()
    elif how in ("side", "side_r"):
        side, key, tkey = ("task_ends", "task_id", "id") if how == "side" else ("task_ends_r", "task_rowid", "rowid")
        ended = conn.execute(SELECT_LIVE_BELOW.format(side=side, key=key, tkey=tkey), (root,)).fetchall()
        if how == "side":
            conn.executemany("INSERT INTO task_ends (task_id, state, ended_at) VALUES (?, 'revoked', ?)",
                             [(r[0], now) for r in ended])
        else:
            conn.executemany("INSERT INTO task_ends_r (task_rowid, state, ended_at) VALUES (?, 'revoked', ?)",
                             [(r[5], now) for r in ended])
    elif how == "walk":
        ended = conn.execute(numbered(f"WITH RECURSIVE {SUBTREE_CTE} SELECT tasks.id, tasks.agent, tasks.parent, "
                                      "tasks.deadline, tasks.created_at FROM subtree JOIN tasks ON tasks.id = subtree.id"),
                             (root,)).fetchall()
    ended.sort(key=lambda r: (r[4], r[0]))
    T["end_rows"] = time.perf_counter() - t
    t = time.perf_counter()
    n_ev = 0
    if evs in ("pre", "sha"):
        if evs == "pre":
            rows = pre_rows
        else:
            rows, prev, seq = [], head_hash, head_seq + 1
            for r in ended:
                h = record_hash(seq, now_ms, "task.revoked", ADMIN, r[1], r[0], None, None, None, why, rq, "{}", prev)
                rows.append((seq, now_ms, "task.revoked", ADMIN, r[1], r[0], None, None, None, why_json, rq, "{}",
                             prev, h))
                prev, seq = h, seq + 1
        T["ev_build"] = time.perf_counter() - t
        t2 = time.perf_counter()
        for i in range(0, len(rows), ROWS_PER_INSERT):
            chunk = rows[i:i + ROWS_PER_INSERT]
            sql = full_sql if len(chunk) == ROWS_PER_INSERT else ev_insert_sql(len(chunk))
            conn.execute(sql, [v for row in chunk for v in row])
        n_ev = len(rows)
        T["ev_insert"] = time.perf_counter() - t2
    elif evs == "stage":
        conn.execute(f"INSERT INTO events ({EV_COLS}) SELECT {EV_COLS} FROM temp.stage ORDER BY seq")
        n_ev = len(pre_rows)
    elif evs in ("one", "one_ids"):
        detail = {"subtree": len(ended), "root": root}
        if evs == "one_ids":
            detail["tasks"] = [r[0] for r in ended]
        detail = cj(detail)
        h = record_hash(head_seq + 1, now_ms, "task.revoked", ADMIN, "helper", root, None, None, None, why, rq,
                        detail, head_hash)
        conn.execute(f"INSERT INTO events ({EV_COLS}) VALUES ({','.join('?' * 14)})",
                     (head_seq + 1, now_ms, "task.revoked", ADMIN, "helper", root, None, None, None, why_json, rq,
                      detail, head_hash, h))
        n_ev = 1
    T["events"] = time.perf_counter() - t
    t = time.perf_counter()
    conn.execute("RELEASE job")
    T["release"] = time.perf_counter() - t
    t = time.perf_counter()
    conn.execute("COMMIT")
    T["commit"] = time.perf_counter() - t
    T["total"] = time.perf_counter() - t_start
    cpu = time.process_time() - cpu0
    cb1 = cpu_busy()
    la1 = loadavg()
    gc.enable()
    wal = Path(str(db) + "-wal").stat().st_size
    n_ended = len(ended) if how not in ("noret", "side_r_sql") else n_rows
    out = {"variant": variant, "ms": {k: round(v * 1000, 2) for k, v in T.items()}, "ended": n_ended,
           "events": n_ev, "wal_bytes": wal, "wal_frames": wal_frames(db),
           "wal_file_before": wal_before, "sha_only_ms": sha_only_ms, "sqlite": sqlite3.sqlite_version,
           "proc_cpu_ms": round(cpu * 1000, 1),
           "sys_busy_pct": round(100 * (1 - (cb1[1] - cb0[1]) / max(1, cb1[0] - cb0[0])), 1),
           "loadavg_before": la0, "loadavg_after": la1}
    # Sanity: what was written is there.
    if how in ("update", "samesize", "noret", "endonly", "plus", "rowid", "in"):
        st = "revokd" if how == "samesize" else "revoked"
        stc = "1" if how == "endonly" else f"tasks.state = '{st}'"
        out["check"] = conn.execute(numbered(f"WITH RECURSIVE {SUBTREE_CTE} SELECT count(*) FROM subtree JOIN tasks "
                                             f"ON tasks.id = subtree.id WHERE {stc} AND tasks.ended_at = ?2"),
                                    (root, now)).fetchone()[0]
    if how.startswith("side_r"):
        out["check"] = conn.execute("SELECT count(*) FROM task_ends_r WHERE ended_at = ?", (now,)).fetchone()[0]
    elif how == "side":
        out["check"] = conn.execute("SELECT count(*) FROM task_ends WHERE ended_at = ?", (now,)).fetchone()[0]
    out["events_after"] = conn.execute("SELECT max(seq) FROM events").fetchone()[0] - head_seq
    cb_end, own_end = cpu_busy(), jiffies_self()
    tot = cb_end[0] - cb_start[0]
    busy = tot - (cb_end[1] - cb_start[1])
    # Over this child's whole life (~0.5-1 s): CPU used by anything but this process, % of the machine.
    out["foreign_cpu_pct"] = round(100 * max(0, busy - (own_end - own_start)) / max(1, tot), 1)
    print(json.dumps(out), flush=True)
    sys.stdout.flush()
    os._exit(0)  # no close: the closing checkpoint would write the WAL back for nothing


def wal_frames(db):
    """mxFrame of the WAL-index header: frames in the log now (this transaction's, as it started empty)."""
    import struct
    with open(str(db) + "-shm", "rb") as f:
        return struct.unpack("=I", f.read(20)[16:20])[0]


def fresh_copy(src, dst):
    for suf in ("", "-wal", "-shm"):
        Path(str(dst) + suf).unlink(missing_ok=True)
    shutil.copyfile(src, dst)
    fd = os.open(dst, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    with open(dst, "rb") as f:  # read once: warm the OS cache
        while f.read(1 << 20):
            pass
    os.sync()
    time.sleep(0.3)


def run(args):
    variants = args.variants.split(",") if args.variants else list(VARIANTS)
    tag = args.tag or time.strftime("%H%M%S")
    plan = [v for _ in range(args.reps) for v in variants]  # round robin: drift spreads over all
    recs = []
    work = HERE / "run.db"
    print(f"# set {tag}: {len(plan)} runs, loadavg {loadavg()}", flush=True)
    for i, v in enumerate(plan):
        fresh_copy(HERE / f"{VARIANTS[v][0]}.db", work)
        p = subprocess.run([sys.executable, __file__, "child", v, str(work)], capture_output=True, text=True)
        if p.returncode != 0 or not p.stdout.strip():
            print(p.stdout, p.stderr, file=sys.stderr)
            raise SystemExit(f"run {v} failed")
        rec = json.loads(p.stdout.strip().splitlines()[-1])
        rec.update(tag=tag, i=i, at=time.strftime("%H:%M:%S"))
        recs.append(rec)
        with RESULTS.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(json.dumps(rec), flush=True)
    for suf in ("", "-wal", "-shm"):
        Path(str(work) + suf).unlink(missing_ok=True)
    table(recs, tag)


def fmt(xs):
    xs = sorted(xs)
    return f"{statistics.median(xs):7.1f} ({xs[0]:.1f}–{xs[-1]:.1f})"


def table(recs, tag=None):
    by = {}
    for r in recs:
        by.setdefault(r["variant"], []).append(r)
    libs = sorted({r.get("sqlite", "?") for r in recs})
    print(f"\n## set {tag}  SQLite {','.join(libs)}  (median (min–max) ms, n runs)")
    print(f"{'variant':12} {'n':>2} {'end rows':>20} {'events':>20} {'commit':>20} {'TOTAL':>20} {'frames':>6} "
          f"{'foreign%':>8} loadavg(1m) range")
    for v in VARIANTS:
        rs = by.get(v)
        if not rs:
            continue
        la = [float(x["loadavg_before"][0]) for x in rs] + [float(x["loadavg_after"][0]) for x in rs]
        print(f"{v:12} {len(rs):>2} {fmt([r['ms']['end_rows'] for r in rs]):>20} "
              f"{fmt([r['ms']['events'] for r in rs]):>20} {fmt([r['ms']['commit'] for r in rs]):>20} "
              f"{fmt([r['ms']['total'] for r in rs]):>20} {statistics.median([r['wal_frames'] for r in rs]):6.0f} "
              f"{statistics.median([r.get('foreign_cpu_pct', 0) for r in rs]):8.1f} {min(la):.2f}–{max(la):.2f}")
    ev = [r for r in recs if "ev_build" in r["ms"]]
    if ev:
        print("events split (build incl. sha256 / insert):")
        for v in VARIANTS:
            rs = [r for r in ev if r["variant"] == v]
            if rs:
                sha = [r["sha_only_ms"] for r in rs if r.get("sha_only_ms") is not None]
                print(f"  {v:12} build {fmt([r['ms']['ev_build'] for r in rs])}  insert {fmt([r['ms']['ev_insert'] for r in rs])}"
                      + (f"  (10,000 bare sha256: {fmt(sha)})" if sha else ""))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build")
    sub.add_parser("build-live")
    r = sub.add_parser("run")
    r.add_argument("--reps", type=int, default=7)
    r.add_argument("--variants")
    r.add_argument("--tag")
    r.add_argument("--lib", choices=["sqlite3", "sqlean"], default="sqlite3")
    c = sub.add_parser("child")
    c.add_argument("variant")
    c.add_argument("db")
    t = sub.add_parser("table")
    t.add_argument("--tag")
    a = ap.parse_args()
    if a.cmd == "build":
        print("sqlite", sqlite3.sqlite_version, "python", sys.version.split()[0], flush=True)
        for mode in ("base", "sentinel", "side"):
            t0 = time.time()
            build(HERE / f"{mode}.db", mode)
            print(f"built {mode}.db in {time.time() - t0:.1f}s", flush=True)
    elif a.cmd == "build-live":
        build_live()
    elif a.cmd == "run":
        os.environ["FLOOR_LIB"] = a.lib
        run(a)
    elif a.cmd == "child":
        child(a.variant, a.db)
    elif a.cmd == "table":
        recs = [json.loads(l) for l in RESULTS.read_text().splitlines() if l.strip()]
        tags = [a.tag] if a.tag else list(dict.fromkeys(r["tag"] for r in recs))
        for tg in tags:
            table([r for r in recs if r["tag"] == tg], tg)


if __name__ == "__main__":
    main()
