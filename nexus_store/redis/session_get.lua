-- Read a session; with sliding expiration push its expiry back (never past its deadline).
-- KEYS[1] session hash. ARGV[1] '1' to slide.
-- Returns false when the session is unknown, expired or revoked (all the same to callers).
local f = redis.call('HMGET', KEYS[1], 'user', 'data', 'id', 'created', 'ttl', 'deadline')
if not f[1] then return false end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expires
if ARGV[1] == '1' then
  expires = now + tonumber(f[5])
  local deadline = tonumber(f[6])
  if deadline > 0 and deadline < expires then expires = deadline end
  redis.call('PEXPIREAT', KEYS[1], string.format('%d', expires))
else
  expires = redis.call('PEXPIRETIME', KEYS[1])
end
redis.call('HSET', KEYS[1], 'seen', string.format('%d', now))
return {f[1], f[2], f[3], tonumber(f[4]), now, expires}
