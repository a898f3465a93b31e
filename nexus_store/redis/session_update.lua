-- Replace a live session's data. KEYS[1] session hash; ARGV[1] the encoded data.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'data', ARGV[1])
return 1
