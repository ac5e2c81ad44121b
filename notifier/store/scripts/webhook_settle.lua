-- webhook_settle: how a claimed webhook delivery ended.
-- include: _clock.lua
-- KEYS[1] webhook due times   KEYS[2] payloads   KEYS[3] attempts   KEYS[4] dead (hash)
-- KEYS[5] stats (hash: delivered, given_up -> count)
-- ARGV[1] id   ARGV[2] token (the claim's attempt number)   ARGV[3] 'done', 'retry' or 'dead'
-- ARGV[4] store now ('' for Redis's clock)   ARGV[5] delay before the retry (seconds)
-- ARGV[6] for 'dead': the JSON record kept in the dead hash
-- 'done': the receiver answered 2xx; the delivery is removed.
-- 'retry': due again after the delay.   'dead': given up; moved to the dead hash, counted.
-- Returns 1 when settled, 0 when the claim was lost (another sender took it over after the
-- lease ran out, or it was settled already): nothing changes.
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then return 0 end
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
local mode = ARGV[3]
if mode == 'retry' then
  redis.call('ZADD', KEYS[1], clock(ARGV[4]) + tonumber(ARGV[5]), ARGV[1])
  return 1
end
if mode ~= 'done' and mode ~= 'dead' then return redis.error_reply('unknown mode ' .. mode) end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
if mode == 'dead' then
  redis.call('HSET', KEYS[4], ARGV[1], ARGV[6])
  redis.call('HINCRBY', KEYS[5], 'given_up', 1)
else
  redis.call('HINCRBY', KEYS[5], 'delivered', 1)
end
return 1
