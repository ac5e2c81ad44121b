-- throttle: a relay said we send too fast (a rate or connection limit): every sender slows
-- down. The learned rate halves (at most once per interval at that rate: a burst of replies
-- to sends already under way is one signal), or starts at `start` when none was learned;
-- and every sender pauses, the pause doubling while the first sends after a pause are
-- throttled again (the relay's window is still closed), back to the first pause otherwise.
-- KEYS[1] pause (epoch seconds until which every sender waits)
-- KEYS[2] pace (hash: rate, decreased_at, throttled_at, paused_until, step)
-- ARGV[1] start rate (messages/s)   ARGV[2] lowest rate   ARGV[3] first pause (seconds)
-- ARGV[4] longest pause (seconds)
-- Returns {rate, paused_until, now} as strings (epoch seconds on Redis's clock).
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local paused = tonumber(redis.call('GET', KEYS[1]) or '0')
local rate = tonumber(redis.call('HGET', KEYS[2], 'rate') or '0')
if paused > now then return {tostring(rate), tostring(paused), tostring(now)} end
local decreased = tonumber(redis.call('HGET', KEYS[2], 'decreased_at') or '0')
local last_end = tonumber(redis.call('HGET', KEYS[2], 'paused_until') or '0')
local step = tonumber(redis.call('HGET', KEYS[2], 'step') or ARGV[3])
local interval = 1 / math.max(rate, tonumber(ARGV[2]))
-- Throttled again within a couple of send intervals of the last pause: the window is still
-- closed, so wait longer; later, a new episode starts with the first pause.
if now > last_end + 2 * interval + 1 then step = tonumber(ARGV[3]) end
if rate <= 0 then
  rate, decreased = tonumber(ARGV[1]), now
elseif now - decreased > 1 / rate then
  rate, decreased = math.max(tonumber(ARGV[2]), rate / 2), now
end
local untl = now + step
redis.call('HSET', KEYS[2], 'rate', tostring(rate), 'decreased_at', tostring(decreased),
  'throttled_at', tostring(now), 'paused_until', tostring(untl),
  'step', tostring(math.min(step * 2, tonumber(ARGV[4]))))
redis.call('SET', KEYS[1], tostring(untl), 'PX', math.ceil(step * 1000))
return {tostring(rate), tostring(untl), tostring(now)}
