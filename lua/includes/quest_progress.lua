-- Advance by one each of the user's side quests in progress (hash `open_key`) that counts
-- `activity_type` and was started before `at_ms` (unix ms, a string) and ends after it. One
-- that reaches its target is completed at `at_ms` and appends its reward to `rewards` ({kind,
-- ref, points, reward key, description, `type_board`}); its key is "quest:user:quest" and its
-- description RULES.quest_desc followed by the quest's title.
-- Returns {quest id, fields} per quest advanced, for quest_store. Needs quest_parse.
local function advance_quests(open_key, type_board, user, activity_type, at_ms, rewards)
  local advanced = {}
  local open = redis.call("HGETALL", open_key)
  local at = tonumber(at_ms)
  local prefix = activity_type .. "\31"
  for i = 1, #open, 2 do
    -- a record opens with its activity type: parse only the quests this award may advance
    local f = string.sub(open[i + 1], 1, #prefix) == prefix and quest_parse(open[i + 1])
    if f and at >= tonumber(f[6]) and (f[5] == "0" or at < tonumber(f[5])) then
      local progress = tonumber(f[3]) + 1
      f[3] = tostring(progress)
      if progress >= tonumber(f[2]) then
        f[7] = at_ms
        rewards[#rewards + 1] = {RULES.quest_type, open[i], tonumber(f[4]),
          "quest:" .. user .. ":" .. open[i], RULES.quest_desc .. f[8], type_board}
      end
      advanced[#advanced + 1] = {open[i], f}
    end
  end
  return advanced
end
