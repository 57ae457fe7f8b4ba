-- API keys for applications, as SHA-256 hashes only (the key is shown once when
-- made). A revoked key stays, so its name is not given to another; revoking one
-- bumps revocation_version like every other revocation.
CREATE TABLE api_keys (
    name       TEXT PRIMARY KEY,
    key_hash   TEXT NOT NULL UNIQUE,
    role       TEXT NOT NULL,
    location   TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked    BOOLEAN NOT NULL DEFAULT FALSE,
    -- It may name the front end's user it acts for.
    forward_user BOOLEAN NOT NULL DEFAULT FALSE
);
