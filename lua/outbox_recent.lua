--[[
  One user's newest awards still in the shard's outbox and possibly not yet in SQL: the entries
  after the drain's floor (the oldest entry its consumer group holds unacknowledged, else the
  first one it has not read), read newest first, a chunk at a time, at most ARGV[4] entries in
  all (so the cost is bounded by the outbox's lag and by that cap, whatever the backlog).
  Only activity entries (no "e" field: awards and rewards) of the user are returned.

  KEYS[1] shard outbox stream
  ARGV[1] consumer group (the drain's)   ARGV[2] user id
  ARGV[3] most entries to return         ARGV[4] most entries to read

  Returns: {id, {field, value, ...}, id, {...}, ...}, newest first
]]
local rcall = redis.call

local outbox = KEYS[1]
local group, user, want, budget = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local CHUNK = 200

if rcall("EXISTS", outbox) == 0 then return {} end

-- the floor: nothing before it can be missing from SQL
local floor = "-"
for _, g in ipairs(rcall("XINFO", "GROUPS", outbox)) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  if info["name"] == group then
    local pending = rcall("XPENDING", outbox, group)
    if tonumber(pending[1]) > 0 then
      floor = pending[2]
    else
      floor = "(" .. info["last-delivered-id"]
    end
  end
end

local found, top, read = {}, "+", 0
while read < budget and #found < 2 * want do
  local rows = rcall("XREVRANGE", outbox, top, floor, "COUNT", math.min(CHUNK, budget - read))
  if #rows == 0 then break end
  for _, row in ipairs(rows) do
    local f, mine, kind = row[2], false, false
    for i = 1, #f, 2 do
      if f[i] == "user" then mine = f[i + 1] == user elseif f[i] == "e" then kind = true end
    end
    if mine and not kind and #found < 2 * want then
      found[#found + 1] = row[1]
      found[#found + 1] = f
    end
  end
  read = read + #rows
  top = "(" .. rows[#rows][1]
end
return found
