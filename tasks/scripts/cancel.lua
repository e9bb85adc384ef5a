-- A queued run ends cancelled at once (with its event); a running one is flagged and its
-- process told on the cancel channel.
local run_key = KEYS[1]
local stream_key = KEYS[2]
local running_key = KEYS[3]
local queued_key = KEYS[4]  -- optional
local channel = ARGV[1]
local max_events = ARGV[2]
local ttl_s = ARGV[3]
local prefix, suffix = ARGV[4], ARGV[5]  -- the cancelled event around its seq
local run_id = ARGV[6]
local reason_json = ARGV[7]
local finished_at_json = ARGV[8]
local cancel_channel = ARGV[9]
local cancel_message = ARGV[10]

local st = redis.call('HGET', run_key, 'status')
if not st then return {'missing', ''} end
if is_terminal(st) then return {'terminal', st} end
redis.call('HSET', run_key, 'cancel_requested', 'true', 'cancel_reason', reason_json)
if st == 'queued' then
  local seq = add_event(stream_key, channel, max_events, ttl_s, prefix, suffix)
  redis.call('HSET', run_key, 'status', 'cancelled', 'finished_at', finished_at_json)
  metrics_ended(run_key, 'cancelled', seq)
  redis.call('EXPIRE', run_key, ttl_s)
  redis.call('ZREM', running_key, run_id)
  if queued_key then redis.call('ZREM', queued_key, run_id) end
  end_in_batch(run_key, ttl_s)
  webhook_due(run_key, run_id)
  batch_log(run_key, run_id, 'queued', 'cancelled', ttl_s)
  return {'cancelled', st}
end
redis.call('PUBLISH', cancel_channel, cancel_message)
return {'requested', st}
