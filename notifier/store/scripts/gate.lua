-- gate: may a send go now? A pause set after a relay said "slow down" holds every sender;
-- otherwise the send reserves the next slot of the global rate (a GCRA-style schedule): the
-- explicit cap, or the rate learned from the relay's throttling replies (throttle.lua),
-- whichever is lower. Each send at the learned rate raises it a little (additive increase):
-- by `step` messages a second per second of sending; above `ceiling` it is forgotten.
-- KEYS[1] pause (epoch seconds until which every sender waits)
-- KEYS[2] rate (the next free send slot, epoch seconds)
-- KEYS[3] pace (hash: rate = the learned messages per second, absent when none)
-- ARGV[1] interval between sends in seconds (the explicit cap; 0 = none)
-- ARGV[2] step (messages/s gained per second at the learned rate)   ARGV[3] ceiling (msgs/s)
-- Returns {paused_until, wait, paced} as strings: paused_until is 0 when not paused, wait is
-- how long to wait for this send's slot, paced is '1' while a learned rate applies. Redis's
-- clock, so workers with skewed clocks agree.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local learned = tonumber(redis.call('HGET', KEYS[3], 'rate') or '0')
local paced = '0'
if learned > 0 then paced = '1' end
local pause = tonumber(redis.call('GET', KEYS[1]) or '0')
if pause > now then return {tostring(pause), '0', paced} end
local interval = tonumber(ARGV[1])
if learned > 0 then
  interval = math.max(interval, 1 / learned)
  local grown = learned + tonumber(ARGV[2]) / learned
  if grown >= tonumber(ARGV[3]) then
    redis.call('HDEL', KEYS[3], 'rate')
  else
    redis.call('HSET', KEYS[3], 'rate', tostring(grown))
  end
end
if interval <= 0 then return {'0', '0', paced} end
local slot = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), now)
local ttl = math.ceil((slot - now + interval) * 1000) + 1000
redis.call('SET', KEYS[2], tostring(slot + interval), 'PX', ttl)
return {'0', tostring(slot - now), paced}
