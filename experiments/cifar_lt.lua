-- The long-tailed CIFAR benchmark of the literature, as LDAM-DRW (Cao et al.,
-- NeurIPS 2019) defines it: ResNet-32 on CIFAR-10-LT / CIFAR-100-LT
-- (n_i = n_max imb^(-i/(C-1)) images of class i, drawn with seed 0: 12,406 at
-- imbalance 100), SGD lr 0.1, momentum 0.9, weight decay 2e-4 (on every
-- parameter, batch norm's too, as its code; --no-wd-norms spares them), batch 128,
-- 200 epochs, linear warm-up over 5, lr x0.01 at epoch 160 and x0.0001 at 180
-- (all scaled with --epochs), DRW/DRS switched on at the first step.
--
-- Each value of --methods is a method of cbnet.longtail (ce, focal,
-- cb-softmax, cb-sigmoid, cb-focal, ce-drw, ldam, ldam-drw, balanced-softmax,
-- la-loss, la-posthoc, cb-resample, drs); --loss FILE adds your own loss (a
-- Lua file returning function(logits, labels, ctx)); --mixup ALPHA mixes any
-- of them. Every method runs once per --seeds value.
--
-- Run: cbnet run experiments/cifar_lt.lua [--help]
--   cbnet run experiments/cifar_lt.lua --methods ce,ldam-drw,balanced-softmax --epochs 40 --jobs 2
-- Writes OUT/results.md (top-1 at the last and the best epoch, many/medium/few,
-- per class, mean +- std over seeds, beside the published figures), OUT/results.json,
-- OUT/confusion-<method>.svg and OUT/per_class.svg, and OUT/runs/<method>-seed<k>/.
local cbnet = require "cbnet"
local cli = require "cbnet.cli"
local data = require "cbnet.data"
local experiment = require "cbnet.experiment"
local longtail = require "cbnet.longtail"
local models = require "cbnet.models"
local report = require "cbnet.report"

-- LDAM-DRW's code decays every parameter (torch.optim.SGD(model.parameters(), weight_decay=2e-4))
local options = experiment.standard_options{epochs = 200, batch_size = 128, lr = 0.1, wd = 2e-4,
                                           wd_norms = true, momentum = 0.9, optimizer = "sgd",
                                           schedule = "step", model = "resnet32"}
for _, o in ipairs{
  {"dataset", "cifar10", "cifar10 or cifar100"},
  {"imbalance", 100, "largest / smallest class size"},
  {"profile", "exp", "long-tail profile: exp or step"},
  {"draw", "cbnet", "which images the long-tailed set keeps: cbnet (cbnet's generator) or numpy "
     .. "(those of the LDAM-DRW code's np.random.seed(0) draw, on data in CIFAR's original order)"},
  {"methods", {"ldam-drw"}, "methods: " .. table.concat(longtail.methods, ", ")},
  {"loss", cli.NONE, "your own loss: a Lua file returning function(logits, labels, ctx)", type = "string"},
  {"beta", 0.9999, "class-balanced weights' beta (cb-*, *-drw)", type = "number"},
  {"gamma", 1.0, "focal gamma (focal, cb-focal)", type = "number"},
  {"tau", 1.0, "logit adjustment's tau (la-loss, la-posthoc)", type = "number"},
  {"max-margin", 0.5, "LDAM's largest margin", type = "number"},
  {"scale", 30, "LDAM's logit scale s", type = "number"},
  {"mixup", 0, "mixup alpha for any method (0: off)", type = "number"},
  {"seeds", {0}, "seeds: every method runs once per seed; tables show mean +- std"},
  {"val", 0, "a balanced validation set of this many training images per class, left out of "
     .. "training: the best epoch is chosen on it (0: no validation set; best = on the test set)"},
  {"many", 100, "many-shot: classes with more training images than this (Liu et al. 2019)"},
  {"few", 20, "few-shot: classes with fewer training images than this"},
} do options[#options + 1] = o end
-- --many and --few shape only the tables: a finished sweep's are made again with
-- --resume OUT --many N --few M
local opts = experiment.setup("cifar_lt", cli.parse(arg, {name = "cifar_lt",
  script = "experiments/cifar_lt.lua", summary = "Long-tailed CIFAR: the methods of the literature on ResNet-32.",
  options = options}), {"many", "few"})

-- ---- data ----
local full, test, dataset, normalization
if opts.dataset == "cifar100" then
  full, test, dataset = data.cifar100(opts.data, "train"), data.cifar100(opts.data, "test"), "CIFAR-100"
  normalization = {mean = {0.5071, 0.4865, 0.4409}, std = {0.2673, 0.2564, 0.2762}}
elseif opts.dataset == "cifar10" then
  full, test, dataset, normalization = experiment.load_data(opts)
else
  error("--dataset must be cifar10 or cifar100", 0)
end
local train = data.longtail(full, {profile = opts.profile, imbalance = opts.imbalance, seed = 0,
                                   draw = opts.draw, holdout = opts.val > 0 and opts.val or nil})
local val = train.holdout
local counts, classes = train:counts(), train.classes
full = nil
local milestones, _, defer = longtail.schedule(opts.epochs)

-- ---- runs ----
local methods = {}
for _, m in ipairs(opts.methods) do methods[#methods + 1] = {id = m, label = m} end
if opts.loss then methods[#methods + 1] = {id = "loss-" .. opts.loss:match("([^/]-)%.?[^./]*$"), label = opts.loss, file = opts.loss} end
local runs = {}
for _, m in ipairs(methods) do
  if not m.file then longtail.method(m.id, counts, {dataset = train}) end -- unknown names fail now
  for _, seed in ipairs(opts.seeds) do
    runs[#runs + 1] = {id = ("%s-seed%d"):format(m.id, seed), method = m, seed = seed, label = m.label}
  end
end

local function train_run(r, o, out)
  local run_opts = setmetatable({seed = r.seed}, {__index = o})
  local m = r.method.file and longtail.loss_file(r.method.file, counts)
    or longtail.method(r.method.id, counts, {beta = o.beta, gamma = o.gamma, tau = o.tau,
      max_margin = o.max_margin, s = o.scale, defer = defer, dataset = train, seed = r.seed})
  return experiment.train{
    name = r.id, opts = run_opts, out = out, train = train, test = test, val = val,
    normalization = normalization, sampler = m.sampler, adjust = m.adjust, mixup = o.mixup,
    model = function()
      local model = models.get(o.model, {classes = #classes, normed = m.normed,
        in_channels = train.images:size(2), image_size = train.images:size(3)})
      if m.sigmoid_bias then require("cbnet.loss").init_sigmoid_bias(model.linear or model:get(#model), #classes) end
      return model
    end,
    loss = m.loss,
    hparams = {method = r.method.id, seed = r.seed, epochs = o.epochs, lr = o.lr, wd = o.wd,
               batch_size = o.batch_size, model = o.model, milestones = milestones},
  }
end

if not opts.run then
  print(("%s-LT, %s profile, imbalance %g: %d training images%s, %d test images; %s; output in %s"):format(
    dataset, opts.profile, opts.imbalance, train:size(), val and (", %d validation"):format(val:size()) or "",
    test:size(), opts.model, opts.out))
end
local results, failures, interrupted = experiment.sweep(runs, opts, train_run, arg)

-- ---- tables ----
local lines = {}
local function say(text) print(text) lines[#lines + 1] = text end
local function pm(values, scale)
  local mean, std = longtail.mean_std(values)
  if not mean then return "n/a" end
  scale = scale or 100
  return #values > 1 and ("%.2f ± %.2f"):format(mean * scale, std * scale) or ("%.2f"):format(mean * scale)
end

local summary = {}
say(("# Long-tailed %s (imbalance %g, %s), %s, %d epochs\n"):format(dataset, opts.imbalance, opts.profile,
  opts.model, opts.epochs))
say(("Top-1 accuracy (%%) on the balanced test set, mean ± std over seeds %s. **last**: the last epoch; "
  .. "**best**: the epoch with the best %s accuracy. Many / medium / few: classes with > %d, %d-%d, "
  .. "< %d training images (Liu et al. 2019), at the last epoch.\n"):format(table.concat(opts.seeds, ","),
  val and "validation" or "test (as much of the literature reports; it flatters)", opts.many, opts.few,
  opts.many, opts.few))
local rows = {}
for _, m in ipairs(methods) do
  local last, best, many, medium, few, per_class, minutes = {}, {}, {}, {}, {}, {}, {}
  for _, r in ipairs(runs) do
    local res = r.method == m and results[r.id]
    if res then
      last[#last + 1], best[#best + 1] = res.final.accuracy, res.best.accuracy
      local shots = longtail.shot_accuracy(res.final.per_class, counts, opts.many, opts.few)
      many[#many + 1], medium[#medium + 1], few[#few + 1] = shots.many, shots.medium, shots.few
      per_class[#per_class + 1] = res.final.per_class
      local seconds = 0
      for _, h in ipairs(res.history) do seconds = seconds + h.seconds end
      minutes[#minutes + 1] = seconds / 60
    end
  end
  if #last > 0 then
    rows[#rows + 1] = {m.label, pm(last), pm(best), pm(many), pm(medium), pm(few), #last,
                       ("%.1f"):format((longtail.mean_std(minutes)))}
    summary[m.id] = {last = last, best = best, many = many, medium = medium, few = few, per_class = per_class}
  end
end
say(report.markdown_table({"method", "top-1 last", "top-1 best", "many", "medium", "few", "seeds",
  "minutes per run"}, rows) .. "\n")

say("Per-class accuracy (%) at the last epoch (mean over seeds):\n")
local header, class_rows = report.per_class_header("method", classes, false), {}
for _, m in ipairs(methods) do
  local s = summary[m.id]
  if s then
    local row = {m.label}
    for c = 1, #classes do
      local values = {}
      for _, pc in ipairs(s.per_class) do values[#values + 1] = pc[c] end
      row[c + 1] = (longtail.mean_std(values)) * 100
    end
    class_rows[#class_rows + 1] = row
  end
end
local count_row = {"training images"}
for c = 1, #classes do count_row[c + 1] = counts[c] end
class_rows[#class_rows + 1] = count_row
say(report.markdown_table(header, class_rows, 1) .. "\n")

say([[## Published figures (ResNet-32, CIFAR-10-LT, imbalance 100, 200 epochs)

| method | top-1 | source |
| :-- | --: | :-- |
| CE | 70.4 | Cui et al., CVPR 2019 (≈ 72 in later reruns) |
| focal | 71.6 | Zhang et al., Bag of Tricks for long-tailed recognition, AAAI 2021 (rerun) |
| CB focal | 74.6 | Cui et al., CVPR 2019 |
| LDAM-DRW | 77.0 | Cao et al., NeurIPS 2019 |
| logit adjustment / balanced softmax | ≈ 80-81 | Menon et al., ICLR 2021; Ren et al., NeurIPS 2020 (reruns) |
]])
for _, f in ipairs(failures) do say(("- run %s FAILED: %s"):format(f.id, f.error)) end

-- ---- files ----
report.write_atomic(opts.out .. "/results.md", table.concat(lines, "\n") .. "\n")
report.write_json(opts.out .. "/results.json", {dataset = dataset, classes = classes, train_counts = counts,
  test_size = test:size(), val_size = val and val:size() or 0, runs = results, failures = failures,
  summary = summary})
for _, m in ipairs(methods) do
  local first = results[("%s-seed%d"):format(m.id, opts.seeds[1])]
  if first and first.final.confusion then
    report.write_atomic(opts.out .. "/confusion-" .. m.id .. ".md",
      report.confusion_table(first.final.confusion, classes) .. "\n")
    report.confusion_svg(opts.out .. "/confusion-" .. m.id .. ".svg",
      ("Confusion matrix: %s, seed %d, last epoch"):format(m.label, opts.seeds[1]), first.final.confusion, classes)
  end
end
local first_seed = {}
for _, r in ipairs(runs) do if r.seed == opts.seeds[1] then first_seed[#first_seed + 1] = r end end
report.learning_curves(opts.out .. "/learning_curves.svg",
  ("Test accuracy on %s-LT, seed %d"):format(dataset, opts.seeds[1]), first_seed, results)
local series = {}
for _, m in ipairs(methods) do
  local s = summary[m.id]
  if s then
    local means, errs = {}, {}
    for c = 1, #classes do
      local values = {}
      for _, pc in ipairs(s.per_class) do values[#values + 1] = pc[c] end
      means[c], errs[c] = longtail.mean_std(values)
    end
    series[#series + 1] = {name = m.label, values = means, err = errs}
  end
end
if #series > 0 and #classes <= 20 then
  report.per_class_bars(opts.out .. "/per_class.svg", ("Per-class test accuracy, last epoch (%s-LT)"):format(dataset),
    classes, series, "class (n = training images, most to fewest)", counts)
end
print(("wrote %s/{results.md, results.json, learning_curves.svg, confusion-*.svg, per_class.svg, runs/}"):format(opts.out))
if interrupted then os.exit(130) end
if #failures > 0 then os.exit(1) end
