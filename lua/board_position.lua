--[[
  Position of a (score, member) pair on one shard's board: how many entries sort before it.
  Entries sort by score ascending (scores are negated points), then by member bytes ascending,
  which is the order ZRANGE returns. The member need not be on this board.

  KEYS[1] board (zset)
  ARGV[1] score (the pair's score)   ARGV[2] member (user id)

  Returns: the number of entries that sort before the pair (integer >= 0)
]]
local rcall = redis.call

--- @include "bytes_less"

local key, score, member = KEYS[1], ARGV[1], ARGV[2]
local before = rcall("ZCOUNT", key, "-inf", "(" .. score)
local tied = rcall("ZCOUNT", key, score, score)
local lo, hi = 0, tied
while lo < hi do
  local mid = math.floor((lo + hi) / 2)
  local m = rcall("ZRANGE", key, before + mid, before + mid)[1]
  if bytes_less(m, member) then lo = mid + 1 else hi = mid end
end
return before + lo
