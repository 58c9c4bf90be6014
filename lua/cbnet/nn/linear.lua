--- nn.Linear(in_features, out_features[, {bias = true, generator}]): y = x W^T + b.
-- Initialised as PyTorch's: W and b uniform in +-1/sqrt(in_features).
local cbnet = require "cbnet"
local Module = require "cbnet.nn.module"
local init = require "cbnet.nn.initializers"
local options = require "cbnet.options"

local Linear = Module:extend("Linear")

function Linear:init(in_features, out_features, opts)
  opts = options.check(opts, "Linear", {"bias", "generator"})
  self.in_features, self.out_features = in_features, out_features
  local w = self:register_parameter("weight", cbnet.empty(out_features, in_features))
  init.kaiming_uniform_(w, math.sqrt(5), "leaky_relu", opts.generator)
  if opts.bias ~= false then
    local bound = 1 / math.sqrt(in_features)
    init.uniform_(self:register_parameter("bias", cbnet.empty(out_features)), -bound, bound, opts.generator)
  end
end

function Linear:forward(x) return cbnet.F.linear(x, self.weight, self.bias) end

function Linear:extra_repr()
  return ("%d, %d%s"):format(self.in_features, self.out_features, self.bias and "" or ", bias=false")
end

return {Linear = Linear}
