-- Books a login attempt before its password is checked.
-- KEYS[1]: the username at the address; KEYS[2]: the address; KEYS[3]: the
--          username (hashes: `count`, and `locked`, ms of Redis's clock).
-- ARGV[1]: failures that lock the username at the address; ARGV[2]: failures
--          that lock the address; ARGV[3]: the window, ms; ARGV[4]: the lockout, ms.
-- Returns {1, the username's failures in the window}, or {0, ms still locked}.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local window = tonumber(ARGV[3])
local lockout = tonumber(ARGV[4])

for i = 1, 2 do
    local locked = tonumber(redis.call('HGET', KEYS[i], 'locked'))
    if locked and locked > now then
        return {0, locked - now}
    end
    local count = tonumber(redis.call('HGET', KEYS[i], 'count')) or 0
    if count >= tonumber(ARGV[i]) then
        redis.call('HSET', KEYS[i], 'locked', now + lockout)
        redis.call('PEXPIRE', KEYS[i], lockout)
        return {0, lockout}
    end
end
for i = 1, 2 do
    -- A window starts at the first attempt and is not extended by later ones.
    local fresh = redis.call('EXISTS', KEYS[i]) == 0
    redis.call('HINCRBY', KEYS[i], 'count', 1)
    if fresh then
        redis.call('PEXPIRE', KEYS[i], window)
    end
end
return {1, tonumber(redis.call('HGET', KEYS[3], 'count')) or 0}
