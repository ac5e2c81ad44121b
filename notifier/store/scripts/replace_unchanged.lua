-- replace_unchanged: change a hash field only if it still holds what the caller read (the
-- purges' compare-and-set, so that an entry written meanwhile is never lost).
-- KEYS[1] the hash
-- ARGV[1] the field   ARGV[2] its value as read   ARGV[3] the new value ('' deletes the field)
-- Returns 1 when changed, 0 when the field changed meanwhile or is gone.
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
end
return 1
