-- pause: hold every sender for a while; extends the pause, never shortens it.
-- KEYS[1] pause (epoch seconds until which every sender waits)
-- ARGV[1] seconds from now (Redis's clock)
-- Returns the pause's end, as a string.
local t = redis.call('TIME')
local untl = tonumber(t[1]) + tonumber(t[2]) / 1e6 + tonumber(ARGV[1])
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if untl > cur then
  redis.call('SET', KEYS[1], tostring(untl), 'PX', math.ceil(tonumber(ARGV[1]) * 1000))
  return tostring(untl)
end
return tostring(cur)
