-- GCRA (generic cell rate algorithm): one number per limit, the theoretical arrival time
-- (TAT) of the next unit. A call of `cost` units passes when TAT + cost * interval lies
-- within one window of now. Times are microseconds; SLACK absorbs float rounding.
-- `next_unit` is the time until one unit more than `remaining` is available (0 when full).
local SLACK = 1

local function evaluate(key, field, amount, window, now, cost, writes)
  local interval = window / amount
  local tat = tonumber(redis.call('HGET', key, field)) or now
  if tat < now then
    tat = now
  end
  local new_tat = tat + cost * interval
  local allow_at = new_tat - window
  if allow_at <= now + SLACK then
    writes[#writes + 1] = field
    writes[#writes + 1] = new_tat
    local remaining = math.min(amount, math.floor((now - allow_at + SLACK) / interval))
    local next_unit = 0
    if remaining < amount then
      next_unit = math.max(0, allow_at + (remaining + 1) * interval - now)
    end
    return true, remaining, new_tat - now, 0, next_unit
  end
  return false, math.min(amount, math.floor((now - tat + window + SLACK) / interval)),
    tat - now, allow_at - now, allow_at - now
end
