-- Batch assembly throughput: CIFAR-10-sized images through the loader with
-- the standard augmentation (pad-4 crop, flip, normalisation), then with
-- TrivialAugment too, on one core and on all. Uses the real CIFAR-10 when it is found, random images else.
-- Run: build/bin/cbnet run bench/loader.lua [epochs=3] [batch=128]
local cbnet = require "cbnet"
local data = cbnet.data

local epochs = tonumber(arg[1]) or 3
local batch = tonumber(arg[2]) or 128

local wall = require("cbnet.report").now -- wall-clock seconds

local ok, ds = pcall(data.cifar10, nil, "train")
if not ok then
  print("CIFAR-10 not found: 50,000 random 3x32x32 images instead")
  local g = cbnet.Generator(0)
  ds = data.dataset(cbnet.randint(0, 256, {50000, 3, 32, 32}, g):byte(), cbnet.randint(0, 10, {50000}, g), 10)
end
print(tostring(ds))

local all = cbnet.get_num_threads()
for _, trivial in ipairs{false, true} do
  for _, threads in ipairs{1, all} do
    cbnet.set_num_threads(threads)
    local loader = data.Loader(ds, {batch_size = batch, shuffle = true,
                                    transform = data.cifar_augmentation{trivial_augment = trivial}})
    local rates = {}
    for epoch = 1, epochs do
      local t0, n = wall(), 0
      for images in loader:batches(epoch) do n = n + images:size(1) end
      rates[epoch] = n / (wall() - t0)
    end
    table.sort(rates)
    print(("%d thread(s)%s: %.0f images/s (median of %d epochs, batch %d)"):format(threads,
      trivial and ", TrivialAugment" or "", rates[(epochs + 1) // 2], epochs, batch))
  end
end
cbnet.set_num_threads(all)
