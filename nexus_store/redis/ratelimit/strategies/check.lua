-- The shared half of every strategy script: it evaluates all the limits of one check
-- atomically, consumes only when every limit passes, and reports the deciding limit.
-- The strategy's own half, prepended to this file, defines
--   evaluate(key, field, amount, window, now, cost, writes)
--     -> allowed, remaining, reset, retry, next_unit
-- (`next_unit`: the time until one more unit is available, 0 when the limit is full)
-- which appends the field/value pairs it would store to `writes` when it allows the call.
--
-- KEYS[1]  the hash holding this key's state for the strategy (one field group per limit)
-- ARGV[1]  cost of this call (0 looks without consuming)
-- ARGV[2]  '1' to consume, '0' to only evaluate
-- ARGV[3+] per limit: field, amount, window in microseconds
-- Returns  {allowed (0/1), deciding limit (1-based), remaining, reset_after us, retry_after us,
--          next unit after us (equal to retry_after on a refusal)}

-- Redis < 5 replicates scripts verbatim unless told otherwise; TIME makes this one
-- non-deterministic, so ask for effect replication there. Redis 7 (which defines
-- REDIS_VERSION_NUM) only replicates effects, and the call would just cost time.
if not redis.REDIS_VERSION_NUM and redis.replicate_commands then
  redis.replicate_commands()
end

local key = KEYS[1]
local cost = tonumber(ARGV[1])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])

local writes = {}
local allowed = true
local keep_for, longest_window = 0, 0
-- The deciding limit if all pass (least remaining, then latest reset) and if some refuse
-- (the refusal that frees up last), tracked as we go.
local tight, tight_remaining, tight_reset, tight_next = 0, 0, 0, 0
local late, late_remaining, late_reset, late_retry = 0, 0, 0, -1
for i = 1, (#ARGV - 2) / 3 do
  local base = 3 * i
  local window = tonumber(ARGV[base + 2])
  local ok, remaining, reset, retry, next_unit = evaluate(key, ARGV[base],
    tonumber(ARGV[base + 1]), window, now, cost, writes)
  if ok then
    if tight == 0 or remaining < tight_remaining
        or (remaining == tight_remaining and reset > tight_reset) then
      tight, tight_remaining, tight_reset, tight_next = i, remaining, reset, next_unit
    end
    if reset > keep_for then
      keep_for = reset
    end
    if window > longest_window then
      longest_window = window
    end
  else
    allowed = false
    if retry > late_retry then
      late, late_remaining, late_reset, late_retry = i, remaining, reset, retry
    end
  end
end

if allowed and ARGV[2] == '1' then
  redis.call('HSET', key, unpack(writes))
  -- Other limit sets may share this hash, so its lifetime only ever grows; it is set one
  -- window beyond what is needed so that most checks skip the PEXPIRE.
  local keep_ms = math.ceil(keep_for / 1000)
  if redis.call('PTTL', key) < keep_ms then
    redis.call('PEXPIRE', key, keep_ms + math.ceil(longest_window / 1000))
  end
end

if allowed then
  return {1, tight, math.max(0, tight_remaining), math.ceil(tight_reset), 0,
    math.ceil(tight_next)}
end
return {0, late, math.max(0, late_remaining), math.ceil(late_reset), math.ceil(late_retry),
  math.ceil(late_retry)}
