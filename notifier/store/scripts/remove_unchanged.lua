-- remove_unchanged: delete a dead letter only if it is still the record a replay read (the
-- same event failing again meanwhile, with a new time, is kept).
-- KEYS[1] dead letters (hash: id -> JSON record)   KEYS[2] their order (zset: id -> time)
-- ARGV[1] dead-letter id   ARGV[2] the record as read
-- Returns 1 when removed, 0 when it changed or is gone.
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 1
end
return 0
