-- Index (1-based) of the last threshold <= value among ARGV[first .. first+count-1],
-- which are strictly increasing and start at 0. Binary search; converts only what it reads.
local function threshold_index(first, count, value)
  local lo, hi = 1, count
  while lo < hi do
    local mid = math.floor((lo + hi + 1) / 2)
    if tonumber(ARGV[first + mid - 1]) <= value then lo = mid else hi = mid - 1 end
  end
  return lo
end
