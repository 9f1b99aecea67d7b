-- Webhook endpoints. `body` is the endpoint (JSON of mandate_audit::Webhook);
-- `sealed` its signing secret, nonce || ciphertext || tag under `data_key`
-- with the endpoint id as associated data. The rest is how far delivery
-- has got: the last event `seq` delivered (or skipped by the endpoint's
-- kinds), and while the next one fails, the attempts so far, when the next
-- is due (Unix ms) and why the last failed (a status or a short reason).
CREATE TABLE webhooks (
    id               TEXT PRIMARY KEY,
    body             TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    data_key         BIGINT NOT NULL REFERENCES data_keys(id),
    sealed           BYTEA NOT NULL,
    delivered_seq    BIGINT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms  BIGINT,
    last_error       TEXT
);
