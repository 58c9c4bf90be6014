--- cbnet: tensors and training for Lua 5.4.
-- `local cbnet = require "cbnet"` gives the tensor functions of the C core
-- (cbnet.tensor, zeros, randn, cat, ...) plus the Lua layers as they land.
-- Conventions: dims and positions given as Lua numbers are 1-based (negative
-- ones count from the end); the values inside index tensors (argmax results,
-- gather/index_select indices, randperm, labels) are 0-based, as in PyTorch.
local core = require "cbnet.core"

local cbnet = {}
for name, fn in pairs(core) do cbnet[name] = fn end

--- Methods every tensor has; Lua code may add its own here.
cbnet.methods = core.Tensor.methods

function cbnet.matmul(a, b) return a:matmul(b) end

--- The neural-network kernels as functions (cbnet.F for short).
cbnet.functional = require "cbnet.functional"
cbnet.F = cbnet.functional

--- The version string and the machine facts `cbnet info` prints.
cbnet.version = core.info().version

--- Runs fn(...) with gradient recording off and returns its results; without
-- fn, returns a guard for a block: `local _ <close> = cbnet.no_grad()`.
local function grad_mode(enabled)
  return function(fn, ...)
    local previous = core.set_grad_enabled(enabled)
    if fn == nil then
      return setmetatable({}, {__close = function() core.set_grad_enabled(previous) end})
    end
    local results = table.pack(pcall(fn, ...))
    core.set_grad_enabled(previous)
    if not results[1] then error(results[2], 0) end
    return table.unpack(results, 2, results.n)
  end
end
cbnet.no_grad = grad_mode(false)
cbnet.enable_grad = grad_mode(true)

--- Layers and models, losses, optimizers: loaded on first use, so that
-- `require "cbnet"` stays cheap and the modules can require cbnet themselves.
local lazy = {nn = "cbnet.nn", loss = "cbnet.loss", optim = "cbnet.optim", data = "cbnet.data"}
setmetatable(cbnet, {__index = function(t, key)
  local name = lazy[key]
  if not name then return nil end
  local module = require(name)
  rawset(t, key, module)
  return module
end})

--- Lua-level tensor methods.
local methods = cbnet.methods

--- t:shape() -> {sizes} (alias of t:size()).
function methods.shape(t) return t:size() end

--- t:allclose(other[, rtol[, atol]]): every |t - other| <= atol + rtol*|other|.
function methods.allclose(t, other, rtol, atol)
  rtol, atol = rtol or 1e-5, atol or 1e-8
  local diff = (t:float() - other):abs()
  local bound = other:float():abs() * rtol + atol
  return diff:le(bound):logical_not():sum():item() == 0
end

return cbnet
