-- gate: may a send go now? A pause set after a relay said "slow down" holds every sender;
-- otherwise the send reserves the next slot of the global rate (a GCRA-style schedule).
-- KEYS[1] pause (epoch seconds until which every sender waits)
-- KEYS[2] rate (the next free send slot, epoch seconds)
-- ARGV[1] interval between sends in seconds (0 = no rate limit)
-- Returns {paused_until, wait} as strings: paused_until is 0 when not paused, wait is how
-- long to wait for this send's slot. Redis's clock, so workers with skewed clocks agree.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local pause = tonumber(redis.call('GET', KEYS[1]) or '0')
if pause > now then return {tostring(pause), '0'} end
local interval = tonumber(ARGV[1])
if interval <= 0 then return {'0', '0'} end
local slot = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), now)
local ttl = math.ceil((slot - now + interval) * 1000) + 1000
redis.call('SET', KEYS[2], tostring(slot + interval), 'PX', ttl)
return {'0', tostring(slot - now)}
