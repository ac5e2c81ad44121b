-- finish: record how a claimed send ended.
-- include: _clock.lua _move.lua _order.lua _webhook.lua
-- KEYS[1] the message hash   KEYS[2] global counts   KEYS[3] sending index
-- KEYS[4] retry index        KEYS[5] unknown set     KEYS[6] failed set
-- KEYS[7] suppressed set     KEYS[8] bounce ids (hash: id -> message key)
-- KEYS[9] webhook due times  KEYS[10] webhook payloads (notifier.store.webhooks)
-- ARGV[1] bare message key   ARGV[2] store now ('' for Redis's clock)
-- ARGV[3] token (the claim's attempt number)   ARGV[4] the state it ends in
-- ARGV[5] SMTP reply (for 'suppressed': the suppression's reason)
-- ARGV[6] delay before a retry (seconds)
-- ARGV[7] resends allowed after an unknown outcome
-- ARGV[8] keys.template(keys.batch_counts), for messages created by an earlier version
-- ARGV[9] the envelope recipient ('' keeps what is stored): a reminder's notice names a
--   placeholder, and a bounce must learn the real address from the message
-- ARGV[10] the message's bounce id
-- ARGV[11] '1' when webhooks are configured: a message that ends sent, failed or suppressed
--   then also gets its webhook delivery queued (see _webhook.lua)
-- ARGV[12] the invite UID the mail carried ('' for none)
-- ARGV[13] JSON of what it carried (plan.Carried; '' for nothing to record): recorded on the
--   seat only when the relay has the mail (sent, or unknown: it may have it)
-- ARGV[14] '1' when the attempt does not count (the relay asked us to wait: a rate limit,
--   greylisting, its quota): the attempts go back by one
-- 'unknown' becomes 'retrying' while resends are left. A message that settles leaves its
-- UID's order list, and the next message in it is handed on.
-- Returns {0} when the claim was lost, else {1 when recorded or 2 when an unknown outcome
-- became a retry, the key of the message handed on or ''}.
-- What an invite carried, recorded on its seat once the relay has it: only the entry of
-- this UID changes (the rest of the seat may have changed since the mail was prepared).
local function carried(msghash, uid, record)
  local seat_key = redis.call('HGET', msghash, 'seat_key')
  if not seat_key or seat_key == '' then return end
  local raw = redis.call('GET', seat_key)
  if not raw then return end
  local seat = cjson.decode(raw)
  if type(seat.carried) ~= 'table' then seat.carried = {} end
  seat.carried[uid] = cjson.decode(record)
  redis.call('SET', seat_key, cjson.encode(seat))
end

local st = redis.call('HGET', KEYS[1], 'state')
if st ~= 'sending' then return {0} end
if redis.call('HGET', KEYS[1], 'attempts') ~= ARGV[3] then return {0} end
local now = clock(ARGV[2])
local to = ARGV[4]
local result = 1
if to == 'unknown' then
  local seen = redis.call('HINCRBY', KEYS[1], 'unknowns', 1)
  if seen <= tonumber(ARGV[7]) then to = 'retrying'; result = 2 end
end
redis.call('HSET', KEYS[1], 'state', to, 'last_reply', ARGV[5], 'updated_at', now)
if ARGV[9] ~= '' then redis.call('HSET', KEYS[1], 'sent_to', ARGV[9]) end
move(KEYS[1], KEYS[2], ARGV[8], 'sending', to)
redis.call('ZREM', KEYS[3], ARGV[1])
if to == 'failed' then redis.call('SADD', KEYS[6], ARGV[1]) end
if to == 'unknown' then redis.call('SADD', KEYS[5], ARGV[1]) end
if to == 'suppressed' then redis.call('SADD', KEYS[7], ARGV[1]) end
if to == 'retrying' then redis.call('ZADD', KEYS[4], now + tonumber(ARGV[6]), ARGV[1]) end
if ARGV[14] == '1' then redis.call('HINCRBY', KEYS[1], 'attempts', -1) end
-- A message the relay may have can bounce: its id must lead back to it, also when it was
-- created before create.lua wrote the id (queued across the upgrade).
if to == 'sent' or to == 'unknown' or result == 2 then
  redis.call('HSET', KEYS[8], ARGV[10], ARGV[1])
  if ARGV[13] and ARGV[13] ~= '' then carried(KEYS[1], ARGV[12], ARGV[13]) end
end
local handed = ''
if to ~= 'retrying' then handed = release(KEYS[1], ARGV[1], KEYS[4], now) end
if ARGV[11] == '1' and (to == 'sent' or to == 'failed' or to == 'suppressed') then
  webhook(KEYS[1], ARGV[1], to, now, KEYS[9], KEYS[10])
end
return {result, handed}
