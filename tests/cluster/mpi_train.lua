-- Test script: trains a small model with experiment.train on the given
-- CIFAR folder, 2 epochs of 4 batches of 32, no augmentation, so that
-- `mpirun -np 2` (each rank 16 images of the same global batch) and one
-- process give the same weights up to float rounding. With a third argument
-- "bn", the model has batch norm, synchronised over the ranks (--sync-bn)
-- unless the fourth argument is "local".
--   cbnet run tests/cluster/mpi_train.lua DATA OUT [bn [local]]
local cbnet = require "cbnet"
local data = require "cbnet.data"
local experiment = require "cbnet.experiment"
local data_dir, out, bn, bn_kind = ...
local train, test = data.cifar10(data_dir, "train"), data.cifar10(data_dir, "test")
local opts = {seed = 0, epochs = 2, batch_size = 32, lr = 0.05, momentum = 0.9, wd = 1e-4, optimizer = "sgd",
              schedule = "none", augment = false, quick = true, sync_bn = bn == "bn" and bn_kind ~= "local"}
experiment.train{
  name = "mpi", opts = opts, out = out, train = train, test = test,
  normalization = {mean = {0.5, 0.5, 0.5}, std = {0.25, 0.25, 0.25}},
  model = function()
    if bn == "bn" then
      -- a convolution after the first batch norm, and one before the second with a ReLU and
      -- pooling after it: each group one op in one process (F.batch_norm_relu_conv2d,
      -- F.conv2d_batch_norm_relu_pool), the separate ops when the statistics are synchronised
      return cbnet.nn.Sequential(cbnet.nn.Conv2d(3, 4, 3, {stride = 2}), cbnet.nn.BatchNorm2d(4, {relu = true}),
        cbnet.nn.Conv2d(4, 4, 3, {padding = 1}), cbnet.nn.Conv2d(4, 4, 3, {padding = 1}),
        cbnet.nn.BatchNorm2d(4), cbnet.nn.ReLU(), cbnet.nn.MaxPool2d(2), cbnet.nn.Flatten(),
        cbnet.nn.Linear(4 * 7 * 7, 10))
    end
    return cbnet.nn.Sequential(cbnet.nn.Conv2d(3, 4, 3, {stride = 2}), cbnet.nn.ReLU(), cbnet.nn.Flatten(),
      cbnet.nn.Linear(4 * 15 * 15, 10))
  end,
  loss = function(logits, labels) return cbnet.F.cross_entropy(logits, labels) end,
}
