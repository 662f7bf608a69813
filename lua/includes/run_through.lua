-- Walk from `day` (exclusive) by `step` (+1 or -1) over consecutive days that are active (day
-- bitmap `key`) or frozen (bitmap `frozen_key`, laid out alike; nil when the user has no frozen
-- day), stopping after `limit` days. Returns how many days it walked and how many of them were
-- active (frozen days keep a run together without counting in its length). Needs day_bit.
local function run_through(key, frozen_key, day0, day, step, limit)
  local span, active = 0, 0
  local d = day + step
  while span < limit do
    if day_bit(key, day0, d) == 1 then
      active = active + 1
    elseif not frozen_key or day_bit(frozen_key, day0, d) == 0 then
      break
    end
    span = span + 1
    d = d + step
  end
  return span, active
end
