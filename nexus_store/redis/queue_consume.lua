-- Take up to COUNT messages for one consumer of a group, atomically:
--   1. reclaim messages another consumer left unacked past the visibility timeout
--      (XAUTOCLAIM; this bumps their delivery count);
--   2. move reclaimed messages delivered more than MAX_ATTEMPTS times to the dead-letter
--      stream (and ack them in this group);
--   3. fill the batch with never-delivered messages (XREADGROUP '>', non-blocking here).
-- KEYS[1] stream, KEYS[2] dead-letter stream (same hash tag).
-- ARGV: group, consumer, count, visibility_timeout_ms, max_attempts, delete_acked ('1').
-- Returns {dead_lettered, id1, attempts1, fields1, id2, ...}.
local stream, dead = KEYS[1], KEYS[2]
local group, consumer = ARGV[1], ARGV[2]
local count = tonumber(ARGV[3])
local max_attempts = tonumber(ARGV[5])
local out = {0}

local claimed = redis.call('XAUTOCLAIM', stream, group, consumer, ARGV[4], '0-0', 'COUNT', count)
for _, entry in ipairs(claimed[2]) do
  local id, fields = entry[1], entry[2]
  local pending = redis.call('XPENDING', stream, group, id, id, 1)
  local attempts = pending[1] and pending[1][4] or 1
  if attempts > max_attempts then
    local add = {'XADD', dead, '*', 'id', id, 'attempts', attempts, 'group', group}
    for i = 1, #fields do add[#add + 1] = fields[i] end
    redis.call(unpack(add))
    redis.call('XACK', stream, group, id)
    if ARGV[6] == '1' then redis.call('XDEL', stream, id) end
    out[1] = out[1] + 1
  else
    out[#out + 1] = id
    out[#out + 1] = attempts
    out[#out + 1] = fields
  end
end

local wanted = count - (#out - 1) / 3
if wanted > 0 then
  local fresh = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', wanted,
    'STREAMS', stream, '>')
  if fresh then
    for _, entry in ipairs(fresh[1][2]) do
      out[#out + 1] = entry[1]
      out[#out + 1] = 1
      out[#out + 1] = entry[2]
    end
  end
end
return out
