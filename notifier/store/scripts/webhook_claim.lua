-- webhook_claim: take due webhook deliveries for sending, each under a lease.
-- include: _clock.lua
-- KEYS[1] webhook due times (zset: id -> due, store time)   KEYS[2] payloads (hash: id -> JSON)
-- KEYS[3] attempts (hash: id -> number of claims so far)
-- ARGV[1] store now ('' for Redis's clock)   ARGV[2] at most this many   ARGV[3] lease seconds
-- A claimed delivery's due time becomes the end of its lease: while the sender lives it
-- settles it first (done, rescheduled or given up); if the sender dies the delivery is due
-- again once the lease runs out, and another sender takes it. Two senders never hold one
-- at the same moment.
-- Returns {now, id1, attempt1, payload1, id2, ...}; the attempt number is the claim's token.
local now = clock(ARGV[1])
local found = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local out = {tostring(now)}
for _, id in ipairs(found) do
  local payload = redis.call('HGET', KEYS[2], id)
  if payload then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), id)
    local n = redis.call('HINCRBY', KEYS[3], id, 1)
    out[#out + 1] = id
    out[#out + 1] = n
    out[#out + 1] = payload
  else
    redis.call('ZREM', KEYS[1], id)  -- nothing to send: never due again
  end
end
return out
