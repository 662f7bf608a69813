--[[
  Award points to one user: one atomic call for state, streak, leaderboards and audit outbox.

  KEYS[1] user hash                  KEYS[2] user's day bitmap (bit i = day0 + i)
  KEYS[3] idempotency record         KEYS[4] shard outbox stream
  KEYS[5] all-time board             KEYS[6] activity-type board
  KEYS[7] day board                  KEYS[8] ISO-week board
  KEYS[9] month board                (boards are zsets of negated points; see engine/keys.py)

  ARGV[1]  activity id (uuid)        ARGV[2]  user id
  ARGV[3]  amount (integer > 0, points)
  ARGV[4]  activity type             ARGV[5]  description (<= 255 chars)
  ARGV[6]  created_at (unix ms)      ARGV[7]  local day of created_at (days since 1970-01-01
                                              in the zone of ARGV[8])
  ARGV[8]  time zone the caller assumed for the user ("UTC" when the user has none)
  ARGV[9]  idempotency record TTL (seconds)
  ARGV[10] request fingerprint (stored with the record; compared by the caller on replay)
  ARGV[11] day board expiry (unix s)  ARGV[12] week board expiry  ARGV[13] month board expiry
           (0 = the window's retention has passed: leave that board alone)
  ARGV[14..] rule tables, as tier_and_level.lua describes

  Returns:
    {0, record}   applied; record = fields joined by "\31":
                  fingerprint, old tier, old level, created_at ms, then the user hash after the
                  award as alternating field names and values
    {-1, record}  duplicate activity id: nothing changed; record is the first call's
    {-2, tz}      the user's time zone is tz, not ARGV[8]: nothing changed; call again
]]
local rcall = redis.call

--- @include "toint"
--- @include "threshold_index"
--- @include "tier_and_level"
--- @include "day_bit"
--- @include "run_length"

local amount = tonumber(ARGV[3])
if not amount or amount <= 0 or amount ~= math.floor(amount) then
  return redis.error_reply("ERR award: amount must be a positive integer")
end

local flat = rcall("HGETALL", KEYS[1])
local h = {}
for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end

local tz = h["tz"] or "UTC"
if tz ~= ARGV[8] then return {-2, tz} end

local activity_type = ARGV[4]
local day = tonumber(ARGV[7])
local old_total = tonumber(h["total"] or "0")
local total = old_total + amount
local old_tier, old_level = h["tier"], h["level"]
if not old_tier then
  local t, l = tier_and_level(14, old_total)
  old_tier, old_level = t, toint(l)
end
local tier, level = tier_and_level(14, total)

-- Streak: a pure function of the set of active days; the bitmap keeps that set.
local last = tonumber(h["last_day"] or "")
local cur = tonumber(h["streak"] or "0")
local longest = tonumber(h["longest"] or "0")
local day0 = tonumber(h["day0"] or "")
local new_day0 = day0
local mark = false
if not last then
  cur, last, mark = 1, day, true
  new_day0 = day - day % 8
elseif day > last then
  if day == last + 1 then cur = cur + 1 else cur = 1 end
  last, mark = day, true
elseif day < last and day_bit(KEYS[2], day0, day) == 0 then
  -- a late activity for an earlier day: it may join runs on either side
  local back = run_length(KEYS[2], day0, day, -1, day - day0)
  local fwd = run_length(KEYS[2], day0, day, 1, last - day)
  local run = back + 1 + fwd
  if day + fwd == last then cur = run end
  if run > longest then longest = run end
  mark = true
  if day < day0 then new_day0 = day - day % 8 end
end
if cur > longest then longest = cur end

local nkey, pkey = "n:" .. activity_type, "pts:" .. activity_type
local version = tonumber(h["version"] or "0") + 1
h["total"], h["tier"], h["level"] = toint(total), tier, toint(level)
h["streak"], h["longest"], h["last_day"] = toint(cur), toint(longest), toint(last)
h["day0"], h["version"] = toint(new_day0), toint(version)
h[nkey] = toint(tonumber(h[nkey] or "0") + 1)
h[pkey] = toint(tonumber(h[pkey] or "0") + amount)
if not h["created_at"] then h["created_at"] = ARGV[6] end

local record = {ARGV[10], old_tier, old_level, ARGV[6]}
local hset = {}
for k, v in pairs(h) do
  record[#record + 1] = k
  record[#record + 1] = v
  if k ~= "tz" and k ~= "username" and k ~= "display_name" then
    hset[#hset + 1] = k
    hset[#hset + 1] = v
  end
end
record = table.concat(record, "\31")

-- First write: claim the activity id. A duplicate (e.g. a client's retry) changes nothing.
if not rcall("SET", KEYS[3], record, "NX", "EX", ARGV[9]) then
  return {-1, rcall("GET", KEYS[3])}
end

rcall("HSET", KEYS[1], unpack(hset))

if mark then
  if day0 and new_day0 < day0 then
    -- grow the bitmap towards the past, a whole byte (8 days) at a time
    local old = rcall("GET", KEYS[2]) or ""
    rcall("SET", KEYS[2], string.rep("\0", (day0 - new_day0) / 8) .. old)
  end
  rcall("SETBIT", KEYS[2], day - new_day0, 1)
end

local user, negative = ARGV[2], "-" .. ARGV[3]
rcall("ZINCRBY", KEYS[5], negative, user)
rcall("ZINCRBY", KEYS[6], negative, user)
for i = 7, 9 do
  local expire_at = ARGV[i + 4]
  if expire_at ~= "0" then
    -- a user new on a board may be the first entry of a new key: give it its expiry
    if tonumber(rcall("ZINCRBY", KEYS[i], negative, user)) == -amount then
      rcall("EXPIREAT", KEYS[i], expire_at)
    end
  end
end

rcall("XADD", KEYS[4], "*",
  "e", "award", "id", ARGV[1], "user", user, "amount", ARGV[3], "type", activity_type,
  "desc", ARGV[5], "at", ARGV[6], "total", h["total"], "tier", tier, "level", h["level"],
  "streak", h["streak"], "longest", h["longest"], "last_day", h["last_day"],
  "version", h["version"])

return {0, record}
