-- Mandate schema v1 (SQLite). Structured values are JSON text; every table
-- the hot path reads is keyed by its natural id.

CREATE TABLE owners (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE agents (
    name          TEXT PRIMARY KEY,
    owner         TEXT NOT NULL REFERENCES owners(name),
    body          TEXT NOT NULL,          -- JSON of the Agent
    state         TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);

CREATE TABLE bindings (
    id       INTEGER PRIMARY KEY,
    agent    TEXT NOT NULL REFERENCES agents(name),
    issuer   TEXT NOT NULL,
    subject  TEXT NOT NULL,
    claims   TEXT NOT NULL,               -- JSON object of exact claim matches
    UNIQUE (issuer, subject, claims)
);
CREATE INDEX bindings_by_iss_sub ON bindings(issuer, subject);

CREATE TABLE join_tokens (
    hash        TEXT PRIMARY KEY,         -- SHA-256 of the token, never the token
    agent       TEXT NOT NULL REFERENCES agents(name),
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);

-- Client-assertion ids seen, so each private_key_jwt assertion is single-use.
CREATE TABLE seen_assertions (
    jti         TEXT PRIMARY KEY,
    expires_at  INTEGER NOT NULL
);

CREATE TABLE tools (
    name        TEXT PRIMARY KEY,
    audience    TEXT NOT NULL UNIQUE,
    body        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE tasks (
    id          TEXT PRIMARY KEY,
    agent       TEXT NOT NULL REFERENCES agents(name),
    state       TEXT NOT NULL,
    deadline    INTEGER NOT NULL,
    body        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX tasks_by_agent ON tasks(agent, created_at);
CREATE INDEX tasks_by_state_deadline ON tasks(state, deadline);

CREATE TABLE grants (
    jti         TEXT PRIMARY KEY,
    task        TEXT NOT NULL REFERENCES tasks(id),
    body        TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX grants_by_task ON grants(task);

CREATE TABLE revocations (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL,
    id          TEXT NOT NULL,
    revoked_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);

CREATE TABLE admin_tokens (
    id          TEXT PRIMARY KEY,
    hash        TEXT NOT NULL UNIQUE,
    rights      TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER
);

CREATE TABLE events (
    seq         INTEGER PRIMARY KEY,
    time_ms     INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    actor       TEXT NOT NULL,
    agent       TEXT,
    task        TEXT,
    tool        TEXT,
    jti         TEXT,
    decision    TEXT,
    reasons     TEXT NOT NULL,            -- JSON array of strings
    request_id  TEXT,
    detail      TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
