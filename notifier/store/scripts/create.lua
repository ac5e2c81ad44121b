-- create: add a queued message unless its key exists.
-- include: _clock.lua
-- KEYS[1] the message hash        KEYS[2] global counts     KEYS[3] queued index
-- KEYS[4] bounce ids (hash: id -> message key)
-- KEYS[5] its registration's message index (set)
-- KEYS[6] its batch's counts      KEYS[7] its batch's members   (6 and 7 only in a batch)
-- ARGV[1] bare message key   ARGV[2] created at (for people)   ARGV[3] notice JSON
-- ARGV[4] batch id ('' for none)   ARGV[5] registration id   ARGV[6] kind
-- ARGV[7] store now ('' for Redis's clock)   ARGV[8] seat key ('' unless the message names its seat)
-- ARGV[9] the message's bounce id (bounces.token.message_id), which its return path carries
-- ARGV[10] its invite UID's order list ('' for none): a message whose invite UID is known
--   when it is planned joins the end of it, so mails for one UID reach the relay in the
--   order they were planned (claim.lua lets only the list's first message go)
-- Returns 1 when created, 0 when the message existed (nothing changes).
-- The full names of the batch counts and seat keys are stored in the message, so the other
-- scripts read them instead of building keys themselves.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local batch_counts = KEYS[6] or ''
redis.call('HSET', KEYS[1], 'state', 'queued', 'notice', ARGV[3], 'attempts', 0,
  'created_at', ARGV[2], 'updated_at', ARGV[2], 'batch', ARGV[4],
  'registration', ARGV[5], 'kind', ARGV[6], 'last_reply', '',
  'batch_counts_key', batch_counts, 'seat_key', ARGV[8])
local order = ARGV[10] or ''
if order ~= '' then
  redis.call('HSET', KEYS[1], 'order_key', order)
  redis.call('RPUSH', order, ARGV[1])
end
redis.call('HINCRBY', KEYS[2], 'queued', 1)
if batch_counts ~= '' then
  redis.call('HINCRBY', batch_counts, 'queued', 1)
  redis.call('SADD', KEYS[7], ARGV[1])
end
redis.call('ZADD', KEYS[3], clock(ARGV[7]), ARGV[1])
redis.call('HSET', KEYS[4], ARGV[9], ARGV[1])
redis.call('SADD', KEYS[5], ARGV[1])
return 1
