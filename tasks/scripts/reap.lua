-- A running run whose heartbeat is stale: requeue it, or say it must fail ('lost', 'timeout');
-- 'alive' while its heartbeat is fresh, 'gone' once it is no longer running.
local run_key = KEYS[1]
local running_key = KEYS[2]
local run_id = ARGV[1]
local now = tonumber(ARGV[2])  -- epoch s
local max_attempts = tonumber(ARGV[3])

local score = redis.call('ZSCORE', running_key, run_id)
if not score or tonumber(score) > now then return {'alive', ''} end
local st = redis.call('HGET', run_key, 'status')
if st ~= 'running' then
  redis.call('ZREM', running_key, run_id)
  return {'gone', st or ''}
end
local att = redis.call('HGET', run_key, 'attempt')
local deadline = tonumber(redis.call('HGET', run_key, 'deadline') or 'null')
if deadline and deadline < now then return {'timeout', att} end
if tonumber(att) >= max_attempts then return {'lost', att} end
redis.call('HSET', run_key, 'status', 'queued')
redis.call('ZREM', running_key, run_id)
batch_log(run_key, run_id, 'running', 'queued', nil)
return {'requeue', att}
