-- Claim the next chunk of a batch's runs to send to the broker, in submit order: the cursor
-- `dispatched` moves on, and the claimed runs still queued are noted in the queued set
-- (tasks.lost) in the same step, so a dispatcher that dies before sending them loses none. While
-- `ahead` of the batch's messages already sent still wait (queued), none is claimed: the broker's
-- backlog stays short.
--
-- A batch whose runs go to several queues has one lane per queue (tasks.batch_store): its own
-- list of run ids, cursor `dispatched@<queue>`, `total@<queue>` and `n:queued@<queue>`, so that
-- a queue no worker consumes holds back none of the others. A lane's claim also moves the
-- batch's `dispatched` (the sum of the lanes'), and its list goes once the lane is sent.
-- KEYS: the batch, its runs, the queued set, the lane's runs. ARGV: chunk size, now, ahead, the
-- lane's queue ('' or a queue the batch has no lane for: the whole batch).
-- Returns the new cursor and the total (of the lane), then run id, agent, queue, input (JSON
-- text) quadruples; or the cursor, the total and 'wait'.
local batch_key = KEYS[1]
local runs_key = KEYS[2]
local queued_key = KEYS[3]
local chunk_size = tonumber(ARGV[1])
local now = ARGV[2]
local ahead = tonumber(ARGV[3])
local lane = ARGV[4]

local suffix = ''
if lane ~= '' and redis.call('HEXISTS', batch_key, 'total@' .. lane) == 1 then
  suffix = '@' .. lane
  runs_key = KEYS[4]
end
local total = tonumber(redis.call('HGET', batch_key, 'total' .. suffix) or '0')
local start = tonumber(redis.call('HGET', batch_key, 'dispatched' .. suffix) or '0')
if start >= total then return {tostring(start), tostring(total)} end
local queued = tonumber(redis.call('HGET', batch_key, 'n:queued' .. suffix) or '0')
if queued - (total - start) >= ahead then return {tostring(start), tostring(total), 'wait'} end
local stop = math.min(start + chunk_size, total)
redis.call('HSET', batch_key, 'dispatched' .. suffix, stop)
local out = {tostring(stop), tostring(total)}
for _, id in ipairs(redis.call('LRANGE', runs_key, start, stop - 1)) do
  local v = redis.call('HMGET', RUN_PREFIX .. id, 'status', 'agent', 'queue', 'input')
  if v[1] == 'queued' then
    redis.call('ZADD', queued_key, now, id)
    out[#out + 1] = id
    out[#out + 1] = v[2]
    out[#out + 1] = v[3] or 'null'
    out[#out + 1] = v[4] or 'null'
  end
end
if suffix ~= '' then
  redis.call('HINCRBY', batch_key, 'dispatched', stop - start)
  if stop >= total then redis.call('DEL', runs_key) end
end
return out
