-- Advance the user's weekly goals (RULES.goals: id, kind 1 count / 2 points / 3 active days,
-- type, target, reward, desc; RULES.goal_fields: their fields in the hash) by one award of `amount` points of `activity_type`; `active`:
-- whether the award made its day a new active day; `week`: the week number of the award's
-- local day (a string, engine.domain.periods.week_of). The goal hash `key` holds wk = the
-- user's goal week and g:<goal> = progress; an award in an earlier week advances nothing.
-- A goal whose progress this award takes to its target or beyond appends its reward to
-- `rewards` ({kind, ref, points, reward key, description, `type_board`}); its key is
-- "goal:user:goal:week".
-- Returns what store_goals is to write: nil when nothing, else whether the hash starts a new
-- week, the fields to set and {goal id, week, progress, target, reward} per goal completed.
local function advance_goals(key, type_board, user, activity_type, amount, active, week,
                             rewards)
  local goals = RULES.goals
  if #goals == 0 then return nil end
  local week_n = tonumber(week)
  local names = RULES.goal_fields
  local g = redis.call("HMGET", key, unpack(names))
  local wk = tonumber(g[1] or "") or -1
  if week_n < wk then return nil end
  local reset, done = week_n > wk, {}
  local fields = reset and {"wk", week} or {}
  for i = 1, #goals do
    local goal = goals[i]
    local delta = 0
    if goal.kind == 1 then
      if goal.type == activity_type then delta = 1 end
    elseif goal.kind == 2 then
      delta = amount
    elseif active then
      delta = 1
    end
    if delta > 0 then
      local old = 0
      if not reset then old = tonumber(g[i + 1] or "0") end
      local new = old + delta
      fields[#fields + 1] = names[i + 1]
      fields[#fields + 1] = tostring(new)
      if old < goal.target and new >= goal.target then
        rewards[#rewards + 1] = {RULES.goal_type, goal.id, goal.reward,
          "goal:" .. user .. ":" .. goal.id .. ":" .. week, goal.desc, type_board}
        done[#done + 1] = {goal.id, week, tostring(new), tostring(goal.target),
          tostring(goal.reward)}
      end
    end
  end
  return reset, fields, done
end
