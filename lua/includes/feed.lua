-- Record a tier or level change in the shard's upgrade feed: a stream capped near FEED_LENGTH
-- entries (whole listpack nodes are trimmed), read newest first by the dashboard. Written only
-- when an award or reward changes the user's tier or level, so an award pays for it rarely.
-- The entry's id tells when (Redis's clock), also for an award dated in the past.
local FEED_LENGTH = "100"
local function feed_upgrade(key, user, name, from_tier, from_level, tier, level)
  redis.call("XADD", key, "MAXLEN", "~", FEED_LENGTH, "*", "user", user, "name", name,
    "from_tier", from_tier, "tier", tier, "from_level", from_level, "level", level)
end
-- Record an achievement level earned in the same feed (e = ach).
local function feed_achievement(key, user, name, ach, level)
  redis.call("XADD", key, "MAXLEN", "~", FEED_LENGTH, "*", "e", "ach", "user", user,
    "name", name, "ach", ach, "level", level)
end
