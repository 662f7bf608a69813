--[[
  Award points: a batch of N >= 1 awards to users of one shard, in one atomic call. Each award
  updates its user's state and streak, claims its activity id, appends to the shard's outbox and
  counts in the all-time, activity-type, day, ISO-week and month boards. Awards apply in order;
  each succeeds or is refused on its own (a refused award writes nothing).

  KEYS[1] shard outbox stream        KEYS[2] all-time board
  KEYS[3 .. 2+B] the other boards the batch touches (zsets of negated points; engine/keys.py)
  KEYS[3+B+3(i-1) ..] for award i: user hash, user's day bitmap, idempotency record

  ARGV[1] N, the number of awards    ARGV[2] B, the number of boards in KEYS[3 .. 2+B]
  ARGV[3 + 20(i-1) ..] for award i, 20 values:
     1 activity id (uuid)          2 user id             3 amount (integer > 0, points)
     4 activity type               5 description         6 created_at (unix ms)
     7 local day of created_at (days since 1970-01-01 in the zone of 8)
     8 time zone the caller assumed for the user ("UTC" when the user has none)
     9 idempotency record TTL (s) 10 request fingerprint (kept in the record)
    11 index (1..B) of its activity-type board
    12-14 day board: index (0 = its retention has passed: skip it), period id, expiry (unix s)
    15-17 ISO-week board, the same    18-20 month board, the same

  RULES (defined by the engine ahead of this source, so each rule set is its own script):
  tier_names, tier_at, level_at, level_step; see includes/tier_and_level.lua

  Returns a flat array, two elements per award, in order:
    0, record    applied; record = these fields joined by "\31": fingerprint, created_at ms,
                 total, current streak, longest streak, last active day, version, count and
                 points of this activity type, quizzes, projects created, comments, username,
                 display name (the last two "" when unset)
    -1, record   duplicate activity id: nothing changed; record is the first call's
    -2, tz       the user's time zone is tz, not value 8: nothing changed; send it again

  User hash fields: total, tier, level, streak, longest, last_day, day0 (bit 0 of the bitmap),
  version, created_at, n:<type> and pts:<type> (count and points per type), and the user's points
  in its latest day, week and month (d/dp, w/wp, m/mp), which the window boards are set from.
  Outbox entry fields: id, user, amount, type, desc, at (ms), tier (after the award), and
  state = "total level streak longest last_day version" after the award.
]]
local rcall = redis.call
local STRIDE = 20
local BASE = {"tz", "total", "tier", "level", "streak", "longest", "last_day", "day0",
  "version", "d", "dp", "w", "wp", "m", "mp", "n:quiz_complete", "n:project_create",
  "n:comment", "username", "display_name"}
-- per window: offset of its index in an award's values (value v is ARGV[a + v - 1]), and the
-- user hash fields holding the latest period and the user's points in it
local WINDOWS = {{11, "d", "dp"}, {14, "w", "wp"}, {17, "m", "mp"}}

--- @define RULES
--- @include "threshold_index"
--- @include "tier_and_level"
--- @include "day_bit"
--- @include "run_length"

local n, nboards = tonumber(ARGV[1]), tonumber(ARGV[2])
local users = {}     -- user hash key -> {s = state fields, dirty = changed field names}
local order = {}     -- user hash keys in first-seen order, for the final HSETs
local boards = {}    -- board index -> {member -> negated score}, written at the end
local expiries = {}  -- board index -> expiry (unix s)
local all_board = {}
local out = {}

local function user_state(key, activity_type)
  local u = users[key]
  if not u then
    local v = rcall("HMGET", key, unpack(BASE))
    local s = {}
    for i = 1, #BASE do
      if v[i] then s[BASE[i]] = v[i] end  -- a missing field comes back as false
    end
    u = {s = s, dirty = {}}
    users[key] = u
    order[#order + 1] = key
  end
  local nkey = "n:" .. activity_type
  if not u[nkey] then
    local v = rcall("HMGET", key, nkey, "pts:" .. activity_type)
    u.s[nkey], u.s["pts:" .. activity_type] = v[1] or nil, v[2] or nil
  end
  u[nkey] = true
  return u
end

local function set(u, field, value)
  u.s[field] = value
  u.dirty[field] = true
end

local function board_set(index, member, score)
  local b = boards[index]
  if not b then b = {}; boards[index] = b end
  b[member] = score
end

for i = 1, n do
  local a = 3 + STRIDE * (i - 1)
  local k = 3 + nboards + 3 * (i - 1)
  local user_key, days_key, idem_key = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  local user, amount, activity_type = ARGV[a + 1], tonumber(ARGV[a + 2]), ARGV[a + 3]
  if not amount or amount <= 0 or amount ~= math.floor(amount) then
    return redis.error_reply("ERR award: amount must be a positive integer")
  end
  local u = user_state(user_key, activity_type)
  local s = u.s
  local tz = s.tz or "UTC"
  if tz ~= ARGV[a + 7] then
    out[#out + 1] = -2
    out[#out + 1] = tz
  else
    local total = tonumber(s.total or "0") + amount
    local tier, level = tier_and_level(total)

    -- Streak: a pure function of the set of active days; the bitmap keeps that set.
    local day = tonumber(ARGV[a + 6])
    local last = tonumber(s.last_day or "")
    local cur = tonumber(s.streak or "0")
    local longest = tonumber(s.longest or "0")
    local day0 = tonumber(s.day0 or "")
    local new_day0 = day0
    local mark = false
    if not last then
      cur, last, mark = 1, day, true
      new_day0 = day - day % 8
    elseif day > last then
      if day == last + 1 then cur = cur + 1 else cur = 1 end
      last, mark = day, true
    elseif day < last and day_bit(days_key, day0, day) == 0 then
      -- a late activity for an earlier day: it may join runs on either side
      local back = run_length(days_key, day0, day, -1, day - day0)
      local fwd = run_length(days_key, day0, day, 1, last - day)
      local run = back + 1 + fwd
      if day + fwd == last then cur = run end
      if run > longest then longest = run end
      mark = true
      if day < day0 then new_day0 = day - day % 8 end
    end
    if cur > longest then longest = cur end

    local nkey, pkey = "n:" .. activity_type, "pts:" .. activity_type
    local count = tonumber(s[nkey] or "0") + 1
    local points = tonumber(s[pkey] or "0") + amount
    local version = tonumber(s.version or "0") + 1
    local quizzes, projects, comments = s["n:quiz_complete"] or "0",
      s["n:project_create"] or "0", s["n:comment"] or "0"
    if activity_type == "quiz_complete" then quizzes = count
    elseif activity_type == "project_create" then projects = count
    elseif activity_type == "comment" then comments = count end

    local record = table.concat({ARGV[a + 9], ARGV[a + 5], total, cur, longest, last, version,
      count, points, quizzes, projects, comments, s.username or "", s.display_name or ""}, "\31")

    -- First write: claim the activity id. A duplicate (e.g. a client's retry) changes nothing.
    if not rcall("SET", idem_key, record, "NX", "EX", ARGV[a + 8]) then
      out[#out + 1] = -1
      out[#out + 1] = rcall("GET", idem_key)
    else
      set(u, "total", total)
      set(u, "version", version)
      set(u, nkey, count)
      set(u, pkey, points)
      if tier ~= s.tier then set(u, "tier", tier) end
      if tostring(level) ~= s.level then set(u, "level", tostring(level)) end
      if mark then
        set(u, "streak", cur)
        set(u, "longest", longest)
        set(u, "last_day", last)
        set(u, "day0", new_day0)
        if not day0 then
          set(u, "created_at", ARGV[a + 5])
        elseif new_day0 < day0 then
          -- grow the bitmap towards the past, a whole byte (8 days) at a time
          local old = rcall("GET", days_key) or ""
          rcall("SET", days_key, string.rep("\0", (day0 - new_day0) / 8) .. old)
        end
        rcall("SETBIT", days_key, day - new_day0, 1)
      end

      all_board[user] = -total
      board_set(tonumber(ARGV[a + 10]), user, -points)
      for _, w in ipairs(WINDOWS) do
        local index = tonumber(ARGV[a + w[1]])
        if index > 0 then
          local period, held = ARGV[a + w[1] + 1], s[w[2]]
          if held == nil or period > held then
            -- the user's first points in a newer period
            set(u, w[2], period)
            set(u, w[3], amount)
            board_set(index, user, -amount)
          elseif period == held then
            local sum = tonumber(s[w[3]]) + amount
            set(u, w[3], sum)
            board_set(index, user, -sum)
          elseif boards[index] and boards[index][user] then
            -- an older period than the user's latest, whose score this batch set earlier
            boards[index][user] = boards[index][user] - amount
          else
            -- a late award for an older period the hash no longer tracks: add to its board
            if tonumber(rcall("ZINCRBY", KEYS[2 + index], -amount, user)) == -amount then
              rcall("EXPIREAT", KEYS[2 + index], ARGV[a + w[1] + 2])
            end
          end
          expiries[index] = ARGV[a + w[1] + 2]
        end
      end

      rcall("XADD", KEYS[1], "*", "id", ARGV[a], "user", user, "amount", ARGV[a + 2],
        "type", activity_type, "desc", ARGV[a + 4], "at", ARGV[a + 5], "tier", tier,
        "state", table.concat({total, level, cur, longest, last, version}, " "))
      out[#out + 1] = 0
      out[#out + 1] = record
    end
  end
end

-- Each user's hash once, each board once: absolute scores, so the last award's value wins.
for _, key in ipairs(order) do
  local u = users[key]
  local fields = {}
  for field in pairs(u.dirty) do
    fields[#fields + 1] = field
    fields[#fields + 1] = u.s[field]
  end
  if #fields > 0 then rcall("HSET", key, unpack(fields)) end
end

local function write_board(key, members, expire_at)
  local args = {}
  for member, score in pairs(members) do
    args[#args + 1] = score
    args[#args + 1] = member
  end
  if #args > 0 and rcall("ZADD", key, unpack(args)) > 0 and expire_at then
    -- new members may mean a new key: (re)set the window's expiry
    rcall("EXPIREAT", key, expire_at)
  end
end

write_board(KEYS[2], all_board, nil)
for index, members in pairs(boards) do
  write_board(KEYS[2 + index], members, expiries[index])
end

return out
