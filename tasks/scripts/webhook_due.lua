-- Make the webhook of a run that just turned terminal due now, and its batch's once every run of
-- the batch has ended (after end_in_batch counted it). Called in the same script as the terminal
-- status, so no delivery is lost if a process dies right after (tasks/webhook_store.py).
local function webhook_due(run, run_id)
  local function now()
    local t = redis.call('TIME')
    return tonumber(t[1]) + tonumber(t[2]) / 1000000
  end
  local hook = redis.call('HGET', run, 'webhook')
  if hook and hook ~= 'null' then redis.call('ZADD', WEBHOOKS_DUE_KEY, 'NX', now(), 'run:' .. run_id) end
  local id = redis.call('HGET', run, 'batch_id')
  if not id or id == 'null' then return end
  id = cjson.decode(id)
  local batch = BATCH_PREFIX .. id
  hook = redis.call('HGET', batch, 'webhook')
  if not hook or hook == 'null' then return end
  local total = tonumber(redis.call('HGET', batch, 'total') or '0')
  if tonumber(redis.call('HGET', batch, 'ended') or '0') >= total then
    redis.call('ZADD', WEBHOOKS_DUE_KEY, 'NX', now(), 'batch:' .. id)
  end
end
