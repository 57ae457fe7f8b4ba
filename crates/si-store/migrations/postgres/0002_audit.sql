-- The audit chain, one for every gateway sharing the database: each record's
-- canonical JSON (which names the gateway that wrote it), its link to the previous
-- record and its hash; at_ms for time windows.
CREATE TABLE audit (
    seq       BIGINT PRIMARY KEY,
    at_ms     BIGINT NOT NULL,
    record    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE INDEX audit_at ON audit (at_ms);
-- The chain's head. A writer locks this row for its batch, so gateways append one
-- after another, each after the other's last record.
CREATE TABLE audit_head (
    id   BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (TRUE, 0, '0000000000000000000000000000000000000000000000000000000000000000');
