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
  KEYS[17] user's frozen days (bitmap laid out as KEYS[2], same first day)
  KEYS[18] streak_bonus type board (streak milestone rewards)
  KEYS[19] user's achievements (hash: "<id>:<level>" -> when earned, unix ms)
  KEYS[20] shard's achievement holders (hash: "<id>:<level>" -> users holding it)
  KEYS[21] achievement type board
  KEYS[22] user's tombstone (exists while the user is deleted: see lua/delete_user.lua)

  ARGV[1]  activity id (uuid)        ARGV[2]  user id
  ARGV[3]  amount (integer > 0, points)
  ARGV[4]  activity type             ARGV[5]  description (<= 255 chars)
  ARGV[6]  created_at (unix ms)      ARGV[7]  local day of created_at (days since 1970-01-01
                                              in the zone of ARGV[9])
  ARGV[8]  week number of that local day (Monday first: engine.domain.periods.week_of)
  ARGV[9]  time zone the caller assumed for the user ("UTC" when the user has none)
  ARGV[10] idempotency record TTL (seconds)
  ARGV[11] request fingerprint (stored in the record; compared by the caller on replay), then,
           when a seasonal event applied, " <multiplier> <event id>" (a replay reads them back)
  ARGV[12] day board lifetime, ARGV[13] week board's, ARGV[14] month board's (seconds from
           now until the window's retention ends, by the engine's clock; a relative TTL, so
           the Redis clock only counts it down; 0 = the retention has passed: leave it alone)
  ARGV[15] how long the drain flag lives if no drain job clears it (seconds)
  ARGV[16] "1" if the activity type counts for the streak, else "0"
  ARGV[17] amount before a seasonal event's multiplier, ARGV[18] the multiplier, ARGV[19] the
           event id: "" (all three) when no event applied; ARGV[3] is the multiplied amount
  RULES (defined by the engine ahead of this source, so each rule set is its own script):
  tier_names, tier_at, level_at, level_step (see includes/tier_and_level.lua); goals (the
  weekly goals: id, kind 1 count / 2 points / 3 active days, type, target, reward, desc = the
  reward's description); goal_type, quest_type and reward_types (rewards advance no goal or
  quest); quest_desc (what a quest reward's description says before the quest's title);
  goal_fields ("wk", then "g:<goal>" of each goal: the fields of the goal hash, in goals'
  order); lifetime_fields (the user hash fields "n:<type>" of the activity types whose counts
  the state carries, in order); freezes_max (0 = streak freezes off), freeze_every (active
  days per freeze earned), milestones ({len, points, desc} per streak milestone, shortest
  first), bonus_type (the milestone reward's activity type); achievements, ach_for,
  ach_fields_for, ach_type (includes/achievements.lua); award_fields (per activity type:
  lifetime_fields, then ach_fields_for the type: read with the user's state)

  Returns:
    {0, record, flag, state}  applied; flag = 1 when this award raised the drain flag (the caller
                  then enqueues a drain job), else 0. record (also the idempotency record) =
                  fingerprint, created_at ms, total after the award and its rewards, rewards;
                  joined by "\31". rewards: one per goal, quest or streak milestone this
                  award completed and per achievement level it earned,
                  "kind\30ref\30points\30reward key", joined by "\29" (the reward's activity
                  id is uuid5 of its key: engine.rules.reward_id; an achievement's ref is
                  "<id>:<level>", and one with 0 points is no activity). state = the user's total,
                  current streak, longest streak, last active day, version, count and points of
                  this activity type, the count of each of RULES.lifetime_fields (in its
                  order), username, display name, streak freezes held, freezes used in all,
                  peak total ("pk", 0 unless RULES.keep_peak), joined by "\31"; after the
                  award and its rewards.
    {-1, record, 0, state}  duplicate activity id: nothing changed; record is the first call's,
                  state the user's now (last active day "" when there is none)
    {-2, tz}      the user's time zone is tz, not ARGV[9]: nothing changed; call again
    {-8}          the user is deleted (their tombstone exists): nothing changed

  Outbox entry fields: id, user, amount, type, desc, at (ms), tier (tier after the award), and
  state = "total level streak longest last_day version" after the award; otier and olevel =
  the tier and level before it, only when either changed; frozen = the local
  days (numbers, ","-joined) this award froze, when it froze any; and when a seasonal event
  applied, base, mult and event (ARGV[17] to ARGV[19]). Then one entry per reward (an activity
  of type weekly_goal, side_quest, streak_bonus or achievement, with its own state), one per
  side quest advanced (e = quest), one per goal completed (e = goal), one per achievement
  level earned (e = ach), and one when the streak freezes held changed (e = freeze, held).

  Streak freezes (user hash: fz = held, fz_used = spent in all; run0 = the local day the
  current run started on): an activity on a new latest day after missed days, when the user
  holds at least one freeze per missed day and RULES.freezes_max > 0, spends them and keeps
  the streak alive; the missed days are marked in the frozen-day bitmap: frozen, not active
  (the streak counts active days only; a frozen day bridges a run). A run is a maximal
  sequence of consecutive days each active or frozen. An activity on a new latest day that
  takes the streak to a multiple of RULES.freeze_every earns one freeze, up to freezes_max.
  A late activity (an earlier day) spends and earns none; it joins runs through active and
  frozen days as before (a frozen day it falls on becomes active; the freeze is not given
  back). A streak milestone is paid (type streak_bonus, key "streak:user:run start:length")
  by the award that takes the run containing its day from below the milestone's length to it
  or beyond: once per run (a run's start only moves earlier, and its length only grows).

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
--- @include "run_through"
--- @include "milestones"
--- @include "feed"
--- @include "window_add"
--- @include "credit"
--- @include "quest_record"
--- @include "quest_progress"
--- @include "goals"
--- @include "goals_store"
--- @include "achievements"
--- @include "drain_flag"

local user_key, days_key, record_key, outbox_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local all_board, type_board = KEYS[5], KEYS[6]
local day_board, week_board, month_board = KEYS[7], KEYS[8], KEYS[9]
local flag_key, goals_key = KEYS[10], KEYS[11]
local quests_key, quests_done_key = KEYS[12], KEYS[13]
local goal_board, quest_board, feed_key = KEYS[14], KEYS[15], KEYS[16]
local frozen_key, bonus_board = KEYS[17], KEYS[18]
local ach_key, ach_counts_key, ach_board = KEYS[19], KEYS[20], KEYS[21]
local tombstone_key = KEYS[22]

local activity_id, user, amount_s, activity_type = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local description, at_ms, day_s, week = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local assumed_tz, record_ttl, fingerprint = ARGV[9], ARGV[10], ARGV[11]
local day_life, week_life, month_life = ARGV[12], ARGV[13], ARGV[14]
local flag_ttl, streak_type = ARGV[15], ARGV[16] == "1"
local base_s, multiplier_s, event_id = ARGV[17], ARGV[18], ARGV[19]

if rcall("EXISTS", tombstone_key) == 1 then return {-8} end

local amount = tonumber(amount_s)
if not amount or amount <= 0 or amount ~= math.floor(amount) then
  return redis.error_reply("ERR award: amount must be a positive integer")
end

local lifetime_fields = RULES.lifetime_fields
local nkey, pkey = "n:" .. activity_type, "pts:" .. activity_type
local h = rcall("HMGET", user_key, "tz", "total", "tier", "level", "streak", "longest",
  "last_day", "day0", "version", nkey, pkey, "username", "display_name", "fz", "fz_used",
  "run0", unpack(RULES.award_fields[activity_type]))
local LIFETIME_AT = 16  -- h[LIFETIME_AT + i]: the value of lifetime_fields[i]
local ACH_AT = LIFETIME_AT + #lifetime_fields  -- h[ACH_AT + i]: ach_fields_for[type][i]

local tz = h[1] or "UTC"
if tz ~= assumed_tz then return {-2, tz} end

local total = tonumber(h[2] or "0") + amount
-- [adjustments] keep_peak: tier and level of the peak total an adjustment left ("pk") when higher
local peak = 0
if RULES.keep_peak then peak = tonumber(rcall("HGET", user_key, "pk") or "0") end
local tier, level = tier_and_level(math.max(total, peak))
level = tostring(level)

-- Streak: a pure function of the sets of active and frozen days; the bitmaps keep them.
local day = tonumber(day_s)
local last = tonumber(h[7] or "")
local cur = tonumber(h[5] or "0")
local longest = tonumber(h[6] or "0")
local day0 = tonumber(h[8] or "")
local held, used = tonumber(h[14] or "0"), tonumber(h[15] or "0")
local run0 = tonumber(h[16] or "") or (last and last - cur + 1)  -- (before freezes: no gaps)
local frozen_bits = used > 0 and frozen_key or nil  -- nil: no frozen day to look at
local new_day0 = day0
local mark = false
local frozen = nil  -- the days this award froze
local run_old, run_new, run_start = 0, 0, nil  -- the run of `day`: length before and after
if not streak_type then
  -- not a day of activity (a streak bonus): the streak stays as it is
elseif not last then
  cur, last, mark = 1, day, true
  new_day0 = day - day % 8
  run0, run_new, run_start = day, 1, day
elseif day > last then
  local missed = day - last - 1
  if missed > 0 and RULES.freezes_max > 0 and held >= missed then
    frozen = {}
    for d = last + 1, day - 1 do frozen[#frozen + 1] = d end
    held, used = held - missed, used + missed
    missed = 0
  end
  if missed == 0 then run_old, cur = cur, cur + 1 else cur, run0 = 1, day end
  if cur % RULES.freeze_every == 0 and held < RULES.freezes_max then held = held + 1 end
  last, mark = day, true
  run_new, run_start = cur, run0
elseif day < last and day_bit(days_key, day0, day) == 0 then
  -- a late activity for an earlier day: it may join runs on either side
  local back_span, back = run_through(days_key, frozen_bits, day0, day, -1, day - day0)
  local fwd_span, fwd = run_through(days_key, frozen_bits, day0, day, 1, last - day)
  local run = back + 1 + fwd
  if day + fwd_span == last then cur, run0 = run, day - back_span end
  if run > longest then longest = run end
  mark = true
  if day < day0 then new_day0 = day - day % 8 end
  -- the run's length before: one run through a frozen `day`, else the longer of two
  run_old = math.max(back, fwd)
  if frozen_bits and day_bit(frozen_key, day0, day) == 1 then run_old = back + fwd end
  run_new, run_start = run, day - back_span
end
if cur > longest then longest = cur end

-- Each new number becomes a string once, reused by the record, the hash and the outbox (number
-- formatting is a large share of a script's own time); unchanged values stay as read.
local total_s = tostring(total)
local version_s = tostring(tonumber(h[9] or "0") + 1)
local count_s = tostring(tonumber(h[10] or "0") + 1)
local points_s = tostring(tonumber(h[11] or "0") + amount)
local cur_s, longest_s, last_s = h[5] or "0", h[6] or "0", h[7] or day_s
if mark then cur_s, longest_s, last_s = tostring(cur), tostring(longest), tostring(last) end
local username, display_name = h[12] or "", h[13] or ""
-- The reply's state (see the header): the seven values, the count of each lifetime type, then
-- username and display name. Written out twice below: a closure measured 6% of the script.
local n_life = #lifetime_fields

-- Weekly goals and side quests: read and decided here, written after the claim below.
local rewards = {}  -- {kind, ref, points, reward key, description, type board}
local goals_reset, goal_fields, goals_done, quests
if not RULES.reward_types[activity_type] then
  goals_reset, goal_fields, goals_done =
    advance_goals(goals_key, goal_board, user, activity_type, amount, mark, week, rewards)
  quests = advance_quests(quests_key, quest_board, user, activity_type, at_ms, rewards)
end
if run_new > run_old then
  reach_milestones(bonus_board, user, run_start, run_old, run_new, rewards)
end
local held_s, used_s = h[14] or "0", h[15] or "0"
if mark then held_s, used_s = tostring(held), tostring(used) end

-- Achievements: those this award can move, tested against the state after the award and its
-- goal and quest rewards.
local achs = RULES.ach_for[activity_type]
if #achs > 0 then
  local values = {total = total, streak = cur}
  local ach_fields = RULES.ach_fields_for[activity_type]
  for i = #achs + 1, #ach_fields do
    values[ach_fields[i]] = tonumber(h[ACH_AT + i] or "0")
  end
  values[nkey] = tonumber(count_s)
  for i = 1, #rewards do
    local r = rewards[i]
    local f = "n:" .. r[1]
    values.total = values.total + r[3]
    values[f] = (values[f] or 0) + 1
  end
  decide_achievements(achs, values, held_achievements(achs, h, ACH_AT), user, ach_board, rewards)
end

local final_total, final_version = total, tonumber(version_s)
local packed = {}
for i = 1, #rewards do
  local r = rewards[i]
  if r[3] > 0 then
    final_total = final_total + r[3]
    final_version = final_version + 1
  end
  packed[i] = table.concat({r[1], r[2], tostring(r[3]), r[4]}, "\30")
end

-- The idempotency record keeps only what a replay cannot read from the user's state: the
-- request's fingerprint, the award's time, the total it left (for the upgrades it made) and
-- its rewards. Usually under 45 bytes, so Redis stores it in one allocation with its object.
local final_total_s = tostring(final_total)
local record = table.concat({fingerprint, at_ms, final_total_s, table.concat(packed, "\29")},
  "\31")

-- First write: claim the activity id. A duplicate (e.g. a client's retry) changes nothing,
-- and is answered with the first call's record and the user's state as it is now.
if not rcall("SET", record_key, record, "NX", "EX", record_ttl) then
  local now = {h[2] or "0", h[5] or "0", h[6] or "0", h[7] or "", h[9] or "0", h[10] or "0",
    h[11] or "0"}
  for i = 1, n_life do now[7 + i] = h[LIFETIME_AT + i] or "0" end
  now[8 + n_life], now[9 + n_life] = username, display_name
  now[10 + n_life], now[11 + n_life], now[12 + n_life] = h[14] or "0", h[15] or "0", tostring(peak)
  return {-1, rcall("GET", record_key), 0, table.concat(now, "\31")}
end
local state = {final_total_s, cur_s, longest_s, last_s, tostring(final_version), count_s,
  points_s}
for i = 1, n_life do
  if lifetime_fields[i] == nkey then state[7 + i] = count_s
  else state[7 + i] = h[LIFETIME_AT + i] or "0" end
end
state[8 + n_life], state[9 + n_life] = username, display_name
state[10 + n_life], state[11 + n_life], state[12 + n_life] = held_s, used_s, tostring(peak)

local fields = {"total", total_s, "version", version_s, nkey, count_s, pkey, points_s}
if tier ~= h[3] then fields[#fields + 1] = "tier"; fields[#fields + 1] = tier end
if level ~= h[4] then fields[#fields + 1] = "level"; fields[#fields + 1] = level end
if mark then
  for _, v in ipairs({"streak", cur_s, "longest", longest_s, "last_day", last_s,
                      "day0", tostring(new_day0), "run0", tostring(run0)}) do
    fields[#fields + 1] = v
  end
  if held_s ~= (h[14] or "0") or used_s ~= (h[15] or "0") then
    for _, v in ipairs({"fz", held_s, "fz_used", used_s}) do fields[#fields + 1] = v end
  end
  if not day0 then
    fields[#fields + 1] = "created_at"; fields[#fields + 1] = at_ms
  elseif new_day0 < day0 then
    -- grow the bitmap towards the past, a whole byte (8 days) at a time
    local pad = string.rep("\0", (day0 - new_day0) / 8)
    rcall("SET", days_key, pad .. (rcall("GET", days_key) or ""))
    if frozen_bits then rcall("SET", frozen_key, pad .. (rcall("GET", frozen_key) or "")) end
  end
  rcall("SETBIT", days_key, day - new_day0, 1)
  if frozen then
    for i = 1, #frozen do rcall("SETBIT", frozen_key, frozen[i] - new_day0, 1) end
  end
elseif not h[2] then
  fields[#fields + 1] = "created_at"; fields[#fields + 1] = at_ms
end
rcall("HSET", user_key, unpack(fields))

-- a new user starts from the tier and level of 0 points
local old_tier, old_level = h[3], h[4]
if not old_tier then
  local t, l = tier_and_level(0)
  old_tier, old_level = t, tostring(l)
end
local name = h[13] or h[12] or user
if tier ~= old_tier or level ~= old_level then
  feed_upgrade(feed_key, user, name, old_tier, old_level, tier, level)
end

local negative = "-" .. amount_s
rcall("ZINCRBY", all_board, negative, user)
rcall("ZINCRBY", type_board, negative, user)
window_add(day_board, day_life, user, negative)
window_add(week_board, week_life, user, negative)
window_add(month_board, month_life, user, negative)

local entry = {"id", activity_id, "user", user, "amount", amount_s, "type", activity_type,
  "desc", description, "at", at_ms, "tier", tier,
  "state", table.concat({total_s, level, cur_s, longest_s, last_s, version_s}, " ")}
if frozen then
  entry[#entry + 1] = "frozen"; entry[#entry + 1] = table.concat(frozen, ",")
end
if tier ~= old_tier or level ~= old_level then  -- what webhooks' tier and level events need
  for _, v in ipairs({"otier", old_tier, "olevel", old_level}) do entry[#entry + 1] = v end
end
if event_id ~= "" then
  for _, v in ipairs({"base", base_s, "mult", multiplier_s, "event", event_id}) do
    entry[#entry + 1] = v
  end
end
rcall("XADD", outbox_key, "*", unpack(entry))
if held_s ~= (h[14] or "0") then
  rcall("XADD", outbox_key, "*", "e", "freeze", "user", user, "held", held_s)
end

if quests then
  for i = 1, #quests do
    quest_store(quests_key, quests_done_key, outbox_key, user, quests[i][1], quests[i][2])
  end
end
store_goals(goals_key, outbox_key, user, goals_reset, goal_fields, goals_done)
if #rewards > 0 then
  local st = {key = user_key, user = user, name = name, total = total,
    version = tonumber(version_s), peak = peak, tier = tier, level = level, streak = cur_s,
    longest = longest_s, last_day = last_s, at = at_ms, outbox = outbox_key, feed = feed_key,
    all_board = all_board, windows = {day_board, week_board, month_board},
    lifetimes = {day_life, week_life, month_life}}
  for i = 1, #rewards do
    local r = rewards[i]
    if r[3] > 0 then credit(st, r[1], r[6], r[3], r[4], r[5]) end
  end
  store_achievements(rewards, st, ach_key, ach_counts_key, at_ms)
end

-- whoever raises the drain flag enqueues the shard's one drain job
return {0, record, raise_drain_flag(flag_key, flag_ttl), table.concat(state, "\31")}
