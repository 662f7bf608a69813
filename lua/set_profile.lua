--[[
  Set a user's profile fields and record the change in the shard's outbox.

  KEYS[1] user hash                  KEYS[2] shard outbox stream
  KEYS[3] shard's drain flag        KEYS[4] user's tombstone (see lua/delete_user.lua)
  ARGV[1] user id                    ARGV[2] time of the change (unix ms)
  ARGV[3] drain flag lifetime (seconds)
  ARGV[4] n, the number of fields to set, followed by n (field, value) pairs
          (fields: username, display_name, tz), then the names of fields to clear

  Returns: {flag, hash}: flag = 1 when this call raised the drain flag, else 0; hash = the user
  hash after the change, as alternating field names and values; {-8} when the user is deleted
  (their tombstone exists): nothing changed
]]
local rcall = redis.call

--- @include "toint"
--- @include "drain_flag"

local user_key, outbox_key, flag_key, tombstone_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local user, at_ms, flag_ttl, n = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local FIRST_FIELD = 5  -- ARGV[FIRST_FIELD ..]: the n (field, value) pairs, then the clears

if rcall("EXISTS", tombstone_key) == 1 then return {-8} end

local set, clear = {}, {}
for i = FIRST_FIELD, #ARGV do
  if i < FIRST_FIELD + 2 * n then set[#set + 1] = ARGV[i] else clear[#clear + 1] = ARGV[i] end
end

if #clear > 0 then rcall("HDEL", user_key, unpack(clear)) end
if #set > 0 then rcall("HSET", user_key, unpack(set)) end
local version = rcall("HINCRBY", user_key, "version", 1)
if not rcall("HGET", user_key, "created_at") then rcall("HSET", user_key, "created_at", at_ms) end

local h = rcall("HGETALL", user_key)
local entry = {"e", "profile", "user", user, "at", at_ms, "version", toint(version)}
for i = 1, #h, 2 do
  local f = h[i]
  if f == "username" or f == "display_name" or f == "tz" then
    entry[#entry + 1] = f
    entry[#entry + 1] = h[i + 1]
  end
end
rcall("XADD", outbox_key, "*", unpack(entry))
return {raise_drain_flag(flag_key, flag_ttl), h}
