-- Achievements (badges). RULES.achievements: per achievement its id, the user hash field it
-- tests ("total", "streak" or "n:<type>"), targets (the field's value at which each level is
-- earned, increasing), rewards (points per level) and desc (the reward's description per
-- level); RULES.ach_fields: "a:<id>" of each achievement (the level the user holds, in the
-- user hash), then the count fields they test; RULES.ach_type: the rewards' activity type.
-- RULES.ach_for[type] and RULES.ach_fields_for[type]: the same for the achievements an award of
-- that type can move (the award script tests only those).
--
-- A level is earned once: the user hash keeps the highest level held, and a level is earned
-- when the field reaches its target while the user holds a lower one. So an achievement added
-- to the rules later is earned by the next call that tests it (an award, or the backfill).

-- Decide the levels newly earned among `achs`, given `values` (field -> number, after the call's other
-- changes) and `held` (achievement id -> level held; updated). Appends one entry per level to
-- `rewards`: {kind, "<id>:<level>", points, reward key, description, `type_board`, id,
-- level}; the reward key is "achievement:<user>:<id>:<level>". Rewards are counted into
-- values.total (and the achievement type's count), and the achievements tested again, so a
-- reward that lifts the user to a tier earns that tier's badge in the same call.
local function decide_achievements(achs, values, held, user, type_board, rewards)
  local kind = RULES.ach_type
  local count_field = "n:" .. kind
  for _ = 1, 8 do
    local paid, n_paid = 0, 0
    for i = 1, #achs do
      local a = achs[i]
      local targets = a.targets
      local have = held[a.id]
      local value = values[a.field] or 0
      while have < #targets and value >= targets[have + 1] do
        have = have + 1
        local points = a.rewards[have]
        rewards[#rewards + 1] = {kind, a.id .. ":" .. have, points,
          "achievement:" .. user .. ":" .. a.id .. ":" .. have, a.desc[have], type_board,
          a.id, have}
        if points > 0 then paid, n_paid = paid + points, n_paid + 1 end
      end
      held[a.id] = have
    end
    if n_paid == 0 then return end
    values.total = values.total + paid
    values[count_field] = (values[count_field] or 0) + n_paid
  end
end

-- The levels held of `achs`, read at h[at + 1] ... (in their order).
local function held_achievements(achs, h, at)
  local held = {}
  for i = 1, #achs do held[achs[i].id] = tonumber(h[at + i] or "0") end
  return held
end

-- Write the achievements among `rewards` (entries with an id at [7]): the level held (user
-- hash "a:<id>"), when it was earned (`ach_key` "<id>:<level>" = `at`, unix ms), the shard's
-- count of holders (`counts_key` "<id>:<level>"), an outbox entry (e = ach) and a feed entry.
-- Their points are credited by the caller. st: as for credit (key, user, name, outbox, feed).
local function store_achievements(rewards, st, ach_key, counts_key, at)
  for i = 1, #rewards do
    local r = rewards[i]
    if r[7] then
      local level = tostring(r[8])
      redis.call("HSET", st.key, "a:" .. r[7], level)
      redis.call("HSET", ach_key, r[2], at)
      redis.call("HINCRBY", counts_key, r[2], 1)
      redis.call("XADD", st.outbox, "*", "e", "ach", "user", st.user, "ach", r[7],
        "level", level, "at", at, "reward", tostring(r[3]))
      feed_achievement(st.feed, st.user, st.name, r[7], level)
    end
  end
end

-- Test every achievement against the user's state now (after st's changes), and credit and
-- store what it earns (for the quest script and the backfill). Needs credit. Returns the
-- entries earned, as decide_achievements appends them.
local function grant_achievements(st, ach_key, counts_key, type_board, at)
  local fields, achs = RULES.ach_fields, RULES.achievements
  local got = {}
  if #achs == 0 then return got end
  local h = redis.call("HMGET", st.key, "streak", unpack(fields))
  local held = held_achievements(achs, h, 1)
  local values = {total = st.total, streak = tonumber(h[1] or "0")}
  for i = #achs + 1, #fields do values[fields[i]] = tonumber(h[1 + i] or "0") end
  decide_achievements(achs, values, held, st.user, type_board, got)
  for i = 1, #got do
    local r = got[i]
    if r[3] > 0 then credit(st, r[1], r[6], r[3], r[4], r[5]) end
  end
  store_achievements(got, st, ach_key, counts_key, at)
  return got
end

-- The earned entries of `rewards` as the scripts reply them: "<id>:<level>" joined by "\29".
local function achievements_reply(rewards)
  local out = {}
  for i = 1, #rewards do
    if rewards[i][7] then out[#out + 1] = rewards[i][2] end
  end
  return table.concat(out, "\29")
end
