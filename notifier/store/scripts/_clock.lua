-- Helper, included before the scripts that need it (not run on its own).
-- clock(given): the store's time in epoch seconds. A test passes a number of its own in
-- ARGV; '' means Redis's clock, so workers whose clocks disagree still agree on leases.
local function clock(given)
  local n = tonumber(given)
  if n then return n end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1e6
end
