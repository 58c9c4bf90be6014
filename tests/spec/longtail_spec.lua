-- The long-tail benchmark's pieces (issue 10), on small data the tests make.
local cbnet = require "cbnet"
local models = require "cbnet.models"
local longtail = require "cbnet.longtail"
local report = require "cbnet.report"
local data = require "cbnet.data"

local COUNTS = {5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50}

describe("cbnet.models", function()
  it("has the CIFAR ResNets with the literature's parameter counts", function()
    assert.equal(464154, models.resnet32():num_parameters())
    assert.equal(464144, models.resnet32{normed = true}:num_parameters()) -- the cosine classifier has no bias
    assert.equal(269722, models.resnet20():num_parameters())
    assert.equal(658586, models.resnet44():num_parameters()) -- 464 + 7 blocks x 3 stages + 650
    assert.equal(853018, models.resnet56():num_parameters())
    assert.equal(470004, models.resnet32{classes = 100}:num_parameters()) -- 464154 - 650 + 6500
    local y = models.get("resnet20", {classes = 7})(cbnet.randn(2, 3, 32, 32))
    assert.same({2, 7}, y:size())
    assert.error_matches(function() models.get("resnet33") end, "unknown model 'resnet33'")
  end)

  it("NormedLinear gives cosines, differentiable", function()
    local layer = cbnet.nn.NormedLinear(5, 3)
    local y = layer(cbnet.randn(4, 5) * 10)
    assert.is_true(y:abs():max():item() <= 1 + 1e-5)
    local w = layer.weight:detach()
    assert.is_true(((w * w):sum(1) - 1):abs():max():item() < 1e-5) -- unit columns at init
    assert.is_true(cbnet.gradcheck(function(x, v)
      layer.weight = v
      return layer:forward(x)
    end, {cbnet.randn(3, 5), layer.weight:detach():clone()}))
  end)
end)

describe("cbnet.longtail", function()
  local logits, labels = cbnet.randn(8, 10), cbnet.tensor{0, 1, 2, 3, 9, 9, 5, 0}

  it("gives a finite loss for every method", function()
    local ds = data.dataset(cbnet.zeros(20, 1, 2, 2, "uint8"), cbnet.arange(20) % 10, {"a","b","c","d","e","f","g","h","i","j"})
    for _, name in ipairs(longtail.methods) do
      local m = longtail.method(name, COUNTS, {dataset = ds, defer = 3})
      local x = m.normed and logits:tanh() or logits
      local value = m.loss(x, labels, 5):item()
      assert.is_true(value == value and value > 0, name)
    end
    assert.error_matches(function() longtail.method("ldam-drx", COUNTS) end, "unknown method 'ldam%-drx'")
  end)

  it("switches deferred re-weighting and re-sampling on after the first step", function()
    local ds = data.dataset(cbnet.zeros(20, 1, 2, 2, "uint8"), cbnet.arange(20) % 10, {"a","b","c","d","e","f","g","h","i","j"})
    local drw = longtail.method("ce-drw", COUNTS, {defer = 3})
    local plain = cbnet.F.cross_entropy(logits, labels):item()
    assert.equal(plain, drw.loss(logits, labels, 3):item())  -- epochs 1..3: plain CE
    local weighted = cbnet.F.cross_entropy(logits, labels, {weight = cbnet.loss.cb_weights(COUNTS, 0.9999)}):item()
    assert.is_true(math.abs(weighted - drw.loss(logits, labels, 4):item()) < 1e-6) -- from epoch 4
    local drs = longtail.method("drs", COUNTS, {defer = 3, dataset = ds})
    assert.is_nil(drs.sampler(3))
    assert.truthy(drs.sampler(4))
    assert.truthy(longtail.method("cb-resample", COUNTS, {dataset = ds}).sampler(1))
  end)

  it("adjusts logits post hoc by tau log prior", function()
    local m = longtail.method("la-posthoc", {3, 1}, {tau = 1})
    local adjusted = m.adjust(cbnet.zeros(1, 2))
    assert.is_true(math.abs(adjusted[1][1] - -math.log(0.75)) < 1e-6)
    assert.is_true(math.abs(adjusted[1][2] - -math.log(0.25)) < 1e-6)
  end)

  it("scales the LDAM-DRW schedule with the epochs", function()
    local milestones, warmup, defer = longtail.schedule(200)
    assert.same({160, 180}, milestones)
    assert.equal(5, warmup)
    assert.equal(160, defer)
    milestones, warmup = longtail.schedule(40)
    assert.same({32, 36}, milestones)
    assert.equal(1, warmup)
    -- the learning rate epoch by epoch, through experiment.optimizer and experiment.schedule
    local experiment = require "cbnet.experiment"
    local model = cbnet.nn.Linear(2, 2)
    local opts = {optimizer = "sgd", lr = 0.1, momentum = 0.9, wd = 0, schedule = "step"}
    local opt = experiment.optimizer(model, opts)
    local schedule = experiment.schedule(opt, opts, 200)
    local lr = {}
    for epoch = 0, 199 do schedule:set_epoch(epoch); lr[epoch + 1] = opt.param_groups[1].lr end
    assert.is_true(math.abs(lr[1] - 0.02) < 1e-12 and math.abs(lr[5] - 0.1) < 1e-12)
    assert.is_true(math.abs(lr[160] - 0.1) < 1e-12 and math.abs(lr[161] - 0.001) < 1e-12)
    assert.is_true(math.abs(lr[180] - 0.001) < 1e-12 and math.abs(lr[181] - 0.00001) < 1e-15)
  end)

  it("splits classes into many, medium and few shots", function()
    local shots = longtail.shot_accuracy({0.9, 0.5, 0.1, 0.3}, {500, 100, 19, 20}, 100, 20)
    assert.equal(0.9, shots.many)
    assert.equal(0.4, shots.medium) -- 100 and 20 are medium
    assert.equal(0.1, shots.few)
    assert.is_nil(longtail.shot_accuracy({0.5}, {5000}).few)
    local mean, std = longtail.mean_std({0.70, 0.72, 0.74})
    assert.is_true(math.abs(mean - 0.72) < 1e-12 and math.abs(std - 0.02) < 1e-12)
    assert.equal(0, select(2, longtail.mean_std({0.5})))
  end)
end)

describe("reports of the benchmark", function()
  it("writes a confusion matrix as markdown and SVG", function()
    local m = {{5, 1}, {2, 3}}
    local md = report.confusion_table(m, {"cat", "dog"})
    assert.matches("| 0 cat", md, 1, true)
    assert.matches("| 1 dog            |   2 |   3 |", md, 1, true)
    local path = require("shell").temp_path(".svg")
    report.confusion_svg(path, "test", m, {"cat", "dog"})
    local svg = report.read_file(path)
    assert.matches("true cat, predicted dog: 1", svg, 1, true)
    os.remove(path)
  end)

  it("evaluate returns per-class accuracy and the confusion matrix", function()
    local experiment = require "cbnet.experiment"
    -- a "model" that predicts class 1 for everything
    local model = setmetatable({eval = function() end, train = function() end}, {__call = function(_, x)
      return cbnet.tensor({0, 1, 0}, "float32"):view(1, 3):expand(x:size(1), 3)
    end})
    local ds = data.dataset(cbnet.zeros(5, 1, 2, 2, "uint8"), cbnet.tensor{0, 1, 1, 2, 2}, {"a", "b", "c"})
    local acc, per_class, confusion = experiment.evaluate(model, ds, {mean = {0}, std = {1}}, 2)
    assert.equal(0.4, acc)
    assert.same({0, 1, 0}, per_class)
    assert.same({{0, 1, 0}, {0, 2, 0}, {0, 2, 0}}, confusion)
  end)
end)

describe("data for the benchmark", function()
  it("reads CIFAR-100's binary layout (fine labels) from files written here", function()
    local dir = require("shell").fresh_dir()
    local function record(coarse, fine) return string.char(coarse, fine) .. string.rep(string.char(fine), 3072) end
    local f = assert(io.open(dir .. "/train.bin", "wb"))
    f:write(record(3, 0), record(7, 99), record(0, 42))
    f:close()
    f = assert(io.open(dir .. "/test.bin", "wb"))
    f:write(record(1, 5))
    f:close()
    f = assert(io.open(dir .. "/fine_label_names.txt", "wb"))
    f:write("apple\naquarium_fish\n")
    f:close()
    local train = data.cifar100(dir, "train")
    assert.same({0, 99, 42}, train.labels:totable())
    assert.equal(100, #train.classes)
    assert.equal("aquarium_fish", train.classes[2])
    assert.equal("class 99", train.classes[100])
    assert.equal(99, train.images[2]:float():mean():item())
    assert.equal(1, data.cifar100(dir, "test"):size())
    f = assert(io.open(dir .. "/test.bin", "wb"))
    f:write(record(1, 100))
    f:close()
    assert.error_matches(function() data.cifar100(dir, "test") end, "label 100, CIFAR%-100 labels are 0..99")
    os.execute("rm -rf " .. dir)
  end)

  it("holds out a balanced validation set from images the long tail leaves out", function()
    local n = 40 -- 4 classes x 10 images
    local ds = data.dataset(cbnet.arange(n):view(n, 1, 1, 1):byte(), cbnet.arange(n) % 4, {"a", "b", "c", "d"})
    local lt = data.longtail(ds, {imbalance = 10, holdout = 2})
    assert.same({8, 4, 2, 1}, lt:counts()) -- the head class gives 2 of its 10 to validation
    assert.same({2, 2, 2, 2}, lt.holdout:counts())
    local seen = {}
    for _, v in ipairs(lt.images:view(-1):totable()) do seen[v] = true end
    for _, v in ipairs(lt.holdout.images:view(-1):totable()) do assert.is_nil(seen[v]) end
  end)
end)

describe("the time-budget recipe's pieces (fast_lt)", function()
  local experiment = require "cbnet.experiment"
  local loss = require "cbnet.loss"

  it("fastnet: widths, parameter count and the logit scale", function()
    -- 3x3 convs 3-32, 32-64, 64-64, 64-128, 128-128, 128-256, 256-256, BN on each, a 256x10 linear
    assert.equal(1166496, models.fastnet():num_parameters())
    local small = models.get("fastnet", {widths = {8, 16}, stem = 4, classes = 3, generator = cbnet.Generator(5)})
    assert.equal(27 * 4 + 8 + 4 * 8 * 9 + 16 + 8 * 8 * 9 + 16 + 8 * 16 * 9 + 32 + 16 * 16 * 9 + 32 + 16 * 3,
      small:num_parameters())
    local x = cbnet.randn(2, 3, 16, 16)
    local y = small(x)
    assert.same({2, 3}, y:size())
    small.logit_scale = 1
    assert.is_true((small(x) - y * 8):abs():max():item() < 1e-5) -- 1/8 by default
  end)

  it("balanced softmax with label smoothing is the smoothed CE of the prior-shifted logits", function()
    local counts, e = {50, 30, 20}, 0.2
    local x, y = cbnet.randn(4, 3), cbnet.tensor{0, 2, 1, 2}
    local shifted = x + cbnet.tensor({0.5, 0.3, 0.2}):log():view(1, 3)
    local logp = cbnet.F.log_softmax(shifted, 2):totable()
    local expected = 0
    for i = 1, 4 do
      local row = logp[i]
      local label = y:totable()[i] + 1
      expected = expected - (1 - e) * row[label] - e * (row[1] + row[2] + row[3]) / 3
    end
    expected = expected / 4
    local got = loss.balanced_softmax(x, y, counts, {label_smoothing = e}):item()
    assert.near(expected, got, 1e-5)
    assert.near(loss.balanced_softmax(x, y, counts):item(),
      loss.logit_adjusted(x, y, counts, {tau = 1}):item(), 1e-7)
    -- smoothing spread as the prior (0.5, 0.3, 0.2) instead of uniformly
    local prior_expected = 0
    for i = 1, 4 do
      local row = logp[i]
      prior_expected = prior_expected - (1 - e) * row[y:totable()[i] + 1]
        - e * (0.5 * row[1] + 0.3 * row[2] + 0.2 * row[3])
    end
    got = loss.balanced_softmax(x, y, counts, {label_smoothing = e, smoothing_prior = true}):item()
    assert.near(prior_expected / 4, got, 1e-5)
    assert.error_matches(function()
      loss.logit_adjusted(x, y, counts, {label_smoothing = e, smoothing_prior = true, reduction = "sum"})
    end, "mean reduction only")
  end)

  it("flip_tta averages the logits of the images and their mirrors", function()
    local model = cbnet.nn.Sequential(cbnet.nn.Flatten(), cbnet.nn.Linear(6, 2))
    local x = cbnet.randn(3, 1, 2, 3)
    local rows = x:totable() -- the last dim reversed by hand
    for n = 1, 3 do for r = 1, 2 do
      local row = rows[n][1][r]
      rows[n][1][r] = {row[3], row[2], row[1]}
    end end
    local expected = (model(x) + model(cbnet.tensor(rows))) * 0.5
    assert.is_true((experiment.flip_tta(model, x) - expected):abs():max():item() < 1e-6)
  end)

  it("translate_tta adds the flip views of the images moved one pixel diagonally, zeros coming in", function()
    local model = cbnet.nn.Sequential(cbnet.nn.Flatten(), cbnet.nn.Linear(12, 2))
    local x = cbnet.randn(2, 1, 3, 4)
    local rows = x:totable()
    local function moved(dy, dx) -- by hand: out[i][j] = x[i - dy][j - dx], 0 outside
      local out = {}
      for n = 1, 2 do
        out[n] = {{}}
        for i = 1, 3 do
          out[n][1][i] = {}
          for j = 1, 4 do
            local si, sj = i - dy, j - dx
            out[n][1][i][j] = (si >= 1 and si <= 3 and sj >= 1 and sj <= 4) and rows[n][1][si][sj] or 0
          end
        end
      end
      return cbnet.tensor(out)
    end
    local expected = experiment.flip_tta(model, x) * 0.5 + experiment.flip_tta(model, moved(1, 1)) * 0.25
      + experiment.flip_tta(model, moved(-1, -1)) * 0.25
    assert.is_true((experiment.translate_tta(model, x) - expected):abs():max():item() < 1e-6)
    assert.is_true((experiment.translate_tta(model, x) - experiment.flip_tta(model, x)):abs():max():item() > 1e-3)
  end)

  it("translated moves images by whole pixels with zeros coming in", function()
    local x = cbnet.tensor({{{{1, 2, 3}, {4, 5, 6}}}}, "float32") -- 1 x 1 x 2 x 3
    assert.same({{{{0, 0, 0}, {0, 1, 2}}}}, experiment.translated(x, 1, 1):totable())
    assert.same({{{{5, 6, 0}, {0, 0, 0}}}}, experiment.translated(x, -1, -1):totable())
    assert.same({{{{2, 3, 0}, {5, 6, 0}}}}, experiment.translated(x, 0, -1):totable())
    assert.same(x:totable(), experiment.translated(x, 0, 0):totable())
  end)

  it("ensemble averages its members' logits, each on its moving average's weights, through predict", function()
    local a = cbnet.nn.Sequential(cbnet.nn.Flatten(), cbnet.nn.Linear(6, 2))
    local b = cbnet.nn.Sequential(cbnet.nn.Flatten(), cbnet.nn.Linear(6, 2))
    local ema = cbnet.optim.EMA(b, {decay = 0.5})
    local before = b(cbnet.ones(1, 1, 2, 3)) -- b's own weights
    cbnet.no_grad(function() for _, p in ipairs(b:parameters()) do p:add_(1) end end)
    ema:update() -- the average: half the old weights, half the new
    local x = cbnet.randn(3, 1, 2, 3)
    local on_average = ema:apply(function() return experiment.flip_tta(b, x) end)
    local expected = (experiment.flip_tta(a, x) + on_average) * 0.5
    local ensemble = experiment.ensemble({{model = a}, {model = b, ema = ema}}, experiment.flip_tta)
    assert.is_true((ensemble(x) - expected):abs():max():item() < 1e-6)
    -- b's own weights are back after the call, and differ from the average's
    assert.is_true((b(cbnet.ones(1, 1, 2, 3)) - before):abs():max():item() > 0.5)
    assert.is_true((on_average - experiment.flip_tta(b, x)):abs():max():item() > 0.1)
    -- without predict: the members' own calls; eval / train reach every member
    assert.is_true((experiment.ensemble({{model = a}, {model = a}})(x) - a(x)):abs():max():item() < 1e-6)
    ensemble:eval()
    assert.same({false, false}, {a.training, b.training})
    ensemble:train()
    assert.same({true, true}, {a.training, b.training})
    assert.error_matches(function() experiment.ensemble({}) end, "no members")
  end)

  it("beta_draw has Beta(alpha, alpha)'s mean and variance", function()
    local g = cbnet.Generator(11)
    for _, alpha in ipairs{0.2, 1, 3} do
      local n, sum, sq = 4000, 0, 0
      for _ = 1, n do
        local v = experiment.beta_draw(alpha, g)
        assert.is_true(v >= 0 and v <= 1)
        sum, sq = sum + v, sq + v * v
      end
      local mean = sum / n
      local var = sq / n - mean * mean
      assert.near(0.5, mean, 0.025)
      assert.near(1 / (4 * (2 * alpha + 1)), var, 0.12 / (4 * (2 * alpha + 1)))
    end
  end)

  it("cutmix pastes one box of the shuffled batch and returns its own share", function()
    local g = cbnet.Generator(3)
    -- image i is all i: every pixel tells where it came from
    local images = cbnet.arange(1, 5):float():view(4, 1, 1, 1):expand(4, 2, 8, 10):contiguous()
    local perm = cbnet.tensor{2, 3, 0, 1}
    local seen_clipped = false
    for _ = 1, 30 do
      local lambda = experiment.beta_draw(1, g)
      local mixed, own = experiment.cutmix(images, images:index_select(1, perm), lambda, g)
      assert.same({4, 2, 8, 10}, mixed:size())
      for i = 1, 4 do
        local from_self = mixed[i]:eq(i):float():mean():item()
        local from_other = mixed[i]:eq(perm:totable()[i] + 1):float():mean():item()
        assert.near(own, from_self, 1e-6)       -- the share that is its own
        assert.near(1, from_self + from_other, 1e-6) -- the rest from images[perm]
      end
      -- the box is (nearly) 1 - lambda of the image unless a border clips it
      if own > lambda + 0.15 then seen_clipped = true else assert.near(lambda, own, 0.15) end
    end
    assert.is_true(seen_clipped)
    assert.same(cbnet.arange(1, 5):float():totable(), images:select(2, 1):select(2, 1):select(2, 1):totable()) -- untouched
  end)

  it("train_epoch takes mixing's other images from mixup.source when given (CMO)", function()
    local data = require "cbnet.data"
    -- 12 images: class 0 all 0.0, class 1 all 1.0 (as uint8 0 / 255)
    local labels = cbnet.tensor({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1}, "int64")
    local images = (labels:view(12, 1, 1, 1):expand(12, 1, 4, 4) * 255):byte():contiguous()
    local ds = data.dataset(images, labels, {"a", "b"})
    local only_b = data.WeightedSampler(cbnet.tensor{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1}, {seed = 1})
    local model = cbnet.nn.Sequential(cbnet.nn.Flatten(), cbnet.nn.Linear(16, 2))
    local opt = cbnet.optim.SGD(model:parameters(), {lr = 0})
    local seen = {}
    local function loss_fn(logits, y)
      seen[#seen + 1] = y:totable()
      return logits:sum() * 0
    end
    local mixup = {alpha = 1, cutmix = true, generator = cbnet.Generator(2),
                   source = data.Loader(ds, {batch_size = 4, sampler = only_b})}
    experiment.train_epoch(model, data.Loader(ds, {batch_size = 4, shuffle = true}), loss_fn, opt, 1,
      "test", nil, mixup)
    assert.equal(6, #seen) -- 3 batches, each loss twice: own labels, then the source's
    for k = 2, 6, 2 do assert.same({1, 1, 1, 1}, seen[k]) end
  end)

  it("a time limit shortens the epochs to those that fit, and a resume keeps the shortened plan", function()
    -- after epoch 1 of 90, 30 s spent, 25 s an epoch, 15 s for the last evaluation, 3600 s allowed
    assert.equal(90, experiment.fit_epochs(1, 90, 30, 25, 15, 3600)) -- 142 more would fit
    assert.equal(74, experiment.fit_epochs(1, 90, 40, 40, 15, 3000)) -- floor(2945 / 40) = 73 more
    assert.equal(5, experiment.fit_epochs(5, 90, 1000, 10, 100, 500)) -- already late: this epoch is the last
    -- a run with a limit no epoch fits in: epoch 1 becomes the last, evaluated, and the
    -- schedule is made again for 1 epoch
    local data = require "cbnet.data"
    local labels = cbnet.tensor({0, 1, 0, 1, 0, 1, 0, 1}, "int64")
    local ds = data.dataset(cbnet.randint(0, 256, {8, 1, 4, 4}):byte(), labels, {"a", "b"})
    local out = require("shell").fresh_dir() .. "/limited"
    local totals = {}
    local function spec(opts, limit)
      return {name = "limited", out = out, train = ds, test = ds, normalization = {mean = {0.5}, std = {0.25}},
        opts = setmetatable(opts, {__index = {seed = 0, optimizer = "sgd", lr = 0.1, momentum = 0, wd = 0,
                                              batch_size = 4, schedule = "none"}}),
        model = function() return cbnet.nn.Sequential(cbnet.nn.Flatten(), cbnet.nn.Linear(16, 2)) end,
        loss = function(logits, y) return cbnet.F.cross_entropy(logits, y) end,
        schedule = function(opt, epochs)
          totals[#totals + 1] = epochs
          return cbnet.optim.CosineLR(opt, {total = epochs})
        end,
        time_limit = limit}
    end
    local result = experiment.train(spec({epochs = 3}, 1e-9))
    assert.same({3, 1}, totals)
    assert.equal(1, result.final.epoch)
    assert.is_number(result.final.accuracy)
    assert.equal(1, #result.history)
    assert.equal(1, result.history[1].planned_epochs)
    totals = {}
    result = experiment.train(spec({epochs = 3, resume = true}, nil)) -- no limit now: the plan stands
    assert.same({1}, totals)
    assert.equal(1, result.final.epoch)
    assert.equal(1, #report.read_metrics(out .. "/metrics.jsonl"))
    -- with room to spare nothing changes
    totals = {}
    result = experiment.train(spec({epochs = 2}, 1e9))
    assert.same({2}, totals)
    assert.equal(2, result.final.epoch)
  end)

  it("experiment.optimizer decays every parameter with opts.wd_norms, else the weights only", function()
    local model = cbnet.nn.Sequential(cbnet.nn.Linear(2, 3), cbnet.nn.BatchNorm1d(3))
    local base = {optimizer = "sgd", lr = 0.1, momentum = 0.9, wd = 2e-4, schedule = "none"}
    local split = experiment.optimizer(model, base)
    assert.same({2e-4, 0}, {split.param_groups[1].weight_decay, split.param_groups[2].weight_decay})
    assert.equal(1, #split.param_groups[1].params) -- the linear layer's weight
    local all = experiment.optimizer(model, setmetatable({wd_norms = true}, {__index = base}))
    assert.equal(1, #all.param_groups)
    assert.equal(4, #all.param_groups[1].params) -- weight, bias, BN weight, BN bias
    assert.equal(2e-4, all.param_groups[1].weight_decay)
  end)

  it("experiment.optimizer passes opts.nesterov to SGD", function()
    local model = cbnet.nn.Linear(2, 2)
    local opt = experiment.optimizer(model, {optimizer = "sgd", lr = 0.1, momentum = 0.9, wd = 0, nesterov = true,
      schedule = "none"})
    for _, g in ipairs(opt.param_groups) do assert.is_true(g.nesterov) end
  end)
end)
