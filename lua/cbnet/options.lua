--- cbnet.options: the options tables of the Lua API. A misspelt option must
-- not be ignored in silence (`{wieght_decay = 1e-4}` would train without
-- weight decay and nobody would know; PyTorch raises on an unexpected
-- keyword), so every function taking an opts table checks its keys here.
--   options.check(opts, where, names) -> opts (nil gives {}), or raises
--     "where: unknown option 'wieght' (did you mean 'weight'?)" at the
--     caller of the function that checks.
--   options.nearest(name, names): the name in names nearest to name, if it is
--     close enough to be a typo (also the command line's --option check).
local options = {}

-- Levenshtein distance (option names are short).
local function distance(a, b)
  local row = {}
  for j = 0, #b do row[j] = j end
  for i = 1, #a do
    local diagonal = row[0]
    row[0] = i
    for j = 1, #b do
      local above = row[j]
      row[j] = math.min(above + 1, row[j - 1] + 1, diagonal + (a:sub(i, i) == b:sub(j, j) and 0 or 1))
      diagonal = above
    end
  end
  return row[#b]
end

function options.nearest(name, names)
  local best, nearest = #name // 3 + 2, nil
  for _, candidate in ipairs(names) do
    local d = distance(name, candidate)
    if d < best then best, nearest = d, candidate end
  end
  return nearest
end

function options.check(opts, where, names)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(("%s: expected an options table, got a %s"):format(where, type(opts)), 3)
  end
  for key in pairs(opts) do
    local known = false
    for _, name in ipairs(names) do known = known or key == name end
    if not known then
      local near = type(key) == "string" and options.nearest(key, names)
      local allowed = #names > 0 and ("; it takes " .. table.concat(names, ", ")) or "; it takes none"
      error(("%s: unknown option %s%s%s"):format(where,
        type(key) == "string" and ("'" .. key .. "'") or ("[" .. tostring(key) .. "]"),
        near and (" (did you mean '%s'?)"):format(near) or "", near and "" or allowed), 3)
    end
  end
  return opts
end

return options
