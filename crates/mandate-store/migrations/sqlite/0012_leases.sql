-- Dynamic credentials: one row per login made for a task, written before
-- the login exists and kept until the source confirms it is gone.
CREATE TABLE leases (
    id               TEXT PRIMARY KEY,
    task             TEXT NOT NULL REFERENCES tasks(id),
    state            TEXT NOT NULL,
    next_attempt_at  BIGINT,
    body             TEXT NOT NULL
);
CREATE INDEX leases_by_task ON leases(task);
CREATE INDEX leases_open ON leases(state) WHERE state <> 'revoked';
