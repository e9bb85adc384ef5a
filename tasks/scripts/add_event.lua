-- The run store's event: numbered last seq + 1 as it is written (the writer's numbering goes on
-- from it), through the one append routine (streaming/scripts/events.lua). A refusal fails the
-- script before any status is written.
local function add_event(stream, channel, maxlen, ttl, prefix, suffix)
  local seq = last_event_seq(stream) + 1
  local envelope = prefix .. seq .. suffix
  local _, refused = append_events(stream, channel, maxlen, ttl, {seq}, {envelope})
  if refused then error(refused) end
  return seq
end
local function is_terminal(st)
  return st == 'succeeded' or st == 'failed' or st == 'cancelled'
end
