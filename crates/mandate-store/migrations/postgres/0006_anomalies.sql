-- The anomaly detector's findings are audit events; list them without
-- scanning the chain. Partial, so no other event pays for it.
CREATE INDEX events_anomalies ON events(seq) WHERE kind = 'anomaly.detected';
