-- Claim the next chunk of a batch's runs to send to the broker, in submit order: the cursor
-- `dispatched` moves on, and the claimed runs still queued are noted in the queued set
-- (tasks.lost) in the same step, so a dispatcher that dies before sending them loses none. While
-- `ahead` of the batch's messages already sent still wait (queued), none is claimed: the broker's
-- backlog stays short. Returns the new cursor, then run id, agent, queue, input (JSON text)
-- quadruples; or the cursor and 'wait'.
local batch_key = KEYS[1]
local batch_runs_key = KEYS[2]
local queued_key = KEYS[3]
local chunk_size = tonumber(ARGV[1])
local now = ARGV[2]
local ahead = tonumber(ARGV[3])

local total = tonumber(redis.call('HGET', batch_key, 'total') or '0')
local start = tonumber(redis.call('HGET', batch_key, 'dispatched') or '0')
if start >= total then return {tostring(start)} end
local queued = tonumber(redis.call('HGET', batch_key, 'n:queued') or '0')
if queued - (total - start) >= ahead then return {tostring(start), 'wait'} end
local stop = math.min(start + chunk_size, total)
redis.call('HSET', batch_key, 'dispatched', stop)
local out = {tostring(stop)}
for _, id in ipairs(redis.call('LRANGE', batch_runs_key, start, stop - 1)) do
  local v = redis.call('HMGET', RUN_PREFIX .. id, 'status', 'agent', 'queue', 'input')
  if v[1] == 'queued' then
    redis.call('ZADD', queued_key, now, id)
    out[#out + 1] = id
    out[#out + 1] = v[2]
    out[#out + 1] = v[3] or 'null'
    out[#out + 1] = v[4] or 'null'
  end
end
return out
