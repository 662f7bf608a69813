--[[
  The distinct scores of one shard's board that are better (lower: scores are negated points)
  than a given score: what a dense rank counts. Each is found from the one before it with one
  ZRANGEBYSCORE ... LIMIT 0 1 (O(log N)), so the cost grows with the distinct scores above,
  not with the users; at most cap + 1 are returned (more than cap: the caller refuses the read).

  KEYS[1] board (zset)
  ARGV[1] score (exclusive bound)    ARGV[2] cap (integer > 0)

  Returns: the distinct scores below ARGV[1], best first, as strings (at most cap + 1)
]]
local rcall = redis.call

local key, bound, cap = KEYS[1], "(" .. ARGV[1], tonumber(ARGV[2])
local found, low = {}, "-inf"
while #found <= cap do
  local row = rcall("ZRANGEBYSCORE", key, low, bound, "WITHSCORES", "LIMIT", 0, 1)
  if #row == 0 then break end
  found[#found + 1] = row[2]
  low = "(" .. row[2]
end
return found
