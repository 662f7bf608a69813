-- Whether `day` is marked in the user's day bitmap, whose bit 0 is day `day0`.
local function day_bit(key, day0, day)
  if day < day0 then return 0 end
  return redis.call("GETBIT", key, day - day0)
end
