-- bounce: what a delivery report said about a message the relay had accepted.
-- include: _move.lua _webhook.lua
-- KEYS[1] the message hash   KEYS[2] global counts   KEYS[3] bounced set
-- KEYS[4] unknown set        KEYS[5] webhook due times   KEYS[6] webhook payloads
-- ARGV[1] bare message key   ARGV[2] 'bounced' (a hard failure) or 'delayed'
-- ARGV[3] the report's status (e.g. 5.1.1)   ARGV[4] its diagnostic
-- ARGV[5] now (epoch seconds; stored as given)
-- ARGV[6] keys.template(keys.batch_counts), for messages created by an earlier version
-- ARGV[7] '1' when webhooks are configured: a move to 'bounced' also queues its webhook
--   delivery (see _webhook.lua); a second report queues nothing
-- ARGV[8] the report's reason (notifier.bounces.reason), kept as bounce_reason or
--   delay_reason ('' from a caller of an earlier version)
-- Only a message the relay accepted ('sent') or may have ('unknown') is changed; any other
-- is left as it is, so a report can never resurrect or settle a message still on its way.
-- 'bounced': the message moves to 'bounced' with bounce_status, bounce_diagnostic and
--   bounced_at (counters global and per batch; from 'unknown' it leaves the unknown set).
--   Returns 'bounced' when moved or already bounced (a second report moves nothing), else
--   the state found ('missing' when there is no such message).
-- 'delayed': delay_status, delay_diagnostic and delayed_at are recorded (the newest report
--   wins), the state stays. Returns 'delayed' when recorded, else the state found.
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return 'missing' end
local mode = ARGV[2]
if st ~= 'sent' and st ~= 'unknown' then return st end
if mode == 'delayed' then
  redis.call('HSET', KEYS[1], 'delay_status', ARGV[3], 'delay_diagnostic', ARGV[4],
    'delayed_at', ARGV[5], 'delay_reason', ARGV[8] or '')
  return 'delayed'
end
if mode ~= 'bounced' then return redis.error_reply('unknown mode ' .. mode) end
redis.call('HSET', KEYS[1], 'state', 'bounced', 'bounce_status', ARGV[3],
  'bounce_diagnostic', ARGV[4], 'bounced_at', ARGV[5], 'updated_at', ARGV[5],
  'bounce_reason', ARGV[8] or '')
move(KEYS[1], KEYS[2], ARGV[6], st, 'bounced')
redis.call('SADD', KEYS[3], ARGV[1])
if st == 'unknown' then redis.call('SREM', KEYS[4], ARGV[1]) end
if ARGV[7] == '1' then webhook(KEYS[1], ARGV[1], 'bounced', tonumber(ARGV[5]), KEYS[5], KEYS[6]) end
return 'bounced'
