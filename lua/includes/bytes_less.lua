-- Whether string a sorts before string b byte by byte, as Redis orders sorted-set members
-- (Lua's own < follows the C library's collation, which depends on the locale).
local function bytes_less(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
