--- nn.BasicBlock(in_planes, planes[, stride = 1[, opts]]): the residual block
-- of ResNet (He et al. 2016): conv3x3-BN-ReLU-conv3x3-BN, plus a shortcut,
-- then ReLU. When the shape changes the shortcut is opts.shortcut =
--   "conv" (default): 1x1 convolution with stride, then BN (ResNet "option B");
--   "pad": take every stride-th pixel and zero-pad the new channels
--          (option A, as the CIFAR ResNet-32 of LDAM-DRW and Cui et al. use).
local cbnet = require "cbnet"
local Module = require "cbnet.nn.module"
local options = require "cbnet.options"
local Conv2d = require("cbnet.nn.conv").Conv2d
local BatchNorm2d = require("cbnet.nn.batchnorm").BatchNorm2d

local BasicBlock = Module:extend("BasicBlock")

function BasicBlock:init(in_planes, planes, stride, opts)
  opts = options.check(opts, "BasicBlock", {"shortcut", "generator"})
  stride = stride or 1
  self.shortcut_kind = opts.shortcut or "conv"
  assert(self.shortcut_kind == "conv" or self.shortcut_kind == "pad",
    "BasicBlock: shortcut must be 'conv' or 'pad'")
  local g = opts.generator
  self:add_module("conv1", Conv2d(in_planes, planes, 3, {stride = stride, padding = 1, bias = false, generator = g}))
  self:add_module("bn1", BatchNorm2d(planes, {relu = true})) -- BN then ReLU, fused
  self:add_module("conv2", Conv2d(planes, planes, 3, {padding = 1, bias = false, generator = g}))
  self:add_module("bn2", BatchNorm2d(planes))
  self.stride, self.in_planes, self.planes = stride, in_planes, planes
  if (stride ~= 1 or in_planes ~= planes) and self.shortcut_kind == "conv" then
    self:add_module("shortcut", cbnet.nn.Sequential(
      Conv2d(in_planes, planes, 1, {stride = stride, bias = false, generator = g}), BatchNorm2d(planes)))
  end
end

--- Option A: subsample by the stride and put zero channels on both sides.
function BasicBlock:pad_shortcut(x)
  if self.stride ~= 1 then x = x:slice(3, 1, -1, self.stride):slice(4, 1, -1, self.stride) end
  local extra = self.planes - self.in_planes
  if extra == 0 then return x end
  local size = x:size()
  local before = extra // 2
  local parts = {}
  if before > 0 then parts[#parts + 1] = cbnet.zeros(size[1], before, size[3], size[4]) end
  parts[#parts + 1] = x
  parts[#parts + 1] = cbnet.zeros(size[1], extra - before, size[3], size[4])
  return cbnet.cat(parts, 2)
end

function BasicBlock:forward(x)
  -- conv2(relu(bn1(conv1(x)))), bn1's output never written (BatchNorm2d:forward)
  local out = self.bn1(self.conv1(x), true, nil, nil, self.conv2)
  local identity
  if self.shortcut then identity = self.shortcut(x)
  elseif self.stride ~= 1 or self.in_planes ~= self.planes then identity = self:pad_shortcut(x)
  else identity = x end
  -- relu(bn2(out) + identity) in one pass over memory
  return self.bn2(out, true, identity)
end

function BasicBlock:extra_repr()
  return ("%d, %d, stride=%d, shortcut=%s"):format(self.in_planes, self.planes, self.stride, self.shortcut_kind)
end

return {BasicBlock = BasicBlock}
