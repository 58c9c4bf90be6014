-- Hostile inputs from the outside review (issue 9): each must give a clear
-- Lua error naming what was wrong, or, where the input is legal, the right
-- result -- never a crash, a hang or garbage.
local cbnet = require "cbnet"
local F = cbnet.F

local function values(t) return t:contiguous():view(-1):totable() end

describe("hostile tensor calls", function()
  it("pooling a huge expanded view fails to allocate cleanly (row 1)", function()
    local x = cbnet.zeros(1, 1, 1, 1):expand(1, 1, 1 << 40, 1)
    assert.error_matches(function() F.max_pool2d(x, 1) end, "out of memory")
    assert.error_matches(function() F.adaptive_avg_pool2d(cbnet.zeros(1, 1, 2, 2), 2 ^ 31) end,
      "adaptive_avg_pool2d")
  end)

  it("masked_fill on a huge expanded view errors without a crash (row 2)", function()
    local e = cbnet.zeros(1):expand(1 << 40)
    assert.has_error(function() e:masked_fill(cbnet.tensor(true), 1) end)
    assert.has_error(function() e:index_select(1, cbnet.tensor{0}) :sum() end)
  end)

  it("refuses shapes whose element count overflows (rows 3, 8, 19)", function()
    assert.error_matches(function() cbnet.zeros(1024):view(3689348814741910528, 5) end,
      "view: .*too many elements")
    assert.error_matches(function() cbnet.zeros(1):expand(math.maxinteger) end,
      "expand: .*too many elements")
    assert.error_matches(function() cbnet.zeros(1, 1):expand(1 << 32, 1 << 32) end,
      "expand: .*too many elements")
    assert.error_matches(function() cbnet.zeros(3, 3):permute(2 ^ 32 + 2, 2 ^ 32 + 1) end,
      "dim 4294967298 out of range")
    local x = cbnet.zeros(1, 1, 4, 4)
    assert.error_matches(function() F.max_pool2d(x, math.maxinteger, 1, 1 << 62) end,
      "max_pool2d")
    assert.error_matches(function()
      F.conv2d(x, cbnet.zeros(1, 1, 3, 3), nil, {dilation = math.maxinteger})
    end, "conv2d: .*overflow")
    assert.error_matches(function()
      cbnet.nn.Conv2d(1, 1, 3, {dilation = math.maxinteger})(x)
    end, "conv2d: .*overflow")
    assert.error_matches(function() F.conv2d(x, cbnet.zeros(1, 1, 3, 3), nil, 1) end,
      "options table")
  end)

  it("narrow and slice with extreme bounds (rows 4, 6)", function()
    assert.error_matches(function()
      cbnet.zeros(3):narrow(1, math.maxinteger, math.maxinteger):sum()
    end, "narrow: .*out of range")
    assert.error_matches(function() cbnet.zeros(3):narrow(1, math.maxinteger - 1, 5) end,
      "narrow: 5 elements from position 9223372036854775806 out of range")
    local s = cbnet.arange(3):float():slice(1, 1, -1, math.maxinteger)
    assert.same({1}, s:size())
    assert.same({0}, values(s))
    local e = cbnet.arange(3):float():slice(1, 3, 1)
    assert.same({0}, e:size())
    assert.is_true(e:mean():item() ~= e:mean():item()) -- mean of nothing is NaN
  end)

  it("integer division and remainder by -1 and 0 (row 5)", function()
    assert.same({0}, values(cbnet.tensor{math.mininteger} % -1))
    assert.same({0, 2}, values(cbnet.tensor{6, -1} % cbnet.tensor{-1, 3}))
    assert.error_matches(function() return cbnet.tensor{3} % 0 end, "by zero")
    assert.error_matches(function() return cbnet.tensor{3, 4} % cbnet.tensor{1, 0} end, "by zero")
    -- int64 arithmetic wraps like Lua's integers
    assert.same({math.mininteger}, values(cbnet.tensor{math.maxinteger} + 1))
    assert.same({math.mininteger}, values(-cbnet.tensor{math.mininteger}))
  end)

  it("linear on an empty batch gives an empty result (row 7)", function()
    local y = F.linear(cbnet.empty(0, 4), cbnet.randn(100, 4), cbnet.randn(100))
    assert.same({0, 100}, y:size())
    collectgarbage() -- heap corruption showed up later, at a free
  end)

  it("empty tensors are not overlapping views (row 9)", function()
    local z = cbnet.zeros(2, 0)
    assert.same({2, 0}, z:clone():size())
    assert.equal("int64", z:long():dtype())
    assert.same({2, 0}, (z + 1):size())
    assert.same({4, 0}, cbnet.cat({z, z}, 1):size())
    assert.same({2, 0}, cbnet.randn(2, 0):size())
    assert.same({0, 3}, cbnet.zeros(0, 3):clone():size())
  end)

  it("int64 values round-trip exactly (row 10)", function()
    assert.equal(math.maxinteger, cbnet.tensor{math.maxinteger}:item())
    assert.equal(math.mininteger, cbnet.tensor{math.mininteger}:item())
    assert.equal((1 << 53) + 1, cbnet.tensor{(1 << 53) + 1}:item())
    assert.same({(1 << 53) + 1, -7}, cbnet.tensor{(1 << 53) + 1, -7}:totable())
    assert.equal((1 << 53) + 1, cbnet.full({1}, (1 << 53) + 1, "int64"):item())
    local t = cbnet.zeros(2, "int64")
    t[1] = (1 << 60) + 3
    assert.equal((1 << 60) + 3, t[1])
  end)

  it("assigning an expanded view as a gradient is refused (row 12)", function()
    local x = cbnet.zeros(3)
    x.requires_grad = true
    assert.error_matches(function() x.grad = cbnet.zeros(1):expand(3) end,
      "grad: .*expanded view")
    x.grad = cbnet.ones(3)
    x:sum():backward()
    assert.same({2, 2, 2}, values(x.grad))
  end)

  it("tables with a lying __len and huge counts fail fast (row 19)", function()
    local liar = setmetatable({}, {__len = function() return 1 << 40 end})
    assert.same({0}, cbnet.tensor(liar):size()) -- data tables are read raw
    assert.same({1, 2}, values(cbnet.tensor(setmetatable({1, 2}, getmetatable(liar)))))
    assert.error_matches(function() cbnet.data.longtail_counts(1, 1 << 32, {}) end,
      "longtail_counts")
  end)
end)

describe("hostile files", function()
  local dir
  before_each(function() dir = require("shell").fresh_dir() end)
  after_each(function() os.execute("rm -rf " .. dir) end)

  it("safetensors names with NUL bytes or duplicates are refused (row 11)", function()
    local p = dir .. "/t.safetensors"
    assert.error_matches(function()
      cbnet.save_safetensors(p, {a = cbnet.zeros(1), ["a\0b"] = cbnet.ones(1)})
    end, "NUL")
    assert.error_matches(function()
      cbnet.save_safetensors(p, {a = cbnet.zeros(1)}, {["k\0"] = "v"})
    end, "NUL")
    assert.is_nil(io.open(p))
  end)

  local function write(p, bytes)
    local f = assert(io.open(p, "wb")); f:write(bytes); f:close()
  end
  local function read(p)
    local f = assert(io.open(p, "rb")); local s = f:read("a"); f:close(); return s
  end

  it("a tiny BMP claiming a huge top-down image is refused before decoding", function()
    local core = require "cbnet.core"
    -- 38 bytes (found by fuzz_image): 5 pixels wide, height -16777162 (a negative height
    -- is a top-down BMP, which stb_image's header reader reports as negative): 84 million pixels
    local bmp = "BMr\0\0\1\0\0M\0\172\0\0\0(\0\0\0\5\0\0\0006\0\0\255\1\0\1\0\253\255?\255\255\255\216\255"
    assert.equal(38, #bmp)
    assert.error_matches(function() core.decode_image(bmp, "tiny.bmp") end,
      "tiny.bmp: 5 x 16777162 pixels is more than cbnet decodes")
    -- a real top-down BMP still decodes: 2 x 2, 24 bits, height -2
    local function le32(v) return string.pack("<i4", v) end
    local rows = "\1\2\3\4\5\6\0\0" .. "\7\8\9\10\11\12\0\0" -- BGR, rows padded to 4 bytes
    local top_down = "BM" .. le32(54 + #rows) .. le32(0) .. le32(54) .. le32(40) .. le32(2) .. le32(-2)
      .. string.pack("<i2i2", 1, 24) .. le32(0) .. le32(#rows) .. le32(0) .. le32(0) .. le32(0) .. le32(0) .. rows
    local img = core.decode_image(top_down, "top_down.bmp")
    assert.same({3, 2, 2}, img:size())
    assert.same({{3, 6}, {9, 12}}, img[1]:totable()) -- red, the first row first
  end)

  it("an image stb_image fails on without saying why gets a reason, not an empty one", function()
    local core = require "cbnet.core"
    -- 66 bytes (found by fuzz_image): a 4 x 5 grey PNG whose data stops short
    local png = "\137\80\78\71\13\10\26\10\0\0\0\13\73\72\68\82\0\0\0\4\0\0\0\5\8\0\0\0\0\71\198"
      .. "\18\123\0\0\0\0\73\68\65\84\120\94\99\100\96\102\102\102\228\1\18\44\168\4\0\94\0\73\69"
      .. "\78\68\174\66\96\130"
    assert.equal(66, #png)
    assert.error_matches(function() core.decode_image("\255\216\255\219\0\3\0", "bad.jpg") end,
      "bad.jpg: cannot decode %(unknown image type%)")
    assert.error_matches(function() core.decode_image(png, "short.png") end,
      "short.png: cannot decode %(corrupt or unsupported image data%)")
  end)

  it("a JPEG with unsound Huffman tables is refused before stb_image reads them", function()
    local core = require "cbnet.core"
    -- a real JPEG (stb_image_write's: one DHT segment with the DC and AC tables 0 and 1)
    local gen = cbnet.Generator(5)
    local pixels = cbnet.randint(0, 256, {3, 16, 24}, gen):to("uint8")
    core.write_image(pixels, dir .. "/real.jpg")
    local jpeg = read(dir .. "/real.jpg")
    assert.same({3, 16, 24}, core.decode_image(jpeg, "real.jpg"):size())
    -- where each table of the DHT segment starts (its class and slot byte)
    local dht = assert(jpeg:find("\255\196", 3, true))
    local tables, at = {}, dht + 4
    while at < dht + 2 + (jpeg:byte(dht + 2) << 8 | jpeg:byte(dht + 3)) do
      tables[#tables + 1] = at
      local symbols = 0
      for k = 1, 16 do symbols = symbols + jpeg:byte(at + k) end
      at = at + 17 + symbols
    end
    assert.same({0x00, 0x10, 0x01, 0x11}, {jpeg:byte(tables[1]), jpeg:byte(tables[2]),
                                           jpeg:byte(tables[3]), jpeg:byte(tables[4])})
    local function with(at, bytes) return jpeg:sub(1, at - 1) .. bytes .. jpeg:sub(at + #bytes) end
    -- AC table 0 defined as a second AC table 1 (found by fuzz_image): the scan's AC table 0
    -- is never defined, and stb_image would decode with what the heap held (reading out of bounds)
    assert.error_matches(function() core.decode_image(with(tables[2], "\17"), "slot.jpg") end,
      "slot.jpg: cannot decode %(corrupt JPEG: a scan uses a Huffman table the file never defines%)")
    -- 16 code counts of 17: 272 symbols, past the 256 stb_image's arrays hold
    assert.error_matches(function() core.decode_image(with(tables[1] + 1, ("\17"):rep(16)), "big.jpg") end,
      "big.jpg: cannot decode %(corrupt JPEG: a Huffman table of more than 256 symbols%)")
    -- fill bytes before the start-of-image marker (found by fuzz_image): stb_image reads
    -- 0xFF 0xFF 0xD8 as the marker all the same, so the tables must be checked there too
    local big = with(tables[1] + 1, ("\17"):rep(16))
    for _, fill in ipairs{"\255", "\255\255\255"} do
      assert.error_matches(function() core.decode_image(fill .. big, "filled.jpg") end,
        "filled.jpg: cannot decode %(corrupt JPEG: a Huffman table of more than 256 symbols%)")
      assert.same({3, 16, 24}, core.decode_image(fill .. jpeg, "filled.jpg"):size())
    end
    -- a comment holding the DHT marker's bytes and garbage is not taken for a table
    local comment = "\255\254\0\14\255\196\255\255\255\255\255\255\255\255\255\255"
    assert.same({3, 16, 24}, core.decode_image(jpeg:sub(1, 2) .. comment .. jpeg:sub(3), "c.jpg"):size())
  end)

  it("a corrupt decoded-image cache is rebuilt, never trusted (row 13)", function()
    local core = require "cbnet.core"
    for _, c in ipairs{"a", "b"} do os.execute("mkdir -p " .. dir .. "/f/" .. c) end
    local img = (cbnet.arange(3 * 4 * 5) * 3):view(3, 4, 5):byte()
    core.write_image(img, dir .. "/f/a/1.png")
    core.write_image(img, dir .. "/f/b/2.png")
    local cache = dir .. "/cache.bin"
    local want_images, want_labels, want_names = core.read_image_folder(dir .. "/f", cache)
    local good = read(cache)
    local header = 8 + 4 + 4 + 4 * 8 + 8 + 8 + 8 -- magic, version, classes, n c h w, fp, names, sum
    local function corrupt(at, byte) -- 1-based position in the file
      return good:sub(1, at - 1) .. byte .. good:sub(at + 1)
    end
    local cases = {
      names_without_nul = corrupt(header + 2, "x"),   -- "a\0b\0" -> "axb\0"
      label_99 = corrupt(header + 4 + 1, "\99"),       -- first label's low byte
      label_negative = good:sub(1, header + 4) .. string.rep("\255", 8) .. good:sub(header + 13),
      flipped_pixel = corrupt(#good - 7, string.char((good:byte(#good - 7) + 1) % 256)),
      truncated = good:sub(1, #good - 100),
      huge_sizes = corrupt(8 + 4 + 4 + 8 + 1, "\255"),
    }
    for name, bytes in pairs(cases) do
      write(cache, bytes)
      local images, labels, names = core.read_image_folder(dir .. "/f", cache)
      assert.same(want_labels:totable(), labels:totable(), name)
      assert.equal(0, (images:float() - want_images:float()):abs():max():item(), name)
      assert.same(want_names, names, name)
      assert.equal(good, read(cache), name .. ": the cache is rewritten whole")
    end
  end)

  it("readers refuse FIFOs, devices and compression bombs before allocating (row 18)", function()
    local data = cbnet.data
    assert(os.execute("mkfifo " .. dir .. "/fifo"))
    assert.error_matches(function() cbnet.read_idx(dir .. "/fifo") end, "not a regular file")
    assert.error_matches(function() cbnet.read_idx("/dev/zero") end, "not a regular file")
    os.execute("mkdir -p " .. dir .. "/cifar")
    os.execute("ln -s /dev/zero " .. dir .. "/cifar/test_batch.bin")
    assert.error_matches(function() require("cbnet.core").read_cifar10(dir .. "/cifar", false) end,
      "not a regular file")
    -- 8 MB of zeros in an IDX header compresses about 1000x
    local header = "\0\0\8\1" .. string.char(0, 0x80, 0, 0)
    local raw = dir .. "/bomb-idx1-ubyte"
    local f = assert(io.open(raw, "wb"))
    f:write(header)
    for _ = 1, 8 do f:write(string.rep("\0", 1 << 20)) end
    f:close()
    assert(os.execute("gzip -9 " .. raw))
    assert.error_matches(function() cbnet.read_idx(raw .. ".gz") end, "compression bomb")
    local safet = dir .. "/x.safetensors"
    os.execute("mkfifo " .. safet)
    assert.error_matches(function() cbnet.load_safetensors(safet) end, "not a regular file")
    assert.is_not_nil(data) -- the module loads alongside
  end)
end)


describe("hostile calls found by the API fuzzer", function()
  it("save_safetensors with nil metadata and extra arguments", function()
    local p = require("shell").temp_path()
    cbnet.save_safetensors(p, {a = cbnet.ones(2)}, nil, "extra", 1)
    assert.same({1, 1}, cbnet.load_safetensors(p).a:totable())
    os.remove(p)
  end)
end)

describe("thread counts", function()
  it("names the count it refuses, whatever its size", function()
    assert.error_matches(function() cbnet.set_num_threads(100000) end, "got 100000")
    assert.error_matches(function() cbnet.set_num_threads(1 << 40) end, "got 2147483647")
    assert.error_matches(function() cbnet.set_num_threads(0) end, "got 0")
  end)
end)

describe("more hostile calls found by the API fuzzer", function()
  it("empty tensors with huge other sizes", function()
    assert.equal(0, cbnet.empty(1 << 40, 0):numel())
    assert.error_matches(function() cbnet.empty(2 ^ 53, 2 ^ 31, 0) end, "too many elements")
    assert.error_matches(function() cbnet.empty(0, 1 << 40, 1 << 40) end, "too many elements")
    assert.error_matches(function() cbnet.zeros(0):view(0, 1 << 40, 1 << 40) end, "too many elements")
  end)

  it("totable refuses what would exhaust the Lua heap", function()
    assert.error_matches(function() cbnet.empty((1 << 40), 0):totable() end, "too many Lua values")
    assert.same({{}, {}}, cbnet.empty(2, 0):totable())
  end)
end)

describe("hostile calls found by the API fuzzer (second round)", function()
  it("std and var over an empty dim, and a bad correction", function()
    local s = cbnet.zeros(2, 0):std(2)
    assert.same({2}, s:size())
    assert.is_true(s[1] ~= s[1]) -- NaN, as in PyTorch
    assert.error_matches(function() cbnet.randn(3):var(1, false, math.mininteger) end, "correction")
  end)

  it("json refuses cycles, deep nesting, bad indents and huge tensors", function()
    local json = require "cbnet.json"
    local t = {}
    t.self = t
    assert.error_matches(function() json.encode(t) end, "contains itself")
    assert.error_matches(function() json.encode({}, 1 << 62) end, "indent")
    local deep = {}
    for _ = 1, 300 do deep = {deep} end
    assert.error_matches(function() json.encode(deep) end, "nested deeper")
    assert.error_matches(function() json.encode({x = cbnet.zeros(1 << 21)}) end, "too large for JSON")
    local shared = {1}
    assert.equal('{"a":[1],"b":[1]}', json.encode({a = shared, b = shared})) -- shared, not cyclic
  end)
end)

describe("options tables", function()
  -- a misspelt option would otherwise do nothing: {wieght = w} trains unweighted
  local data, loss, models = require "cbnet.data", require "cbnet.loss", require "cbnet.models"
  local options = require "cbnet.options"

  it("an unknown key is an error naming the function, the key and the nearest known one", function()
    local x, y = cbnet.randn(4, 3), cbnet.tensor({0, 1, 2, 0}, "int64")
    assert.error_matches(function() F.cross_entropy(x, y, {wieght = cbnet.ones(3)}) end,
      "cross_entropy: unknown option 'wieght' %(did you mean 'weight'%?%)")
    assert.error_matches(function() F.conv2d(cbnet.randn(1, 1, 3, 3), cbnet.randn(1, 1, 3, 3), nil, {pad = 1}) end,
      "conv2d: unknown option 'pad'.*it takes stride, padding, dilation, groups, relu")
    assert.error_matches(function() loss.focal(x, y, {gama = 2}) end, "focal: unknown option 'gama'.*'gamma'")
    assert.error_matches(function() loss.balanced_softmax(x, y, {3, 2, 1}, {tau = 2}) end,
      "balanced_softmax: unknown option 'tau'")
    assert.error_matches(function() cbnet.nn.Conv2d(1, 2, 3, {paddin = 1}) end, "Conv2d: unknown option 'paddin'")
    assert.error_matches(function() cbnet.nn.BatchNorm2d(4, {momentun = 0.2}) end,
      "BatchNorm2d: unknown option 'momentun'")
    local m = cbnet.nn.Linear(2, 2)
    assert.error_matches(function() cbnet.optim.SGD(m:parameters(), {lr = 0.1, weigth_decay = 1e-4}) end,
      "SGD: unknown option 'weigth_decay' %(did you mean 'weight_decay'%?%)")
    assert.error_matches(function() cbnet.optim.SGD({{params = m:parameters(), wd = 0}}, {lr = 0.1}) end,
      "SGD: parameter group 1: unknown option 'wd'")
    local opt = cbnet.optim.SGD(m:parameters(), {lr = 0.1})
    assert.error_matches(function() cbnet.optim.CosineLR(opt, {total = 5, warm_up = 1}) end,
      "CosineLR: unknown option 'warm_up'")
    assert.error_matches(function() cbnet.optim.EMA(m, {decai = 0.9}) end, "EMA: unknown option 'decai'")
    local ds = data.dataset(cbnet.zeros(4, 1, 2, 2):byte(), cbnet.tensor({0, 1, 0, 1}, "int64"), {"a", "b"})
    assert.error_matches(function() data.Loader(ds, {batchsize = 2}) end, "Loader: unknown option 'batchsize'")
    assert.error_matches(function() data.Loader(ds, {transform = {crop_pading = 4}}) end,
      "Loader: transform: unknown option 'crop_pading'")
    assert.error_matches(function() data.longtail(ds, {imbalnce = 10}) end, "longtail: unknown option 'imbalnce'")
    assert.error_matches(function() options.check(5, "f", {}) end, "f: expected an options table, got a number")
  end)

  it("data.image_op names an unknown operation and the known ones, and takes uint8 images only", function()
    local img = cbnet.tensor{{{1, 2, 3}, {4, 5, 6}, {7, 8, 9}}}:byte()
    assert.same({{{3, 6, 9}, {2, 5, 8}, {1, 4, 7}}}, data.image_op(img, "rotate", 90):totable())
    assert.error_matches(function() data.image_op(img, "rotat", 1) end,
      "image_op: unknown operation 'rotat' %(known: identity, shear_x, .*, equalize%)")
    assert.error_matches(function() data.image_op(img:float(), "rotate", 1) end, "image_op: images must be a contiguous uint8")
    assert.error_matches(function() data.image_op(cbnet.zeros({2, 2, 2}, "uint8"), "equalize") end,
      "image_op: images must have 1 or 3 channels, got 2")
    assert.error_matches(function() data.image_op(img, "rotate", 0 / 0) end, "image_op: the magnitude must be finite")
  end)

  it("known keys pass through, and models.get gives each model the options it takes", function()
    local ds = data.dataset(cbnet.zeros(4, 1, 2, 2):byte(), cbnet.tensor({0, 1, 0, 1}, "int64"), {"a", "b"})
    local loader = data.Loader(ds, {batch_size = 2, transform = data.cifar_augmentation{mean = {0}, std = {1}}})
    local n = 0
    for images in loader:batches(1) do n = n + images:size(1) end
    assert.equal(4, n)
    -- the experiments pass the convnet's widths to every model through models.get
    local net = models.get("resnet20", {classes = 7, widths = {8, 16}, image_size = 32})
    assert.same({2, 7}, net(cbnet.randn(2, 3, 32, 32)):size())
    assert.error_matches(function() models.resnet20{widths = {8, 16}} end, "resnet20: unknown option 'widths'")
    assert.error_matches(function() models.get("resnet20", {clases = 7}) end,
      "models.get: unknown option 'clases' %(did you mean 'classes'%?%)")
  end)
end)
