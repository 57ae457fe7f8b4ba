-- Users, with argon2 hashes only.
CREATE TABLE IF NOT EXISTS users (
    username      TEXT PRIMARY KEY NOT NULL,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL,
    location      TEXT NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);
-- Refresh tokens, stored as SHA-256 hashes only. Each login starts a family; every
-- refresh marks its token used and adds the next one to the same family.
CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    family     TEXT NOT NULL,
    username   TEXT NOT NULL,
    location   TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    used       INTEGER NOT NULL DEFAULT 0,
    revoked    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS refresh_tokens_family ON refresh_tokens (family);
-- Access tokens revoked before they expire (logout).
CREATE TABLE IF NOT EXISTS revoked_tokens (
    jti        TEXT PRIMARY KEY NOT NULL,
    expires_at INTEGER NOT NULL
);
