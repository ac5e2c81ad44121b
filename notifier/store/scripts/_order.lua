-- Helpers for the order lists of invite UIDs (keys.uid_order), included before the scripts
-- that name this file (not run on their own). Mails for one UID go to the relay one at a
-- time, in the order of the list: only its first message may be claimed.

-- The message hash of a bare message key, from a message hash and its bare key.
local function message_hash(known_hash, known_key, key)
  return string.sub(known_hash, 1, #known_hash - #known_key) .. key
end

local SETTLED = {sent = true, failed = true, skipped = true, unknown = true,
  bounced = true, suppressed = true}

-- The list's first message that has not settled; entries of settled or vanished messages
-- (a purge, a restart without data) are dropped on the way, so none blocks the list.
local function order_head(order, known_hash, known_key)
  while true do
    local head = redis.call('LINDEX', order, 0)
    if not head then return false end
    local st = redis.call('HGET', message_hash(known_hash, known_key, head), 'state')
    if st and not SETTLED[st] then return head end
    redis.call('LREM', order, 1, head)
  end
end

-- release(msghash, key, retry, now): the message leaves its UID's list; the next one, if
-- any, is made due in the sweeper's retry index at once (so it goes even if the caller
-- dies before handing it on) and returned ('' for none).
local function release(msghash, key, retry, now)
  local order = redis.call('HGET', msghash, 'order_key')
  if not order or order == '' then return '' end
  redis.call('LREM', order, 1, key)
  local nxt = order_head(order, msghash, key)
  if not nxt then return '' end
  redis.call('ZADD', retry, now, nxt)
  return nxt
end
