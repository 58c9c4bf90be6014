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

--- t:logsumexp(dim[, keepdim]): log(sum(exp(t))) along dim, computed
-- stably (the maximum taken out first); differentiable.
function methods.logsumexp(t, dim, keepdim)
  if math.type(dim) ~= "integer" then error("logsumexp: dim must be an integer", 2) end
  local m = cbnet.no_grad(function() return t:max(dim, true) end)
  m = m:masked_fill(m:eq(math.huge) + m:eq(-math.huge), 0) -- all -inf or an inf: no shift
  local out = (t - m):exp():sum(dim, true):log() + m
  return keepdim and out or out:squeeze(dim)
end

--- t:flip(dims): the elements in reverse order along each dim of dims (a
-- number or a list, 1-based, negative from the end), as torch.flip; a copy,
-- differentiable. x:flip(4) mirrors a batch of images left to right (the
-- test-time flip of augmentation).
function methods.flip(t, dims)
  if type(dims) ~= "table" then dims = {dims} end
  local out = t
  for _, d in ipairs(dims) do
    if math.type(d) ~= "integer" then error("flip: dims must be integers", 2) end
    local n = t:dim()
    local dim = d < 0 and n + 1 + d or d
    if dim < 1 or dim > n then
      error(("flip: dim %d out of range for a %d-d tensor"):format(d, n), 2)
    end
    local size = t:size(dim)
    if size > 1 then out = out:index_select(dim, cbnet.arange(size - 1, -1, -1):long()) end
  end
  if out == t then out = t:clone() end -- a copy, always
  return out
end

--- cbnet.one_hot(labels[, classes]): int64 labels (0-based) -> an int64
-- tensor with one more dim of size classes (default: the largest label + 1),
-- 1 at each label, as torch.nn.functional.one_hot.
function cbnet.one_hot(labels, classes)
  if not cbnet.is_tensor(labels) or labels:dtype() ~= "int64" then
    error("one_hot: labels must be an int64 tensor", 2)
  end
  if labels:numel() > 0 and labels:min():item() < 0 then error("one_hot: labels must be >= 0", 2) end
  classes = classes or (labels:numel() > 0 and labels:max():item() + 1 or 0)
  if math.type(classes) ~= "integer" or classes < 0 then
    error("one_hot: classes must be a non-negative integer", 2)
  end
  local shape = labels:size()
  shape[#shape + 1] = classes
  local out = cbnet.zeros(shape, "int64")
  if labels:numel() > 0 then out:scatter_(-1, labels:unsqueeze(-1), 1) end
  return out
end

--- zeros_like(t[, dtype]), ones_like, full_like(t, value[, dtype]): a new
-- tensor of t's shape (and dtype unless given).
function cbnet.zeros_like(t, dtype) return cbnet.zeros(t:size(), dtype or t:dtype()) end
function cbnet.ones_like(t, dtype) return cbnet.ones(t:size(), dtype or t:dtype()) end
function cbnet.full_like(t, value, dtype) return cbnet.full(t:size(), value, dtype or t:dtype()) end

--- cbnet.gradcheck(fn, inputs[, opts = {eps, atol, rtol}]): compares
-- autograd's gradients of fn(inputs...) (float32 tensors) with central
-- finite differences; returns true, or raises an error naming the first
-- element that differs (see lua/cbnet/gradcheck.lua).
function cbnet.gradcheck(...) return require("cbnet.gradcheck")(...) end

return cbnet
