-- Writes small valid inputs for the fuzz targets into DIR/{idx,cifar,image}/:
-- libFuzzer mutates them, which reaches deeper than random bytes would.
-- Run: cbnet run tests/fuzz/make_seeds.lua DIR
local cbnet = require "cbnet"
local core = require "cbnet.core"
local dir = assert(arg[1], "usage: make_seeds.lua DIR")
for _, sub in ipairs{"idx", "cifar", "image", "safetensors"} do assert(os.execute("mkdir -p " .. dir .. "/" .. sub)) end

local function write(name, bytes)
  local f = assert(io.open(dir .. "/" .. name, "wb"))
  f:write(bytes)
  f:close()
end
local function be32(n) return string.char(n >> 24 & 255, n >> 16 & 255, n >> 8 & 255, n & 255) end

write("idx/images", "\0\0\8\3" .. be32(2) .. be32(2) .. be32(2) .. "\1\2\3\4\5\6\7\8")
write("idx/labels", "\0\0\8\1" .. be32(3) .. "\0\1\2")
write("idx/floats", "\0\0\13\1" .. be32(1) .. "\63\128\0\0")
write("idx/ints", "\0\0\12\2" .. be32(1) .. be32(2) .. be32(7) .. be32(4294967295))
write("cifar/two", string.char(3) .. string.rep("\7", 3072) .. string.char(9) .. string.rep("\200", 3072))
local img = (cbnet.arange(3 * 5 * 4) * 3):view(3, 5, 4):byte()
for _, ext in ipairs{"png", "bmp", "jpg"} do core.write_image(img, dir .. "/image/seed." .. ext) end
local jpeg = assert(io.open(dir .. "/image/seed.jpg", "rb")):read("a")
write("image/filled.jpg", "\255\255" .. jpeg) -- fill bytes before the first marker, as stb_image allows
core.write_image(img:narrow(1, 1, 1):contiguous(), dir .. "/image/grey.png")
core.save_safetensors(dir .. "/safetensors/seed.safetensors",
  {w = cbnet.randn(2, 3), i = cbnet.tensor{1, 2}, m = cbnet.tensor{true}, b = cbnet.zeros({3}, "uint8")},
  {format = "seed", note = "a \"quoted\" value"})
