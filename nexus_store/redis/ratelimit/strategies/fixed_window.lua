-- Fixed window: a counter that starts with the first call and resets one window later.
-- Fields per limit: <field>:s (window start, microseconds), <field>:c (count).
local function evaluate(key, field, amount, window, now, cost, writes)
  local start_field, count_field = field .. ':s', field .. ':c'
  local stored = redis.call('HMGET', key, start_field, count_field)
  local start = tonumber(stored[1])
  local used = 0
  if start and now < start + window then
    used = tonumber(stored[2])
  else
    start = now
  end
  local reset = start + window - now
  if used + cost <= amount then
    local n = #writes
    writes[n + 1], writes[n + 2] = start_field, start
    writes[n + 3], writes[n + 4] = count_field, used + cost
    if used + cost == 0 then
      reset = 0
    end
    -- Units come back only when the window ends.
    return true, amount - used - cost, reset, 0, reset
  end
  return false, amount - used, reset, reset, reset
end
