-- Format a whole number without exponent notation (tostring gives 1e+15 on some Lua builds).
local function toint(n)
  return string.format("%d", n)
end
