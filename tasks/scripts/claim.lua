-- queued -> running for one attempt, fenced (attempt = stored attempt + 1), with its `started`
-- event. Returns {'ok', seq, name, value, ...} (the fields the execution needs: CLAIM_FIELDS),
-- or {why not, status}.
local run_key = KEYS[1]
local stream_key = KEYS[2]
local running_key = KEYS[3]
local queued_key = KEYS[4]  -- optional
local attempt = ARGV[1]
local channel = ARGV[2]
local max_events = ARGV[3]
local ttl_s = ARGV[4]
local prefix, suffix = ARGV[5], ARGV[6]  -- the started event around its seq
local run_id = ARGV[7]
local heartbeat_deadline = ARGV[8]
local now = tonumber(ARGV[9])  -- epoch s; the run's deadline is now + its timeout
local first_field = 10  -- then field/value pairs to set
local claim_fields = cjson.decode(ARGV[#ARGV])  -- the last argument

local st = redis.call('HGET', run_key, 'status')
if not st then return {'missing', ''} end
if st ~= 'queued' then return {'status', st} end
local att = tonumber(redis.call('HGET', run_key, 'attempt') or '0')
if att + 1 ~= tonumber(attempt) then return {'fenced', tostring(att)} end
local seq = add_event(stream_key, channel, max_events, ttl_s, prefix, suffix)
local timeout = tonumber(redis.call('HGET', run_key, 'timeout') or 'null')
local deadline = 'null'
if timeout then deadline = tostring(now + timeout) end
redis.call('HSET', run_key, 'status', 'running', 'attempt', attempt, 'deadline', deadline,
  unpack(ARGV, first_field, #ARGV - 1))
metrics_started(run_key)
redis.call('ZADD', running_key, heartbeat_deadline, run_id)
if queued_key then redis.call('ZREM', queued_key, run_id) end  -- no longer waiting for its message
batch_log(run_key, run_id, 'queued', 'running', nil)
local out = {'ok', tostring(seq)}
local values = redis.call('HMGET', run_key, unpack(claim_fields))
for i, name in ipairs(claim_fields) do out[#out + 1] = name; out[#out + 1] = values[i] end
return out
