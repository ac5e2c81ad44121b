-- count: add one to a counter of a statistics hash (keys.EVENT_STATS, keys.SMTP_STATS). A
-- script, not a plain HINCRBY, so that it travels in the delivery path's shared pipelines
-- (pipelining.py runs scripts only) together with the finish it belongs to.
-- KEYS[1] the statistics hash   ARGV[1] the field
-- Returns the field's new count.
return redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
