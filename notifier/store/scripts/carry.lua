-- carry: record on a seat what an invite mail is about to carry (compare-and-set).
-- KEYS[1] the seat
-- ARGV[1] the seat's JSON as the mail was prepared against ('' for no seat)
-- ARGV[2] the seat's JSON with the invite's SEQUENCE and facts recorded
-- Returns {1} when stored; {0, the seat's JSON now or ''} when the seat changed meanwhile
-- (an event was applied, or another mail recorded its invite): prepare again against it.
local now = redis.call('GET', KEYS[1]) or ''
if now ~= ARGV[1] then return {0, now} end
redis.call('SET', KEYS[1], ARGV[2])
return {1}
