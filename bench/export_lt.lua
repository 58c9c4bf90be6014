-- Writes the long-tailed CIFAR-10 training set that experiments/fast_lt.lua
-- trains on (LDAM-DRW's construction, seed 0), its held-out validation set
-- and the test set into one safetensors file, so that another framework
-- (bench/fast_lt_torch.py) trains on exactly the same images.
-- --draw numpy keeps the LDAM-DRW code's very images (data.longtail's draw option).
-- Run: cbnet run bench/export_lt.lua OUT.safetensors [--data DIR] [--imbalance 100] [--val 0]
--        [--draw cbnet|numpy]
local cbnet = require "cbnet"
local data = require "cbnet.data"

local USAGE = "usage: cbnet run bench/export_lt.lua OUT.safetensors [--data DIR] [--imbalance 100] "
  .. "[--val 0] [--draw cbnet|numpy]"
local out, root, imbalance, val, draw = arg[1], nil, 100, 0, "cbnet"
for i = 2, #arg, 2 do
  if arg[i] == "--data" then root = arg[i + 1]
  elseif arg[i] == "--imbalance" then imbalance = tonumber(arg[i + 1])
  elseif arg[i] == "--val" then val = tonumber(arg[i + 1])
  elseif arg[i] == "--draw" then draw = arg[i + 1]
  else error("unknown option " .. tostring(arg[i]), 0) end
end
assert(out, USAGE)
local train = data.longtail(data.cifar10(root, "train"), {imbalance = imbalance, seed = 0,
                                                         holdout = val > 0 and val or nil, draw = draw})
local test = data.cifar10(root, "test")
local tensors = {train_images = train.images, train_labels = train.labels,
                 test_images = test.images, test_labels = test.labels}
if train.holdout then tensors.val_images, tensors.val_labels = train.holdout.images, train.holdout.labels end
cbnet.save_safetensors(out, tensors, {counts = table.concat(train:counts(), ",")})
print(("wrote %s: %d training images (%s per class), %d test"):format(out, train:size(),
  table.concat(train:counts(), ","), test:size()))
