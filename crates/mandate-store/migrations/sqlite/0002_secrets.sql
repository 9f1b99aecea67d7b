-- Mandate schema v2: encrypted secrets and proxy audit ingestion.

-- Data keys, each sealed (AES-256-GCM) under the master key, which is never stored.
CREATE TABLE data_keys (
    id          INTEGER PRIMARY KEY,
    wrapped     BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);

-- One upstream credential per tool. `body` is the metadata (JSON of Secret);
-- `sealed` is nonce || ciphertext || tag of the value under `data_key`, with
-- the name and version as associated data.
CREATE TABLE secrets (
    name          TEXT PRIMARY KEY,
    tool          TEXT NOT NULL UNIQUE REFERENCES tools(name),
    body          TEXT NOT NULL,
    version       INTEGER NOT NULL,
    data_key      INTEGER NOT NULL REFERENCES data_keys(id),
    sealed        BLOB NOT NULL,
    last_used_at  INTEGER
);

-- Ids of proxy tool-invocation records already chained, so a batch resent
-- after a proxy restart is not audited twice.
CREATE TABLE ingested_invocations (
    id          TEXT PRIMARY KEY,
    at          INTEGER NOT NULL
);
CREATE INDEX ingested_invocations_by_at ON ingested_invocations(at);
