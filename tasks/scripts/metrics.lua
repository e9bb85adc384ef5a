-- Metrics (tasks.metrics): counters and histogram buckets moved inside the scripts that change a
-- run's status, so they cost no round trip. A histogram's hash holds "<le>:<agent>" (the count of
-- observations in that bucket alone, `le` the bucket's upper bound or +Inf) and "sum_us:<agent>"
-- (the sum in microseconds: HINCRBY is cheaper than HINCRBYFLOAT). Times are Redis's clock
-- (TIME), but created_ts, the API's. Metrics never fail a status change: their writes are
-- redis.pcall (an error is ignored, not raised mid-script) and an odd record is skipped.
local function metrics_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function metrics_agent(text)
  local ok, agent = pcall(cjson.decode, text or '')
  if ok and type(agent) == 'string' then return agent end
  return nil
end
local function metrics_observe(key, bounds, agent, value)
  if value < 0 then value = 0 end
  if value > 1e9 then value = 1e9 end
  local le = '+Inf'
  for i = 1, #bounds, 2 do
    if value <= bounds[i] then le = bounds[i + 1] break end
  end
  redis.pcall('HINCRBY', key, le .. ':' .. agent, 1)
  redis.pcall('HINCRBY', key, 'sum_us:' .. agent, math.floor(value * 1000000 + 0.5))
end
-- queued -> running: how long it waited (on its first start only); when its duration starts
local function metrics_started(run)
  local now = metrics_now()
  local f = redis.call('HMGET', run, 'started_ts', 'created_ts', 'agent')
  local agent = metrics_agent(f[3])
  if agent and not f[1] and tonumber(f[2]) then
    metrics_observe(METRICS_RUN_QUEUE_KEY, RUN_QUEUE_BOUNDS, agent, now - tonumber(f[2]))
  end
  redis.pcall('HSET', run, 'started_ts', string.format('%.6f', now))
end
-- the run ended with `status`; `seq` is its last event's, so the number of events in its log
local function metrics_ended(run, status, seq)
  local f = redis.call('HMGET', run, 'agent', 'started_ts')
  local agent = metrics_agent(f[1])
  if not agent then return end
  redis.pcall('HINCRBY', METRICS_FINISHED_KEY, status .. ':' .. agent, 1)
  redis.pcall('HINCRBY', METRICS_EVENTS_KEY, agent, seq)
  if tonumber(f[2]) then
    metrics_observe(METRICS_RUN_DURATION_KEY, RUN_DURATION_BOUNDS, agent, metrics_now() - tonumber(f[2]))
  end
end
