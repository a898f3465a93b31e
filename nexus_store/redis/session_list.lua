-- Metadata of a user's live sessions; prunes index members whose session is gone.
-- KEYS[1] the user's index; ARGV[1] session key prefix.
-- Returns a flat list: id, created, seen, expires (ms) for each live session.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%d', now))
local found = {}
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[1] .. member
  local f = redis.call('HMGET', key, 'id', 'created', 'seen')
  if f[1] then
    table.insert(found, f[1])
    table.insert(found, tonumber(f[2]))
    table.insert(found, tonumber(f[3]))
    table.insert(found, redis.call('PEXPIRETIME', key))
  else
    redis.call('ZREM', KEYS[1], member)
  end
end
return found
