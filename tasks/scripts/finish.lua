-- running (or as `expect` says) -> a terminal status, the terminal event written first; unless
-- the run already ended, is not as expected, or another attempt holds it. With `cancel_wins`, a
-- run whose cancel was accepted (the API answered 202) is not ended so: the answer is
-- 'cancel_requested' and its reason, and the caller ends it cancelled instead.
local run_key = KEYS[1]
local stream_key = KEYS[2]
local running_key = KEYS[3]
local expect = ARGV[1]  -- 'running', 'queued' or 'active' (either)
local attempt = ARGV[2]  -- '' for any
local status = ARGV[3]
local channel = ARGV[4]
local max_events = ARGV[5]
local ttl_s = ARGV[6]
local prefix, suffix = ARGV[7], ARGV[8]  -- the terminal event around its seq
local run_id = ARGV[9]
local cancel_wins = ARGV[10] == '1'
local first_field = 11  -- then field/value pairs to set

local st = redis.call('HGET', run_key, 'status')
if not st then return {'missing', ''} end
if is_terminal(st) then return {'terminal', st} end
if expect ~= 'active' and st ~= expect then return {'status', st} end
if attempt ~= '' and redis.call('HGET', run_key, 'attempt') ~= attempt then
  return {'fenced', st}
end
if cancel_wins and redis.call('HGET', run_key, 'cancel_requested') == 'true' then
  return {'cancel_requested', redis.call('HGET', run_key, 'cancel_reason') or 'null'}
end
local seq = add_event(stream_key, channel, max_events, ttl_s, prefix, suffix)
redis.call('HSET', run_key, 'status', status, unpack(ARGV, first_field))
metrics_ended(run_key, status, seq)
redis.call('EXPIRE', run_key, ttl_s)
redis.call('ZREM', running_key, run_id)
end_in_batch(run_key, ttl_s)
webhook_due(run_key, run_id)
batch_log(run_key, run_id, st, status, ttl_s)
return {'ok', tostring(seq)}
