--[[
  Award points to one user: one atomic call for state, streak, leaderboards and audit outbox.

  KEYS[1] user hash                  KEYS[2] user's day bitmap (bit i = day0 + i)
  KEYS[3] idempotency record         KEYS[4] shard outbox stream
  KEYS[5] all-time board             KEYS[6] activity-type board
  KEYS[7] day board                  KEYS[8] ISO-week board
  KEYS[9] month board                (boards are zsets of negated points; see engine/keys.py)
  KEYS[10] shard's drain flag (set while a drain job for the shard is queued)

  ARGV[1]  activity id (uuid)        ARGV[2]  user id
  ARGV[3]  amount (integer > 0, points)
  ARGV[4]  activity type             ARGV[5]  description (<= 255 chars)
  ARGV[6]  created_at (unix ms)      ARGV[7]  local day of created_at (days since 1970-01-01
                                              in the zone of ARGV[8])
  ARGV[8]  time zone the caller assumed for the user ("UTC" when the user has none)
  ARGV[9]  idempotency record TTL (seconds)
  ARGV[10] request fingerprint (stored in the record; compared by the caller on replay)
  ARGV[11] day board expiry (unix s)  ARGV[12] week board expiry  ARGV[13] month board expiry
           (0 = the window's retention has passed: leave that board alone)
  ARGV[14] how long the drain flag lives if no drain job clears it (seconds)
  RULES (defined by the engine ahead of this source, so each rule set is its own script):
  tier_names, tier_at, level_at, level_step; see includes/tier_and_level.lua

  Returns:
    {0, record, flag}  applied; flag = 1 when this award raised the drain flag (the caller then
                  enqueues a drain job), else 0; record = these fields joined by "\31":
                  fingerprint, created_at ms,
                  total, current streak, longest streak, last active day, version, count and
                  points of this activity type, quizzes, projects created, comments, username,
                  display name (the last two "" when unset)
    {-1, record}  duplicate activity id: nothing changed; record is the first call's
    {-2, tz}      the user's time zone is tz, not ARGV[8]: nothing changed; call again

  Outbox entry fields: id, user, amount, type, desc, at (ms), tier (tier after the award), and
  state = "total level streak longest last_day version" after the award.
]]
local rcall = redis.call

--- @define RULES
--- @include "threshold_index"
--- @include "tier_and_level"
--- @include "day_bit"
--- @include "run_length"

local amount = tonumber(ARGV[3])
if not amount or amount <= 0 or amount ~= math.floor(amount) then
  return redis.error_reply("ERR award: amount must be a positive integer")
end

local activity_type = ARGV[4]
local nkey, pkey = "n:" .. activity_type, "pts:" .. activity_type
local h = rcall("HMGET", KEYS[1], "tz", "total", "tier", "level", "streak", "longest",
  "last_day", "day0", "version", nkey, pkey, "n:quiz_complete", "n:project_create",
  "n:comment", "username", "display_name")

local tz = h[1] or "UTC"
if tz ~= ARGV[8] then return {-2, tz} end

local total = tonumber(h[2] or "0") + amount
local tier, level = tier_and_level(total)
level = tostring(level)

-- Streak: a pure function of the set of active days; the bitmap keeps that set.
local day = tonumber(ARGV[7])
local last = tonumber(h[7] or "")
local cur = tonumber(h[5] or "0")
local longest = tonumber(h[6] or "0")
local day0 = tonumber(h[8] or "")
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

-- Each new number becomes a string once, reused by the record, the hash and the outbox (number
-- formatting is a large share of a script's own time); unchanged values stay as read.
local total_s = tostring(total)
local version_s = tostring(tonumber(h[9] or "0") + 1)
local count_s = tostring(tonumber(h[10] or "0") + 1)
local points_s = tostring(tonumber(h[11] or "0") + amount)
local cur_s, longest_s, last_s = h[5], h[6], h[7]
if mark then cur_s, longest_s, last_s = tostring(cur), tostring(longest), tostring(last) end
local quizzes, projects, comments = h[12] or "0", h[13] or "0", h[14] or "0"
if activity_type == "quiz_complete" then quizzes = count_s
elseif activity_type == "project_create" then projects = count_s
elseif activity_type == "comment" then comments = count_s end

local record = table.concat({ARGV[10], ARGV[6], total_s, cur_s, longest_s, last_s, version_s,
  count_s, points_s, quizzes, projects, comments, h[15] or "", h[16] or ""}, "\31")

-- First write: claim the activity id. A duplicate (e.g. a client's retry) changes nothing.
if not rcall("SET", KEYS[3], record, "NX", "EX", ARGV[9]) then
  return {-1, rcall("GET", KEYS[3])}
end

local fields = {"total", total_s, "version", version_s, nkey, count_s, pkey, points_s}
if tier ~= h[3] then fields[#fields + 1] = "tier"; fields[#fields + 1] = tier end
if level ~= h[4] then fields[#fields + 1] = "level"; fields[#fields + 1] = level end
if mark then
  for _, v in ipairs({"streak", cur_s, "longest", longest_s, "last_day", last_s,
                      "day0", tostring(new_day0)}) do
    fields[#fields + 1] = v
  end
  if not day0 then
    fields[#fields + 1] = "created_at"; fields[#fields + 1] = ARGV[6]
  elseif new_day0 < day0 then
    -- grow the bitmap towards the past, a whole byte (8 days) at a time
    local old = rcall("GET", KEYS[2]) or ""
    rcall("SET", KEYS[2], string.rep("\0", (day0 - new_day0) / 8) .. old)
  end
  rcall("SETBIT", KEYS[2], day - new_day0, 1)
end
rcall("HSET", KEYS[1], unpack(fields))

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

rcall("XADD", KEYS[4], "*", "id", ARGV[1], "user", user, "amount", ARGV[3],
  "type", activity_type, "desc", ARGV[5], "at", ARGV[6], "tier", tier,
  "state", table.concat({total_s, level, cur_s, longest_s, last_s, version_s}, " "))

-- raise the drain flag; whoever raises it enqueues the shard's one drain job
local flag = rcall("SET", KEYS[10], "1", "NX", "EX", ARGV[14]) and 1 or 0
return {0, record, flag}
