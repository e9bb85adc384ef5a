-- The event log's wire format, one definition for the event writer (streaming/backends/writer.py)
-- and the run store's scripts (tasks/scripts/): a run's events are the entries of its stream, id
-- 0-<seq>, field EVENT_FIELD holding the envelope (compact JSON); every write PUBLISHes the added
-- envelopes on the run's channel as one JSON array, and the stream expires `ttl` s after it.

local function last_event_seq(stream)
  local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  if #top == 0 then return 0 end
  return tonumber(string.match(top[1][1], '%-(%d+)$'))
end

-- Append `envelopes[i]` as event `seqs[i]`. An id at or below the stream's last one is a retried
-- event: skipped. Any other refusal stops the append there: an event added after a refused one
-- would make the refused one a "retried event" when the batch is tried again (a gap for good).
-- Returns how many were added, and the refusal (or false).
local function append_events(stream, channel, maxlen, ttl, seqs, envelopes)
  local added, refused = {}, false
  for i = 1, #seqs do
    local ok = redis.pcall('XADD', stream, 'MAXLEN', '~', maxlen, '0-' .. seqs[i], EVENT_FIELD,
                           envelopes[i])
    if type(ok) == 'table' and ok.err then
      if not string.find(ok.err, 'equal or smaller', 1, true) then
        refused = ok.err
        break
      end
    else
      added[#added + 1] = envelopes[i]
    end
  end
  if #added > 0 then redis.call('PUBLISH', channel, '[' .. table.concat(added, ',') .. ']') end
  redis.call('EXPIRE', stream, ttl)
  return #added, refused
end
