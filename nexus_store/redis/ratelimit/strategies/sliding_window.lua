-- Sliding-window counter: counts of the current and the previous fixed window; the previous
-- one weighs in proportion to how much of it still overlaps the sliding window.
-- Fields per limit: <field>:w (window index), <field>:c (current count), <field>:p (previous).
local EPSILON = 1e-9

-- Microseconds from now until the weighted count drops to `target`, given `current` units in
-- the window starting at `window_start` and `previous` in the one before.
local function until_used(target, current, previous, window_start, window, now)
  if current <= target and previous > 0 then
    -- The previous window's share shrinks enough within this window.
    return math.max(0, window_start + window - window * (target - current) / previous - now)
  end
  -- In the next window, this window's count becomes the shrinking share.
  return math.max(0, window_start + 2 * window - window * target / current - now)
end

local function evaluate(key, field, amount, window, now, cost, writes)
  local index_field, current_field, previous_field = field .. ':w', field .. ':c', field .. ':p'
  local stored = redis.call('HMGET', key, index_field, current_field, previous_field)
  local index = math.floor(now / window)
  local stored_index = tonumber(stored[1])
  local current, previous = 0, 0
  if stored_index == index then
    current, previous = tonumber(stored[2]), tonumber(stored[3])
  elseif stored_index == index - 1 then
    previous = tonumber(stored[2])
  end
  local window_start = index * window
  local used = previous * (window_start + window - now) / window + current
  if used + cost <= amount + EPSILON then
    local reset = 0
    if current + cost > 0 then
      reset = window_start + 2 * window - now
    elseif previous > 0 then
      reset = window_start + window - now
    end
    local n = #writes
    writes[n + 1], writes[n + 2] = index_field, index
    writes[n + 3], writes[n + 4] = current_field, current + cost
    writes[n + 5], writes[n + 6] = previous_field, previous
    local remaining = math.floor(amount - used - cost + EPSILON)
    local next_unit = 0
    if remaining < amount then
      next_unit = until_used(amount - remaining - 1, current + cost, previous, window_start,
        window, now)
    end
    return true, remaining, reset, 0, next_unit
  end
  local retry = until_used(amount - cost, current, previous, window_start, window, now)
  local reset = window_start + window - now
  if current > 0 then
    reset = reset + window
  end
  return false, math.floor(amount - used + EPSILON), reset, retry, retry
end
