local cbnet = require "cbnet"
local data, core = cbnet.data, require "cbnet.core"

-- a fresh temporary folder per test file
local tmp = require("shell").fresh_dir()
local function path(name) return tmp .. "/" .. name end
local function write(name, bytes)
  local f = assert(io.open(path(name), "wb"))
  f:write(bytes)
  f:close()
  return path(name)
end
local function be32(n) return string.char(n >> 24 & 255, n >> 16 & 255, n >> 8 & 255, n & 255) end

-- n x 2 x 3 images with pixel values from f(i, y, x), as IDX bytes
local function idx_images(n, f)
  local parts = {"\0\0\8\3", be32(n), be32(2), be32(3)}
  for i = 0, n - 1 do for y = 0, 1 do for x = 0, 2 do parts[#parts + 1] = string.char(f(i, y, x)) end end end
  return table.concat(parts)
end
local function idx_labels(list)
  local parts = {"\0\0\8\1", be32(#list)}
  for _, v in ipairs(list) do parts[#parts + 1] = string.char(v) end
  return table.concat(parts)
end

-- a CIFAR record: label, then 3 planes of 32 x 32 (value = channel * 10 + label)
local function cifar_record(label)
  local parts = {string.char(label)}
  for c = 0, 2 do parts[#parts + 1] = string.rep(string.char(c * 10 + label), 1024) end
  return table.concat(parts)
end

describe("IDX files", function()
  it("read images and labels, plain and gzip-compressed", function()
    write("imgs-idx3-ubyte", idx_images(4, function(i, y, x) return i * 10 + y * 3 + x end))
    write("labels-idx1-ubyte", idx_labels{0, 2, 1, 2})
    assert(os.execute(("gzip -kf %s %s"):format(path("imgs-idx3-ubyte"), path("labels-idx1-ubyte"))))
    for _, suffix in ipairs{"", ".gz"} do
      local ds = data.idx(path("imgs-idx3-ubyte" .. suffix), path("labels-idx1-ubyte" .. suffix))
      assert.same({4, 1, 2, 3}, ds.images:size())
      assert.equal(25, ds.images[3][1][2][3]) -- image 2 (0-based), y 1, x 2
      assert.same({0, 2, 1, 2}, ds.labels:totable())
      assert.same({1, 1, 2}, ds:counts())
    end
  end)

  it("reject wrong magic, truncation, trailing bytes and mismatched counts, naming the file", function()
    local good = idx_images(2, function() return 7 end)
    assert.error_matches(function() core.read_idx(write("bad-magic", "\1\0\8\1" .. be32(0))) end,
      "bad%-magic: not an IDX file")
    assert.error_matches(function() core.read_idx(write("short", good:sub(1, -3))) end,
      "short: truncated: the header promises 12 values")
    assert.error_matches(function() core.read_idx(write("long", good .. "xx")) end, "2 bytes after the last value")
    assert.error_matches(function() core.read_idx(write("tiny", "\0\0")) end, "too short")
    assert.error_matches(function() core.read_idx(path("missing")) end, "missing: cannot open")
    write("two-labels", idx_labels{1, 2})
    assert.error_matches(function() data.idx(write("imgs3", idx_images(3, function() return 0 end)), path("two-labels")) end,
      "has 2 labels for 3 images")
    -- a gzip file cut short
    local f = io.open(path("imgs-idx3-ubyte.gz"), "rb")
    local gz = f:read("a")
    f:close()
    assert.has_error(function() core.read_idx(write("cut.gz", gz:sub(1, #gz // 2))) end)
  end)
end)

describe("CIFAR-10 binary", function()
  it("reads the train batches and the test batch with class names", function()
    assert(os.execute("mkdir -p " .. path("cifar")))
    for b = 1, 5 do write(("cifar/data_batch_%d.bin"):format(b), cifar_record(b) .. cifar_record(9)) end
    write("cifar/test_batch.bin", cifar_record(3))
    write("cifar/batches.meta.txt", "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n\n")
    local train = data.cifar10(path("cifar"), "train")
    assert.same({10, 3, 32, 32}, train.images:size())
    assert.same({1, 9, 2, 9, 3, 9, 4, 9, 5, 9}, train.labels:totable())
    assert.equal(23, train.images[5][3][32][32]) -- record 5: label 3, channel 2 (2 * 10 + 3)
    assert.same({"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"}, train.classes)
    local test = data.cifar10(path("cifar"), "test")
    assert.same({3}, test.labels:totable())
  end)

  it("rejects truncated batches and bad labels, naming the file", function()
    assert(os.execute("mkdir -p " .. path("broken")))
    write("broken/test_batch.bin", cifar_record(1):sub(1, 3000))
    assert.error_matches(function() data.cifar10(path("broken"), "test") end,
      "broken/test_batch.bin: 3000 bytes is not a whole number of 3073%-byte")
    write("broken/test_batch.bin", cifar_record(12))
    assert.error_matches(function() data.cifar10(path("broken"), "test") end, "record 1 has label 12")
    assert.error_matches(function() data.cifar10(path("broken"), "train") end, "data_batch_1.bin: cannot open")
  end)
end)

describe("image folders", function()
  local pattern = (cbnet.arange(3 * 4 * 5) * 4):view(3, 4, 5):byte() -- 3 x 4 x 5, values 0..236

  it("decode png, bmp and jpg; classes sorted by name become labels 0..C-1", function()
    for _, class in ipairs{"cat", "ant", "bee"} do assert(os.execute("mkdir -p " .. path("folder/" .. class))) end
    core.write_image(pattern, path("folder/cat/b.png"))
    core.write_image(pattern, path("folder/cat/a.bmp"))
    core.write_image(cbnet.full({3, 4, 5}, 200, "uint8"), path("folder/ant/x.jpg"))
    core.write_image(pattern, path("folder/bee/1.PNG"))
    write("folder/bee/notes.txt", "not an image: skipped")
    local ds = data.image_folder(path("folder"), {cache = false})
    assert.same({"ant", "bee", "cat"}, ds.classes)
    assert.same({4, 3, 4, 5}, ds.images:size())
    assert.same({0, 1, 2, 2}, ds.labels:totable()) -- files sorted within a class: a.bmp, b.png
    for i = 2, 4 do assert.equal(0, (ds.images[i]:float() - pattern:float()):abs():max():item()) end
    assert.is_true((ds.images[1]:float() - 200):abs():max():item() <= 2) -- JPEG is lossy
  end)

  it("uses its decoded cache while the files are unchanged", function()
    local cache = path("cache/folder.bin")
    local first = {core.read_image_folder(path("folder"), cache)}
    local f = io.open(cache, "rb")
    assert.truthy(f)
    f:close()
    local second = {core.read_image_folder(path("folder"), cache)}
    assert.equal(0, (first[1]:float() - second[1]:float()):abs():max():item())
    assert.same(first[3], second[3])
    -- a changed file invalidates it
    core.write_image(cbnet.zeros({3, 4, 5}, "uint8"), path("folder/cat/b.png"))
    local third = core.read_image_folder(path("folder"), cache)
    assert.equal(0, third[4]:float():max():item())
  end)

  it("names the file that is undecodable, of another size, or the folder that is empty", function()
    assert(os.execute("mkdir -p " .. path("bad/one") .. " " .. path("bad/two")))
    core.write_image(pattern, path("bad/one/a.png"))
    write("bad/two/broken.jpg", "\255\216\255\224 this is not really a JPEG")
    assert.error_matches(function() data.image_folder(path("bad"), {cache = false}) end,
      "bad/two/broken.jpg: cannot decode")
    os.remove(path("bad/two/broken.jpg"))
    core.write_image(cbnet.zeros({3, 6, 5}, "uint8"), path("bad/two/big.png"))
    assert.error_matches(function() data.image_folder(path("bad"), {cache = false}) end,
      "bad/two/big.png: image is 3 x 6 x 5 .- the first image is 3 x 4 x 5")
    os.remove(path("bad/two/big.png"))
    assert.error_matches(function() data.image_folder(path("bad"), {cache = false}) end,
      "bad/two: class folder has no .png/.jpg/.jpeg/.bmp images")
    assert.error_matches(function() data.image_folder(path("nowhere"), {cache = false}) end,
      "nowhere: cannot open folder")
  end)
end)

describe("finding datasets", function()
  it("says where it looked and how to get the data", function()
    local ok, err = pcall(data.cifar10, path("no-such-dir"), "train")
    assert.is_false(ok)
    assert.matches("no%-such%-dir does not exist", err)
    -- from a folder with no data nearby, through the command
    local script = write("find.lua", 'local ok, err = pcall(require("cbnet").data.cifar10) print(err)')
    local cbnet_cmd = os.getenv("CBNET_BIN") or (io.popen("pwd"):read("l") .. "/build/bin/cbnet")
    local f = io.popen(("cd %s && env CBNET_DATA=%s HOME=%s %s run %s"):format(tmp, path("empty"), tmp,
      cbnet_cmd, script))
    local out = f:read("a")
    f:close()
    assert.matches("CIFAR%-10 not found; looked in:", out)
    assert.matches(path("empty"):gsub("%p", "%%%0") .. "/cifar%-10%-batches%-bin", out)
    assert.matches("CBNET_DATA", out)
  end)
end)

describe("long-tailed construction", function()
  it("gives the literature's counts", function()
    assert.same({5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50},
      data.longtail_counts(5000, 10, {profile = "exp", imbalance = 100}))
    assert.same({500, 500, 500, 500, 500, 5, 5, 5, 5, 5}, data.longtail_counts(500, 10, {profile = "step", imbalance = 100}))
    assert.same({50, 83, 139, 232, 387, 645, 1077, 1796, 2997, 5000},
      data.longtail_counts(5000, 10, {imbalance = 100, reverse = true}))
    local sum = 0
    for _, n in ipairs(data.longtail_counts(5000, 10, {imbalance = 100})) do sum = sum + n end
    assert.equal(12406, sum)
    assert.same({100, 46, 21, 10}, data.longtail_counts(100, 4, {imbalance = 10}))
  end)

  it("keeps a seeded random subset of each class", function()
    local labels = cbnet.arange(400):remainder(4)
    local images = cbnet.arange(400):remainder(256):byte():view(400, 1, 1, 1):contiguous()
    local ds = data.dataset(images, labels, 4)
    local lt = data.longtail(ds, {imbalance = 10, seed = 3})
    assert.same({100, 46, 21, 10}, lt:counts())
    local again = data.longtail(ds, {imbalance = 10, seed = 3})
    assert.same(lt.images:view(-1):totable(), again.images:view(-1):totable())
    local other = data.longtail(ds, {imbalance = 10, seed = 4})
    assert.are_not.same(lt.images:view(-1):totable(), other.images:view(-1):totable())
  end)

  it("draw = 'numpy' keeps the images numpy's draw keeps", function()
    -- numpy 1.24: labels = np.arange(400) % 4; np.random.seed(3); for each
    -- class c: idx = np.where(labels == c)[0]; np.random.shuffle(idx); idx[:n_c]
    local numpy_kept = {
      [1] = {137, 101, 57, 341, 117, 349, 353, 301, 49, 13, 149, 25},  -- the first 12 of 46
      [3] = {115, 67, 11, 311, 299, 91, 231, 391, 335, 183},           -- all 10
    }
    local labels = cbnet.arange(400):remainder(4)
    local quarter = {}
    for i = 1, 400 do quarter[i] = (i - 1) // 4 end
    local images = cbnet.tensor(quarter):byte():view(400, 1, 1, 1) -- each image holds index // 4
    local lt = data.longtail(data.dataset(images, labels, 4), {imbalance = 10, seed = 3, draw = "numpy"})
    assert.same({100, 46, 21, 10}, lt:counts())
    local kept = lt.images:view(-1):totable()
    for c, first in pairs(numpy_kept) do
      local start = ({0, 100, 146, 167})[c + 1]
      for k, index in ipairs(first) do assert.equal(index // 4, kept[start + k]) end
    end
    assert.error_matches(function() data.longtail(data.dataset(images, labels, 4), {draw = "python"}) end,
      "draw must be 'cbnet' or 'numpy', got python")
  end)
end)

describe("cbnet.numpy_random", function()
  local npr = require "cbnet.numpy_random"
  -- known answers from numpy 1.24
  it("draws numpy's 32-bit words and shuffles as np.random.shuffle", function()
    local rs = npr.RandomState(0)
    assert.same({2357136044, 2546248239, 3071714933}, {rs:uint32(), rs:uint32(), rs:uint32()})
    local t = {}
    for i = 1, 10 do t[i] = i - 1 end
    assert.same({2, 8, 4, 9, 1, 6, 7, 3, 0, 5}, npr.RandomState(0):shuffle(t))
    -- one generator through two shuffles, as a class after class draw does
    rs = npr.RandomState(0)
    local a, b = {}, {}
    for i = 1, 5000 do a[i] = i - 1 end
    for i = 1, 50 do b[i] = i - 1 end
    rs:shuffle(a)
    rs:shuffle(b)
    assert.same({398, 3833, 4836, 4572, 636, 2545, 1161, 2230}, {table.unpack(a, 1, 8)})
    assert.same({40, 31, 25, 19, 9, 42, 14, 13}, {table.unpack(b, 1, 8)})
  end)

  it("takes numpy's seeds only", function()
    assert.error_matches(function() npr.RandomState(-1) end, "seed must be an integer in 0 .. 2%^32 %- 1, got %-1")
    assert.error_matches(function() npr.RandomState(2 ^ 32) end, "seed must be an integer")
    assert.equal(0, npr.RandomState(7):interval(0))
  end)
end)

describe("samplers", function()
  -- 1000 samples: classes of 400, 300, 200, 100
  local labels = cbnet.cat({cbnet.zeros(400, "int64"), cbnet.ones(300, "int64"),
    cbnet.full({200}, 2, "int64"), cbnet.full({100}, 3, "int64")})
  local ds = data.dataset(cbnet.zeros({1000, 1, 1, 1}, "uint8"), labels, 4)
  local function class_fractions(indices)
    local counts = ds:subset(indices):counts()
    for c = 1, #counts do counts[c] = counts[c] / indices:size(1) end
    return counts
  end

  it("class-balanced sampling draws every class about equally", function()
    local s = data.ClassBalancedSampler(ds, {seed = 1, num_samples = 40000})
    for _, f in ipairs(class_fractions(s:indices(0))) do assert.near(0.25, f, 0.01) end
  end)

  it("square-root sampling draws classes in proportion to sqrt(n)", function()
    local s = data.SqrtSampler(ds, {seed = 2, num_samples = 40000})
    local roots = {math.sqrt(400), math.sqrt(300), math.sqrt(200), math.sqrt(100)}
    local total = roots[1] + roots[2] + roots[3] + roots[4]
    for c, f in ipairs(class_fractions(s:indices(0))) do assert.near(roots[c] / total, f, 0.01) end
  end)

  it("random, sequential and weighted samplers; seeds reproduce epochs", function()
    assert.same(cbnet.arange(1000):totable(), data.SequentialSampler(ds):indices(0):totable())
    local r = data.RandomSampler(ds, {seed = 5})
    local e0, e1 = r:indices(0):totable(), r:indices(1):totable()
    assert.same(e0, r:indices(0):totable())
    assert.are_not.same(e0, e1)
    table.sort(e1)
    assert.same(cbnet.arange(1000):totable(), e1)
    local drawn = data.WeightedSampler({0, 1, 0, 3}, {num_samples = 8000, seed = 1}):indices(0)
    assert.equal(0, drawn:eq(0):logical_or(drawn:eq(2)):float():sum():item())
    assert.near(0.75, drawn:eq(3):float():mean():item(), 0.02)
    local unique = data.WeightedSampler({1, 2, 3, 4, 5}, {num_samples = 5, replacement = false}):indices(0):totable()
    table.sort(unique)
    assert.same({0, 1, 2, 3, 4}, unique)
    assert.error_matches(function() data.WeightedSampler({1, 0}, {num_samples = 2, replacement = false}):indices(0) end,
      "2 draws without replacement from 1 non%-zero")
  end)
end)

describe("batch transforms", function()
  -- one 1 x 3 x 4 image with values 10 * y + x + 1
  local image = cbnet.tensor{{{{1, 2, 3, 4}, {11, 12, 13, 14}, {21, 22, 23, 24}}}}:byte()
  local idx = cbnet.tensor{0}

  -- the transform by hand: the draws in augment.h's order, then crop and flip
  local function expected(seed, pad, flip)
    local g = cbnet.Generator(seed)
    local dy, dx = pad, pad
    if pad > 0 then dy, dx = g:random(2 * pad + 1) - 1, g:random(2 * pad + 1) - 1 end
    local flipped = flip and g:random(2) == 2
    local out = {}
    for y = 0, 2 do
      local row = {}
      for x = 0, 3 do
        local sx, sy = (flipped and 3 - x or x) + dx - pad, y + dy - pad
        row[x + 1] = (sy >= 0 and sy < 3 and sx >= 0 and sx < 4) and (10 * sy + sx + 1) or 0
      end
      out[y + 1] = row
    end
    return {{out}}
  end

  it("crop with zero padding and flip move known pixels as drawn", function()
    for seed = 1, 20 do
      local got = core.augment_batch(image, idx, {crop_padding = 1, flip = true, scale = 1}, cbnet.Generator(seed))
      assert.same(expected(seed, 1, true), got:totable())
    end
    assert.same(expected(0, 0, false), core.augment_batch(image, idx, {scale = 1}):totable())
  end)

  it("normalise per channel, and cut out a square of zeros", function()
    local rgb = cbnet.full({1, 3, 2, 2}, 51, "uint8")
    local out = core.augment_batch(rgb, idx, {mean = {0.1, 0.2, 0.3}, std = {0.5, 0.5, 0.25}})
    assert.near((0.2 - 0.1) / 0.5, out[1][1][1][1], 1e-6)
    assert.near((0.2 - 0.3) / 0.25, out[1][3][2][2], 1e-6)
    local big = cbnet.full({1, 1, 8, 8}, 255, "uint8")
    local zeros = core.augment_batch(big, idx, {cutout = 4}, cbnet.Generator(1)):eq(0):float():sum():item()
    assert.is_true(zeros >= 4 and zeros <= 16) -- the square may be clipped at the border
    assert.error_matches(function() core.augment_batch(big, cbnet.tensor{1}) end, "index 1 out of range for 1 images")
  end)

  it("TrivialAugment: one operation per image, drawn after the crop and flip, as the draws say", function()
    -- 200 copies of one random 3 x 6 x 6 image, TrivialAugment alone (scale 1: the bytes out)
    local n = 200
    local source = cbnet.randint(0, 256, {1, 3, 6, 6}, cbnet.Generator(4)):byte()
    local images = source:expand(n, 3, 6, 6):contiguous()
    local idx = cbnet.arange(n)
    local got = core.augment_batch(images, idx, {trivial_augment = true, scale = 1}, cbnet.Generator(9))
    assert.same(got:totable(), core.augment_batch(images, idx, {trivial_augment = true, scale = 1},
      cbnet.Generator(9)):totable())
    local src = source:float():view(-1):totable()
    local g, checked, changed = cbnet.Generator(9), {}, 0
    for i = 1, n do
      -- augment.h's order: the operation (0..13), the magnitude bin (0..30), the sign
      local op, bin = g:random(14) - 1, g:random(31) - 1
      g:random(2)
      local out = got[i]:view(-1):totable()
      local want
      if op == 0 then -- identity
        want = src
      elseif op == 10 then -- posterize: 8 - round(6 bin / 30) bits
        local drop = 2 ^ math.floor(6 * bin / 30 + 0.5) -- 2^(8 - bits)
        want = {}
        for k, v in ipairs(src) do want[k] = v - v % drop end
      elseif op == 11 then -- solarize at 255 (1 - bin / 30)
        local threshold = 255 * (1 - bin / 30)
        want = {}
        for k, v in ipairs(src) do want[k] = v >= threshold and 255 - v or v end
      end
      if want then
        assert.same(want, out)
        checked[op] = true
      end
      local same = true
      for k, v in ipairs(src) do same = same and out[k] == v end
      if not same then changed = changed + 1 end
    end
    assert.is_true(checked[0] and checked[10] and checked[11]) -- each seen at least once
    assert.is_true(changed > n / 2) -- most operations change a random image
    assert.error_matches(function()
      core.augment_batch(cbnet.zeros({1, 2, 4, 4}, "uint8"), cbnet.tensor{0}, {trivial_augment = true})
    end, "TrivialAugment takes 1%- or 3%-channel images, got 2 channels")
    local loader = data.Loader(data.dataset(images, cbnet.zeros({n}, "int64"), 1),
      {batch_size = 8, transform = data.cifar_augmentation{trivial_augment = true}})
    for x in loader:batches(1) do assert.same({8, 3, 6, 6}, x:size()) break end
  end)

  it("the loader is deterministic for a seed and covers every sample once", function()
    local images = cbnet.arange(10):byte():view(10, 1, 1, 1):contiguous()
    local ds = data.dataset(images, cbnet.arange(10):remainder(2), 2)
    local function epoch(seed)
      local loader = data.Loader(ds, {batch_size = 4, shuffle = true, seed = seed,
        transform = {crop_padding = 1, flip = true, scale = 1}})
      local seen, labels = {}, {}
      for x, y in loader:batches(0) do
        for _, v in ipairs(x:view(-1):totable()) do seen[#seen + 1] = v end
        for _, v in ipairs(y:totable()) do labels[#labels + 1] = v end
      end
      return seen, labels, #loader
    end
    local a, la, n = epoch(1)
    assert.equal(3, n)
    assert.same(a, (epoch(1)))
    assert.equal(10, #la)
    assert.are_not.same(a, (epoch(2)))
    assert.equal(2, #data.Loader(ds, {batch_size = 4, drop_last = true}))
  end)
end)

describe("the real datasets, when present", function()
  it("CIFAR-10 has 50,000 + 10,000 images with the known channel means", function()
    local ok, train = pcall(data.cifar10, nil, "train")
    if not ok then return pending("CIFAR-10 not found on this machine") end
    assert.equal(50000, train:size())
    assert.same({5000, 5000, 5000, 5000, 5000, 5000, 5000, 5000, 5000, 5000}, train:counts())
    assert.same({"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"},
      train.classes)
    local mean = train:channel_stats()
    -- the JPEG copy's means (shared/data/README.md); the binary version's are 0.4914, 0.4822, 0.4465
    assert.near(0.4915, mean[1], 0.002)
    assert.near(0.4818, mean[2], 0.002)
    assert.near(0.4469, mean[3], 0.002)
    assert.equal(10000, data.cifar10(nil, "test"):size())
  end)

  it("Fashion-MNIST has 60,000 + 10,000 images", function()
    local ok, train = pcall(data.fashion_mnist, "train")
    if not ok then return pending("Fashion-MNIST not installed") end
    assert.same({60000, 1, 28, 28}, train.images:size())
    assert.same({6000, 6000, 6000, 6000, 6000, 6000, 6000, 6000, 6000, 6000}, train:counts())
    assert.near(0.2860, train:channel_stats()[1], 0.001)
    assert.equal(10000, data.fashion_mnist("test"):size())
  end)
end)
