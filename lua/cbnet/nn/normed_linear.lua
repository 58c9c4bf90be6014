--- nn.NormedLinear(in_features, out_features): the cosine classifier LDAM
-- trains with (Cao et al. 2019): y = normalize(x) @ normalize(W) with rows
-- of x and columns of W (in x out) at unit length, so logits lie in [-1, 1]
-- (the loss scales them, s = 30). No bias. Initialised as the reference
-- code does: W ~ U(-1, 1), each column renormalised to norm 1e-5 then x 1e5.
local cbnet = require "cbnet"
local Module = require "cbnet.nn.module"
local init = require "cbnet.nn.initializers"
local options = require "cbnet.options"

local NormedLinear = Module:extend("NormedLinear")

function NormedLinear:init(in_features, out_features, opts)
  opts = options.check(opts, "NormedLinear", {"generator"})
  self.in_features, self.out_features = in_features, out_features
  local w = self:register_parameter("weight", cbnet.empty(in_features, out_features))
  cbnet.no_grad(function()
    init.uniform_(w, -1, 1, opts.generator)
    w:copy_(w / (w * w):sum(1, true):sqrt())
  end)
end

-- x / |x| along dim, with the norm kept away from 0 (as F.normalize's eps).
local function normalize(x, dim)
  return x / (x * x):sum(dim, true):sqrt():clamp(1e-12)
end

function NormedLinear:forward(x)
  return normalize(x, 2):matmul(normalize(self.weight, 1))
end

function NormedLinear:extra_repr() return ("%d, %d"):format(self.in_features, self.out_features) end

return {NormedLinear = NormedLinear}
