-- pop: take the broker queue's next task message into a consumer's in-flight list; an
-- ingest task is numbered in publication order as it leaves (the queue is a FIFO list, so
-- the order tasks leave it is the order they were published), and its registration learns
-- that the task is on its way, so that its events apply in that order (notifier.tasks).
-- include: _base64.lua _move.lua
-- KEYS[1] the queue (kombu's list)   KEYS[2] the consumer's in-flight list
-- KEYS[3] the publication-order counter
-- ARGV[1] the stamp key prefix (+ delivery tag: the number a task was given)
-- ARGV[2] seconds a stamp and a registration's pending set are kept
-- ARGV[3] the ingest task's name
-- ARGV[4] keys.template(keys.registration_pending, 2)
-- Returns false when the queue is empty; else {message, number or 0, the registration's
-- pending set or ''}. A message that comes back (restored) keeps its number.
local item = redis.call('RPOPLPUSH', KEYS[1], KEYS[2])
if not item then return false end
local ok, msg = pcall(cjson.decode, item)
if not ok or type(msg) ~= 'table' or type(msg.headers) ~= 'table'
    or msg.headers.task ~= ARGV[3] or type(msg.properties) ~= 'table'
    or type(msg.properties.delivery_tag) ~= 'string' then
  return {item, 0, ''}
end
local stamp = ARGV[1] .. msg.properties.delivery_tag
local n = redis.call('GET', stamp)
if not n then
  n = redis.call('INCR', KEYS[3])
  redis.call('SET', stamp, n, 'EX', ARGV[2])
end
n = tonumber(n)
-- The event, from the task's body ([[event], {}, {...}], base64 JSON), for its registration.
local pending = ''
local decoded, task = pcall(cjson.decode, unbase64(type(msg.body) == 'string' and msg.body or ''))
local event = decoded and type(task) == 'table' and type(task[1]) == 'table' and task[1][1]
if type(event) == 'table' and type(event.registration) == 'table'
    and type(event.conference) == 'string' and type(event.registration.id) == 'string' then
  pending = fill(ARGV[4], event.conference, event.registration.id)
  redis.call('ZADD', pending, n, n)
  redis.call('EXPIRE', pending, ARGV[2])
end
return {item, n, pending}
