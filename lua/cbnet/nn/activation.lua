--- Activation layers: nn.ReLU, nn.LeakyReLU(negative_slope = 0.01),
-- nn.Sigmoid, nn.Tanh, nn.GELU, nn.Softplus(beta = 1), nn.Softmax(dim = -1),
-- nn.LogSoftmax(dim = -1). None has parameters.
local cbnet = require "cbnet"
local Module = require "cbnet.nn.module"

local layers = {}

local function simple(name, fn)
  local class = Module:extend(name)
  function class:forward(x) return fn(x) end
  layers[name] = class
end

simple("ReLU", function(x) return x:relu() end)
simple("Sigmoid", function(x) return x:sigmoid() end)
simple("Tanh", function(x) return x:tanh() end)
simple("GELU", function(x) return cbnet.F.gelu(x) end)

local function with_setting(name, field, default, fn)
  local class = Module:extend(name)
  function class:init(value) self[field] = value or default end
  function class:forward(x) return fn(x, self[field]) end
  function class:extra_repr() return ("%s=%s"):format(field, self[field]) end
  layers[name] = class
end

with_setting("LeakyReLU", "negative_slope", 0.01, cbnet.F.leaky_relu)
with_setting("Softplus", "beta", 1, cbnet.F.softplus)
with_setting("Softmax", "dim", -1, cbnet.F.softmax)
with_setting("LogSoftmax", "dim", -1, cbnet.F.log_softmax)

return layers
