-- Credit a reward (a weekly goal's or a side quest's) as a point activity of its own: the
-- user's total, tier, level, version and per-type counters move on, the boards follow and the
-- outbox gets the activity with the user's state after it. Streak fields are left as they are.
-- The entry carries the reward's key instead of an id; its id is uuid5 of the key (see
-- engine.rules.reward_id), so a reward given twice would still be one row in SQL.
-- A change of tier or level goes to the upgrade feed.
--   st: {key = user hash, user, name (shown in the feed), total, version (numbers), tier, level,
--        streak, longest, last_day (strings), at (unix ms string), outbox, feed, all_board,
--        windows = {day, week, month board keys}, lifetimes = {day, week, month} (TTLs in
--        seconds; "0" = leave that board alone)}
-- Needs tier_and_level and feed.
--- @include "window_add"
local function credit(st, kind, type_board, amount, reward_key, desc)
  st.total = st.total + amount
  st.version = st.version + 1
  local tier, level = tier_and_level(st.total)
  local total_s, level_s, version_s = tostring(st.total), tostring(level), tostring(st.version)
  redis.call("HSET", st.key, "total", total_s, "version", version_s, "tier", tier,
    "level", level_s)
  if tier ~= st.tier or level_s ~= st.level then
    feed_upgrade(st.feed, st.user, st.name, st.tier, st.level, tier, level_s)
    st.tier, st.level = tier, level_s
  end
  redis.call("HINCRBY", st.key, "n:" .. kind, 1)
  redis.call("HINCRBY", st.key, "pts:" .. kind, amount)
  local negative = "-" .. tostring(amount)
  redis.call("ZINCRBY", st.all_board, negative, st.user)
  redis.call("ZINCRBY", type_board, negative, st.user)
  for i = 1, 3 do window_add(st.windows[i], st.lifetimes[i], st.user, negative) end
  redis.call("XADD", st.outbox, "*", "key", reward_key, "user", st.user, "amount", tostring(amount),
    "type", kind, "desc", desc, "at", st.at, "tier", tier,
    "state", table.concat({total_s, level_s, st.streak, st.longest, st.last_day, version_s}, " "))
end
