-- due: hand out the members of a sweeper index that are due, each once per hold period.
-- include: _clock.lua
-- KEYS[1] a sweeper index (retry, sending or queued)
-- ARGV[1] store now ('' for Redis's clock)   ARGV[2] look back (seconds)   ARGV[3] limit
-- ARGV[4] hold (seconds)
-- Returns the members scored at or before now - look back; their score becomes now + hold.
local now = clock(ARGV[1])
local found = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]),
  'LIMIT', 0, tonumber(ARGV[3]))
for _, k in ipairs(found) do redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[4]), k) end
return found
