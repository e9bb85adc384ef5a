-- Whether a batch is still being dispatched (in the dispatching set, which the reaper watches):
-- a batch that is gone, or whose every message was sent (or cancelled: its cursor is at the end),
-- leaves the set, and is never resumed; else, with `stale_at`, it counts as stalled after then.
-- KEYS: the batch, the dispatching set. ARGV: the batch id, stale_at ('' : only leave when sent).
-- Returns 1 while the batch is being dispatched, else 0.
local total = redis.call('HGET', KEYS[1], 'total')
local sent = redis.call('HGET', KEYS[1], 'dispatched')
if not total or tonumber(sent or '0') >= tonumber(total) then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
if ARGV[2] ~= '' then redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1]) end
return 1
