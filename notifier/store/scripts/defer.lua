-- defer: put an unclaimed message back until a due time, without counting an attempt.
-- include: _clock.lua _move.lua
-- KEYS[1] the message hash   KEYS[2] global counts   KEYS[3] retry index
-- KEYS[4] queued index
-- ARGV[1] bare message key   ARGV[2] store now ('' for Redis's clock)
-- ARGV[3] due (store time, epoch seconds)
-- ARGV[4] keys.template(keys.batch_counts), for messages created by an earlier version
-- Returns 1 when deferred, 0 when the message was neither queued nor retrying.
local st = redis.call('HGET', KEYS[1], 'state')
if st ~= 'queued' and st ~= 'retrying' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'retrying', 'updated_at', clock(ARGV[2]))
if st ~= 'retrying' then move(KEYS[1], KEYS[2], ARGV[4], st, 'retrying') end
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
return 1
