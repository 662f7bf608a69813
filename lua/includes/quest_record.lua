-- A user's side quest as stored in the user's quest hashes (field = quest id):
--   activity type, target, progress, reward, ends (unix ms, "0" = never), started (unix ms),
--   completed (unix ms, "" while in progress), title; joined by "\31".
local function quest_parse(rec)
  local f, i = {}, 1
  for part in string.gmatch(rec .. "\31", "([^\31]*)\31") do f[i] = part; i = i + 1 end
  return f
end

local function quest_pack(f)
  return table.concat({f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8]}, "\31")
end

-- Record a quest's new state: in the open hash while in progress, in the done hash once
-- completed; and in the outbox, for user_side_quest in SQL.
local function quest_store(open_key, done_key, outbox, user, qid, f)
  local rec = quest_pack(f)
  local status = "in_progress"
  if f[7] ~= "" then
    status = "completed"
    redis.call("HDEL", open_key, qid)
    redis.call("HSET", done_key, qid, rec)
  else
    redis.call("HSET", open_key, qid, rec)
  end
  local awarded = "0"
  if status == "completed" then awarded = f[4] end
  redis.call("XADD", outbox, "*", "e", "quest", "user", user, "quest", qid, "status", status,
    "progress", f[3], "target", f[2], "reward", awarded, "started", f[6], "completed", f[7])
  return rec
end
