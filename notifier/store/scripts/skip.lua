-- skip: settle a message that was not sent as 'skipped' (the retention purge: it would
-- otherwise be sent to the placeholder address), with its people already anonymised.
-- include: _move.lua _order.lua
-- KEYS[1] the message hash   KEYS[2] global counts   KEYS[3] queued index
-- KEYS[4] retry index        KEYS[5] sending index
-- ARGV[1] bare message key   ARGV[2] now (epoch seconds; stored as given in updated_at)
-- ARGV[3] the notice JSON to keep   ARGV[4] the reply to record
-- ARGV[5] keys.template(keys.batch_counts), for messages created by an earlier version
-- The message leaves its UID's order list (the next one in it is handed to the sweeper).
-- Returns 1 when settled, 0 when the message is settled already or held by a claim whose
-- lease runs past now (nothing changes).
local st = redis.call('HGET', KEYS[1], 'state')
if st ~= 'queued' and st ~= 'retrying' and st ~= 'sending' then return 0 end
if st == 'sending' then
  local lease = redis.call('HGET', KEYS[1], 'lease_until')
  if lease and tonumber(lease) > tonumber(ARGV[2]) then return 0 end
end
redis.call('HSET', KEYS[1], 'notice', ARGV[3], 'last_reply', ARGV[4], 'state', 'skipped',
  'updated_at', ARGV[2])
move(KEYS[1], KEYS[2], ARGV[5], st, 'skipped')
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
release(KEYS[1], ARGV[1], KEYS[4], tonumber(ARGV[2]))
redis.call('HDEL', KEYS[1], 'order_key')  -- it names the invite UID, derived from an address
return 1
