-- Count a run of a batch as ended; once all have, the batch's keys expire like its runs (they were
-- made to outlive an unfinished run). Called where a run turns terminal. KEYS: the run.
local function end_in_batch(run, ttl)
  local id = redis.call('HGET', run, 'batch_id')
  if not id or id == 'null' then return end
  id = cjson.decode(id)
  local batch = BATCH_PREFIX .. id
  if redis.call('EXISTS', batch) == 0 then return end
  if redis.call('HINCRBY', batch, 'ended', 1) >= tonumber(redis.call('HGET', batch, 'total')) then
    redis.call('EXPIRE', batch, ttl)
    redis.call('EXPIRE', BATCH_RUNS_PREFIX .. id, ttl)
  end
end
