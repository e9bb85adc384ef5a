-- Record a delivery attempt's status on the message and its owner (run or batch), then either
-- end the delivery or make it due again after a pause.
local due_key = KEYS[1]
local message_key = KEYS[2]
local owner_key = KEYS[3]
local member = ARGV[1]
local status_json = ARGV[2]
local pause_s = ARGV[3]  -- '' when the delivery is over
local ended_ttl_s = ARGV[4]

redis.call('HSET', message_key, 'status', status_json)
if redis.call('EXISTS', owner_key) == 1 then
  redis.call('HSET', owner_key, 'webhook_status', status_json)
end
if pause_s == '' then
  redis.call('ZREM', due_key, member)
  redis.call('EXPIRE', message_key, ended_ttl_s)
else
  local t = redis.call('TIME')
  local due = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(pause_s)
  redis.call('ZADD', due_key, 'XX', due, member)
end
return 1
