-- Users, with argon2 hashes only; `username_key` is the name's canonical form
-- (NFKC, lowercased), computed by the program, so that no two users differ only in
-- case or character width.
CREATE TABLE users (
    username      TEXT PRIMARY KEY,
    username_key  TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL,
    location      TEXT NOT NULL,
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT NOT NULL
);
-- Refresh tokens, stored as SHA-256 hashes only. Each login starts a family; every
-- refresh marks its token used and adds the next one to the same family.
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    family     TEXT NOT NULL,
    username   TEXT NOT NULL,
    location   TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used       BOOLEAN NOT NULL DEFAULT FALSE,
    revoked    BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
-- Access tokens revoked before they expire (logout).
CREATE TABLE revoked_tokens (
    jti        TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
-- Bumped in the same transaction as every change to what is revoked (a logout, a
-- replayed refresh token, a disabled user), so that gateways can tell cheaply
-- whether to reload.
CREATE TABLE revocation_version (
    id      BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    version BIGINT NOT NULL
);
INSERT INTO revocation_version (id, version) VALUES (TRUE, 0);
