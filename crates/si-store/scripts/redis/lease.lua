-- Leases up to ARGV[3] tokens of one rate limit, atomically (GCRA).
-- KEYS[1]: the limit key's state: its theoretical arrival time (TAT), in ms of
--          Redis's clock, so the gateways' own clocks do not matter.
-- ARGV[1]: the emission interval T = 60000 / limit, in ms (may be fractional).
-- ARGV[2]: the limit per minute, which is also the burst.
-- ARGV[3]: tokens wanted.
-- Returns {granted, 0}, or {0, ms until one token frees}.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
local interval = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])

local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then
    tat = now
end
-- The epsilon keeps a token that is due now from being lost to rounding.
local available = math.floor((now + limit * interval - tat) / interval + 1e-9)
local granted = math.min(wanted, available)
if granted <= 0 then
    local wait = tat + interval - limit * interval - now
    return {0, math.max(1, math.ceil(wait))}
end
tat = tat + granted * interval
-- Idle keys vanish once their state is back to fresh (TAT in the past).
redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1000)
return {granted, 0}
