-- Index (1-based) of the last element <= value in `list`, a strictly increasing array of
-- numbers starting at 0. Binary search.
local function threshold_index(list, value)
  local lo, hi = 1, #list
  while lo < hi do
    local mid = math.floor((lo + hi + 1) / 2)
    if list[mid] <= value then lo = mid else hi = mid - 1 end
  end
  return lo
end
