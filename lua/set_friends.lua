--[[
  Replace a user's friend list.

  KEYS[1] the user's friends (set)
  KEYS[2] the user's tombstone (exists while the user is deleted: see lua/delete_user.lua)
  ARGV[1..n] the friends' user ids (n from 0 to 1,000; checked by the caller)

  Returns: the number of friends now held (integer); -8 when the user is deleted (their
  tombstone exists): nothing changed
]]
local rcall = redis.call

local friends_key, tombstone_key = KEYS[1], KEYS[2]
local CHUNK = 500  -- ids per SADD (unpack's stack has a limit)

if rcall("EXISTS", tombstone_key) == 1 then return -8 end

rcall("DEL", friends_key)
for i = 1, #ARGV, CHUNK do
  rcall("SADD", friends_key, unpack(ARGV, i, math.min(i + CHUNK - 1, #ARGV)))
end
return rcall("SCARD", friends_key)
