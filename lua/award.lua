--[[
  Award points to one user: one atomic call for state, streak, leaderboards and audit outbox.

  KEYS[1] user hash                  KEYS[2] user's day bitmap (bit i = day0 + i)
  KEYS[3] idempotency record         KEYS[4] shard outbox stream
  KEYS[5] all-time board             KEYS[6] activity-type board
  KEYS[7] day board                  KEYS[8] ISO-week board
  KEYS[9] month board                (boards are zsets of negated points; see engine/keys.py)
  KEYS[10] shard's drain flag (set while a drain job for the shard is queued)
  KEYS[11] user's weekly goal progress (hash: wk = week, g:<goal> = progress)
  KEYS[12] user's side quests in progress  KEYS[13] user's completed side quests
           (hashes: quest id -> record, see includes/quest_record.lua)
  KEYS[14] weekly_goal type board    KEYS[15] side_quest type board
  KEYS[16] shard's upgrade feed (stream of tier and level changes, see includes/feed.lua)

  ARGV[1]  activity id (uuid)        ARGV[2]  user id
  ARGV[3]  amount (integer > 0, points)
  ARGV[4]  activity type             ARGV[5]  description (<= 255 chars)
  ARGV[6]  created_at (unix ms)      ARGV[7]  local day of created_at (days since 1970-01-01
                                              in the zone of ARGV[8])
  ARGV[8]  time zone the caller assumed for the user ("UTC" when the user has none)
  ARGV[9]  idempotency record TTL (seconds)
  ARGV[10] request fingerprint (stored in the record; compared by the caller on replay)
  ARGV[11] day board lifetime, ARGV[12] week board's, ARGV[13] month board's (seconds from
           now until the window's retention ends, by the engine's clock; a relative TTL, so
           the Redis clock only counts it down; 0 = the retention has passed: leave it alone)
  ARGV[14] how long the drain flag lives if no drain job clears it (seconds)
  ARGV[15] "1" if the activity type counts for the streak, else "0"
  RULES (defined by the engine ahead of this source, so each rule set is its own script):
  tier_names, tier_at, level_at, level_step (see includes/tier_and_level.lua); goals (the
  weekly goals: id, kind 1 count / 2 points / 3 active days, type, target, reward, title);
  goal_type, quest_type and reward_types (rewards advance no goal or quest)

  Returns:
    {0, record, flag, state}  applied; flag = 1 when this award raised the drain flag (the caller
                  then enqueues a drain job), else 0. record (also the idempotency record) =
                  fingerprint, created_at ms, total after the award and its rewards, rewards;
                  joined by "\31". rewards: one per goal or quest this award completed,
                  "kind\30ref\30points\30reward key", joined by "\29" (the reward's activity
                  id is uuid5 of its key: engine.rules.reward_id). state = the user's total,
                  current streak, longest streak, last active day, version, count and points of
                  this activity type, quizzes, projects created, comments, username, display
                  name, joined by "\31"; after the award and its rewards.
    {-1, record, 0, state}  duplicate activity id: nothing changed; record is the first call's,
                  state the user's now (last active day "" when there is none)
    {-2, tz}      the user's time zone is tz, not ARGV[8]: nothing changed; call again

  Outbox entry fields: id, user, amount, type, desc, at (ms), tier (tier after the award), and
  state = "total level streak longest last_day version" after the award. Then one entry per
  reward (an activity of type weekly_goal or side_quest, with its own state), one per side
  quest advanced (e = quest) and one per goal completed (e = goal).

  Weekly goals follow the week (Monday first) of the activity's local day; an activity in a
  week before the user's current goal week advances nothing. A goal's reward is given by the
  award that takes its progress from below the target to the target or beyond, so once per
  user, goal and week; its key is "goal:user:goal:week". A side quest in
  progress advances by one with each award of its activity type made after it started and
  before it ends; reaching the target completes it and gives its reward (once; its key is
  "quest:user:quest"). A reward's outbox entry carries its key, not an id: the drain and
  the engine derive the id from the key (uuid5), so the same reward always has the same id.
]]
local rcall = redis.call

--- @define RULES
--- @include "threshold_index"
--- @include "tier_and_level"
--- @include "day_bit"
--- @include "run_length"
--- @include "feed"
--- @include "credit"
--- @include "quest_record"

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
if ARGV[15] ~= "1" then
  -- not a day of activity (a streak bonus): the streak stays as it is
elseif not last then
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
local cur_s, longest_s, last_s = h[5] or "0", h[6] or "0", h[7] or ARGV[7]
if mark then cur_s, longest_s, last_s = tostring(cur), tostring(longest), tostring(last) end
local quizzes, projects, comments = h[12] or "0", h[13] or "0", h[14] or "0"
if activity_type == "quiz_complete" then quizzes = count_s
elseif activity_type == "project_create" then projects = count_s
elseif activity_type == "comment" then comments = count_s end

-- Weekly goals and side quests: read and decided here, written after the claim below.
local user, at_ms = ARGV[2], ARGV[6]
local rewards = {}  -- {kind, ref, points, reward key, description, type board}
local goal_fields, goal_reset, goal_done = nil, false, {}
local quests = {}   -- {quest id, fields}
if not RULES.reward_types[activity_type] then
  local goals = RULES.goals
  if #goals > 0 then
    local week = math.floor((day + 3) / 7)
    local names = {"wk"}
    for i = 1, #goals do names[i + 1] = "g:" .. goals[i].id end
    local g = rcall("HMGET", KEYS[11], unpack(names))
    local wk = tonumber(g[1] or "") or -1
    if week >= wk then
      goal_reset = week > wk
      goal_fields = {}
      if goal_reset then goal_fields = {"wk", tostring(week)} end
      for i = 1, #goals do
        local goal = goals[i]
        local delta = 0
        if goal.kind == 1 then
          if goal.type == activity_type then delta = 1 end
        elseif goal.kind == 2 then
          delta = amount
        elseif mark then
          delta = 1
        end
        if delta > 0 then
          local old = 0
          if not goal_reset then old = tonumber(g[i + 1] or "0") end
          local new = old + delta
          goal_fields[#goal_fields + 1] = names[i + 1]
          goal_fields[#goal_fields + 1] = tostring(new)
          if old < goal.target and new >= goal.target then
            rewards[#rewards + 1] = {RULES.goal_type, goal.id, goal.reward,
              "goal:" .. user .. ":" .. goal.id .. ":" .. week,
              "Weekly goal: " .. goal.title, KEYS[14]}
            goal_done[#goal_done + 1] = {goal.id, tostring(week), tostring(new),
              tostring(goal.target), tostring(goal.reward)}
          end
        end
      end
    end
  end
  local open = rcall("HGETALL", KEYS[12])
  local at = tonumber(at_ms)
  local prefix = activity_type .. "\31"
  for i = 1, #open, 2 do
    -- a record opens with its activity type: parse only the quests this award may advance
    local f = string.sub(open[i + 1], 1, #prefix) == prefix and quest_parse(open[i + 1])
    if f and at >= tonumber(f[6]) and (f[5] == "0" or at < tonumber(f[5])) then
      local progress = tonumber(f[3]) + 1
      f[3] = tostring(progress)
      if progress >= tonumber(f[2]) then
        f[7] = at_ms
        rewards[#rewards + 1] = {RULES.quest_type, open[i], tonumber(f[4]),
          "quest:" .. user .. ":" .. open[i], "Completed: " .. f[8], KEYS[15]}
      end
      quests[#quests + 1] = {open[i], f}
    end
  end
end

local final_total, final_version = total, tonumber(version_s)
local packed = {}
for i = 1, #rewards do
  local r = rewards[i]
  final_total = final_total + r[3]
  final_version = final_version + 1
  packed[i] = table.concat({r[1], r[2], tostring(r[3]), r[4]}, "\30")
end

-- The idempotency record keeps only what a replay cannot read from the user's state: the
-- request's fingerprint, the award's time, the total it left (for the upgrades it made) and
-- its rewards. Usually under 45 bytes, so Redis stores it in one allocation with its object.
local final_total_s = tostring(final_total)
local record = table.concat({ARGV[10], ARGV[6], final_total_s, table.concat(packed, "\29")},
  "\31")

-- First write: claim the activity id. A duplicate (e.g. a client's retry) changes nothing,
-- and is answered with the first call's record and the user's state as it is now.
if not rcall("SET", KEYS[3], record, "NX", "EX", ARGV[9]) then
  local now = {h[2] or "0", h[5] or "0", h[6] or "0", h[7] or "", h[9] or "0", h[10] or "0",
    h[11] or "0", h[12] or "0", h[13] or "0", h[14] or "0", h[15] or "", h[16] or ""}
  return {-1, rcall("GET", KEYS[3]), 0, table.concat(now, "\31")}
end
local state = table.concat({final_total_s, cur_s, longest_s, last_s, tostring(final_version),
  count_s, points_s, quizzes, projects, comments, h[15] or "", h[16] or ""}, "\31")

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
elseif not h[2] then
  fields[#fields + 1] = "created_at"; fields[#fields + 1] = ARGV[6]
end
rcall("HSET", KEYS[1], unpack(fields))

-- a new user starts from the tier and level of 0 points
local old_tier, old_level = h[3], h[4]
if not old_tier then
  local t, l = tier_and_level(0)
  old_tier, old_level = t, tostring(l)
end
local name = h[16] or h[15] or user
if tier ~= old_tier or level ~= old_level then
  feed_upgrade(KEYS[16], user, name, old_tier, old_level, tier, level)
end

local negative = "-" .. ARGV[3]
rcall("ZINCRBY", KEYS[5], negative, user)
rcall("ZINCRBY", KEYS[6], negative, user)
for i = 7, 9 do
  local lifetime = ARGV[i + 4]
  if lifetime ~= "0" then
    -- a user new on a board may be the first entry of a new key: give it its lifetime
    if tonumber(rcall("ZINCRBY", KEYS[i], negative, user)) == -amount then
      rcall("EXPIRE", KEYS[i], lifetime)
    end
  end
end

rcall("XADD", KEYS[4], "*", "id", ARGV[1], "user", user, "amount", ARGV[3],
  "type", activity_type, "desc", ARGV[5], "at", ARGV[6], "tier", tier,
  "state", table.concat({total_s, level, cur_s, longest_s, last_s, version_s}, " "))

if goal_fields then
  if goal_reset then rcall("DEL", KEYS[11]) end
  if #goal_fields > 0 then rcall("HSET", KEYS[11], unpack(goal_fields)) end
end
for i = 1, #quests do
  quest_store(KEYS[12], KEYS[13], KEYS[4], user, quests[i][1], quests[i][2])
end
for i = 1, #goal_done do
  local d = goal_done[i]
  rcall("XADD", KEYS[4], "*", "e", "goal", "user", user, "goal", d[1], "week", d[2],
    "progress", d[3], "target", d[4], "reward", d[5])
end
if #rewards > 0 then
  local st = {key = KEYS[1], user = user, name = name, total = total,
    version = tonumber(version_s), tier = tier, level = level, streak = cur_s,
    longest = longest_s, last_day = last_s, at = at_ms, outbox = KEYS[4], feed = KEYS[16],
    all_board = KEYS[5], windows = {KEYS[7], KEYS[8], KEYS[9]},
    lifetimes = {ARGV[11], ARGV[12], ARGV[13]}}
  for i = 1, #rewards do
    local r = rewards[i]
    credit(st, r[1], r[6], r[3], r[4], r[5])
  end
end

-- raise the drain flag; whoever raises it enqueues the shard's one drain job
local flag = rcall("SET", KEYS[10], "1", "NX", "EX", ARGV[14]) and 1 or 0
return {0, record, flag, state}
