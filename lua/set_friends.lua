--[[
  Replace a user's friend list.

  KEYS[1] the user's friends (set)
  ARGV[1..n] the friends' user ids (n from 0 to 1,000; checked by the caller)

  Returns: the number of friends now held (integer)
]]
local rcall = redis.call

local friends_key = KEYS[1]
local CHUNK = 500  -- ids per SADD (unpack's stack has a limit)

rcall("DEL", friends_key)
for i = 1, #ARGV, CHUNK do
  rcall("SADD", friends_key, unpack(ARGV, i, math.min(i + CHUNK - 1, #ARGV)))
end
return rcall("SCARD", friends_key)
