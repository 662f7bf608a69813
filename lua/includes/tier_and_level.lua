-- Tier name and level of `points` under RULES, the table the engine defines ahead of the
-- script (see `--- @define RULES`): tier_names, tier_at (thresholds), level_at (thresholds of
-- levels 1..L) and level_step (points per level after the last threshold).
-- Needs threshold_index.
local function tier_and_level(points)
  local tier = RULES.tier_names[threshold_index(RULES.tier_at, points)]
  local levels = RULES.level_at
  local top = levels[#levels]
  if points >= top then
    return tier, #levels + math.floor((points - top) / RULES.level_step)
  end
  return tier, threshold_index(levels, points)
end
