-- Append to `rewards` the streak milestones (RULES.milestones: {len, points, desc}, shortest
-- first) that a streak run starting on local day `run_start` passes by growing from `old_len`
-- to `new_len` active days: {kind, ref (the length), points, reward key, description,
-- `type_board`}. The key "streak:user:run start:length" is one per run and milestone.
local function reach_milestones(type_board, user, run_start, old_len, new_len, rewards)
  local ms = RULES.milestones
  for i = 1, #ms do
    local m = ms[i]
    if m.len > new_len then return end
    if m.len > old_len then
      local len = tostring(m.len)
      rewards[#rewards + 1] = {RULES.bonus_type, len, m.points,
        "streak:" .. user .. ":" .. tostring(run_start) .. ":" .. len, m.desc, type_board}
    end
  end
end
