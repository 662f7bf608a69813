--[[
  Distinct scores of one shard's board that are better (lower: scores are negated points) than
  a given score, after a given one: what a dense rank counts, one step of it. Read in chunks
  (ZRANGEBYSCORE ... LIMIT 0 n, O(log N + n)), each starting past the last score the chunk
  before saw (the rest of its run is skipped); n adapts to the board, halved down to 1 after a
  chunk of one score (long ties: one entry a score), doubled up to 64 after a chunk without a
  tie, so the cost follows the distinct scores, not the users. The caller goes on from the last
  score returned while a call returns ARGV[3] of them.

  KEYS[1] board (zset)
  ARGV[1] score (exclusive upper bound)
  ARGV[2] start after this score ("(<score>", exclusive) or "-inf"
  ARGV[3] most scores to return (integer > 0)

  Returns: the distinct scores in that range, best first, as strings (at most ARGV[3])
]]
local rcall = redis.call

local key, bound, low, cap = KEYS[1], "(" .. ARGV[1], ARGV[2], tonumber(ARGV[3])
local found, chunk = {}, 8
while #found < cap do
  local rows = rcall("ZRANGEBYSCORE", key, low, bound, "WITHSCORES", "LIMIT", 0, chunk)
  local before = #found
  for i = 2, #rows, 2 do
    if rows[i] ~= found[#found] and #found < cap then found[#found + 1] = rows[i] end
  end
  if #rows < 2 * chunk then break end
  local seen = #found - before
  if seen <= 1 and chunk > 1 then
    chunk = math.floor(chunk / 2)
  elseif seen == chunk and chunk < 64 then
    chunk = chunk * 2
  end
  low = "(" .. rows[#rows]
end
return found
