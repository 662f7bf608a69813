-- Count points for `user` on a window board (day, week or month; scores are negated points):
-- `negative` is the negated amount as a string (a Lua number would be formatted on every call).
-- A user new on the board may be its first entry, so a new key: it gets `lifetime` (seconds, a
-- string); "0" = the window's retention has passed: the board is left alone. (A new member's
-- score is the increment itself, which Redis formats as `negative` is written: an integer.)
local function window_add(board, lifetime, user, negative)
  if lifetime ~= "0" then
    if redis.call("ZINCRBY", board, negative, user) == negative then
      redis.call("EXPIRE", board, lifetime)
    end
  end
end
