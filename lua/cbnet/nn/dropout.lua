--- nn.Dropout(p = 0.5[, generator]): zeroes elements with probability p in
-- training, scaling the rest by 1/(1-p); the identity after eval().
local cbnet = require "cbnet"
local Module = require "cbnet.nn.module"

local Dropout = Module:extend("Dropout")

function Dropout:init(p, generator)
  self.p = p or 0.5
  assert(self.p >= 0 and self.p <= 1, "Dropout: p must be in [0, 1]")
  self.generator = generator
end

function Dropout:forward(x) return cbnet.F.dropout(x, self.p, self.training, self.generator) end
function Dropout:extra_repr() return "p=" .. self.p end

return {Dropout = Dropout}
