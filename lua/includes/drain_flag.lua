-- Raise the shard's drain flag `key` for `ttl` seconds unless it stands (see
-- engine/storage/outbox.py): 1 when this call raised it (its caller then queues the shard's
-- one drain job), else 0.
local function raise_drain_flag(key, ttl)
  return redis.call("SET", key, "1", "NX", "EX", ttl) and 1 or 0
end
