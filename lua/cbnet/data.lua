--- cbnet.data: datasets, long-tailed construction, samplers, batch loading.
--
--   local data = require "cbnet.data"
--   local train = data.cifar10(nil, "train")                 -- found on the search list
--   local lt = data.longtail(train, {profile = "exp", imbalance = 100, seed = 0})
--   local loader = data.Loader(lt, {batch_size = 128, shuffle = true,
--     transform = data.cifar_augmentation()})
--   for images, labels in loader:batches(epoch) do ... end
--
-- A dataset holds uint8 images (N x C x H x W), int64 labels (0..C-1) and
-- class names. Sample indices in index tensors are 0-based, as labels are;
-- positions given as Lua numbers (ds:get(i)) are 1-based.
local cbnet = require "cbnet"
local core = require "cbnet.core"
local options = require "cbnet.options"

local data = {}

-- ---- datasets ----

local Dataset = {}
Dataset.__index = Dataset

--- data.dataset(images, labels, classes[, name]): a dataset from tensors.
function data.dataset(images, labels, classes, name)
  assert(cbnet.is_tensor(images) and images:dim() == 4 and images:dtype() == "uint8",
    "dataset: images must be a uint8 N x C x H x W tensor")
  assert(cbnet.is_tensor(labels) and labels:dim() == 1 and labels:dtype() == "int64"
    and labels:size(1) == images:size(1), "dataset: labels must be int64, one per image")
  if type(classes) == "number" then
    local names = {}
    for c = 1, classes do names[c] = tostring(c - 1) end
    classes = names
  end
  return setmetatable({images = images, labels = labels, classes = classes, name = name or "dataset"},
    Dataset)
end

function Dataset:size() return self.labels:size(1) end
Dataset.__len = Dataset.size
function Dataset:num_classes() return #self.classes end

--- Images per class, as a Lua list (class c at position c + 1).
function Dataset:counts()
  local n = self:num_classes()
  local counts = cbnet.zeros(n):scatter_add_(1, self.labels, cbnet.ones(self:size()))
  local list = {}
  for c = 1, n do list[c] = math.floor(counts[c]) end
  return list
end

--- The i-th sample (1-based): uint8 C x H x W image and its label.
function Dataset:get(i) return self.images[i], self.labels[i] end

local function as_index_tensor(indices)
  if cbnet.is_tensor(indices) then return indices end
  return cbnet.tensor(indices, "int64")
end

--- A new dataset of the samples at indices (0-based int64 tensor or list).
function Dataset:subset(indices, name)
  indices = as_index_tensor(indices)
  return data.dataset(self.images:index_select(1, indices), self.labels:index_select(1, indices),
    self.classes, name or self.name)
end

--- Seeded random split: (first, second) with `fraction` of the samples in first.
function Dataset:split(fraction, seed)
  assert(fraction > 0 and fraction < 1, "split: fraction must be in (0, 1)")
  local perm = cbnet.randperm(self:size(), cbnet.Generator(seed or 0))
  local k = math.floor(self:size() * fraction + 0.5)
  return self:subset(perm:narrow(1, 1, k)), self:subset(perm:narrow(1, k + 1, self:size() - k))
end

--- Per-channel mean and standard deviation of the pixels in [0, 1].
function Dataset:channel_stats()
  local x = self.images:float() / 255
  local dims = {1, 3, 4}
  return x:mean(dims):totable(), x:std(dims):totable()
end

function Dataset:__tostring()
  local size = self.images:size()
  return ("%s: %d images of %dx%dx%d, %d classes"):format(self.name, size[1], size[2], size[3],
    size[4], self:num_classes())
end

-- ---- where data lives ----

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

local function is_dir(path) return exists(path .. "/.") end

--- The folders searched for datasets, in order: CBNET_DATA, ./data,
-- ../shared/data, ~/data, /usr/share/datasets.
function data.search_path()
  local list = {}
  local env = os.getenv("CBNET_DATA")
  if env and env ~= "" then for dir in env:gmatch("[^:]+") do list[#list + 1] = dir end end
  list[#list + 1] = "data"
  list[#list + 1] = "../shared/data"
  local home = os.getenv("HOME")
  if home then list[#list + 1] = home .. "/data" end
  list[#list + 1] = "/usr/share/datasets"
  return list
end

-- The dataset's folder: given (a path from --data) or each folder of the
-- search list, taken as the dataset's own folder when holds(folder) says so,
-- else as a folder holding it under one of the candidate names. So --data
-- and CBNET_DATA both take either. An error lists every place tried.
local function locate(what, given, candidates, holds, how)
  local tried = {}
  local function search(base)
    tried[#tried + 1] = base
    if holds(base) then return base end
    for _, sub in ipairs(candidates) do
      tried[#tried + 1] = base .. "/" .. sub
      if is_dir(base .. "/" .. sub) then return base .. "/" .. sub end
    end
  end
  if given then
    if not is_dir(given) then error(("%s: %s does not exist"):format(what, given), 3) end
    return search(given) or given -- the reader then says what is missing there
  end
  for _, base in ipairs(data.search_path()) do
    local found = search(base)
    if found then return found end
  end
  error(("%s not found; looked in:\n  %s\n%s"):format(what, table.concat(tried, "\n  "), how), 3)
end

local function holds_fashion(dir)
  return exists(dir .. "/t10k-labels-idx1-ubyte.gz") or exists(dir .. "/t10k-labels-idx1-ubyte")
end

-- ---- the decoded-image cache ----
-- One file per image folder in $XDG_CACHE_HOME/cbnet (~/.cache/cbnet), named
-- by the folder's resolved path and identity (device, inode), so every
-- spelling of a folder (relative, via a symlink, with ..) shares one cache;
-- beside it NAME.source holds the folder's path. The reader checks the cache
-- against the folder's files (names, sizes, times) and a checksum, and
-- writes it atomically, so processes that start together never read half a
-- file (each writes its own temporary; the last rename wins).

--- The cache folder.
function data.cache_dir()
  local base = os.getenv("XDG_CACHE_HOME")
  if not base or base == "" then
    local home = os.getenv("HOME")
    if not home then return nil end
    base = home .. "/.cache"
  end
  return base .. "/cbnet"
end

local function cache_file(root)
  local dir, info = data.cache_dir(), core.file_info(root)
  if not dir or not info then return nil end
  local key, h = ("%s\0%d\0%d"):format(info.path, info.device, info.inode), 5381
  for i = 1, #key do h = (h * 33 + key:byte(i)) % 4294967296 end
  local name = info.path:match("([^/]*)$"):gsub("[^%w%-_.]", "_")
  return ("%s/imagefolder-%s-%08x.bin"):format(dir, name, h), info.path
end

--- The cached folders: a list of {file, bytes, source} (source: the image
-- folder's path, as recorded).
function data.cache_list()
  local dir, list = data.cache_dir(), {}
  if not dir then return list end
  local p = io.popen(("ls -1 '%s' 2>/dev/null"):format(dir:gsub("'", "'\\''")))
  for name in p:lines() do
    if name:match("^imagefolder%-.*%.bin$") then
      local file = dir .. "/" .. name
      local info = core.file_info(file)
      local f = io.open(file .. ".source", "rb")
      local source = f and f:read("l")
      if f then f:close() end
      list[#list + 1] = {file = file, bytes = info and info.size or 0, source = source or "?"}
    end
  end
  p:close()
  return list
end

--- Removes every cached folder; returns how many files and bytes.
function data.cache_clear()
  local n, bytes = 0, 0
  for _, entry in ipairs(data.cache_list()) do
    if os.remove(entry.file) then n, bytes = n + 1, bytes + entry.bytes end
    os.remove(entry.file .. ".source")
  end
  return n, bytes
end

--- data.image_folder(root[, {cache = true, name}]): ROOT/<class>/*.{png,jpg,jpeg,bmp},
-- classes sorted by name. The decoded images are cached (see above) unless
-- cache = false.
function data.image_folder(root, opts)
  opts = options.check(opts, "image_folder", {"cache", "name"})
  local cache, source = nil, nil
  if opts.cache ~= false then cache, source = cache_file(root) end
  local images, labels, classes = core.read_image_folder(root, cache)
  if cache and not exists(cache .. ".source") and exists(cache) then
    pcall(core.write_file_atomic, cache .. ".source", source .. "\n")
  end
  return data.dataset(images, labels, classes, opts.name or root)
end

local CIFAR_HELP = "Get CIFAR-10 as the binary version (cifar-10-batches-bin) or as JPEG class "
  .. "folders (cifar10-jpg/{train,test}/<class>/) into one of these folders, or pass its path "
  .. "(a script's --data option, or CBNET_DATA=/path)."

-- CIFAR-10 and CIFAR-100 load the same way: the binary batches (in the
-- folder or its binary subfolder), else image folders ROOT/train, ROOT/test.
local function cifar(kind, path, split)
  assert(split == "train" or split == "test", kind.name .. ": split must be 'train' or 'test'")
  local function holds(dir)
    return exists(dir .. "/" .. kind.marker) or exists(dir .. "/" .. kind.binary .. "/" .. kind.marker)
      or (is_dir(dir .. "/train") and is_dir(dir .. "/test"))
  end
  path = locate(kind.name, path, kind.folders, holds, kind.help)
  local name = kind.name .. " " .. split
  for _, dir in ipairs{path, path .. "/" .. kind.binary} do
    if exists(dir .. "/" .. kind.marker) then
      local images, labels, classes = kind.read(dir, split == "train")
      return data.dataset(images, labels, classes, name)
    end
  end
  if is_dir(path .. "/" .. split) then return data.image_folder(path .. "/" .. split, {name = name}) end
  error(("%s: %s holds neither %s nor a %s/ folder of classes. %s"):format(kind.name, path, kind.marker,
    split, kind.help), 3)
end

local CIFAR10 = {name = "CIFAR-10", marker = "test_batch.bin", binary = "cifar-10-batches-bin",
  folders = {"cifar-10-batches-bin", "cifar10-jpg", "cifar10"}, read = core.read_cifar10, help = CIFAR_HELP}
local CIFAR100 = {name = "CIFAR-100", marker = "test.bin", binary = "cifar-100-binary",
  folders = {"cifar-100-binary", "cifar100-jpg", "cifar100"}, read = core.read_cifar100,
  help = "Get CIFAR-100's binary version (cifar-100-binary) into one of these folders, or pass its path."}

--- data.cifar10([path[, split = "train"]]): CIFAR-10 from the binary batches
-- (a cifar-10-batches-bin folder) or from image folders (ROOT/train, ROOT/test).
-- Without path, the search list is tried.
function data.cifar10(path, split) return cifar(CIFAR10, path, split or "train") end

--- data.cifar100([path[, split = "train"]]): CIFAR-100 (fine labels, 100
-- classes) from the binary version (a cifar-100-binary folder: train.bin,
-- test.bin, fine_label_names.txt) or from image folders (ROOT/train,
-- ROOT/test). Without path, the search list is tried.
function data.cifar100(path, split) return cifar(CIFAR100, path, split or "train") end

--- data.idx(images_path, labels_path[, classes]): an IDX pair (MNIST style,
-- plain or .gz). N x H x W images become N x 1 x H x W.
function data.idx(images_path, labels_path, classes)
  local images = core.read_idx(images_path)
  local labels = core.read_idx(labels_path)
  if images:dim() == 3 then images = images:unsqueeze(2):contiguous() end
  if images:dim() ~= 4 or images:dtype() ~= "uint8" then
    error(("idx: %s holds %s data of %d dims; expected uint8 N x H x W images"):format(images_path,
      images:dtype(), images:dim()), 2)
  end
  if labels:dim() ~= 1 or labels:size(1) ~= images:size(1) then
    error(("idx: %s has %d labels for %d images in %s"):format(labels_path,
      labels:dim() == 1 and labels:size(1) or -1, images:size(1), images_path), 2)
  end
  labels = labels:long()
  local max = labels:numel() > 0 and labels:max():item() or -1
  return data.dataset(images, labels, classes or (max + 1), images_path)
end

local FASHION_CLASSES = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot"}

--- data.fashion_mnist([split = "train"[, path]]): Fashion-MNIST, by default from
-- Debian's dataset-fashion-mnist package.
function data.fashion_mnist(split, path)
  split = split or "train"
  assert(split == "train" or split == "test", "fashion_mnist: split must be 'train' or 'test'")
  path = locate("Fashion-MNIST", path, {"fashion-mnist"}, holds_fashion,
    "Install it with `apt-get install dataset-fashion-mnist` (make deps does), or pass its path.")
  local prefix = split == "train" and "train" or "t10k"
  local function file(kind)
    local base = ("%s/%s-%s-ubyte"):format(path, prefix, kind)
    return exists(base .. ".gz") and base .. ".gz" or base
  end
  local ds = data.idx(file("images-idx3"), file("labels-idx1"), FASHION_CLASSES)
  ds.name = "Fashion-MNIST " .. split
  return ds
end

-- ---- long-tailed construction ----

--- Per-class counts of the long-tailed profile for `classes` classes of n_max:
-- "exp": n_i = floor(n_max * (1/imbalance)^(i/(C-1))); "step": n_max for the
-- first half of the classes, floor(n_max/imbalance) for the rest. reverse puts
-- the tail first. As Cao et al. (LDAM-DRW) and Cui et al. build them.
local MAX_CLASSES = 1000000

function data.longtail_counts(n_max, classes, opts)
  opts = options.check(opts, "longtail_counts", {"profile", "imbalance", "reverse"})
  if math.type(n_max) ~= "integer" or n_max < 0 then
    error("longtail_counts: n_max must be a non-negative integer, got " .. tostring(n_max), 2)
  end
  if math.type(classes) ~= "integer" or classes < 1 or classes > MAX_CLASSES then
    error(("longtail_counts: classes must be an integer in 1..%d, got %s"):format(
      MAX_CLASSES, tostring(classes)), 2)
  end
  local profile, imbalance = opts.profile or "exp", opts.imbalance or 100
  if type(imbalance) ~= "number" or not (imbalance >= 1 and imbalance < math.huge) then
    error("longtail_counts: imbalance must be a finite number >= 1, got " .. tostring(imbalance), 2)
  end
  local counts = {}
  for i = 0, classes - 1 do
    local n
    if profile == "exp" then
      n = n_max * (1 / imbalance) ^ (i / math.max(classes - 1, 1))
    elseif profile == "step" then
      n = i < classes // 2 and n_max or n_max / imbalance
    else
      error("longtail: profile must be 'exp' or 'step', got " .. tostring(profile), 3)
    end
    counts[i + 1] = math.floor(n + 1e-9) -- guard 2997.000...1 against float error
  end
  if opts.reverse then
    for i = 1, classes // 2 do counts[i], counts[classes + 1 - i] = counts[classes + 1 - i], counts[i] end
  end
  return counts
end

--- data.longtail(ds, {profile = "exp" | "step", imbalance = 100, seed = 0,
-- reverse = false, holdout = 0, draw = "cbnet" | "numpy"}): keeps the first
-- n_i images of class i after a seeded shuffle of each class. draw = "numpy"
-- shuffles as the reference code of Cao et al. (LDAM-DRW) does: one numpy
-- generator seeded with seed, each class's indices (in dataset order) shuffled
-- in turn by np.random.shuffle; on a dataset in CIFAR's original order it
-- keeps that code's images. "cbnet" (the default) uses cbnet's Generator.
-- With holdout = k, the next k images of each class (unused by the
-- long-tailed set) become lt.holdout, a balanced validation set; a class with
-- fewer than n_i + k images keeps n_i = all - k for training (CIFAR-10's head
-- class at any imbalance: 5000 - k). For CIFAR-10 at imbalance 100: 5000,
-- 2997, 1796, 1077, 645, 387, 232, 139, 83, 50 (12,406 images).
function data.longtail(ds, opts)
  opts = options.check(opts, "longtail", {"profile", "imbalance", "seed", "reverse", "holdout", "draw"})
  local draw = opts.draw or "cbnet"
  if draw ~= "cbnet" and draw ~= "numpy" then
    error("longtail: draw must be 'cbnet' or 'numpy', got " .. tostring(draw), 2)
  end
  local have = ds:counts()
  local n_max = 0
  for _, n in ipairs(have) do n_max = math.max(n_max, n) end
  local want = data.longtail_counts(n_max, #have, {profile = opts.profile, imbalance = opts.imbalance,
                                                   reverse = opts.reverse})
  local shuffle -- a class's members (an index tensor) in a seeded random order
  if draw == "cbnet" then
    local g = cbnet.Generator(opts.seed or 0)
    shuffle = function(members) return members:index_select(1, cbnet.randperm(members:size(1), g)) end
  else
    local rs = require("cbnet.numpy_random").RandomState(opts.seed or 0)
    shuffle = function(members) return cbnet.tensor(rs:shuffle(members:totable()), "int64") end
  end
  local labels = ds.labels
  local holdout = opts.holdout or 0
  local parts, held = {}, {}
  for c = 1, #have do
    if want[c] > have[c] then
      error(("longtail: class %d has %d images, the profile wants %d"):format(c - 1, have[c], want[c]), 2)
    end
    if holdout > have[c] then
      error(("longtail: class %d has %d images, fewer than the %d held out"):format(c - 1, have[c], holdout), 2)
    end
    local members = cbnet.arange(ds:size()):masked_select(labels:eq(c - 1))
    local shuffled = shuffle(members)
    -- the held-out images come after the class's share; where the class has
    -- too few images left (the head class uses them all), its share shrinks
    want[c] = math.min(want[c], have[c] - holdout)
    if want[c] > 0 then parts[#parts + 1] = shuffled:narrow(1, 1, want[c]) end
    if holdout > 0 then held[#held + 1] = shuffled:narrow(1, want[c] + 1, holdout) end
  end
  local lt = ds:subset(cbnet.cat(parts), ds.name .. (" (long-tailed %s, imbalance %g)"):format(
    opts.profile or "exp", opts.imbalance or 100))
  lt.longtail_counts = want
  if holdout > 0 then
    lt.holdout = ds:subset(cbnet.cat(held), ds.name .. (" (held out, %d per class)"):format(holdout))
  end
  return lt
end

-- ---- samplers ----
-- A sampler's indices(epoch) gives the sample order of an epoch as a 0-based
-- int64 tensor. Each epoch draws from a generator seeded with (seed, epoch),
-- so any epoch can be replayed (resume) and runs are reproducible.

local function epoch_generator(seed, epoch)
  return cbnet.Generator((seed or 0) * 1000003 + (epoch or 0))
end

local Sampler = {}
Sampler.__index = Sampler

local function sampler(kind, size, fn)
  return setmetatable({kind = kind, size = size, draw = fn}, Sampler)
end

function Sampler:indices(epoch) return self.draw(epoch or 0) end
function Sampler:__len() return self.size end

--- Samples in order.
--- The rank-th of size shards of another sampler's indices (every size-th
-- index from the rank-th): the ranks of data-parallel training draw disjoint
-- parts of the same per-epoch permutation.
function data.ShardSampler(base, rank, size)
  local n = #base
  return sampler("shard", (n - rank + size - 1) // size, function(epoch)
    return base:indices(epoch):slice(1, rank + 1, -1, size)
  end)
end

function data.SequentialSampler(ds)
  local n = type(ds) == "number" and ds or ds:size()
  return sampler("sequential", n, function() return cbnet.arange(n) end)
end

--- A fresh random permutation every epoch (or draws with replacement).
function data.RandomSampler(ds, opts)
  opts = options.check(opts, "RandomSampler", {"num_samples", "replacement", "seed"})
  local n = type(ds) == "number" and ds or ds:size()
  local count = opts.num_samples or n
  if opts.replacement then
    return data.WeightedSampler(cbnet.ones(n), {num_samples = count, replacement = true, seed = opts.seed})
  end
  assert(count <= n, "RandomSampler: num_samples exceeds the dataset without replacement")
  return sampler("random", count, function(epoch)
    return cbnet.randperm(n, epoch_generator(opts.seed, epoch)):narrow(1, 1, count)
  end)
end

--- Draws sample i with probability proportional to weights[i] (a tensor or
-- list); opts: num_samples (default: as many as weights), replacement
-- (default true), seed.
function data.WeightedSampler(weights, opts)
  opts = options.check(opts, "WeightedSampler", {"num_samples", "replacement", "seed"})
  if not cbnet.is_tensor(weights) then weights = cbnet.tensor(weights, "float32") end
  weights = weights:float()
  local count = opts.num_samples or weights:size(1)
  local replacement = opts.replacement ~= false
  return sampler("weighted", count, function(epoch)
    return core.multinomial(weights, count, replacement, epoch_generator(opts.seed, epoch))
  end)
end

-- Per-sample weights n_{y_i}^power: -1 makes every class equally likely,
-- -1/2 makes classes likely in proportion to sqrt(n_c).
local function class_power_weights(ds, power)
  local counts = ds:counts()
  local per_class = {}
  for c, n in ipairs(counts) do per_class[c] = n > 0 and n ^ power or 0 end
  return cbnet.tensor(per_class, "float32"):index_select(1, ds.labels)
end

--- Every class equally likely per draw (with replacement by default).
function data.ClassBalancedSampler(ds, opts)
  local s = data.WeightedSampler(class_power_weights(ds, -1), opts)
  s.kind = "class-balanced"
  return s
end

--- Class c drawn with probability proportional to sqrt(n_c).
function data.SqrtSampler(ds, opts)
  local s = data.WeightedSampler(class_power_weights(ds, -0.5), opts)
  s.kind = "sqrt-frequency"
  return s
end

-- ---- augmentation and loading ----

-- what a Loader's transform holds (core.augment_batch reads these)
local TRANSFORM = {"crop_padding", "flip", "cutout", "trivial_augment", "scale", "mean", "std"}

--- The standard CIFAR training augmentation: pad-4 random crop, horizontal
-- flip, per-channel normalisation (CIFAR-10 statistics unless given), and
-- optional cutout (side in pixels) and trivial_augment (true: one
-- TrivialAugmentWide operation per image before the crop: shear, translate,
-- rotate, brightness, colour, contrast, sharpness, posterize, solarize,
-- autocontrast, equalize or none, at a random strength; Mueller & Hutter 2021).
function data.cifar_augmentation(opts)
  opts = options.check(opts, "cifar_augmentation", TRANSFORM)
  return {crop_padding = opts.crop_padding or 4, flip = opts.flip ~= false, cutout = opts.cutout or 0,
          trivial_augment = opts.trivial_augment or false, mean = opts.mean or {0.4914, 0.4822, 0.4465}, std = opts.std or {0.2470, 0.2435, 0.2616}}
end

--- data.image_op(images, name, magnitude): one image operation of
-- TrivialAugment's vocabulary on uint8 images (C x H x W or N x C x H x W,
-- C = 1 or 3), computed as torchvision.transforms.functional does (nearest
-- neighbour, fill 0): "identity", "shear_x" / "shear_y" (factor), "translate_x"
-- / "translate_y" (pixels), "rotate" (degrees, counter-clockwise), the blends
-- "brightness", "color", "contrast", "sharpness" (factor - 1), "posterize"
-- (bits kept), "solarize" (threshold), "autocontrast", "equalize". For
-- policies of one's own; data.cifar_augmentation{trivial_augment = true}
-- draws them per image.
function data.image_op(images, name, magnitude) return core.image_op(images, name, magnitude) end

--- Normalisation only (for evaluation): the same mean and std.
function data.normalization(opts)
  opts = options.check(opts, "normalization", {"mean", "std"})
  return {mean = opts.mean or {0.4914, 0.4822, 0.4465}, std = opts.std or {0.2470, 0.2435, 0.2616}}
end

local Loader = {}
Loader.__index = Loader

--- data.Loader(ds, {batch_size = 128, shuffle = false, sampler, drop_last = false,
-- transform (crop_padding, flip, cutout, trivial_augment, mean, std: see
-- data.cifar_augmentation), seed = 0}).
function data.Loader(ds, opts)
  opts = options.check(opts, "Loader", {"batch_size", "shuffle", "sampler", "drop_last", "transform", "seed"})
  if opts.transform then options.check(opts.transform, "Loader: transform", TRANSFORM) end
  local self = setmetatable({dataset = ds, batch_size = opts.batch_size or 128,
    drop_last = opts.drop_last or false, transform = opts.transform, seed = opts.seed or 0}, Loader)
  assert(self.batch_size >= 1, "Loader: batch_size must be >= 1")
  self.sampler = opts.sampler
    or (opts.shuffle and data.RandomSampler(ds, {seed = self.seed}) or data.SequentialSampler(ds))
  return self
end

--- The number of batches in an epoch.
function Loader:__len()
  local n = #self.sampler
  return self.drop_last and n // self.batch_size or (n + self.batch_size - 1) // self.batch_size
end

--- for images, labels in loader:batches(epoch) do ... end: float32 N x C x H x W
-- images (scaled to [0, 1], then transformed) and int64 labels.
function Loader:batches(epoch)
  epoch = epoch or 0
  local order = self.sampler:indices(epoch)
  local augment_rng = epoch_generator(self.seed + 7919, epoch)
  local total, b = order:size(1), self.batch_size
  local start = 0
  return function()
    if start >= total or (self.drop_last and start + b > total) then return nil end
    local count = math.min(b, total - start)
    local idx = order:narrow(1, start + 1, count)
    start = start + count
    local images = core.augment_batch(self.dataset.images, idx, self.transform, augment_rng)
    return images, self.dataset.labels:index_select(1, idx)
  end
end

return data
