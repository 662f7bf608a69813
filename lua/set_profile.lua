--[[
  Set a user's profile fields and record the change in the shard's outbox.

  KEYS[1] user hash                  KEYS[2] shard outbox stream
  KEYS[3] shard's drain flag
  ARGV[1] user id                    ARGV[2] time of the change (unix ms)
  ARGV[3] drain flag lifetime (seconds)
  ARGV[4] n, the number of fields to set, followed by n (field, value) pairs
          (fields: username, display_name, tz), then the names of fields to clear

  Returns: {flag, hash}: flag = 1 when this call raised the drain flag, else 0; hash = the user
  hash after the change, as alternating field names and values
]]
local rcall = redis.call

--- @include "toint"

local n = tonumber(ARGV[4])
local set = {}
for i = 5, 4 + 2 * n do set[#set + 1] = ARGV[i] end
local clear = {}
for i = 5 + 2 * n, #ARGV do clear[#clear + 1] = ARGV[i] end

if #clear > 0 then rcall("HDEL", KEYS[1], unpack(clear)) end
if #set > 0 then rcall("HSET", KEYS[1], unpack(set)) end
local version = rcall("HINCRBY", KEYS[1], "version", 1)
if not rcall("HGET", KEYS[1], "created_at") then rcall("HSET", KEYS[1], "created_at", ARGV[2]) end

local h = rcall("HGETALL", KEYS[1])
local entry = {"e", "profile", "user", ARGV[1], "at", ARGV[2], "version", toint(version)}
for i = 1, #h, 2 do
  local f = h[i]
  if f == "username" or f == "display_name" or f == "tz" then
    entry[#entry + 1] = f
    entry[#entry + 1] = h[i + 1]
  end
end
rcall("XADD", KEYS[2], "*", unpack(entry))
local flag = rcall("SET", KEYS[3], "1", "NX", "EX", ARGV[3]) and 1 or 0
return {flag, h}
