-- suppress: put an address on the suppression list, keeping the newest entry.
-- KEYS[1] suppressions (hash: normalised address -> JSON {reason, at, message})
-- ARGV[1] the normalised address   ARGV[2] the entry's JSON   ARGV[3] its time (epoch s)
-- An entry already there is replaced unless it is newer than this one (reports can be
-- handled out of order: a mailbox poll may read an old bounce after a fresh complaint).
-- Returns 1 when the address was not suppressed before, 0 when it was.
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  local ok, entry = pcall(cjson.decode, old)
  if ok and type(entry) == 'table' and tonumber(entry.at) and tonumber(entry.at) > tonumber(ARGV[3]) then
    return 0
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if old then return 0 end
return 1
