-- API keys for applications, as SHA-256 hashes only (the key is shown once when
-- made). A revoked key stays, so its name is not given to another.
CREATE TABLE api_keys (
    name       TEXT PRIMARY KEY NOT NULL,
    key_hash   TEXT NOT NULL UNIQUE,
    role       TEXT NOT NULL,
    location   TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked    INTEGER NOT NULL DEFAULT 0,
    -- It may name the front end's user it acts for.
    forward_user INTEGER NOT NULL DEFAULT 0
);
