-- A booked attempt's password was wrong.
-- KEYS and ARGV[1] to ARGV[4] as in login_begin.lua; ARGV[5]: distinct
-- addresses failing the username that are reported; ARGV[6]: this address's
-- field in the username's hash.
-- Returns 1 when this failure is the first to reach ARGV[5] addresses in the
-- username's window, else 0.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local window = tonumber(ARGV[3])
local lockout = tonumber(ARGV[4])

for i = 1, 2 do
    local count = tonumber(redis.call('HGET', KEYS[i], 'count')) or 0
    if count >= tonumber(ARGV[i]) then
        redis.call('HSET', KEYS[i], 'locked', now + lockout)
        redis.call('PEXPIRE', KEYS[i], lockout)
    end
end
local fresh = redis.call('EXISTS', KEYS[3]) == 0
redis.call('HINCRBY', KEYS[3], 'count', 1)
if fresh then
    redis.call('PEXPIRE', KEYS[3], window)
end
local wanted = tonumber(ARGV[5])
local seen = tonumber(redis.call('HGET', KEYS[3], 'addresses')) or 0
if seen < wanted and redis.call('HSETNX', KEYS[3], ARGV[6], 1) == 1 then
    if redis.call('HINCRBY', KEYS[3], 'addresses', 1) == wanted then
        return 1
    end
end
return 0
