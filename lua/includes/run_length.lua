-- Number of consecutive marked days next to `day` (exclusive) walking by `step` (+1 or -1),
-- stopping after `limit` days. Needs day_bit.
local function run_length(key, day0, day, step, limit)
  local n = 0
  local d = day + step
  while n < limit and day_bit(key, day0, d) == 1 do
    n = n + 1
    d = d + step
  end
  return n
end
