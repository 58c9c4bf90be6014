-- A random-call fuzzer over cbnet's whole Lua API.
--
--   lua5.4 tests/fuzz/api_fuzz.lua SEED CALLS
--
-- Calls every function and method it can reach (cbnet.*, cbnet.F, nn, loss,
-- optim, data, json, checkpoint, report, tensor methods and operators, and
-- the methods of whatever objects come back) with arguments drawn from a pool
-- of valid, edge-case and hostile values (huge and negative sizes, NaN, NUL
-- bytes, expanded and empty tensors, tables whose __len or __index lie or
-- raise). Every call runs under pcall: a Lua error is the expected answer to
-- bad input. What must never happen is a crash, a sanitizer report or a
-- hang; tests/fuzz/api_fuzz.sh runs seeds in child processes with a memory
-- limit and a timeout and reports those. Results that are tensors or objects
-- join the pool, so calls build on each other's results.
--
-- It runs in a scratch folder (the driver's): paths in the pool are plain
-- names there.
local seed, calls = tonumber(arg[1]) or 1, tonumber(arg[2]) or 500
math.randomseed(seed)
local cbnet = require "cbnet"

local function pick(list) return list[math.random(#list)] end

-- ---- the value pool ----

local ints = {0, 1, 2, 3, 4, 5, 7, 16, 32, -1, -2, -3, math.maxinteger, math.mininteger,
              1 << 62, (1 << 48) + 1, -(1 << 31), 2 ^ 31, 2 ^ 62, 2 ^ 53 + 1}
local floats = {0.0, -0.0, 0.5, -0.5, 1e-8, 1e308, -1e308, 0 / 0, math.huge, -math.huge, 2.5, 1e-45}
local strings = {"float32", "int64", "uint8", "bool", "float", "long", "byte", "", "a\0b", "sum",
                 "mean", "none", "exp", "step", "sgd", "adam", "x.safetensors", "out.json",
                 "img.png", "img.jpg", "dir/x.bin", "nan", string.rep("z", 5000), "%s%n", "\255\254",
                 "rotate", "shear_x", "sharpness", "equalize", "posterize", "autocontrast"}
local function hostile_table()
  return pick{
    function() return {} end,
    function() return {1, 2, 3} end,
    function() return {{1, 2}, {3, 4}} end,
    function() return {{1, 2}, {3}} end,
    function() return {2, 3} end,
    function() return {1, "a", true} end,
    function() return {stride = 2, padding = 1, dilation = 1, groups = 1} end,
    function() return {stride = math.maxinteger, padding = 1 << 62, dilation = -1} end,
    function() return {lr = 0.1, momentum = 0.9, weight_decay = 1e-4, batch_size = 4} end,
    function() return {beta = 0.9999, gamma = 2, imbalance = 10, profile = "exp"} end,
    function() return {trivial_augment = true, crop_padding = 4, flip = true, cutout = 8} end,
    function() return {training = true, relu = true, pool = 2, momentum = 0.1} end,
    function() return setmetatable({}, {__len = function() return 1 << 40 end}) end,
    function() return setmetatable({1, 2}, {__len = function() error("len raised") end}) end,
    function() return setmetatable({}, {__index = function() error("index raised") end}) end,
    -- (not a table whose __index answers every key: to ipairs that is an
    -- endless list, and any Lua function walking it runs forever, by design)
    function() local t = {}; t[1] = t; return t end,
  }()
end

local pool = {}        -- tensors and objects made during the run
local MAX_POOL = 64
local MAX_KEEP_NUMEL = 1 << 20

local function base_tensors()
  local t = {
    cbnet.zeros(0), cbnet.zeros(2, 0), cbnet.tensor(3.5), cbnet.tensor{1, 2, 3},
    cbnet.randn(3, 4), cbnet.randn(2, 3, 5, 5), cbnet.randn(1, 1, 4, 4), cbnet.tensor{true, false},
    cbnet.tensor{{1, 2}, {3, 4}}, cbnet.arange(6):byte(), cbnet.zeros(1):expand(5),
    cbnet.randn(4, 3):t(), cbnet.randn(6):slice(1, 1, -1, 2), cbnet.tensor{math.maxinteger, -1},
    cbnet.full({2, 2}, 0 / 0), cbnet.randint(0, 3, {4}), cbnet.randn(4, 3),
    cbnet.randint(0, 256, {2, 3, 5, 7}):byte(), cbnet.zeros({3, 1, 2}, "uint8"), -- images
  }
  local g = cbnet.randn(3, 3)
  g.requires_grad = true
  t[#t + 1] = g
  t[#t + 1] = (g * 2):sum()
  return t
end
for _, t in ipairs(base_tensors()) do pool[#pool + 1] = t end
pool[#pool + 1] = cbnet.Generator(seed)

local function value()
  local r = math.random(100)
  if r <= 45 then return pick(pool)
  elseif r <= 63 then return pick(ints)
  elseif r <= 70 then return pick(floats)
  elseif r <= 78 then return pick(strings)
  elseif r <= 88 then return hostile_table()
  elseif r <= 91 then return math.random(2) == 1
  elseif r <= 94 then return function(...) return ... end
  elseif r <= 96 then return function() error("callback raised") end
  else return nil end
end

local function keep(v)
  if #pool >= MAX_POOL then table.remove(pool, math.random(20, #pool)) end
  if cbnet.is_tensor(v) then
    if v:numel() <= MAX_KEEP_NUMEL then pool[#pool + 1] = v end
  elseif type(v) == "table" and getmetatable(v) then
    pool[#pool + 1] = v -- modules, optimizers, samplers, datasets
  end
end

-- ---- what can be called ----

local targets = {}
local function add_functions(prefix, t)
  local names = {}
  for name, fn in pairs(t) do
    if type(fn) == "function" then names[#names + 1] = name end
  end
  table.sort(names) -- reproducible for a seed
  for _, name in ipairs(names) do targets[#targets + 1] = {prefix .. name, t[name]} end
end
-- Nothing here may leave the scratch folder or wait on input: isatty reads a
-- file descriptor the fuzzer does not own; sleep would only waste its time.
local skip = {isatty = true, sleep = true}
local core = {}
for name, fn in pairs(require "cbnet.core") do if not skip[name] then core[name] = fn end end
add_functions("cbnet.", core)
add_functions("F.", cbnet.F)
for _, m in ipairs{"nn", "loss", "optim", "data"} do add_functions(m .. ".", cbnet[m]) end
add_functions("json.", require "cbnet.json")
add_functions("checkpoint.", require "cbnet.checkpoint")
local report = require "cbnet.report"
add_functions("report.", {write_atomic = report.write_atomic, read_json = report.read_json,
                          markdown_table = report.markdown_table, read_metrics = report.read_metrics})

local methods = {}
for name in pairs(cbnet.methods) do methods[#methods + 1] = name end
table.sort(methods)

local operators = {
  function(a, b) return a + b end, function(a, b) return a - b end,
  function(a, b) return a * b end, function(a, b) return a / b end,
  function(a, b) return a % b end, function(a, b) return a ^ b end,
  function(a) return -a end, function(a) return #a end,
  function(a, b) return a == b end, function(a, b) return a < b end,
  function(a, b) return a <= b end, function(a, b) return a[b] end,
  function(a, b, c) a[b] = c end, function(a) return tostring(a) end,
  function(a, b) a.grad = b end, function(a, b) a.requires_grad = b end,
  function(a) return a.grad, a.grad_fn, a.is_leaf end,
  function(a) local _ <close> = a end,
  function(a) return a:backward() end,
}

local function args(n)
  local list = {}
  for i = 1, n do list[i] = value() end
  return list
end

local log = os.getenv("API_FUZZ_LOG") -- prints each call first, to find a crashing one
local function describe(v)
  if cbnet.is_tensor(v) then
    local ok, text = pcall(function() return ("tensor%s %s"):format(tostring(v:size()), v:dtype()) end)
    return ok and text or "closed tensor"
  elseif type(v) == "string" then return ("%q"):format(#v > 20 and v:sub(1, 20) .. "..." or v)
  end
  return tostring(v)
end
local function attempt(name, fn, ...)
  if log then
    local parts = {}
    for i = 1, select("#", ...) do parts[i] = describe((select(i, ...))) end
    io.stderr:write(name, "(", table.concat(parts, ", "), ")\n")
  end
  return name, pcall(fn, ...)
end

-- One call of a random kind; returns its name (for the log) and results.
local function one_call()
  local kind = math.random(100)
  local t = pick(pool)
  if kind <= 40 then
    local target = pick(targets)
    local a = args(math.random(0, 5))
    return attempt(target[1], target[2], table.unpack(a, 1, 5))
  elseif kind <= 75 then
    local name = pick(methods)
    if not cbnet.is_tensor(t) then t = pool[math.random(math.min(#pool, 17))] end
    local a = args(math.random(0, 4))
    return attempt("Tensor:" .. name, function(...) return t[name](...) end, t, table.unpack(a, 1, 4))
  elseif kind <= 90 then
    local op = math.random(#operators)
    return attempt("operator " .. op, operators[op], t, value(), value())
  else
    -- a method of an object (module, optimizer, sampler, ...) or calling it
    local object = t
    if type(object) ~= "table" then return "skip", true end
    local names = {}
    local mt = getmetatable(object)
    local index = mt and rawget(mt, "__index")
    for _, source in ipairs{object, type(index) == "table" and index or {}} do
      for k, v in pairs(source) do
        if type(k) == "string" and type(v) == "function" then names[#names + 1] = k end
      end
    end
    table.sort(names)
    if #names == 0 or math.random(4) == 1 then
      return attempt("call object", function(...) return object(...) end, value(), value())
    end
    local name = pick(names)
    local a = args(math.random(0, 3))
    return attempt("object:" .. name, function(...) return object[name](...) end, object,
      table.unpack(a, 1, 3))
  end
end

for i = 1, calls do
  if log then io.stderr:write(i, " ") end
  local results = table.pack(one_call())
  if results[2] then for k = 3, results.n do pcall(keep, results[k]) end end
  if i % 50 == 0 then collectgarbage() end
end
cbnet.set_grad_enabled(true)
print(("api_fuzz seed %d: %d calls"):format(seed, calls))
