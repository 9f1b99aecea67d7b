-- Mandate schema v1 (PostgreSQL): the SQLite schema as of its migration 4,
-- with PostgreSQL types. Structured values are JSON text, kept byte for byte
-- as written (not jsonb, which would reorder keys).

CREATE TABLE owners (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE agents (
    name        TEXT PRIMARY KEY,
    owner       TEXT NOT NULL REFERENCES owners(name),
    body        TEXT NOT NULL,
    state       TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE bindings (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent    TEXT NOT NULL REFERENCES agents(name),
    issuer   TEXT NOT NULL,
    subject  TEXT NOT NULL,
    claims   TEXT NOT NULL,
    UNIQUE (issuer, subject, claims)
);
CREATE INDEX bindings_by_iss_sub ON bindings(issuer, subject);
CREATE INDEX bindings_by_agent ON bindings(agent);

CREATE TABLE join_tokens (
    hash        TEXT PRIMARY KEY,         -- SHA-256 of the token, never the token
    agent       TEXT NOT NULL REFERENCES agents(name),
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);

CREATE TABLE seen_assertions (
    jti         TEXT PRIMARY KEY,
    expires_at  BIGINT NOT NULL
);

CREATE TABLE tools (
    name        TEXT PRIMARY KEY,
    audience    TEXT NOT NULL UNIQUE,
    body        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE tasks (
    id          TEXT PRIMARY KEY,
    agent       TEXT NOT NULL REFERENCES agents(name),
    state       TEXT NOT NULL,
    deadline    BIGINT NOT NULL,
    body        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX tasks_by_agent ON tasks(agent, created_at);
CREATE INDEX tasks_by_state_deadline ON tasks(state, deadline);

CREATE TABLE grants (
    jti         TEXT PRIMARY KEY,
    task        TEXT NOT NULL REFERENCES tasks(id),
    body        TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX grants_by_task ON grants(task);

-- The feed's order. One writer commits whole groups, so a higher seq is
-- never visible before a lower one.
CREATE TABLE revocations (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        TEXT NOT NULL,
    id          TEXT NOT NULL,
    revoked_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);

CREATE TABLE admin_tokens (
    id          TEXT PRIMARY KEY,
    hash        TEXT NOT NULL UNIQUE,
    rights      TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    revoked_at  BIGINT
);

-- The hash chain. `seq` as primary key also stops a second writer with a
-- stale head from forking the chain: its insert collides.
CREATE TABLE events (
    seq         BIGINT PRIMARY KEY,
    time_ms     BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    actor       TEXT NOT NULL,
    agent       TEXT,
    task        TEXT,
    tool        TEXT,
    jti         TEXT,
    decision    TEXT,
    reasons     TEXT NOT NULL,
    request_id  TEXT,
    detail      TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);

CREATE TABLE data_keys (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    wrapped     BYTEA NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE secrets (
    name          TEXT PRIMARY KEY,
    tool          TEXT NOT NULL UNIQUE REFERENCES tools(name),
    body          TEXT NOT NULL,
    version       BIGINT NOT NULL,
    data_key      BIGINT NOT NULL REFERENCES data_keys(id),
    sealed        BYTEA NOT NULL,
    last_used_at  BIGINT
);

CREATE TABLE ingest_sources (
    source      TEXT PRIMARY KEY,
    seq         BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
