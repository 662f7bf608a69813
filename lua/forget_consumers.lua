--[[
  Delete the named consumers of a group that hold no pending entry, in one atomic step (a
  consumer that read an entry between a check and its deletion would take the entry off the
  group's pending list, and the entry would never be written).

  KEYS[1] the stream
  ARGV[1] the group             ARGV[2..] the consumers to delete if they hold nothing

  Returns: how many consumers were deleted.
]]
local stream, group = KEYS[1], ARGV[1]
local FIRST_CONSUMER = 2  -- ARGV[FIRST_CONSUMER ..]: the consumers

local forgotten = 0
for i = FIRST_CONSUMER, #ARGV do
  local consumer = ARGV[i]
  if #redis.call("XPENDING", stream, group, "-", "+", 1, consumer) == 0 then
    redis.call("XGROUP", "DELCONSUMER", stream, group, consumer)
    forgotten = forgotten + 1
  end
end
return forgotten
