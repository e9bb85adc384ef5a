-- The batch's log: where a run of a batch changes status (`old` -> `new`), one `run` frame goes
-- to the batch's stream and channel, numbered by the batch's own seq; once every run has ended, a
-- `done` frame with the counts follows, `finished_at` is set and the log expires in `ttl` (nil:
-- not a terminal change). Counts per status live in the batch hash as `n:<status>`, and the
-- queued runs of each queue of a batch on several queues as `n:queued@<queue>` (its dispatch's
-- lanes: tasks/scripts/dispatch_chunk.lua).
-- Called right after the status write. KEYS: the run (its record).
local function batch_log(run, run_id, old, new, ttl)
  local id = redis.call('HGET', run, 'batch_id')
  if not id or id == 'null' then return end
  id = cjson.decode(id)
  local batch = BATCH_PREFIX .. id
  if redis.call('EXISTS', batch) == 0 then return end
  local log = BATCH_LOG_PREFIX .. id
  redis.call('HINCRBY', batch, 'n:' .. old, -1)
  redis.call('HINCRBY', batch, 'n:' .. new, 1)
  if old == 'queued' or new == 'queued' then  -- a batch on several queues counts each lane's
    local queue = cjson.decode(redis.call('HGET', run, 'queue') or 'null')
    if type(queue) == 'string' and redis.call('HEXISTS', batch, 'n:queued@' .. queue) == 1 then
      redis.call('HINCRBY', batch, 'n:queued@' .. queue, new == 'queued' and 1 or -1)
    end
  end
  local function append(event, data)
    local seq = redis.call('HINCRBY', batch, 'log_seq', 1)
    local frame = cjson.encode({seq = seq, event = event, data = data})
    redis.call('XADD', log, '0-' .. seq, 'f', frame)
    redis.call('PUBLISH', BATCH_CHANNEL_PREFIX .. id, frame)
    if seq == 1 then redis.call('PEXPIRE', log, redis.call('PTTL', batch)) end
    return seq
  end
  local index = tonumber(redis.call('HGET', run, 'index') or 'null')
  append('run', {batch_id = id, index = index, run_id = run_id, status = new})
  if not ttl then return end
  local total = tonumber(redis.call('HGET', batch, 'total'))
  local counts, ended = {}, 0
  for _, st in ipairs({'queued', 'running', 'succeeded', 'failed', 'cancelled'}) do
    local n = tonumber(redis.call('HGET', batch, 'n:' .. st) or '0')
    if n > 0 then counts[st] = n end
    if st == 'succeeded' or st == 'failed' or st == 'cancelled' then ended = ended + n end
  end
  if ended < total then return end
  redis.call('HSET', batch, 'finished_at', redis.call('HGET', run, 'finished_at') or 'null')
  append('done', {batch_id = id, total = total, counts = counts})
  redis.call('EXPIRE', log, ttl)
end
