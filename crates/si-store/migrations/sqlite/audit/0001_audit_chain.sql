-- The audit chain: each record's canonical JSON, its link to the previous record
-- and its hash; at_ms for time windows.
CREATE TABLE IF NOT EXISTS audit (
    seq       INTEGER PRIMARY KEY NOT NULL,
    at_ms     INTEGER NOT NULL,
    record    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at_ms);
