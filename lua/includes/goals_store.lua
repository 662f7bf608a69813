-- Write what advance_goals decided (`plan`, or nil for nothing): the user's goal hash `key`,
-- and one outbox entry (e = goal) per goal completed.
local function store_goals(key, outbox, user, plan)
  if not plan then return end
  if plan.reset then redis.call("DEL", key) end
  if #plan.fields > 0 then redis.call("HSET", key, unpack(plan.fields)) end
  for i = 1, #plan.done do
    local d = plan.done[i]
    redis.call("XADD", outbox, "*", "e", "goal", "user", user, "goal", d[1], "week", d[2],
      "progress", d[3], "target", d[4], "reward", d[5])
  end
end
