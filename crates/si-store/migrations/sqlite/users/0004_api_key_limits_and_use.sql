-- A key's own rate limit (requests per minute; NULL: none), and when it was last
-- used (Unix seconds; NULL: never), written by the gateway at most once a minute
-- per key.
ALTER TABLE api_keys ADD COLUMN rate_limit_per_minute INTEGER
    CHECK (rate_limit_per_minute IS NULL OR rate_limit_per_minute > 0);
ALTER TABLE api_keys ADD COLUMN last_used_at INTEGER;
