-- Acknowledge messages of a group; with ARGV[2] == '1' also delete them from the stream.
-- KEYS[1] stream. ARGV[1] group, ARGV[3..] message ids. Returns how many were pending.
local acked = 0
for i = 3, #ARGV do
  local done = redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  acked = acked + done
  if done == 1 and ARGV[2] == '1' then
    redis.call('XDEL', KEYS[1], ARGV[i])
  end
end
return acked
