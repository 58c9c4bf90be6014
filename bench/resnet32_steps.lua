-- ResNet-32 training steps on random data and nothing else, for a profiler:
--   perf record -g build/bin/cbnet run bench/resnet32_steps.lua [steps = 40] [batch = 128]
--   perf report --no-children --sort symbol
local cbnet = require "cbnet"
local models = require "cbnet.models"

local steps, batch = tonumber(arg[1]) or 40, tonumber(arg[2]) or 128
local model = models.get("resnet32", {classes = 10})
local x, y = cbnet.randn(batch, 3, 32, 32), cbnet.randint(0, 10, {batch})
local opt = cbnet.optim.SGD(model:parameters(), {lr = 0.01, momentum = 0.9, weight_decay = 2e-4})
local t0 = cbnet.clock()
for _ = 1, steps do
  opt:zero_grad()
  cbnet.F.cross_entropy(model(x), y):backward()
  opt:step()
end
print(("%d steps at batch %d: %.0f img/s"):format(steps, batch, steps * batch / (cbnet.clock() - t0)))
