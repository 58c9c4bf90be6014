-- ResNet-32 (or another of cbnet.models) training steps on random data and
-- nothing else, for a profiler or alternating before/after pairs:
--   perf record -g build/bin/cbnet run bench/resnet32_steps.lua [steps = 40] [batch = 128] [model = resnet32]
--   perf report --no-children --sort symbol
local cbnet = require "cbnet"
local models = require "cbnet.models"

local steps, batch, name = tonumber(arg[1]) or 40, tonumber(arg[2]) or 128, arg[3] or "resnet32"
local model = models.get(name, {classes = 10})
local x, y = cbnet.randn(batch, 3, 32, 32), cbnet.randint(0, 10, {batch})
local opt = cbnet.optim.SGD(model:parameters(), {lr = 0.01, momentum = 0.9, weight_decay = 2e-4})
local t0 = cbnet.clock()
for _ = 1, steps do
  opt:zero_grad()
  cbnet.F.cross_entropy(model(x), y):backward()
  opt:step()
end
print(("%d steps at batch %d: %.0f img/s"):format(steps, batch, steps * batch / (cbnet.clock() - t0)))
