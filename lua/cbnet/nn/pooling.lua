--- Pooling layers: nn.MaxPool2d(kernel[, stride = kernel[, padding = 0]]),
-- nn.AvgPool2d(kernel[, stride[, padding[, count_include_pad = true]]]),
-- nn.AdaptiveAvgPool2d(output_size) (1 for global average pooling).
local cbnet = require "cbnet"
local Module = require "cbnet.nn.module"

local MaxPool2d = Module:extend("MaxPool2d")
function MaxPool2d:init(kernel, stride, padding)
  self.kernel, self.stride, self.padding = kernel, stride or kernel, padding or 0
end
function MaxPool2d:forward(x) return cbnet.F.max_pool2d(x, self.kernel, self.stride, self.padding) end
function MaxPool2d:extra_repr()
  return ("kernel_size=%s, stride=%s, padding=%s"):format(self.kernel, self.stride, self.padding)
end

local AvgPool2d = Module:extend("AvgPool2d")
function AvgPool2d:init(kernel, stride, padding, count_include_pad)
  self.kernel, self.stride, self.padding = kernel, stride or kernel, padding or 0
  self.count_include_pad = count_include_pad ~= false
end
function AvgPool2d:forward(x)
  return cbnet.F.avg_pool2d(x, self.kernel, self.stride, self.padding, self.count_include_pad)
end
AvgPool2d.extra_repr = MaxPool2d.extra_repr

local AdaptiveAvgPool2d = Module:extend("AdaptiveAvgPool2d")
function AdaptiveAvgPool2d:init(output_size) self.output_size = output_size end
function AdaptiveAvgPool2d:forward(x) return cbnet.F.adaptive_avg_pool2d(x, self.output_size) end
function AdaptiveAvgPool2d:extra_repr()
  local s = self.output_size
  return "output_size=" .. (type(s) == "table" and table.concat(s, "x") or s)
end

return {MaxPool2d = MaxPool2d, AvgPool2d = AvgPool2d, AdaptiveAvgPool2d = AdaptiveAvgPool2d}
