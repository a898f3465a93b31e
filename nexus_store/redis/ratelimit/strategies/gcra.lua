-- GCRA (generic cell rate algorithm): one number per limit, the theoretical arrival time
-- (TAT) of the next unit. A call of `cost` units passes when TAT + cost * interval lies
-- within one window of now. Times are microseconds; SLACK absorbs float rounding.
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
    return true, math.min(amount, math.floor((now - allow_at + SLACK) / interval)),
      new_tat - now, 0
  end
  return false, math.min(amount, math.floor((now - tat + window + SLACK) / interval)),
    tat - now, allow_at - now
end
