-- Delete one session and its index entry. KEYS[1] session hash; ARGV[1] its index member.
-- The index key is read from the session: it shares the session's hash tag (same slot).
local index = redis.call('HGET', KEYS[1], 'index')
if not index then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', index, ARGV[1])
return 1
