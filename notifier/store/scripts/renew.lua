-- renew: a claim still held by this attempt gets a new lease (a send waiting long for the
-- reply to the final dot stays ours).
-- include: _clock.lua
-- KEYS[1] the message hash   KEYS[2] sending index
-- ARGV[1] bare message key   ARGV[2] store now ('' for Redis's clock)
-- ARGV[3] token (the claim's attempt number)   ARGV[4] lease seconds
-- Returns 1 when renewed, 0 when the claim is settled or lost.
if redis.call('HGET', KEYS[1], 'state') ~= 'sending' then return 0 end
if redis.call('HGET', KEYS[1], 'attempts') ~= ARGV[3] then return 0 end
local untl = clock(ARGV[2]) + tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 'lease_until', untl)
redis.call('ZADD', KEYS[2], untl, ARGV[1])
return 1
