--- cbnet.nn: layers and models. Every layer is a short Lua class over the C
-- kernels of cbnet.F; nn.Module (module.lua) is the base they share.
local nn = {}

nn.Module = require "cbnet.nn.module"
nn.init = require "cbnet.nn.initializers"

for _, file in ipairs{"linear", "conv", "batchnorm", "activation", "pooling", "dropout",
                      "container", "basic_block", "normed_linear"} do
  for name, class in pairs(require("cbnet.nn." .. file)) do nn[name] = class end
end

return nn
