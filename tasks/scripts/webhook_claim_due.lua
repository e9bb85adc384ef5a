-- The webhook members due now, each leased (due again) until now + lease.
local due_key = KEYS[1]
local count = tonumber(ARGV[1])
local lease_s = tonumber(ARGV[2])

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local due = redis.call('ZRANGEBYSCORE', due_key, '-inf', now, 'LIMIT', 0, count)
for _, member in ipairs(due) do
  redis.call('ZADD', due_key, 'XX', now + lease_s, member)
end
return due
