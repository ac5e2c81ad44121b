-- turn: a claimed message that goes to whoever holds its seat when it is sent (a reminder,
-- an update) takes its turn in the order list of that holder's invite UID, so that it
-- reaches the relay after every mail planned earlier for that UID.
-- include: _clock.lua _move.lua _order.lua
-- KEYS[1] the message hash   KEYS[2] the seat   KEYS[3] the UID's order list
-- KEYS[4] global counts      KEYS[5] sending index   KEYS[6] queued index
-- KEYS[7] retry index
-- ARGV[1] bare message key   ARGV[2] the seat's JSON the UID was read from
-- ARGV[3] the claim's attempt number   ARGV[4] store now ('' for Redis's clock)
-- ARGV[5] keys.template(keys.batch_counts), for messages created by an earlier version
-- Returns {1, handed on} when the message holds the turn; {0, the seat now or ''} when the
-- seat changed meanwhile (read the holder again); {2, handed on} when an earlier message
-- for the UID has not settled: the message is put back, queued, its attempt not counted,
-- and finish.lua hands it on later; {3} when the claim was lost. `handed on` is the key of
-- a message that can go now because this one left another UID's list ('' for none).
if redis.call('HGET', KEYS[1], 'state') ~= 'sending' then return {3} end
if redis.call('HGET', KEYS[1], 'attempts') ~= ARGV[3] then return {3} end
local seat = redis.call('GET', KEYS[2]) or ''
if seat ~= ARGV[2] then return {0, seat} end
local now = clock(ARGV[4])
local handed = ''
local held = redis.call('HGET', KEYS[1], 'order_key')
if held and held ~= '' and held ~= KEYS[3] then
  -- The seat changed hands since this message took a turn: leave that UID's list.
  handed = release(KEYS[1], ARGV[1], KEYS[7], now)
end
redis.call('HSET', KEYS[1], 'order_key', KEYS[3])
local head = order_head(KEYS[3], KEYS[1], ARGV[1])
if not head then
  redis.call('RPUSH', KEYS[3], ARGV[1])
  return {1, handed}
end
if head == ARGV[1] then return {1, handed} end
if not redis.call('LPOS', KEYS[3], ARGV[1]) then redis.call('RPUSH', KEYS[3], ARGV[1]) end
redis.call('HINCRBY', KEYS[1], 'attempts', -1)
redis.call('HSET', KEYS[1], 'state', 'queued', 'updated_at', now)
move(KEYS[1], KEYS[4], ARGV[5], 'sending', 'queued')
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('ZADD', KEYS[6], now, ARGV[1])
return {2, handed}
