-- A key's own rate limit (requests per minute; NULL: none), and when it was last
-- used (Unix seconds; NULL: never), written by each gateway at most once a minute
-- per key. Neither bumps revocation_version: no gateway reloads for them.
ALTER TABLE api_keys
    ADD COLUMN rate_limit_per_minute BIGINT
        CHECK (rate_limit_per_minute IS NULL OR rate_limit_per_minute > 0),
    ADD COLUMN last_used_at BIGINT;
