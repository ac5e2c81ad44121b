-- Helpers, included before the scripts that name this file (not run on their own).

-- fill(template, ...): a key from a keys.py template (keys.template), whose variable parts
-- are '{}'. Only for messages created before the full key names were stored in them.
local function fill(template, ...)
  local parts = {...}
  local i = 0
  return (string.gsub(template, '{}', function() i = i + 1; return parts[i] end))
end

-- The message's batch counts key ('' outside a batch): the full name stored at creation
-- (field batch_counts_key). A message created by an earlier version lacks the field; its
-- key is built from the stored batch id and `template`, keys.template(keys.batch_counts).
local function batch_counts_key(msgkey, template)
  local bc = redis.call('HGET', msgkey, 'batch_counts_key')
  if bc then return bc end
  local b = redis.call('HGET', msgkey, 'batch')
  if b and b ~= '' then return fill(template, b) end
  return ''
end

-- move(msgkey, counts, template, from, to): the message leaves state `from` for `to` in the
-- global per-state counters (`counts`) and in its batch's, if it has one.
local function move(msgkey, counts, template, from, to)
  redis.call('HINCRBY', counts, from, -1)
  redis.call('HINCRBY', counts, to, 1)
  local bc = batch_counts_key(msgkey, template)
  if bc ~= '' then
    redis.call('HINCRBY', bc, from, -1)
    redis.call('HINCRBY', bc, to, 1)
  end
end
