-- Write what advance_goals decided (`reset`, `fields`, `done`; nil for nothing): the user's
-- goal hash `key`, and one outbox entry (e = goal) per goal completed.
local function store_goals(key, outbox, user, reset, fields, done)
  if reset == nil then return end
  if reset then redis.call("DEL", key) end
  if #fields > 0 then redis.call("HSET", key, unpack(fields)) end
  for i = 1, #done do
    local d = done[i]
    redis.call("XADD", outbox, "*", "e", "goal", "user", user, "goal", d[1], "week", d[2],
      "progress", d[3], "target", d[4], "reward", d[5])
  end
end
