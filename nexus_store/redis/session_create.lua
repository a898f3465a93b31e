-- Create a session and index it under its user, atomically, on the server's clock.
-- KEYS[1] session hash, KEYS[2] the user's index (a zset in the same hash-tag slot).
-- ARGV: user_id, data, session_id, ttl_ms, max_lifetime_ms (0: none), member (token hash),
--       session key prefix (index members are suffixes of it).
-- Index score: the session's hard deadline (+inf without max_lifetime), so a sliding
-- session is never pruned from the index while it can still be alive.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[4])
local max_lifetime = tonumber(ARGV[5])
local expires = now + ttl
local deadline = 0
local score = '+inf'
if max_lifetime > 0 then
  deadline = now + max_lifetime
  if deadline < expires then expires = deadline end
  score = string.format('%d', deadline)
end
redis.call('HSET', KEYS[1], 'user', ARGV[1], 'data', ARGV[2], 'id', ARGV[3],
  'created', string.format('%d', now), 'seen', string.format('%d', now),
  'ttl', ARGV[4], 'deadline', string.format('%d', deadline), 'index', KEYS[2])
redis.call('PEXPIREAT', KEYS[1], string.format('%d', expires))
-- Keep the index exact: drop members past their deadline and members whose session is gone.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. string.format('%d', now))
for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if redis.call('EXISTS', ARGV[7] .. member) == 0 then
    redis.call('ZREM', KEYS[2], member)
  end
end
redis.call('ZADD', KEYS[2], score, ARGV[6])
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if last[2] == 'inf' then
  redis.call('PERSIST', KEYS[2])
else
  redis.call('PEXPIREAT', KEYS[2], last[2])
end
return {now, expires}
