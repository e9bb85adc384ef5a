"""Lua scripts of the Redis run store: every status change is one atomic script.

A terminal event is appended to the run's stream by the same script that writes the terminal
status, so the event is in the log no later than the status, and a run never gets two.
"""

from streaming.constants import (
    BATCH_EVENTS_CHANNEL,
    BATCH_EVENTS_KEY,
    BATCH_KEY,
    BATCH_RUNS_KEY,
    METRICS_EVENTS_KEY,
    METRICS_FINISHED_KEY,
    METRICS_RUN_DURATION_KEY,
    METRICS_RUN_QUEUE_KEY,
    RUN_DURATION_BUCKETS_S,
    RUN_KEY,
    RUN_QUEUE_BUCKETS_S,
    WEBHOOKS_DUE_KEY,
)

# Count a run of a batch as ended; once all have, the batch's keys expire like its runs (they were
# made to outlive an unfinished run). Called where a run turns terminal. KEYS: the run.
END_IN_BATCH = """
local function end_in_batch(run, ttl)
  local id = redis.call('HGET', run, 'batch_id')
  if not id or id == 'null' then return end
  id = cjson.decode(id)
  local batch = '{batch}' .. id
  if redis.call('EXISTS', batch) == 0 then return end
  if redis.call('HINCRBY', batch, 'ended', 1) >= tonumber(redis.call('HGET', batch, 'total')) then
    redis.call('EXPIRE', batch, ttl)
    redis.call('EXPIRE', '{batch_runs}' .. id, ttl)
  end
end
""".format(batch=BATCH_KEY.format(batch_id=""), batch_runs=BATCH_RUNS_KEY.format(batch_id=""))


def _lua_bounds(bounds: tuple[float, ...]) -> str:
    """Upper bounds as a flat Lua table of (number, its label) pairs."""
    return "{" + ", ".join(f"{b!r}, '{b:g}'" for b in bounds) + "}"


# Metrics (tasks.metrics): counters and histogram buckets moved inside the scripts that change a
# run's status, so they cost no round trip. A histogram's hash holds "<le>:<agent>" (the count of
# observations in that bucket alone, `le` the bucket's upper bound or +Inf) and "sum_us:<agent>"
# (the sum in microseconds: HINCRBY is cheaper than HINCRBYFLOAT). Times are Redis's clock
# (TIME), but created_ts, the API's. Metrics never fail a status change: their writes are
# redis.pcall (an error is ignored, not raised mid-script) and an odd record is skipped.
METRICS = """
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
    metrics_observe('{queue}', {queue_bounds}, agent, now - tonumber(f[2]))
  end
  redis.pcall('HSET', run, 'started_ts', string.format('%.6f', now))
end
-- the run ended with `status`; `seq` is its last event's, so the number of events in its log
local function metrics_ended(run, status, seq)
  local f = redis.call('HMGET', run, 'agent', 'started_ts')
  local agent = metrics_agent(f[1])
  if not agent then return end
  redis.pcall('HINCRBY', '{finished}', status .. ':' .. agent, 1)
  redis.pcall('HINCRBY', '{events}', agent, seq)
  if tonumber(f[2]) then
    metrics_observe('{duration}', {duration_bounds}, agent, metrics_now() - tonumber(f[2]))
  end
end
""".replace("{queue}", METRICS_RUN_QUEUE_KEY).replace(
    "{queue_bounds}", _lua_bounds(RUN_QUEUE_BUCKETS_S)).replace(
    "{duration}", METRICS_RUN_DURATION_KEY).replace(
    "{duration_bounds}", _lua_bounds(RUN_DURATION_BUCKETS_S)).replace(
    "{finished}", METRICS_FINISHED_KEY).replace("{events}", METRICS_EVENTS_KEY)

# Make the webhook of a run that just turned terminal due now, and its batch's once every run of
# the batch has ended (after end_in_batch counted it). Called in the same script as the terminal
# status, so no delivery is lost if a process dies right after (tasks/webhook_store.py).
WEBHOOK_DUE = """
local function webhook_due(run, run_id)
  local function now()
    local t = redis.call('TIME')
    return tonumber(t[1]) + tonumber(t[2]) / 1000000
  end
  local hook = redis.call('HGET', run, 'webhook')
  if hook and hook ~= 'null' then redis.call('ZADD', '{due}', 'NX', now(), 'run:' .. run_id) end
  local id = redis.call('HGET', run, 'batch_id')
  if not id or id == 'null' then return end
  id = cjson.decode(id)
  local batch = '{batch}' .. id
  hook = redis.call('HGET', batch, 'webhook')
  if not hook or hook == 'null' then return end
  local total = tonumber(redis.call('HGET', batch, 'total') or '0')
  if tonumber(redis.call('HGET', batch, 'ended') or '0') >= total then
    redis.call('ZADD', '{due}', 'NX', now(), 'batch:' .. id)
  end
end
""".format(due=WEBHOOKS_DUE_KEY, batch=BATCH_KEY.format(batch_id=""))

# The batch's log: where a run of a batch changes status (`old` -> `new`), one `run` frame goes
# to the batch's stream and channel, numbered by the batch's own seq; once every run has ended, a
# `done` frame with the counts follows, `finished_at` is set and the log expires in `ttl` (nil:
# not a terminal change). Counts per status live in the batch hash as `n:<status>`.
# Called right after the status write. KEYS: the run (its record).
BATCH_LOG = """
local function batch_log(run, run_id, old, new, ttl)
  local id = redis.call('HGET', run, 'batch_id')
  if not id or id == 'null' then return end
  id = cjson.decode(id)
  local batch = '{batch}' .. id
  if redis.call('EXISTS', batch) == 0 then return end
  local log = '{log}' .. id
  redis.call('HINCRBY', batch, 'n:' .. old, -1)
  redis.call('HINCRBY', batch, 'n:' .. new, 1)
  local function append(event, data)
    local seq = redis.call('HINCRBY', batch, 'log_seq', 1)
    local frame = cjson.encode({seq = seq, event = event, data = data})
    redis.call('XADD', log, '0-' .. seq, 'f', frame)
    redis.call('PUBLISH', '{channel}' .. id, frame)
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
""".replace("{batch}", BATCH_KEY.format(batch_id="")).replace(
    "{log}", BATCH_EVENTS_KEY.format(batch_id="")).replace(
    "{channel}", BATCH_EVENTS_CHANNEL.format(batch_id=""))

# Claim the next chunk of a batch's runs to send to the broker, in submit order: the cursor
# `dispatched` moves on, and the claimed runs still queued are noted in QUEUED_KEY (tasks.lost)
# in the same step, so a dispatcher that dies before sending them loses none. While `ahead` of the
# batch's messages already sent still wait (queued), none is claimed: the broker's backlog stays
# short. KEYS: batch, batch runs, queued. ARGV: chunk size, now, ahead. Returns the new cursor,
# then run id, agent, queue, input (JSON text) quadruples; or the cursor and 'wait'.
DISPATCH_CHUNK = """
local total = tonumber(redis.call('HGET', KEYS[1], 'total') or '0')
local start = tonumber(redis.call('HGET', KEYS[1], 'dispatched') or '0')
if start >= total then return {tostring(start)} end
local queued = tonumber(redis.call('HGET', KEYS[1], 'n:queued') or '0')
if queued - (total - start) >= tonumber(ARGV[3]) then return {tostring(start), 'wait'} end
local stop = math.min(start + tonumber(ARGV[1]), total)
redis.call('HSET', KEYS[1], 'dispatched', stop)
local out = {tostring(stop)}
for _, id in ipairs(redis.call('LRANGE', KEYS[2], start, stop - 1)) do
  local v = redis.call('HMGET', '{run}' .. id, 'status', 'agent', 'queue', 'input')
  if v[1] == 'queued' then
    redis.call('ZADD', KEYS[3], ARGV[2], id)
    out[#out + 1] = id
    out[#out + 1] = v[2]
    out[#out + 1] = v[3] or 'null'
    out[#out + 1] = v[4] or 'null'
  end
end
return out
""".replace("{run}", RUN_KEY.format(run_id=""))

# Append one event numbered last seq + 1. KEYS: stream. Args: channel, maxlen, ttl, prefix, suffix.
ADD_EVENT = """
local function add_event(stream, channel, maxlen, ttl, prefix, suffix)
  local last = 0
  local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  if #top > 0 then last = tonumber(string.match(top[1][1], '%-(%d+)$')) end
  local seq = last + 1
  local ev = prefix .. seq .. suffix
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '0-' .. seq, 'e', ev)
  redis.call('PUBLISH', channel, '[' .. ev .. ']')
  redis.call('EXPIRE', stream, ttl)
  return seq
end
local function is_terminal(st)
  return st == 'succeeded' or st == 'failed' or st == 'cancelled'
end
"""

# KEYS: run, stream, running, queued. ARGV: attempt, channel, maxlen, ttl, prefix, suffix, run_id,
# heartbeat deadline, now (epoch s; the deadline is now + the run's timeout), field/value pairs.
CLAIM = ADD_EVENT + METRICS + BATCH_LOG + """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {'missing', ''} end
if st ~= 'queued' then return {'status', st} end
local att = tonumber(redis.call('HGET', KEYS[1], 'attempt') or '0')
if att + 1 ~= tonumber(ARGV[1]) then return {'fenced', tostring(att)} end
local seq = add_event(KEYS[2], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
local timeout = tonumber(redis.call('HGET', KEYS[1], 'timeout') or 'null')
local deadline = 'null'
if timeout then deadline = tostring(tonumber(ARGV[9]) + timeout) end
redis.call('HSET', KEYS[1], 'status', 'running', 'attempt', ARGV[1], 'deadline', deadline,
  unpack(ARGV, 10))
metrics_started(KEYS[1])
redis.call('ZADD', KEYS[3], ARGV[8], ARGV[7])
if KEYS[4] then redis.call('ZREM', KEYS[4], ARGV[7]) end  -- no longer waiting for its message
batch_log(KEYS[1], ARGV[7], 'queued', 'running', nil)
local out = {'ok', tostring(seq)}
-- only what the execution needs (the whole record costs both ends time on every run)
local names = {'input', 'events', 'timeout', 'cancel_requested', 'cancel_reason'}
local values = redis.call('HMGET', KEYS[1], unpack(names))
for i, name in ipairs(names) do out[#out + 1] = name; out[#out + 1] = values[i] end
return out
"""

# KEYS: run, stream, running. ARGV: expect ('running', 'queued' or 'active'), attempt ('' for
# any), status, channel, maxlen, ttl, prefix, suffix, run_id, then field/value pairs.
FINISH = ADD_EVENT + END_IN_BATCH + WEBHOOK_DUE + METRICS + BATCH_LOG + """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {'missing', ''} end
if is_terminal(st) then return {'terminal', st} end
if ARGV[1] ~= 'active' and st ~= ARGV[1] then return {'status', st} end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[2] then
  return {'fenced', st}
end
local seq = add_event(KEYS[2], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
redis.call('HSET', KEYS[1], 'status', ARGV[3], unpack(ARGV, 10))
metrics_ended(KEYS[1], ARGV[3], seq)
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('ZREM', KEYS[3], ARGV[9])
end_in_batch(KEYS[1], ARGV[6])
webhook_due(KEYS[1], ARGV[9])
batch_log(KEYS[1], ARGV[9], st, ARGV[3], ARGV[6])
return {'ok', tostring(seq)}
"""

# KEYS: run, stream, running, queued. ARGV: channel, maxlen, ttl, prefix, suffix, run_id, reason
# (JSON), finished_at (JSON), cancel channel, cancel message.
CANCEL = ADD_EVENT + END_IN_BATCH + WEBHOOK_DUE + METRICS + BATCH_LOG + """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {'missing', ''} end
if is_terminal(st) then return {'terminal', st} end
redis.call('HSET', KEYS[1], 'cancel_requested', 'true', 'cancel_reason', ARGV[7])
if st == 'queued' then
  local seq = add_event(KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[8])
  metrics_ended(KEYS[1], 'cancelled', seq)
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('ZREM', KEYS[3], ARGV[6])
  if KEYS[4] then redis.call('ZREM', KEYS[4], ARGV[6]) end
  end_in_batch(KEYS[1], ARGV[3])
  webhook_due(KEYS[1], ARGV[6])
  batch_log(KEYS[1], ARGV[6], 'queued', 'cancelled', ARGV[3])
  return {'cancelled', st}
end
redis.call('PUBLISH', ARGV[9], ARGV[10])
return {'requested', st}
"""

# A running run whose heartbeat is stale: requeue it, or say it must fail.
# KEYS: run, running. ARGV: run_id, now (epoch s), max attempts.
REAP = BATCH_LOG + """
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return {'alive', ''} end
local st = redis.call('HGET', KEYS[1], 'status')
if st ~= 'running' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return {'gone', st or ''}
end
local att = redis.call('HGET', KEYS[1], 'attempt')
local deadline = tonumber(redis.call('HGET', KEYS[1], 'deadline') or 'null')
if deadline and deadline < tonumber(ARGV[2]) then return {'timeout', att} end
if tonumber(att) >= tonumber(ARGV[3]) then return {'lost', att} end
redis.call('HSET', KEYS[1], 'status', 'queued')
redis.call('ZREM', KEYS[2], ARGV[1])
batch_log(KEYS[1], ARGV[1], 'running', 'queued', nil)
return {'requeue', att}
"""

# Extend the heartbeat of runs still marked running. KEYS: running. ARGV: deadline, run ids...
HEARTBEAT = """
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[i]) end
return #ARGV - 1
"""
