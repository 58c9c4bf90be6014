-- A new loss, defined right here in the experiment script: no C, no
-- recompiling. Autograd differentiates whatever tensor operations it uses.
--
-- Poly-1 loss (Leng et al., ICLR 2022): cross-entropy plus epsilon times the
-- first polynomial term of its expansion,
--     L_i = CE_i + epsilon * (1 - p_i[y_i]),
-- averaged over the batch. epsilon > 0 pushes harder on samples the model
-- already gets right; epsilon = 0 is plain cross-entropy.
--
-- Run: cbnet run experiments/custom_loss.lua [epsilon=1] [steps=200]
local cbnet = require "cbnet"
local nn, F = cbnet.nn, cbnet.F

local epsilon = tonumber(arg and arg[1]) or 1
local steps = tonumber(arg and arg[2]) or 200

local function poly1_loss(logits, target)
  local log_p = F.log_softmax(logits, 2):gather(2, target:view(-1, 1)):view(-1)
  return (-log_p + (1 - log_p:exp()) * epsilon):mean()
end

-- Synthetic data: three Gaussian blobs in 2-d, one per class.
local g = cbnet.Generator(0)
local centers = cbnet.tensor{{2.0, 0.0}, {-1.0, 1.7}, {-1.0, -1.7}}
local labels = cbnet.randint(0, 3, {600}, g)
local points = centers:index_select(1, labels) + cbnet.randn({600, 2}, g) * 0.8

cbnet.manual_seed(0)
local model = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 3))
local opt = cbnet.optim.Adam(model:parameters(), {lr = 0.01})
for step = 1, steps do
  local loss = poly1_loss(model(points), labels)
  opt:zero_grad()
  loss:backward()
  opt:step()
  if step % 50 == 0 or step == 1 then print(("step %4d  poly-1 loss %.4f"):format(step, loss:item())) end
end
local accuracy = cbnet.no_grad(function()
  return model(points):argmax(2):eq(labels):float():mean():item()
end)
print(("training accuracy %.3f (epsilon %g)"):format(accuracy, epsilon))
