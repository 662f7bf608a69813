--[[
  A member's standing on a board held in one key (K = 1): its score, the entries with a better
  (lower: scores are negated points) score, the board's size, and the nearest better score.
  The reads Leaderboard.rank() sends per shard, in one call when there is one shard.

  KEYS[1] board (zset)
  ARGV[1] member (user id)

  Returns: false when the member is not on the board, else
  {score, better (integer), size (integer), nearest better score or false}; scores as strings
]]
local rcall = redis.call

local key = KEYS[1]
local score = rcall("ZSCORE", key, ARGV[1])
if not score then return false end
local below = "(" .. score
local nearest = rcall("ZREVRANGEBYSCORE", key, below, "-inf", "WITHSCORES", "LIMIT", 0, 1)
return {score, rcall("ZCOUNT", key, "-inf", below), rcall("ZCARD", key), nearest[2] or false}
