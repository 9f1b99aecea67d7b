-- Proxy audit de-duplication by each sender's position instead of by
-- remembering every record id: a proxy ships its spool in order, so a
-- record at or below the highest position already chained from that
-- spool is a resend. One row per spool, instead of one per call.
DROP TABLE ingested_invocations;
CREATE TABLE ingest_sources (
    source      TEXT PRIMARY KEY,
    seq         INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;
