-- Keep the first webhook message made for a member (two makers agree); returns the kept one.
local message_key = KEYS[1]
local ttl_s = ARGV[1]
local first_field = 2  -- then field/value pairs

if redis.call('EXISTS', message_key) == 0 then
  redis.call('HSET', message_key, unpack(ARGV, first_field))
  redis.call('EXPIRE', message_key, ttl_s)
end
return redis.call('HGETALL', message_key)
