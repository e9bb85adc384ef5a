-- The event writer's batch: the events of several runs, each run's numbered by its context and
-- appended in order (events.lua). One call for many runs: a thousand runs emitting a token each
-- cost the client one command, not a thousand. Per run, two keys and five arguments; two big
-- arguments (the seqs, space-separated; the envelopes, newline-separated: compact JSON has no raw
-- newline) cost the client far less than two per event. The latest progress data goes to the
-- run's record when it exists.
--
-- KEYS, per run: its stream, its record (the stream again when there is no record to update).
-- ARGV: max_events, then per run: ttl_s, channel, progress ('' for none), seqs, envelopes.
-- Returns, per run: how many events were added, and the first refusal (or false).
local max_events = ARGV[1]
local result = {}
for run = 0, #KEYS / 2 - 1 do
  local stream_key, record_key = KEYS[2 * run + 1], KEYS[2 * run + 2]
  local at = 5 * run + 1
  local ttl_s, channel, progress = ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
  local seq_list, envelope_list = ARGV[at + 4], ARGV[at + 5]

  local seqs, envelopes = {seq_list}, {envelope_list}
  if string.find(seq_list, ' ', 1, true) then  -- more than one event (else the lists are it)
    local pos = 1
    seqs, envelopes = {}, {}
    for seq in string.gmatch(seq_list, '%d+') do
      local stop = string.find(envelope_list, '\n', pos, true)
      seqs[#seqs + 1] = seq
      envelopes[#envelopes + 1] = string.sub(envelope_list, pos, (stop or 0) - 1)
      pos = (stop or #envelope_list) + 1
    end
  end
  -- A refused XADD (the key is not a stream) is this run's refusal, not the others' (events.lua)
  local added, refused = append_events(stream_key, channel, max_events, ttl_s, seqs, envelopes)
  if progress ~= '' and record_key ~= stream_key and redis.call('EXISTS', record_key) == 1 then
    redis.call('HSET', record_key, 'progress', progress)
  end
  result[#result + 1] = added
  result[#result + 1] = refused
end
return result
