--[[
  Grant streak freezes to one user (an operator's gift), capped at the rules' maximum held.

  KEYS[1] user hash                  KEYS[2] shard outbox stream
  KEYS[3] shard's drain flag
  ARGV[1] freezes to grant (integer >= 1)
  ARGV[2] the most a user may hold (RULES freezes_max; 0 = freezes off: nothing is granted)
  ARGV[3] how long the drain flag lives if no drain job clears it (seconds)
  ARGV[4] user id

  Returns: {granted, user hash as HGETALL gives it, flag}; granted = how many the user gained
  (0 when already at the cap); flag = 1 when this call raised the drain flag. The user hash's
  fz field holds the freezes; a grant appends an outbox entry (e = freeze, held), so SQL
  knows what the user holds (no version: freezes are not points). {-1} for a user with no
  state (nothing changed).
]]
--- @include "drain_flag"

local rcall = redis.call
local user_key, outbox_key, flag_key = KEYS[1], KEYS[2], KEYS[3]
local count, cap = tonumber(ARGV[1]), tonumber(ARGV[2])
if not count or count < 1 or count ~= math.floor(count) then
  return redis.error_reply("ERR grant_freezes: count must be a positive integer")
end

local h = rcall("HMGET", user_key, "total", "fz")
if not h[1] then return {-1} end
local held = tonumber(h[2] or "0")
local new = math.min(held + count, cap)
if new < held then new = held end  -- a lowered cap takes nothing away
local flag = 0
if new > held then
  rcall("HSET", user_key, "fz", tostring(new))
  rcall("XADD", outbox_key, "*", "e", "freeze", "user", ARGV[4], "held", tostring(new))
  flag = raise_drain_flag(flag_key, ARGV[3])
end
return {new - held, rcall("HGETALL", user_key), flag}
