--- cbnet.nn.init: parameter initialisation, with PyTorch's formulas. Each
-- fills a tensor in place (without recording gradients) and returns it; the
-- generator is optional (the default one otherwise).
local cbnet = require "cbnet"

local init = {}

--- fan_in and fan_out of a weight (out x in [x kh x kw]).
function init.fans(t)
  local size = t:size()
  local receptive = 1
  for d = 3, #size do receptive = receptive * size[d] end
  return size[2] * receptive, size[1] * receptive
end

function init.uniform_(t, low, high, generator)
  return cbnet.no_grad(function() return t:uniform_(low, high, generator) end)
end

function init.normal_(t, mean, std, generator)
  return cbnet.no_grad(function() return t:normal_(mean, std, generator) end)
end

function init.constant_(t, value)
  return cbnet.no_grad(function() return t:fill_(value) end)
end

--- gain for a nonlinearity ("relu", "leaky_relu" with a, "linear", "tanh").
function init.calculate_gain(nonlinearity, a)
  if nonlinearity == "relu" then return math.sqrt(2) end
  if nonlinearity == "leaky_relu" then return math.sqrt(2 / (1 + (a or 0.01) ^ 2)) end
  if nonlinearity == "tanh" then return 5 / 3 end
  return 1
end

--- U(-b, b) with b = gain * sqrt(3 / fan_in). With a = sqrt(5) (leaky_relu)
-- this is the default of PyTorch's Linear and Conv2d: b = 1 / sqrt(fan_in).
function init.kaiming_uniform_(t, a, nonlinearity, generator)
  local fan_in = init.fans(t)
  local bound = init.calculate_gain(nonlinearity or "leaky_relu", a or 0) * math.sqrt(3 / fan_in)
  return init.uniform_(t, -bound, bound, generator)
end

--- N(0, (gain / sqrt(fan_in))^2), the usual choice for ReLU networks.
function init.kaiming_normal_(t, a, nonlinearity, generator)
  local fan_in = init.fans(t)
  local std = init.calculate_gain(nonlinearity or "relu", a or 0) / math.sqrt(fan_in)
  return init.normal_(t, 0, std, generator)
end

function init.xavier_uniform_(t, gain, generator)
  local fan_in, fan_out = init.fans(t)
  local bound = (gain or 1) * math.sqrt(6 / (fan_in + fan_out))
  return init.uniform_(t, -bound, bound, generator)
end

return init
