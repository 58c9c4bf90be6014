-- Long-tailed CIFAR-10 in a time budget (the moonshot: 80 % on CIFAR-10-LT-100
-- within an hour on 2 cores). The data is the benchmark's: LDAM-DRW's
-- construction, imbalance 100, 12,406 training images drawn with seed 0, the
-- balanced 10,000-image test set. The recipe: a wide, shallow network
-- (cbnet.models.fastnet), balanced softmax with label smoothing, SGD with
-- Nesterov momentum and a warmed-up cosine schedule, crop + flip + cutout
-- (and TrivialAugment in the hour), an exponential moving average of the
-- weights, and left-right test-time augmentation. --budget 5|15|60 picks
-- the epochs and widths calibrated for that many minutes on this machine,
-- and is a time limit: on a slower machine the schedule is shortened after
-- the first epochs to the epochs that fit
-- (--time-limit MINUTES instead; 0: none). Any option given explicitly wins.
--
-- Honest tuning: --tune trains on the long-tailed set minus a balanced
-- held-out set (--val images per class, drawn from the training images the
-- long-tailed set does not use) and evaluates on that set only: the test
-- set is not even read. Without --tune the test set is evaluated once, after
-- the last epoch (no choice of epochs on it).
--
-- Run: cbnet run experiments/fast_lt.lua [--budget 60] [--seeds 0,1,2] [--help]
-- Writes OUT/results.md (accuracy at the last epoch, mean +- std over seeds,
-- many/medium/few, minutes), OUT/results.json and OUT/runs/seed<k>/.
local cbnet = require "cbnet"
local cli = require "cbnet.cli"
local data = require "cbnet.data"
local experiment = require "cbnet.experiment"
local longtail = require "cbnet.longtail"
local loss = require "cbnet.loss"
local models = require "cbnet.models"
local report = require "cbnet.report"

local started = report.now()

-- the budgets: minutes -> the recipe's size, calibrated on the 2-core AMD EPYC
-- with the Winograd convolutions (fastnet 32/64/128 trains ~1050 images/s
-- there, 64/128/256 ~350, loading and EMA included), leaving ~10 % for data
-- loading, evaluation and a slower hour; the EMA's decay spans about 2
-- epochs (5, 15) or 5 (60). The hour's 90 epochs fit the training set and
-- lean to the head classes unless the images vary more: the hour trains with
-- TrivialAugmentWide (on the 9,100-image validation read-out 81.97 % against
-- 79.67 without; fast_lt.md's fourth round), and predicts with a post-hoc
-- adjustment d = 0.25 chosen there (80.22, 81.49, 81.72, 81.97, 81.09, 79.21
-- at d = -0.125 ... 0.5). Its predictions average translated views too
-- (--tta-translate: on the validation set +0.7 to +1.3 points over flip
-- alone, on its final weights and on CutMix's).
local BUDGETS = {
  [5] = {epochs = 20, widths = {32, 64, 128}, ema = 0.995, posthoc = {0}, tta_translate = false,
         trivial_augment = false},
  [15] = {epochs = 22, widths = {64, 128, 256}, ema = 0.995, posthoc = {0}, tta_translate = false,
          trivial_augment = false},
  [60] = {epochs = 90, widths = {64, 128, 256}, ema = 0.998, posthoc = {0.25}, tta_translate = true,
          trivial_augment = true},
}

local options = experiment.standard_options{epochs = 64, batch_size = 128, lr = 0.2, wd = 5e-4,
                                           momentum = 0.9, optimizer = "sgd", schedule = "cosine",
                                           model = "fastnet", ema = 0.999}
for _, o in ipairs{
  {"budget", 60, "minutes: 5, 15 or 60 (sets --epochs, --widths, --ema, --posthoc, --tta-translate and --trivial-augment unless they are given, and, except with --tune, a time limit: on a slower machine the schedule is shortened to fit)"},
  {"widths", {64, 128, 256}, "fastnet's block widths"},
  {"smoothing", 0.1, "label smoothing", type = "number"},
  {"smoothing-prior", true, "spread the smoothing as the training prior (uniform in the balanced world; cbnet.loss.logit_adjusted)", type = "flag"},
  {"no-smoothing-prior", false, "spread the smoothing uniformly over the adjusted logits"},
  {"logit-scale", 0.125, "fastnet's logits are the linear layer's times this", type = "number"},
  {"tau", 1.0, "logit adjustment's tau (1: balanced softmax)", type = "number"},
  {"warmup", 2, "epochs of linear learning-rate warm-up"},
  {"cutout", 8, "cutout square's side in pixels (0: none)"},
  {"mixup", 0, "mixup's alpha (0: off)", type = "number"},
  {"cutmix", 0, "CutMix's alpha (0: off; not with --mixup)", type = "number"},
  {"mix-source", "batch", "where --mixup / --cutmix take the other images: batch (the batch shuffled) or balanced (a class-balanced sampler, pasting rare classes into frequent ones' images: CMO, Park et al. 2022)"},
  {"mix-prob", 1, "share of the batches mixed", type = "number"},
  {"posthoc", {0}, "(set by --budget) post-hoc logit adjustment on top of the loss's: predictions from logits - d * log prior; --tune evaluates each d given on the validation set, a test run takes one"},
  {"tta", true, "evaluate with left-right flip test-time augmentation", type = "flag"},
  {"no-tta", false, "evaluate without test-time augmentation"},
  {"tta-translate", false, "(set by --budget) with --tta, also the images moved one pixel diagonally (experiment.translate_tta: 6 views)", type = "flag"},
  {"no-tta-translate", false, "flip test-time augmentation only"},
  {"no-trivial-augment", false, "train without TrivialAugmentWide (which --budget 60 sets)"},
  {"ensemble", 1, "networks per run, trained one after another (seeds seed, seed + 1000, ...; --epochs each, the time limit shared) and evaluated together: the mean of their logits (experiment.ensemble)"},
  {"seeds", {0}, "seeds: one run each; tables show mean +- std"},
  {"tune", false, "tuning mode: hold out --val images per class and evaluate on them only (the test set is not read)"},
  {"val", 100, "--tune: held-out images per class"},
  {"imbalance", 100, "largest / smallest class size"},
} do options[#options + 1] = o end
local parsed = cli.parse(arg, {name = "fast_lt", script = "experiments/fast_lt.lua",
  summary = "Long-tailed CIFAR-10 in a time budget.", options = options})
local preset = BUDGETS[parsed.budget]
if not preset then error("--budget must be 5, 15 or 60, got " .. tostring(parsed.budget), 0) end
for _, name in ipairs{"epochs", "widths", "ema", "posthoc", "tta_translate", "trivial_augment"} do -- before setup: config.json records them
  if not parsed._given[name] then parsed[name] = preset[name] end
end
if parsed.no_tta then parsed.tta = false end
if math.type(parsed.ensemble) ~= "integer" or parsed.ensemble < 1 then
  error("--ensemble must be a whole number >= 1, got " .. tostring(parsed.ensemble), 0)
end
if parsed.no_tta_translate then parsed.tta_translate = false end
if parsed.no_trivial_augment then parsed.trivial_augment = false end
if not parsed.tune and #parsed.posthoc ~= 1 then
  error("--posthoc: a test run takes one value (choose it on the validation set with --tune)", 0)
end
if parsed.no_smoothing_prior then parsed.smoothing_prior = false end
if parsed.mix_source ~= "batch" and parsed.mix_source ~= "balanced" then
  error("--mix-source must be batch or balanced, got " .. tostring(parsed.mix_source), 0)
end
local opts = experiment.setup("fast_lt", parsed)

-- ---- data: the test set is read only when it is the one reported ----
local full = data.cifar10(opts.data, "train")
local normalization = {mean = {0.4914, 0.4822, 0.4465}, std = {0.2470, 0.2435, 0.2616}}
local train = data.longtail(full, {imbalance = opts.imbalance, seed = 0, holdout = opts.tune and opts.val or nil})
local counts, classes = train:counts(), train.classes
local test, test_name
if opts.tune then
  test, test_name = train.holdout, ("validation (%d per class, held out)"):format(opts.val)
else
  test, test_name = data.cifar10(opts.data, "test"), "test"
end
full = nil
if opts.quick then
  local g = cbnet.Generator(1)
  test = test:subset(cbnet.randperm(test:size(), g):narrow(1, 1, math.min(512, test:size())))
end
if not opts.run then
  print(("CIFAR-10-LT (imbalance %g): %d training images; evaluated on the %s set (%d images) %s; "
    .. "fastnet %s, %d epochs; output in %s"):format(opts.imbalance, train:size(), test_name, test:size(),
    opts.tune and ("every %d epochs"):format(opts.eval_every) or "after the last epoch",
    table.concat(opts.widths, "/"), opts.epochs, opts.out))
end

-- ---- the budget is a time limit: each run's schedule is shortened if the
-- epochs would not fit on a slower machine (the data loading above counts;
-- 2 % is kept for writing the results). --time-limit MINUTES instead, 0: none.
-- Tuning runs (often 1 thread each, two at a time) train the whole recipe.
local time_limit
if not opts._given.time_limit and not opts.tune then
  time_limit = opts.budget * 60 * 0.98 - (report.now() - started)
elseif opts.time_limit > 0 then
  time_limit = opts.time_limit * 60
end

-- evaluation's predictions: the test-time augmentation asked for
local predict = opts.tta and (opts.tta_translate and experiment.translate_tta or experiment.flip_tta) or nil

-- ---- runs: one per seed ----
local runs = {}
for _, seed in ipairs(opts.seeds) do runs[#runs + 1] = {id = ("seed%d"):format(seed), seed = seed} end

-- --tune: the last epoch's model (its EMA; the ensemble's mean) on the
-- validation set with every --posthoc value; recorded in the run's result.json
local function evaluate_posthoc(result, model, o, out)
  local rows = {}
  for _, d in ipairs(o.posthoc) do
    local acc, per_class = experiment.evaluate(model, test, normalization, 256, nil,
      ("posthoc %g"):format(d), longtail.posthoc_adjust(counts, d), predict)
    rows[#rows + 1] = {d = d, accuracy = acc, per_class = per_class}
  end
  result.posthoc = rows
  report.write_json(out .. "/result.json", result)
end

-- one network of a run: seed, its folder and, for a test run, its time limit
local function train_network(name, seed, o, out, limit, evaluate)
  local run_opts = setmetatable({seed = seed, nesterov = true,
                                 eval_every = o.tune and o.eval_every or o.epochs},
                                {__index = o})
  return experiment.train{
    name = name, opts = run_opts, out = out, train = train, test = test, normalization = normalization,
    model = function()
      return models.fastnet{classes = #classes, widths = o.widths, logit_scale = o.logit_scale,
                            generator = cbnet.Generator(seed)}
    end,
    loss = function(logits, labels)
      return loss.logit_adjusted(logits, labels, counts, {tau = o.tau, label_smoothing = o.smoothing,
                                                          smoothing_prior = o.smoothing_prior})
    end,
    schedule = function(opt, epochs) return cbnet.optim.CosineLR(opt, {total = epochs, warmup = o.warmup}) end,
    time_limit = limit,
    evaluate = evaluate,
    cutout = o.cutout > 0 and o.cutout or nil,
    mixup = o.mixup,
    cutmix = o.cutmix,
    mix_source = o.mix_source == "balanced" and data.ClassBalancedSampler(train, {seed = seed}) or nil,
    mix_prob = o.mix_prob < 1 and o.mix_prob or nil,
    predict = predict,
    predict_views = predict == experiment.translate_tta and 6 or predict and 2 or 1,
    adjust = longtail.posthoc_adjust(counts, o.posthoc[1]),
    hparams = {seed = seed, epochs = o.epochs, widths = o.widths, lr = o.lr, wd = o.wd,
               batch_size = o.batch_size, smoothing = o.smoothing, tau = o.tau, ema = o.ema,
               logit_scale = o.logit_scale, cutout = o.cutout, trivial_augment = o.trivial_augment, mixup = o.mixup, cutmix = o.cutmix, mix_source = o.mix_source,
               mix_prob = o.mix_prob, smoothing_prior = o.smoothing_prior,
               posthoc = o.posthoc, tta = o.tta, tta_translate = o.tta_translate, ensemble = o.ensemble},
  }
end

local function train_run(r, o, out)
  if o.ensemble == 1 then
    local result, model, ema = train_network(r.id, r.seed, o, out, time_limit)
    if o.tune and #o.posthoc > 1 then
      evaluate_posthoc(result, experiment.ensemble({{model = model, ema = ema}}, predict), o, out)
    end
    return result
  end
  -- an ensemble: the networks one after another, each with an equal share of
  -- the time left (each keeps time for its share of the final evaluation:
  -- its predict_views passes over the test set), then evaluated together
  local members, history, epochs, spent = {}, {}, {}, 0
  for k = 1, o.ensemble do
    local limit = time_limit and (time_limit - spent) / (o.ensemble - k + 1)
    local result, model, ema = train_network(("%s-net%d"):format(r.id, k), r.seed + 1000 * (k - 1), o,
      ("%s/net%d"):format(out, k), limit, o.tune)
    members[k] = {model = model, ema = ema}
    for _, h in ipairs(result.history) do
      history[#history + 1] = h
      spent = spent + h.seconds
    end
    epochs[k] = result.final.epoch
  end
  local t0 = report.now()
  local ensemble = experiment.ensemble(members, predict)
  local accuracy, per_class, confusion = experiment.evaluate(ensemble, test, normalization, 256, nil,
    r.id .. " evaluating the ensemble", longtail.posthoc_adjust(counts, o.posthoc[1]))
  -- the ensemble's evaluation counts in the run's time, as the last epoch's
  history[#history].seconds = history[#history].seconds + (report.now() - t0)
  print(("%s: the ensemble of %d, %s accuracy %.4f"):format(r.id, o.ensemble, test_name, accuracy))
  local result = {name = r.id, hparams = {seed = r.seed, ensemble = o.ensemble}, history = history,
                  final = {accuracy = accuracy, per_class = per_class, confusion = confusion,
                           epoch = table.concat(epochs, "+")}}
  report.write_json(out .. "/result.json", result)
  if o.tune and #o.posthoc > 1 then evaluate_posthoc(result, ensemble, o, out) end
  return result
end

local results, failures, interrupted = experiment.sweep(runs, opts, train_run, arg)

-- ---- table ----
local last, many, medium, few, minutes, epochs_run = {}, {}, {}, {}, {}, {}
for _, r in ipairs(runs) do
  local res = results[r.id]
  if res then
    last[#last + 1] = res.final.accuracy
    local shots = longtail.shot_accuracy(res.final.per_class, counts, 100, 20)
    many[#many + 1], medium[#medium + 1], few[#few + 1] = shots.many, shots.medium, shots.few
    local seconds = 0
    for _, h in ipairs(res.history) do seconds = seconds + h.seconds end
    minutes[#minutes + 1] = seconds / 60
    epochs_run[#epochs_run + 1] = res.final.epoch
  end
end
local function pm(values, scale)
  local mean, std = longtail.mean_std(values)
  if not mean then return "n/a" end
  return ("%.2f ± %.2f"):format(mean * scale, std * scale)
end
local text = ("# fast_lt: CIFAR-10-LT-%g, budget %d min (fastnet %s, %d epochs)\n\n"
  .. "Top-1 (%%) on the %s set at the last epoch, mean ± std over seeds %s; minutes per run "
  .. "(training and evaluation); whole command %.1f min.\n\n"):format(opts.imbalance, opts.budget,
  table.concat(opts.widths, "/"), opts.epochs, test_name, table.concat(opts.seeds, ","),
  (report.now() - started) / 60)
  .. report.markdown_table({"top-1", "many", "medium", "few", "runs", "minutes per run", "epochs run"},
    {{pm(last, 100), pm(many, 100), pm(medium, 100), pm(few, 100), #last, pm(minutes, 1),
      table.concat(epochs_run, ", ")}}) .. "\n"
if opts.tune and #opts.posthoc > 1 then -- the validation accuracy of every post-hoc adjustment
  local rows = {}
  for i, d in ipairs(opts.posthoc) do
    local acc, shots_many, shots_medium = {}, {}, {}
    for _, r in ipairs(runs) do
      local row = results[r.id] and results[r.id].posthoc and results[r.id].posthoc[i]
      if row then
        local shots = longtail.shot_accuracy(row.per_class, counts, 100, 20)
        acc[#acc + 1], shots_many[#shots_many + 1], shots_medium[#shots_medium + 1] =
          row.accuracy, shots.many, shots.medium
      end
    end
    rows[#rows + 1] = {("%g"):format(d), pm(acc, 100), pm(shots_many, 100), pm(shots_medium, 100)}
  end
  text = text .. "\nPost-hoc adjustment (logits - d log prior), the last epoch on the " .. test_name
    .. " set:\n\n" .. report.markdown_table({"d", "top-1", "many", "medium"}, rows) .. "\n"
end
for _, f in ipairs(failures) do text = text .. ("- run %s FAILED: %s\n"):format(f.id, f.error) end
print(text)
report.write_atomic(opts.out .. "/results.md", text)
report.write_json(opts.out .. "/results.json", {evaluated_on = test_name, counts = counts, runs = results,
  failures = failures, minutes_total = (report.now() - started) / 60})
if interrupted then os.exit(130) end
if #failures > 0 then os.exit(1) end
