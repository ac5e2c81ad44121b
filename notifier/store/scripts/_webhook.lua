-- Helper, included before finish.lua and bounce.lua (not run on its own).
-- webhook(msgkey, bare, state, at, due, payloads): queue the report of a message that has
-- just reached `state` (sent, failed, suppressed or bounced), in the same script as the move,
-- so a crash cannot keep one without the other. The delivery's id is derived from the
-- message key and the state, so the same outcome always has the same webhook-id.
-- `due` is the zset of due times (id -> store time), `payloads` the hash id -> JSON
-- snapshot {type, at, data}; notifier.store.webhooks reads both. The snapshot names no
-- person: the registration system knows its attendees (the notice stays in the message).
local function webhook(msgkey, bare, state, at, due, payloads)
  local f = redis.call('HMGET', msgkey, 'notice', 'kind', 'attempts', 'created_at',
    'updated_at', 'last_reply', 'registration', 'batch', 'bounce_status', 'bounced_at',
    'bounce_reason')
  local conference = ''
  local ok, notice = pcall(cjson.decode, f[1] or '')
  if ok and type(notice) == 'table' and type(notice.conference) == 'string' then
    conference = notice.conference
  end
  local data = {conference = conference, registration_id = f[7] or '', message_key = bare,
    kind = f[2] or '', state = state, smtp_reply = f[6] or '',
    attempts = tonumber(f[3]) or 0, created_at = tonumber(f[4]),
    updated_at = tonumber(f[5]), batch = f[8] or ''}
  if state == 'bounced' then
    data.bounce_status = f[9] or ''
    data.bounced_at = tonumber(f[10])
    data.bounce_reason = f[11] or ''
  end
  local id = 'msg_' .. redis.sha1hex(bare .. '\n' .. state)
  redis.call('HSET', payloads, id, cjson.encode({type = 'message.' .. state, at = at, data = data}))
  redis.call('ZADD', due, 'NX', at, id)
end
