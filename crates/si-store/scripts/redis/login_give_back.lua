-- Gives back an attempt's booking.
-- KEYS[1]: the username at the address; KEYS[2]: the address.
-- ARGV[1]: 1 when the attempt succeeded (the username's failures at the address
--          are forgotten), 0 when it ended before its password was judged.
local function give_back(key)
    local count = tonumber(redis.call('HGET', key, 'count'))
    if count and count > 0 then
        redis.call('HINCRBY', key, 'count', -1)
    end
end

if ARGV[1] == '1' then
    redis.call('DEL', KEYS[1])
else
    give_back(KEYS[1])
end
give_back(KEYS[2])
return 0
