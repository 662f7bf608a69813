-- Credit a reward (a weekly goal's or a side quest's) as a point activity of its own: the
-- user's total, tier, level, version and per-type counters move on, the boards follow and the
-- outbox gets the activity with the user's state after it. Streak fields are left as they are.
-- The entry carries the reward's key instead of an id; its id is uuid5 of the key (see
-- engine.rules.reward_id), so a reward given twice would still be one row in SQL.
-- A change of tier or level goes to the upgrade feed, and the entry then carries the tier and
-- level before it (otier, olevel).
--   st: {key = user hash, user, name (shown in the feed), total, version, peak (the peak total
--        tier and level follow when higher, 0 unless RULES.keep_peak: numbers), tier, level,
--        streak, longest, last_day (strings), at (unix ms string), outbox, feed, all_board,
--        windows = {day, week, month board keys}, lifetimes = {day, week, month} (TTLs in
--        seconds; "0" = leave that board alone)}
-- Needs tier_and_level and feed.
--- @include "window_add"
local function credit(st, kind, type_board, amount, reward_key, desc)
  st.total = st.total + amount
  st.version = st.version + 1
  local tier, level = tier_and_level(math.max(st.total, st.peak))
  local total_s, level_s, version_s = tostring(st.total), tostring(level), tostring(st.version)
  redis.call("HSET", st.key, "total", total_s, "version", version_s, "tier", tier,
    "level", level_s)
  local entry = {"key", reward_key, "user", st.user, "amount", tostring(amount), "type", kind,
    "desc", desc, "at", st.at, "tier", tier,
    "state", table.concat({total_s, level_s, st.streak, st.longest, st.last_day, version_s}, " ")}
  if tier ~= st.tier or level_s ~= st.level then
    feed_upgrade(st.feed, st.user, st.name, st.tier, st.level, tier, level_s)
    -- the tier and level before, for webhooks' tier and level events (as lua/award.lua)
    for _, v in ipairs({"otier", st.tier, "olevel", st.level}) do entry[#entry + 1] = v end
    st.tier, st.level = tier, level_s
  end
  redis.call("HINCRBY", st.key, "n:" .. kind, 1)
  redis.call("HINCRBY", st.key, "pts:" .. kind, amount)
  local negative = "-" .. tostring(amount)
  redis.call("ZINCRBY", st.all_board, negative, st.user)
  redis.call("ZINCRBY", type_board, negative, st.user)
  for i = 1, 3 do window_add(st.windows[i], st.lifetimes[i], st.user, negative) end
  redis.call("XADD", st.outbox, "*", unpack(entry))
end

-- The state credit() needs, read from the user hash `key` (one HMGET), for a script that pays
-- a reward outside an award (a quest, an achievement backfill): `today` (UTC day) stands for a
-- last active day the user lacks; the rest as credit's st. Also returns whether the user hash
-- has a total (the user exists).
local function credit_state(key, user, at, today, outbox, feed, all_board, windows, lifetimes)
  local h = redis.call("HMGET", key, "total", "version", "streak", "longest", "last_day", "tier",
    "level", "display_name", "username", "pk")
  local total = tonumber(h[1] or "0")
  local peak = RULES.keep_peak and tonumber(h[10] or "0") or 0
  local tier, level = h[6], h[7]
  if not tier then
    local l
    tier, l = tier_and_level(math.max(total, peak))
    level = tostring(l)
  end
  return {key = key, user = user, name = h[8] or h[9] or user, total = total,
    version = tonumber(h[2] or "0"), peak = peak, tier = tier, level = level, streak = h[3] or "0",
    longest = h[4] or "0", last_day = h[5] or today, at = at, outbox = outbox, feed = feed,
    all_board = all_board, windows = windows, lifetimes = lifetimes}, not not h[1]
end
