-- Tier name and level of `points`, from the rule tables in ARGV starting at ARGV[base]:
--   ARGV[base] = T (number of tiers), then T tier names, then T tier thresholds,
--   then L (number of level thresholds), L thresholds, then the points per level after the last.
-- Needs threshold_index.
local function tier_and_level(base, points)
  local t = tonumber(ARGV[base])
  local tier = ARGV[base + threshold_index(base + 1 + t, t, points)]
  local lbase = base + 1 + 2 * t
  local l = tonumber(ARGV[lbase])
  local top = tonumber(ARGV[lbase + l])
  local level
  if points >= top then
    level = l + math.floor((points - top) / tonumber(ARGV[lbase + l + 1]))
  else
    level = threshold_index(lbase + 1, l, points)
  end
  return tier, level
end
