-- cbnet's side of bench/parity_augment.py: random uint8 images and every
-- image operation at TrivialAugmentWide's magnitudes, written to one
-- safetensors file (images, then "<op> <magnitude>" for each output).
--   cbnet run bench/parity_augment.lua OUT.safetensors
local cbnet = require "cbnet"
local data = require "cbnet.data"

local out = assert(arg[1], "usage: cbnet run bench/parity_augment.lua OUT.safetensors")
local g = cbnet.Generator(0)
-- noise, and smooth images (a noisy gradient) whose histograms are not flat
local noise = cbnet.randint(0, 256, {8, 3, 32, 32}, g)
local ramp = (cbnet.arange(32):float():view(1, 1, 1, 32) * 6 + cbnet.randint(0, 40, {8, 3, 32, 32}, g):float())
local images = cbnet.cat({noise:float(), ramp:clamp(0, 255)}, 1):byte():contiguous()
local tensors = {images = images}
local signed = {shear_x = 0.99, shear_y = 0.99, translate_x = 32, translate_y = 32, rotate = 135,
                brightness = 0.99, color = 0.99, contrast = 0.99, sharpness = 0.99}
for _, name in ipairs{"shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color",
                      "contrast", "sharpness"} do
  for _, bin in ipairs{1, 7, 15, 30} do
    for _, sign in ipairs{1, -1} do
      local m = sign * signed[name] * bin / 30
      tensors[("%s %.17g"):format(name, m)] = data.image_op(images, name, m)
    end
  end
end
for bits = 2, 8 do tensors[("posterize %d"):format(bits)] = data.image_op(images, "posterize", bits) end
for _, t in ipairs{0, 42.5, 127.5, 255} do tensors[("solarize %.17g"):format(t)] = data.image_op(images, "solarize", t) end
tensors["autocontrast 0"] = data.image_op(images, "autocontrast", 0)
tensors["equalize 0"] = data.image_op(images, "equalize", 0)
cbnet.save_safetensors(out, tensors)
