--[[
  Delete one user's live state and leave a tombstone, atomically: from this call on, every
  script that writes to the user (award, quest, set_profile) finds the tombstone and refuses.

  KEYS[1] user's tombstone (string: when deleted, unix ms; expires)
  KEYS[2] shard's tombstone index (zset: user digest -> tombstone expiry, unix ms by the
          server's clock)
  KEYS[3] shard's achievement holders (hash: "<id>:<level>" -> users holding it)
  KEYS[4] shard's upgrade feed (stream, capped near 100 entries: see includes/feed.lua)
  KEYS[5] user hash     KEYS[6] day bitmap   KEYS[7] frozen-day bitmap  KEYS[8] weekly goals
  KEYS[9] side quests in progress   KEYS[10] completed side quests   KEYS[11] achievements
  KEYS[12...] the user's other keys, then the shard's leaderboards: KEYS[5] on, ARGV[5]
          of them, are engine.domain.keys.Keys.user_keys, in order (friends, reversal
          markers, ...); every key after them is a board of the shard (the user leaves each)

  ARGV[1] user id                    ARGV[2] user digest (engine.domain.keys.user_digest)
  ARGV[3] now (unix ms, the engine's clock: the tombstone's value)
  ARGV[4] tombstone lifetime (seconds, > 0)
  ARGV[5] how many of the user's keys follow KEYS[4] (len(Keys.user_keys); at least 7)

  Returns: {keys, boards, feed, holders, first}: keys = the user's keys that existed and were
  deleted; boards = the boards the user was on; feed = upgrade feed entries of the user deleted;
  holders = achievement levels whose holder count went down; first = 1 when this call wrote the
  tombstone, 0 when it was already there (a repeated delete: its lifetime starts again).
]]
local rcall = redis.call

local tombstone_key, index_key, holders_key, feed_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local USER_KEYS_AT = 5
local BOARDS_AT = USER_KEYS_AT + tonumber(ARGV[5])  -- KEYS[5 .. BOARDS_AT - 1]: the user's keys
local achievements_key = KEYS[11]
local user, digest, now_ms, life = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])

local first = rcall("SET", tombstone_key, now_ms, "NX", "EX", life) and 1 or 0
if first == 0 then rcall("EXPIRE", tombstone_key, life) end
-- the index is kept by the server's clock, as the tombstone's TTL is (the drains that read it
-- compare with the wall clock); it holds live tombstones only
local t = rcall("TIME")
local server_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
rcall("ZREMRANGEBYSCORE", index_key, "-inf", server_ms)
rcall("ZADD", index_key, server_ms + life * 1000, digest)
rcall("EXPIRE", index_key, life)  -- outlives every member: each was added with at most `life`

-- the achievement levels the user held no longer count them among their holders
local held = rcall("HKEYS", achievements_key)
for i = 1, #held do
  if rcall("HINCRBY", holders_key, held[i], -1) <= 0 then rcall("HDEL", holders_key, held[i]) end
end

-- the user's entries in the upgrade feed (bounded: the feed is capped)
local feed_gone = {}
local feed = rcall("XRANGE", feed_key, "-", "+")
for i = 1, #feed do
  local fields = feed[i][2]
  for j = 1, #fields, 2 do
    if fields[j] == "user" then
      if fields[j + 1] == user then feed_gone[#feed_gone + 1] = feed[i][1] end
      break
    end
  end
end
if #feed_gone > 0 then rcall("XDEL", feed_key, unpack(feed_gone)) end

local deleted = 0
for i = USER_KEYS_AT, BOARDS_AT - 1 do deleted = deleted + rcall("DEL", KEYS[i]) end
local boards = 0
for i = BOARDS_AT, #KEYS do boards = boards + rcall("ZREM", KEYS[i], user) end

return {deleted, boards, #feed_gone, #held, first}
