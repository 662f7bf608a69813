--[[
  Grant streak freezes to one user (an operator's gift), capped at the rules' maximum held.

  KEYS[1] user hash
  ARGV[1] freezes to grant (integer >= 1)
  ARGV[2] the most a user may hold (RULES freezes_max; 0 = freezes off: nothing is granted)

  Returns: {granted, user hash as HGETALL gives it}; granted = how many the user gained (0
  when already at the cap). The user hash's fz field holds the freezes; nothing else changes
  (no version, no outbox entry: freezes are not points).
]]
local rcall = redis.call
local user_key = KEYS[1]
local count, cap = tonumber(ARGV[1]), tonumber(ARGV[2])
if not count or count < 1 or count ~= math.floor(count) then
  return redis.error_reply("ERR grant_freezes: count must be a positive integer")
end

local held = tonumber(rcall("HGET", user_key, "fz") or "0")
local new = math.min(held + count, cap)
if new < held then new = held end  -- a lowered cap takes nothing away
if new > held then rcall("HSET", user_key, "fz", tostring(new)) end
return {new - held, rcall("HGETALL", user_key)}
