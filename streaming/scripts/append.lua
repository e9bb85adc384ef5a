-- The event writer's batch: events numbered by their contexts, appended in order (events.lua).
-- Two big arguments (the seqs, space-separated; the envelopes, newline-separated: compact JSON
-- has no raw newline) cost the client far less than two per event. The latest progress data goes
-- to the run's record when it exists.
local stream_key = KEYS[1]
local record_key = KEYS[2]  -- optional
local max_events = ARGV[1]
local ttl_s = ARGV[2]
local channel = ARGV[3]
local progress = ARGV[4]  -- '' for none
local seq_list = ARGV[5]
local envelope_list = ARGV[6]

local seqs, envelopes, pos = {}, {}, 1
for seq in string.gmatch(seq_list, '%d+') do
  local stop = string.find(envelope_list, '\n', pos, true)
  seqs[#seqs + 1] = seq
  envelopes[#envelopes + 1] = string.sub(envelope_list, pos, (stop or 0) - 1)
  pos = (stop or #envelope_list) + 1
end
local added, refused = append_events(stream_key, channel, max_events, ttl_s, seqs, envelopes)
if progress ~= '' and record_key and redis.call('EXISTS', record_key) == 1 then
  redis.call('HSET', record_key, 'progress', progress)
end
return {added, refused}
