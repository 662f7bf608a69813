--[[
  Adjust one user's points (a correction, a reversal, decay): one atomic call for the total,
  tier, level, boards, audit outbox and, for a reversal, the mark that it happened.

  KEYS[1] user hash                  KEYS[2] idempotency record
  KEYS[3] shard outbox stream        KEYS[4] all-time board
  KEYS[5] type board: the adjustment type's, or for a reversal the reversed activity type's
  KEYS[6] day board  KEYS[7] ISO-week board  KEYS[8] month board: of the adjustment's time, or
          for a reversal of the reversed activity's time (boards: zsets of negated points)
  KEYS[9] shard's drain flag         KEYS[10] shard's upgrade feed (includes/feed.lua)
  KEYS[11] user's reversed activities (set of activity ids; permanent)
  KEYS[12] user's tombstone (exists while the user is deleted: see lua/delete_user.lua)

  ARGV[1]  activity id (uuid)        ARGV[2]  user id
  ARGV[3]  amount (a signed integer, not 0; a reversal's is minus the reversed amount)
  ARGV[4]  the type whose points counter ("pts:<type>") and board KEYS[5] it changes
  ARGV[5]  reason (the activity's description, <= 255 chars)
  ARGV[6]  created_at (unix ms)      ARGV[7]  today (UTC day number): the last active day the
                                              outbox entry names for a user without one
  ARGV[8]  idempotency record TTL (seconds)   ARGV[9] request fingerprint
  ARGV[10] day board lifetime, ARGV[11] week board's, ARGV[12] month board's (seconds; "0" =
           the window's retention has passed: leave that board alone)
  ARGV[13] how long the drain flag lives if no drain job clears it (seconds)
  ARGV[14] id of the activity this one reverses, "" for none
  ARGV[15] the lowest total the adjustment may leave (0; decay's floor)
  ARGV[16] "1": a negative amount that would go below ARGV[15] is cut to reach it (decay);
           "0": it is refused
  ARGV[17] decay only: the user's local week it is for ("2026-W49"), kept in the user hash
           (decay_wk, and decay_pts = the points it took) for the user's status; else ""
  ARGV[18] decay only: the last active day the job read (the user is inactive as of it): an
           award since then moved it, and the decay takes nothing; else "" (no check)
  ARGV[19] "1": the floor is rather the threshold of the tier the user holds now (decay's
           floor = "tier", read here, not from the job's earlier read)
  RULES: tier_names, tier_at, level_at, level_step (includes/tier_and_level.lua), keep_peak
  (tier and level follow the peak total, "pk" in the user hash, when it is higher than the
  total), adjustment_type.

  Returns:
    {0, record, flag, user}  applied; flag = 1 when this call raised the drain flag, else 0;
                  record (also the idempotency record) = fingerprint, created_at ms, total after,
                  amount applied, joined by "\31"; user = the user hash after it (HGETALL)
    {-1, record, 0, user}  the activity id was seen before: nothing changed; the first record
    {-6}          ARGV[14] was reversed before: nothing changed
    {-8}          the user is deleted (their tombstone exists): nothing changed
    {-7, total}   the total would go below ARGV[15] (or, cut, the decay takes nothing): nothing
                  changed; total = the user's total now

  The streak, last active day, day bitmap, goals, quests and achievements are left alone: an
  adjustment is not activity, and what was earned is not taken back.

  Outbox entry fields: id, user, amount, type (RULES.adjustment_type), desc, at, tier (after),
  state = "total level streak longest last_day version" after it, and rev = ARGV[14] for a
  reversal.
]]
local rcall = redis.call

--- @define RULES
--- @include "threshold_index"
--- @include "tier_and_level"
--- @include "feed"
--- @include "window_add"
--- @include "drain_flag"
--- @include "toint"

local user_key, record_key, outbox_key, all_board = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local type_board, day_board, week_board, month_board = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local flag_key, feed_key, reversed_key, tombstone_key = KEYS[9], KEYS[10], KEYS[11], KEYS[12]

local activity_id, user, amount_s, board_type = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local reason, at_ms, today, record_ttl, fingerprint = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local day_life, week_life, month_life, flag_ttl = ARGV[10], ARGV[11], ARGV[12], ARGV[13]
local reverses, floor, cut, decay_week = ARGV[14], tonumber(ARGV[15]), ARGV[16] == "1", ARGV[17]
local seen_last_day, tier_floor = ARGV[18] or "", ARGV[19] == "1"

local amount = tonumber(amount_s)
if not amount or amount == 0 or amount ~= math.floor(amount) then
  return redis.error_reply("ERR adjust: amount must be a non-zero integer")
end

local function user_now()
  return rcall("HGETALL", user_key)
end

if rcall("EXISTS", tombstone_key) == 1 then return {-8} end
local record = rcall("GET", record_key)
if record then return {-1, record, 0, user_now()} end
if reverses ~= "" and rcall("SISMEMBER", reversed_key, reverses) == 1 then return {-6} end

local adj_type = RULES.adjustment_type
local nkey, pkey = "n:" .. adj_type, "pts:" .. board_type
local h = rcall("HMGET", user_key, "total", "tier", "level", "version", "streak", "longest",
  "last_day", "pk", "display_name", "username")
local old_total = tonumber(h[1] or "0")
if seen_last_day ~= "" and h[7] ~= seen_last_day then return {-7, toint(old_total)} end
if tier_floor and h[2] then
  for i, name in ipairs(RULES.tier_names) do
    if name == h[2] then floor = RULES.tier_at[i] end
  end
end
local total = old_total + amount
if total < floor then
  if not cut or old_total <= floor then return {-7, toint(old_total)} end
  amount, total = floor - old_total, floor
end
amount_s = toint(amount)

-- tier and level: of the total, or (keep_peak) of the highest total reached when that is more
local peak = tonumber(h[8] or "0")
local new_peak = RULES.keep_peak and amount < 0 and old_total > peak
if new_peak then peak = old_total end
local held = total
if RULES.keep_peak and peak > held then held = peak end
local tier, level = tier_and_level(held)
level = tostring(level)
local old_tier, old_level = h[2], h[3]
if not old_tier then
  local t, l = tier_and_level(0)
  old_tier, old_level = t, tostring(l)
end

local total_s = toint(total)
local version_s = toint(tonumber(h[4] or "0") + 1)
record = table.concat({fingerprint, at_ms, total_s, amount_s}, "\31")
rcall("SET", record_key, record, "EX", record_ttl)

local fields = {"total", total_s, "version", version_s, "tier", tier, "level", level}
if new_peak then fields[#fields + 1] = "pk"; fields[#fields + 1] = toint(peak) end
if not h[1] then fields[#fields + 1] = "created_at"; fields[#fields + 1] = at_ms end
if decay_week ~= "" then
  for _, v in ipairs({"decay_wk", decay_week, "decay_pts", toint(-amount)}) do
    fields[#fields + 1] = v
  end
end
rcall("HSET", user_key, unpack(fields))
rcall("HINCRBY", user_key, nkey, 1)
rcall("HINCRBY", user_key, pkey, amount)
if reverses ~= "" then rcall("SADD", reversed_key, reverses) end

if tier ~= old_tier or level ~= old_level then
  feed_upgrade(feed_key, user, h[9] or h[10] or user, old_tier, old_level, tier, level)
end

local negative = toint(-amount)
rcall("ZINCRBY", all_board, negative, user)
rcall("ZINCRBY", type_board, negative, user)
window_add(day_board, day_life, user, negative)
window_add(week_board, week_life, user, negative)
window_add(month_board, month_life, user, negative)

local entry = {"id", activity_id, "user", user, "amount", amount_s, "type", adj_type,
  "desc", reason, "at", at_ms, "tier", tier,
  "state", table.concat({total_s, level, h[5] or "0", h[6] or "0", h[7] or today, version_s},
    " ")}
if reverses ~= "" then entry[#entry + 1] = "rev"; entry[#entry + 1] = reverses end
rcall("XADD", outbox_key, "*", unpack(entry))

return {0, record, raise_drain_flag(flag_key, flag_ttl), user_now()}
