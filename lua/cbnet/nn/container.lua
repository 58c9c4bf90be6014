--- nn.Sequential(m1, m2, ...): applies its children in order (named "1",
-- "2", ...; or nn.Sequential{name = module, ...} with an explicit order via
-- add_module). A batch norm followed by an nn.ReLU runs as one layer (the
-- batch norm's relu option: the same values in one pass over memory instead
-- of two, forward and backward), and with an nn.MaxPool2d(2) after the ReLU
-- too (its pool option), and with an nn.Conv2d after the ReLU the three are
-- one op (F.batch_norm_relu_conv2d: the batch norm's output neither written
-- nor kept for backward); a Conv2d before such a batch norm, ReLU and
-- MaxPool2d(2) makes the four one op (F.conv2d_batch_norm_relu_pool: a first
-- layer's weight gradient without the batch norm's full gradient in memory);
-- in evaluation without gradients a Conv2d, batch norm (and ReLU) run as one
-- convolution with the batch norm folded in.
-- nn.Flatten(start_dim = 2, end_dim = -1) and nn.Identity.
local cbnet = require "cbnet"
local Module = require "cbnet.nn.module"

local Sequential = Module:extend("Sequential")

function Sequential:init(...)
  for i, m in ipairs{...} do self:add_module(tostring(i), m) end
end

-- Evaluation without gradients: a convolution, the batch norm after it and
-- a ReLU after that are one convolution with the batch norm folded into its
-- weights, clamped as it is written (one pass over the output, not three).
local function folded(conv, bn, relu)
  if conv.name ~= "Conv2d" or not (bn and bn.name == "BatchNorm2d") or cbnet.is_grad_enabled() then
    return nil
  end
  local weight, bias = bn:fold(conv.weight, conv.bias)
  if not weight then return nil end
  return weight, bias, bn.relu or (relu ~= nil and relu.name == "ReLU")
end

-- A max pooling over 2x2 windows with stride 2 and no padding, which a batch
-- norm with its ReLU can take in.
local function is_pool_2x2(m)
  if not m or m.name ~= "MaxPool2d" then return false end
  local function is(v, n) return v == n or (type(v) == "table" and v[1] == n and v[2] == n) end
  return is(m.kernel, 2) and is(m.stride, 2) and is(m.padding, 0)
end

-- How many modules from names[i], a Conv2d, make one conv2d + batch norm +
-- ReLU + 2x2 max pooling: 3 (the batch norm's ReLU fused), 4 (an nn.ReLU
-- between) or nil.
local function conv_pool_run(self, names, i)
  local bn, third, fourth = self[names[i + 1]], self[names[i + 2]], self[names[i + 3]]
  if self[names[i]].name ~= "Conv2d" or not (bn and bn.fuses_conv_pool) then return nil end
  if bn.relu and is_pool_2x2(third) then return 3 end
  if third and third.name == "ReLU" and is_pool_2x2(fourth) then return 4 end
  return nil
end

function Sequential:forward(x)
  local names, i = self._modules, 1
  while i <= #names do
    local m, after = self[names[i]], self[names[i + 1]]
    local weight, bias, relu = folded(m, after, self[names[i + 2]])
    local run = not weight and conv_pool_run(self, names, i)
    if weight then
      x = m:forward(x, weight, bias, relu)
      i = i + ((relu and not after.relu) and 3 or 2)
    elseif run then
      x, i = after:after_conv(x, m), i + run
    elseif m.fuses_conv and m.relu and after and after.name == "Conv2d" then
      x, i = m:forward(x, true, nil, nil, after), i + 2
    elseif m.fuses_relu and after and after.name == "ReLU" then
      local third = self[names[i + 2]]
      if m.fuses_pool and is_pool_2x2(third) then
        x, i = m:forward(x, true, nil, 2), i + 3
      elseif m.fuses_conv and third and third.name == "Conv2d" then
        x, i = m:forward(x, true, nil, nil, third), i + 3
      else
        x, i = m:forward(x, true), i + 2
      end
    elseif m.fuses_pool and m.relu and is_pool_2x2(after) then
      x, i = m:forward(x, nil, nil, 2), i + 2
    else
      x, i = m(x), i + 1
    end
  end
  return x
end

--- Appends a module (named by its position).
function Sequential:append(m)
  return self:add_module(tostring(#self._modules + 1), m)
end

--- The i-th child (1-based).
function Sequential:get(i) return self[self._modules[i]] end

function Sequential:__len() return #self._modules end

local Flatten = Module:extend("Flatten")
function Flatten:init(start_dim, end_dim) self.start_dim, self.end_dim = start_dim or 2, end_dim or -1 end
function Flatten:forward(x) return x:flatten(self.start_dim, self.end_dim) end
function Flatten:extra_repr() return ("start_dim=%d, end_dim=%d"):format(self.start_dim, self.end_dim) end

local Identity = Module:extend("Identity")
function Identity:forward(x) return x end

return {Sequential = Sequential, Flatten = Flatten, Identity = Identity}
