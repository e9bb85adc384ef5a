-- Extend the heartbeat of runs still marked running.
local running_key = KEYS[1]
local deadline = ARGV[1]  -- then the run ids

for i = 2, #ARGV do redis.call('ZADD', running_key, 'XX', deadline, ARGV[i]) end
return #ARGV - 1
