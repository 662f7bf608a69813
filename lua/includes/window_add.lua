-- Count `amount` points for `user` on a window board (day, week or month; scores are negated
-- points). A user new on the board may be its first entry, so a new key: it gets `lifetime`
-- (seconds, a string); "0" = the window's retention has passed: the board is left alone.
local function window_add(board, lifetime, user, amount)
  if lifetime ~= "0" then
    if tonumber(redis.call("ZINCRBY", board, -amount, user)) == -amount then
      redis.call("EXPIRE", board, lifetime)
    end
  end
end
