--[[
  Start, advance or complete one user's side quest, atomically with its reward.

  KEYS[1] user hash                  KEYS[2] user's side quests in progress
  KEYS[3] user's completed side quests (hashes: quest id -> record, see includes/quest_record)
  KEYS[4] shard outbox stream        KEYS[5] all-time board
  KEYS[6] side_quest type board      KEYS[7] day board   KEYS[8] week board   KEYS[9] month board
  KEYS[10] shard's drain flag        KEYS[11] shard's upgrade feed
  KEYS[12] user's achievements  KEYS[13] shard's achievement holders  KEYS[14] achievement
           type board (as for award.lua)
  KEYS[15] user's tombstone (exists while the user is deleted: see lua/delete_user.lua)

  ARGV[1] "start", "progress" or "complete"
  ARGV[2] user id                    ARGV[3] quest id
  ARGV[4] now (unix ms)              ARGV[5] today (UTC days since 1970-01-01)
  ARGV[6] start: the quest as "activity type\31target\31reward\31ends ms (0 = never)\31title";
          progress: how many steps to advance (integer > 0)
  ARGV[7] day board lifetime  ARGV[8] week board's  ARGV[9] month board's (TTLs in seconds,
          as for award.lua; 0 = leave that board alone)
  ARGV[10] drain flag lifetime (seconds)
  RULES: as for award.lua (tier and level tables, quest_type, quest_desc, achievements)

  Returns:
    {0, record, flag, reward, achievements}  done; record = the quest's record after the call;
                  flag = 1 when this call raised the drain flag; reward = "points\30reward key"
                  when it completed the quest, else "" (the activity id is uuid5 of the key);
                  achievements = the levels the completion earned, "<id>:<level>" joined by
                  "\29" (see includes/achievements.lua), else ""
    {-3, record}  start: the quest is already in progress (nothing changed)
    {-4, record}  the quest is already completed (nothing changed)
    {-5}          progress or complete: the user has not started the quest (nothing changed)
    {-8}          the user is deleted (their tombstone exists): nothing changed
]]
local rcall = redis.call

--- @define RULES
--- @include "threshold_index"
--- @include "tier_and_level"
--- @include "feed"
--- @include "credit"
--- @include "quest_record"
--- @include "achievements"
--- @include "drain_flag"

local user_key, open_key, done_key, outbox_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local all_board, quest_board = KEYS[5], KEYS[6]
local day_board, week_board, month_board = KEYS[7], KEYS[8], KEYS[9]
local flag_key, feed_key = KEYS[10], KEYS[11]
local ach_key, ach_counts_key, ach_board = KEYS[12], KEYS[13], KEYS[14]
local tombstone_key = KEYS[15]

local op, user, qid, now, today = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local operand = ARGV[6]
local day_life, week_life, month_life = ARGV[7], ARGV[8], ARGV[9]
local flag_ttl = ARGV[10]

if rcall("EXISTS", tombstone_key) == 1 then return {-8} end
local done = rcall("HGET", done_key, qid)
if done then return {-4, done} end
local rec = rcall("HGET", open_key, qid)

local f
if op == "start" then
  if rec then return {-3, rec} end
  local def = quest_parse(operand)
  -- type, target, progress, reward, ends, started, completed, title
  f = {def[1], def[2], "0", def[3], def[4], now, "", def[5]}
else
  if not rec then return {-5} end
  f = quest_parse(rec)
  if op == "progress" then
    local by = tonumber(operand)
    if not by or by <= 0 or by ~= math.floor(by) then
      return redis.error_reply("ERR quest: progress must be a positive integer")
    end
    f[3] = tostring(math.min(tonumber(f[3]) + by, tonumber(f[2])))
    if tonumber(f[3]) >= tonumber(f[2]) then f[7] = now end
  else
    f[7] = now
  end
end

rec = quest_store(open_key, done_key, outbox_key, user, qid, f)
local reward, earned = "", ""
if f[7] ~= "" then
  local points = tonumber(f[4])
  local id = "quest:" .. user .. ":" .. qid
  local st, exists = credit_state(user_key, user, now, today, outbox_key, feed_key, all_board,
    {day_board, week_board, month_board}, {day_life, week_life, month_life})
  if not exists then rcall("HSET", user_key, "created_at", now) end
  credit(st, RULES.quest_type, quest_board, points, id, RULES.quest_desc .. f[8])
  reward = tostring(points) .. "\30" .. id
  earned = achievements_reply(grant_achievements(st, ach_key, ach_counts_key, ach_board, now))
end
return {0, rec, raise_drain_flag(flag_key, flag_ttl), reward, earned}
