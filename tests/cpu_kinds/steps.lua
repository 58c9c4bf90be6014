-- A training step (forward, loss, backward, SGD with momentum and weight
-- decay) and an evaluation forward of three small networks on two images,
-- on every convolution path this CPU runs, written to OUT as a safetensors
-- file of "<net>.<path>.<what>" tensors. tests/spec/cpu_kinds_spec.lua runs
-- it here and under qemu-user as other x86-64 kinds (an AVX2-only EPYC, a
-- CPU without AVX) and compares, so that the code those machines run (the
-- AVX2 and plain clones of CB_VECTOR_CLONES, the AVX2 convolutions, the
-- plain double sums, OpenBLAS's Haswell and Nehalem kernels) is checked
-- whatever machine the tests run on. Small, because emulated vector code
-- runs some 10,000 times slower than the real thing.
--   cbnet run tests/cpu_kinds/steps.lua OUT [net]
local cbnet = require "cbnet"
local core = require "cbnet.core"
local models = require "cbnet.models"
local nn = cbnet.nn

local out_path, only = arg[1], arg[2]
assert(out_path, "usage: cbnet run tests/cpu_kinds/steps.lua OUT [net]")

-- ResNet-8: ResNet-32's layers (16/32/64-channel Winograd convolutions,
-- stride 2, option-A shortcuts, BN + add + ReLU), one basic block per stage.
local ResNet8 = nn.Module:extend("ResNet8")
function ResNet8:init(g)
  self:add_module("conv1", nn.Conv2d(3, 16, 3, {padding = 1, bias = false, generator = g}))
  self:add_module("bn1", nn.BatchNorm2d(16, {relu = true}))
  self:add_module("blocks", nn.Sequential(
    nn.BasicBlock(16, 16, 1, {shortcut = "pad", generator = g}),
    nn.BasicBlock(16, 32, 2, {shortcut = "pad", generator = g}),
    nn.BasicBlock(32, 64, 2, {shortcut = "pad", generator = g})))
  self:add_module("linear", nn.Linear(64, 10, {generator = g}))
end
function ResNet8:forward(x)
  local out = self.blocks(self.bn1(self.conv1(x)))
  return self.linear(cbnet.F.adaptive_avg_pool2d(out, 1):flatten(2))
end

local NETS = {
  -- the seed CNN: a direct 3-channel convolution, BN + ReLU + pool
  convnet = function(g) cbnet.manual_seed(11) return models.get("convnet", {classes = 10}) end,
  resnet8 = function(g) return ResNet8(g) end,
  -- wider layers (F(4x4) tiles), BN + ReLU after pooling, global max pooling
  fastnet = function(g) return models.get("fastnet", {widths = {32, 32, 64}, generator = g}) end,
}

local results = {}
local previous_path = cbnet.conv_path()
for _, path in ipairs(cbnet.conv_paths()) do
  cbnet.conv_path(path)
  for _, name in ipairs{"convnet", "resnet8", "fastnet"} do
    if not only or only == name then
      local g = cbnet.Generator(11)
      local model = NETS[name](g)
      local x, y = cbnet.randn({2, 3, 32, 32}, g), cbnet.randint(0, 10, {2}, g)
      local key = name .. "." .. path .. "."
      local opt = cbnet.optim.SGD(model:parameters(), {lr = 0.1, momentum = 0.9, weight_decay = 5e-4})
      local logits = model(x)
      local loss = cbnet.F.cross_entropy(logits, y)
      loss:backward()
      results[key .. "logits"], results[key .. "loss"] = logits:detach(), loss:detach():reshape{1}
      for pname, p in model:named_parameters() do results[key .. "grad." .. pname] = p.grad end
      opt:step()
      for pname, t in pairs(model:state_dict()) do results[key .. "after." .. pname] = t end
      model:eval()
      results[key .. "eval"] = cbnet.no_grad(function() return model(x) end)
    end
  end
end
cbnet.conv_path(previous_path)
for k, t in pairs(results) do results[k] = t:contiguous() end
core.save_safetensors(out_path, results, {conv_paths = table.concat(cbnet.conv_paths(), ",")})
