--- nn.Conv2d(in_channels, out_channels, kernel_size[, opts]); opts: stride,
-- padding, dilation, groups, bias (true), generator. Sizes are a number or a
-- {h, w} pair. Initialised as PyTorch's (uniform +-1/sqrt(fan_in)).
local cbnet = require "cbnet"
local Module = require "cbnet.nn.module"
local init = require "cbnet.nn.initializers"
local options = require "cbnet.options"

local Conv2d = Module:extend("Conv2d")

local function pair(v) return type(v) == "table" and v or {v, v} end

function Conv2d:init(in_channels, out_channels, kernel_size, opts)
  opts = options.check(opts, "Conv2d", {"stride", "padding", "dilation", "groups", "bias", "generator"})
  local k = pair(kernel_size)
  self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, k
  self.stride, self.padding = pair(opts.stride or 1), pair(opts.padding or 0)
  self.dilation, self.groups = pair(opts.dilation or 1), opts.groups or 1
  assert(in_channels % self.groups == 0 and out_channels % self.groups == 0,
    "Conv2d: groups must divide in_channels and out_channels")
  local w = self:register_parameter("weight",
    cbnet.empty(out_channels, in_channels // self.groups, k[1], k[2]))
  init.kaiming_uniform_(w, math.sqrt(5), "leaky_relu", opts.generator)
  if opts.bias ~= false then
    local bound = 1 / math.sqrt(init.fans(w))
    init.uniform_(self:register_parameter("bias", cbnet.empty(out_channels)), -bound, bound, opts.generator)
  end
end

--- forward(x[, weight, bias, relu]): weight and bias in place of the
-- layer's (nn.Sequential passes them with a batch norm folded in), relu the
-- output clamped at 0.
function Conv2d:forward(x, weight, bias, relu)
  if weight == nil then weight, bias = self.weight, self.bias end
  return cbnet.F.conv2d(x, weight, bias, {stride = self.stride, padding = self.padding,
    dilation = self.dilation, groups = self.groups, relu = relu})
end

function Conv2d:extra_repr()
  local s = ("%d, %d, kernel_size=%dx%d, stride=%d, padding=%d"):format(self.in_channels,
    self.out_channels, self.kernel_size[1], self.kernel_size[2], self.stride[1], self.padding[1])
  if self.dilation[1] ~= 1 then s = s .. ", dilation=" .. self.dilation[1] end
  if self.groups ~= 1 then s = s .. ", groups=" .. self.groups end
  return s .. (self.bias and "" or ", bias=false")
end

return {Conv2d = Conv2d}
