--[[
  Grant one user the achievement levels their state already qualifies for (the backfill of an
  achievement added to the rules, or a level whose target was lowered): atomically with its
  rewards, and never a level the user holds, so it may race live awards.

  KEYS[1] user hash                  KEYS[2] user's achievements
  KEYS[3] shard's achievement holders
  KEYS[4] shard outbox stream        KEYS[5] all-time board
  KEYS[6] achievement type board     KEYS[7] day board   KEYS[8] week board   KEYS[9] month board
  KEYS[10] shard's drain flag        KEYS[11] shard's upgrade feed

  ARGV[1] user id                    ARGV[2] now (unix ms)
  ARGV[3] today (UTC days since 1970-01-01; the rewards' last active day for a user without one)
  ARGV[4] day board lifetime  ARGV[5] week board's  ARGV[6] month board's (TTLs in seconds, as
          for award.lua; 0 = leave that board alone)
  ARGV[7] drain flag lifetime (seconds)
  RULES: as for award.lua (tier and level tables, achievements)

  Returns {0, achievements, flag}: the levels granted, "<id>:<level>" joined by "\29" ("" for
  none, or for a user who does not exist); flag = 1 when this call raised the drain flag.
]]
local rcall = redis.call

--- @define RULES
--- @include "threshold_index"
--- @include "tier_and_level"
--- @include "feed"
--- @include "credit"
--- @include "achievements"
--- @include "drain_flag"

local user_key, ach_key, holders_key, outbox_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local all_board, ach_board = KEYS[5], KEYS[6]
local day_board, week_board, month_board = KEYS[7], KEYS[8], KEYS[9]
local flag_key, feed_key = KEYS[10], KEYS[11]
local user, now, today = ARGV[1], ARGV[2], ARGV[3]

local st, exists = credit_state(user_key, user, now, today, outbox_key, feed_key, all_board,
  {day_board, week_board, month_board}, {ARGV[4], ARGV[5], ARGV[6]})
if not exists then return {0, "", 0} end
local got = grant_achievements(st, ach_key, holders_key, ach_board, now)
if #got == 0 then return {0, "", 0} end
return {0, achievements_reply(got), raise_drain_flag(flag_key, ARGV[7])}
