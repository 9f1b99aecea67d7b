-- Approval requests: one row per thing held for a person (a task's start,
-- a grant, one request), looked up again by its task and the canonical
-- JSON of what is held, newest first. The body is the whole record.
CREATE TABLE approvals (
    id           TEXT PRIMARY KEY,
    task         TEXT NOT NULL REFERENCES tasks(id),
    held_key     TEXT NOT NULL,
    state        TEXT NOT NULL,
    requested_at INTEGER NOT NULL,
    valid_until  INTEGER NOT NULL,
    body         TEXT NOT NULL
);
CREATE INDEX approvals_by_task_held ON approvals(task, held_key, requested_at);
CREATE INDEX approvals_by_requested ON approvals(requested_at);

-- An admin token may be issued to an agent (a supervising agent acting as
-- approver): it may never approve that agent's requests nor its owner's.
ALTER TABLE admin_tokens ADD COLUMN agent TEXT;
