-- Delete every session of a user. KEYS[1] the user's index; ARGV[1] session key prefix.
-- Session keys share the index's hash tag, so they live in this slot too.
local removed = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  removed = removed + redis.call('DEL', ARGV[1] .. member)
end
redis.call('DEL', KEYS[1])
return removed
