-- accept: put events' tasks on the broker's queue and mark them accepted, in one step, for
-- the HTTP API when the broker is this Redis. An event whose id was applied (its event
-- marker) or accepted before is skipped; so is an id that comes twice in one call.
-- KEYS[1] the queue (a list; kombu's Redis transport pops from its other end)
-- KEYS[2k], KEYS[2k+1] the k-th event's marker (keys.event) and accepted key (keys.accepted)
-- ARGV[1] seconds an accepted key lives   ARGV[k+1] the k-th event's task message (JSON)
-- Returns per event: 1 accepted (pushed and marked), 0 duplicate.
-- The push comes before the mark: if a write fails between them (Redis out of memory),
-- the task is queued but unmarked, and the client's retry queues it again, which the
-- worker's own idempotency makes harmless; never marked but not queued.
local ttl = ARGV[1]
local out = {}
for k = 1, (#KEYS - 1) / 2 do
  local marker, accepted = KEYS[2 * k], KEYS[2 * k + 1]
  if redis.call('EXISTS', marker, accepted) > 0 then
    out[k] = 0
  else
    redis.call('LPUSH', KEYS[1], ARGV[k + 1])
    redis.call('SET', accepted, '1', 'EX', ttl)
    out[k] = 1
  end
end
return out
