--- cbnet.cli: command-line options for experiment scripts.
--
--   local opts = cli.parse(arg, {
--     name = "convnet", summary = "Part 1 of the seed study",
--     options = {
--       {"epochs", 10, "training epochs"},                -- type from the default
--       {"data", cli.NONE, "dataset path", type = "string"},
--       {"betas", {0.9999, 0.9}, "comma-separated list"}, -- a list of numbers
--       {"methods", {"ce", "ldam"}, "comma-separated names"}, -- a list of names
--       {"quick", false, "a smoke run"},                   -- a flag: --quick
--     }})
--
-- --name VALUE and --name=VALUE both work; dashes in names become
-- underscores in opts (--batch-size -> opts.batch_size). --help prints every
-- option with its default and exits; an unknown option (with the nearest
-- name suggested), a missing value or a malformed number is an error (exit
-- 2), never ignored. An option's table may also hold type = "number" (a
-- whole-number default that takes fractions too), shown = "text" (the
-- default as --help shows it) and hidden = true (left out of --help).
local options = require "cbnet.options"

local cli = {}

--- Default for an option that has no value unless given.
cli.NONE = setmetatable({}, {__tostring = function() return "none" end})

local function kind_of(option)
  if option.type then return option.type end
  local d = option[2]
  if type(d) == "boolean" then return "flag" end
  if type(d) == "number" then return math.type(d) == "integer" and "integer" or "number" end
  if type(d) == "table" and d ~= cli.NONE then
    return type(d[1]) == "string" and "strings" or "list"
  end
  return "string"
end

local function show_default(option)
  local d = option[2]
  if option.shown then return option.shown end
  if d == cli.NONE then return "none" end
  if type(d) == "table" then
    local parts = {}
    for i, v in ipairs(d) do parts[i] = tostring(v) end
    return table.concat(parts, ",")
  end
  return tostring(d)
end

--- The --help text.
function cli.usage(spec)
  local lines = {("usage: cbnet run %s [options]"):format(spec.script or (spec.name .. ".lua"))}
  if spec.summary then lines[#lines + 1] = spec.summary end
  lines[#lines + 1] = ""
  lines[#lines + 1] = "options (default in brackets):"
  for _, o in ipairs(spec.options) do
    if o.hidden then goto continue end
    local kind = kind_of(o)
    local left = "--" .. o[1] .. (kind == "flag" and "" or
      (" " .. ((kind == "list" or kind == "strings") and "A,B,..." or kind:upper())))
    lines[#lines + 1] = ("  %-28s %s [%s]"):format(left, o[3] or "", show_default(o))
    ::continue::
  end
  lines[#lines + 1] = ("  %-28s %s"):format("--help", "this text")
  return table.concat(lines, "\n")
end

local function usage_error(spec, message)
  io.stderr:write(("%s: %s\n%s\n"):format(spec.name, message, cli.usage(spec)))
  os.exit(2)
end

local function convert(spec, option, text)
  local kind = kind_of(option)
  if kind == "integer" then
    local v = math.tointeger(tonumber(text))
    if not v then usage_error(spec, ("--%s expects an integer, got '%s'"):format(option[1], text)) end
    return v
  elseif kind == "number" then
    local v = tonumber(text)
    if not v then usage_error(spec, ("--%s expects a number, got '%s'"):format(option[1], text)) end
    return v
  elseif kind == "list" then
    local list = {}
    for item in (text .. ","):gmatch("([^,]*),") do
      local v = tonumber(item)
      if not v then usage_error(spec, ("--%s expects comma-separated numbers, got '%s'"):format(option[1], text)) end
      list[#list + 1] = v
    end
    return list
  elseif kind == "strings" then
    local list = {}
    for item in (text .. ","):gmatch("([^,]*),") do
      if item == "" then usage_error(spec, ("--%s expects comma-separated names, got '%s'"):format(option[1], text)) end
      list[#list + 1] = item
    end
    return list
  end
  return text
end

--- Parses args (the script's `arg` table) against spec; returns the options
-- (defaults filled in) and, as opts._given, the set of names given.
function cli.parse(args, spec)
  local by_name, opts, given = {}, {}, {}
  for _, o in ipairs(spec.options) do
    by_name[o[1]] = o
    local key = o[1]:gsub("-", "_")
    if o[2] ~= cli.NONE then
      if type(o[2]) == "table" then
        local copy = {}
        for i, v in ipairs(o[2]) do copy[i] = v end
        opts[key] = copy
      else
        opts[key] = o[2]
      end
    end
  end
  local i = 1
  while args[i] do
    local a = args[i]
    if a == "--help" or a == "-h" then
      print(cli.usage(spec))
      os.exit(0)
    end
    local name, value = a:match("^%-%-([%w%-]+)=(.*)$")
    name = name or a:match("^%-%-([%w%-]+)$")
    if not name then usage_error(spec, ("unexpected argument '%s'"):format(a)) end
    local option = by_name[name]
    if not option then
      local names = {"help"}
      for _, o in ipairs(spec.options) do if not o.hidden then names[#names + 1] = o[1] end end
      local near = options.nearest(name, names)
      usage_error(spec, ("unknown option --%s%s"):format(name, near and (" (did you mean --%s?)"):format(near) or ""))
    end
    local key = name:gsub("-", "_")
    if kind_of(option) == "flag" then
      if value then usage_error(spec, ("--%s takes no value"):format(name)) end
      opts[key] = true
    else
      if not value then
        i = i + 1
        value = args[i]
        if not value then usage_error(spec, ("--%s needs a value"):format(name)) end
      end
      opts[key] = convert(spec, option, value)
    end
    given[key] = true
    i = i + 1
  end
  opts._given = given
  opts._spec = spec -- for cli.grid (--sweep)
  return opts
end

--- Parses a grid of option values, "batch-size=64,128 lr=1e-3,1e-4", against
-- spec: a list of settings tables ({batch_size = 64, lr = 1e-3}, ...), every
-- combination, the first option varying slowest, and the names in order.
-- Each value is converted as the option's own kind (a list option takes one
-- list per value, separated by '/': "widths=16,32/32,64"). Errors as
-- cli.parse's (exit 2).
function cli.grid(text, spec)
  local by_name = {}
  for _, o in ipairs(spec.options) do by_name[o[1]] = o end
  local axes = {}
  for word in text:gmatch("%S+") do
    local name, values = word:match("^%-?%-?([%w%-]+)=(.+)$")
    if not name then usage_error(spec, ("--sweep: expected name=value,value,... got '%s'"):format(word)) end
    local option = by_name[name]
    if not option or option.hidden or name == "sweep" then
      local names = {}
      for _, o in ipairs(spec.options) do if not o.hidden then names[#names + 1] = o[1] end end
      local near = options.nearest(name, names)
      usage_error(spec, ("--sweep: unknown option %s%s"):format(name, near and (" (did you mean %s?)"):format(near) or ""))
    end
    local kind = kind_of(option)
    local separator = (kind == "list" or kind == "strings") and "/" or ","
    local list = {}
    for item in (values .. separator):gmatch("([^" .. separator .. "]*)" .. separator) do
      list[#list + 1] = kind == "flag" and (item == "true" or (item ~= "false" and
        usage_error(spec, ("--sweep: %s takes true or false"):format(name)))) or convert(spec, option, item)
    end
    axes[#axes + 1] = {name = name, key = name:gsub("-", "_"), values = list, texts = {}}
    for item in (values .. separator):gmatch("([^" .. separator .. "]*)" .. separator) do
      axes[#axes].texts[#axes[#axes].texts + 1] = item
    end
  end
  if #axes == 0 then usage_error(spec, "--sweep: no option to sweep") end
  local grid = {{settings = {}, words = {}}}
  for _, axis in ipairs(axes) do
    local next_grid = {}
    for _, point in ipairs(grid) do
      for i, v in ipairs(axis.values) do
        local settings, words = {}, {}
        for k, x in pairs(point.settings) do settings[k] = x end
        for k, x in ipairs(point.words) do words[k] = x end
        settings[axis.key] = v
        words[#words + 1] = axis.name .. "=" .. axis.texts[i]
        next_grid[#next_grid + 1] = {settings = settings, words = words}
      end
    end
    grid = next_grid
  end
  local names = {}
  for i, axis in ipairs(axes) do names[i] = axis.name end
  for _, point in ipairs(grid) do point.id = table.concat(point.words, ",") end
  return grid, names
end

--- The command that runs the current script again (for sub-processes):
-- the interpreter words before the script, then the script.
function cli.self_command(args)
  local low = 0
  while args[low - 1] do low = low - 1 end
  local words = {}
  for k = low, 0 do words[#words + 1] = "'" .. tostring(args[k]):gsub("'", "'\\''") .. "'" end
  return table.concat(words, " ")
end

return cli
