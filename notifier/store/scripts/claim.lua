-- claim: take a queued or retrying message (or one whose lease ran out) for sending.
-- include: _clock.lua _move.lua _order.lua
-- KEYS[1] the message hash   KEYS[2] global counts   KEYS[3] sending index
-- KEYS[4] retry index        KEYS[5] queued index
-- ARGV[1] bare message key   ARGV[2] store now ('' for Redis's clock)   ARGV[3] lease seconds
-- ARGV[4] keys.template(keys.batch_counts)   ARGV[5] keys.template(keys.seat)
--   (the templates only for messages created before the key names were stored in them)
-- Returns {attempt, notice JSON, seat JSON or '', seat key or ''} when claimed,
-- {0} when it is settled or held by a live claim, {-1} when there is no such message,
-- {-2} when an earlier message for its invite UID has not settled yet: it waits, queued,
-- until finish.lua hands it on (the sweeper's queued index is the fallback).
local now = clock(ARGV[2])
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return {-1} end
if st == 'sending' then
  local lease = redis.call('HGET', KEYS[1], 'lease_until')
  if lease and tonumber(lease) > now then return {0} end
elseif st ~= 'queued' and st ~= 'retrying' then
  return {0}
end
local order = redis.call('HGET', KEYS[1], 'order_key')
if order and order ~= '' then
  local head = order_head(order, KEYS[1], ARGV[1])
  if not head then
    redis.call('RPUSH', order, ARGV[1])  -- the list was lost (a restart without data)
  elseif head ~= ARGV[1] then
    if not redis.call('LPOS', order, ARGV[1]) then redis.call('RPUSH', order, ARGV[1]) end
    return {-2}
  end
end
local n = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
local untl = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'state', 'sending', 'updated_at', now, 'lease_until', untl)
if st ~= 'sending' then move(KEYS[1], KEYS[2], ARGV[4], st, 'sending') end
redis.call('ZADD', KEYS[3], untl, ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
local notice = redis.call('HGET', KEYS[1], 'notice')
-- A message that names its seat (a reminder, an update, an invite) needs the seat as it is
-- now: hand it over in the same trip.
local seat_key = redis.call('HGET', KEYS[1], 'seat_key')
if not seat_key or seat_key == '' then
  if redis.call('HGET', KEYS[1], 'kind') ~= 'reminder' then return {n, notice, '', ''} end
  local d = cjson.decode(notice)
  seat_key = fill(ARGV[5], d.conference, d.registration_id)
end
local seat = redis.call('GET', seat_key)
return {n, notice, seat or '', seat_key}
