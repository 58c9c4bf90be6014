--- cbnet.models: the networks of the studies, by name (every experiment's
-- --model option).
--
--   resnet20, resnet32, resnet44, resnet56: the CIFAR ResNets of He et al.
--     (2016) as the long-tail literature trains them (LDAM-DRW's
--     resnet_cifar.py): conv3x3(16) + BN + ReLU, three stages of n basic
--     blocks with 16, 32, 64 channels (stride 2 into stages 2 and 3, option-A
--     shortcuts: subsample and zero-pad), global average pooling, a linear
--     classifier; 6n + 2 layers. Kaiming-normal weights (fan-in, ReLU gain)
--     for every convolution and linear layer, as that code does. ResNet-32 for
--     10 classes has 464,154 parameters. opts.normed = true puts the cosine
--     classifier nn.NormedLinear (LDAM's) in place of the linear one.
--   convnet: the seed study's CNN (experiment.convnet).
--   fastnet: a wide, shallow network for training in a time budget
--     (models.fastnet below).
--
-- models.get(name, opts): opts may hold any model's options (classes,
-- in_channels, image_size, normed, widths, ...); the model gets those it
-- takes. Called by itself, a model rejects options it does not take.
local cbnet = require "cbnet"
local nn = require "cbnet.nn"
local options = require "cbnet.options"

local models = {}

-- the options each model takes
local TAKES = {
  resnet = {"classes", "in_channels", "normed", "generator"},
  convnet = {"classes", "in_channels", "image_size", "widths", "second_pool"},
  fastnet = {"classes", "in_channels", "widths", "stem", "logit_scale", "generator"},
}

local ResNet = nn.Module:extend("ResNet")

function ResNet:init(blocks_per_stage, opts)
  local g = opts.generator
  local classes, in_channels = opts.classes or 10, opts.in_channels or 3
  self:add_module("conv1", nn.Conv2d(in_channels, 16, 3, {padding = 1, bias = false, generator = g}))
  self:add_module("bn1", nn.BatchNorm2d(16, {relu = true})) -- BN then ReLU, fused
  local planes = 16
  for stage, width in ipairs{16, 32, 64} do
    local layer = nn.Sequential()
    for b = 1, blocks_per_stage do
      local stride = (b == 1 and stage > 1) and 2 or 1
      layer:append(nn.BasicBlock(planes, width, stride, {shortcut = "pad", generator = g}))
      planes = width
    end
    self:add_module("layer" .. stage, layer)
  end
  if opts.normed then
    self:add_module("linear", nn.NormedLinear(64, classes, {generator = g}))
  else
    self:add_module("linear", nn.Linear(64, classes, {generator = g}))
  end
  -- the reference code's initialisation: Kaiming normal for conv and linear weights
  cbnet.no_grad(function()
    for name, p in self:named_parameters() do
      if name:match("conv%d?%.weight$") or name == "linear.weight" and not opts.normed then
        nn.init.kaiming_normal_(p, 0, "relu", g)
      end
    end
  end)
  self.depth = 6 * blocks_per_stage + 2
end

function ResNet:forward(x)
  local out = self.bn1(self.conv1(x))
  out = self.layer3(self.layer2(self.layer1(out)))
  out = cbnet.F.adaptive_avg_pool2d(out, 1):flatten(2)
  return self.linear(out)
end

function ResNet:extra_repr() return ("depth %d"):format(self.depth) end

for depth, n in pairs{[20] = 3, [32] = 5, [44] = 7, [56] = 9} do
  models["resnet" .. depth] = function(opts)
    return ResNet(n, options.check(opts, "resnet" .. depth, TAKES.resnet))
  end
end

--- The seed study's CNN: conv3x3 + BN + ReLU + maxpool2, conv3x3 + BN + ReLU
-- (+ maxpool2 unless second_pool is false), a linear classifier.
function models.convnet(opts)
  opts = options.check(opts, "convnet", TAKES.convnet)
  local w1, w2 = table.unpack(opts.widths or {32, 64})
  local c, side = opts.in_channels or 3, opts.image_size or 32
  local model = nn.Sequential(
    nn.Conv2d(c, w1, 3, {padding = 1}), nn.BatchNorm2d(w1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(w1, w2, 3, {padding = 1}), nn.BatchNorm2d(w2), nn.ReLU())
  side = side // 2
  if opts.second_pool ~= false then
    model:append(nn.MaxPool2d(2))
    side = side // 2
  end
  model:append(nn.Flatten())
  model:append(nn.Linear(w2 * side * side, opts.classes or 10))
  return model
end

-- fastnet (see models.fastnet)
local FastNet = nn.Module:extend("FastNet")

function FastNet:init(opts)
  local g, widths = opts.generator, opts.widths or {64, 128, 256}
  local stem = opts.stem or widths[1] // 2
  local function conv(cin, cout) return nn.Conv2d(cin, cout, 3, {padding = 1, bias = false, generator = g}) end
  local layers = nn.Sequential(conv(opts.in_channels or 3, stem), nn.BatchNorm2d(stem, {relu = true}))
  local planes = stem
  for _, width in ipairs(widths) do
    layers:append(conv(planes, width))
    layers:append(nn.MaxPool2d(2))
    layers:append(nn.BatchNorm2d(width, {relu = true}))
    layers:append(conv(width, width))
    layers:append(nn.BatchNorm2d(width, {relu = true}))
    planes = width
  end
  self:add_module("layers", layers)
  self:add_module("linear", nn.Linear(planes, opts.classes or 10, {bias = false, generator = g}))
  self.logit_scale, self.widths = opts.logit_scale or 1 / 8, widths
end

function FastNet:forward(x)
  local features = self.layers(x)
  local side = features:size(3)
  features = cbnet.F.max_pool2d(features, side):flatten(2) -- global max pooling
  return self.linear(features) * self.logit_scale
end

function FastNet:extra_repr() return "widths " .. table.concat(self.widths, "/") end

--- fastnet: the fast-training CIFAR network of the speed-run work (the
-- ResNet-9-like nets of Page's DAWNBench entry and Jordan's airbench, 2018-24):
-- a 3x3 stem of opts.stem channels (BN + ReLU), then per width a block
-- conv3x3 -> max-pool 2 -> BN + ReLU -> conv3x3 -> BN + ReLU, global max
-- pooling and a bias-free linear classifier whose logits are scaled by
-- opts.logit_scale (1/8: BN'd, max-pooled features give large logits). Why
-- this shape: it has few layers at full resolution and does most of its work
-- in 64-256-channel convolutions, which run near the sgemm rate on a CPU
-- (ResNet-32's 16-channel layers do not), and it learns more per image seen.
-- opts.widths = {64, 128, 256} by default.
-- opts: widths, stem, classes, in_channels, logit_scale, generator.
function models.fastnet(opts) return FastNet(options.check(opts, "fastnet", TAKES.fastnet)) end

models.names = {"resnet20", "resnet32", "resnet44", "resnet56", "convnet", "fastnet"}

--- A model by name; an unknown name is an error listing the known ones.
function models.get(name, opts)
  local make = models[name]
  if type(make) ~= "function" or name == "get" then
    error(("unknown model '%s' (known: %s)"):format(tostring(name), table.concat(models.names, ", ")), 2)
  end
  local any, seen = {}, {}
  for _, names in pairs(TAKES) do
    for _, key in ipairs(names) do
      if not seen[key] then any[#any + 1], seen[key] = key, true end
    end
  end
  table.sort(any)
  opts = options.check(opts, "models.get", any)
  local takes, own = TAKES[name:match("^resnet") and "resnet" or name], {}
  for _, key in ipairs(takes) do own[key] = opts[key] end
  return make(own)
end

return models
