-- The seed study's data-wrangling part: long-tailed CIFAR-10 (exp profile,
-- imbalance 100, balanced test set), cross-entropy against class-balanced
-- focal loss (Cui et al., CVPR 2019) for each beta of --betas.
--
-- The model is experiments/convnet.lua's (widths 32 and 64); recipe: 10
-- epochs, batch 64, lr 1e-3 (SGD, momentum 0.9), weight decay 5e-4 (not on
-- biases and batch-norm parameters), the standard CIFAR augmentation. The
-- class-balanced loss is the sigmoid focal form of the paper's official code
-- (--loss-type), with the last bias started at -log(C - 1) as the paper does.
--
-- Run: cbnet run experiments/imbalance.lua [--help for every option]
-- Prints the training counts, the class-balanced weights of each beta, one
-- per-class accuracy row per run, each run's best accuracy, and CE against
-- the best CB-focal run; writes the same to OUT/results.md, every number to
-- OUT/results.json, OUT/learning_curves.svg, OUT/per_class.svg, and per run
-- OUT/runs/<run>/{metrics.jsonl, result.json, best.safetensors, checkpoint.safetensors}.
local cbnet = require "cbnet"
local cli = require "cbnet.cli"
local data = require "cbnet.data"
local experiment = require "cbnet.experiment"
local loss = require "cbnet.loss"
local report = require "cbnet.report"

local options = experiment.standard_options{epochs = 10, batch_size = 64, lr = 1e-3, wd = 5e-4}
for _, o in ipairs{
  {"betas", {0.9999, 0.9, 0.5, 0.1}, "betas of the class-balanced runs"},
  {"gamma", 1.0, "focal loss gamma"},
  {"loss-type", "focal", "class-balanced loss: focal, sigmoid or softmax"},
  {"imbalance", 100, "largest / smallest class size of the long tail"},
  {"profile", "exp", "long-tail profile: exp or step"},
  {"widths", {32, 64}, "channels of the two convolutions"},
} do options[#options + 1] = o end
local opts = experiment.setup("imbalance", cli.parse(arg, {name = "imbalance",
  script = "experiments/imbalance.lua",
  summary = "Cross-entropy against class-balanced focal loss on long-tailed CIFAR-10.",
  options = options}))

local full, test, dataset, normalization = experiment.load_data(opts)
local train = data.longtail(full, {profile = opts.profile, imbalance = opts.imbalance, seed = opts.seed})
full = nil
local counts, classes = train:counts(), train.classes
local channels, side = train.images:size(2), train.images:size(3)

-- ---- the runs ----

local runs = {{id = "ce", label = "CE"}}
for _, beta in ipairs(opts.betas) do
  runs[#runs + 1] = {id = ("cb-%s-beta-%s"):format(opts.loss_type, beta), beta = beta,
                     label = ("CB %s beta=%s"):format(opts.loss_type, beta),
                     weights = loss.cb_weights(counts, beta)}
end

local function train_run(r, o, out)
  local sigmoid = r.beta and opts.loss_type ~= "softmax"
  return experiment.train{
    name = r.id, opts = o, out = out, train = train, test = test, normalization = normalization,
    model = function()
      local model = experiment.model(o, channels, side, #classes, o.widths)
      if sigmoid then loss.init_sigmoid_bias(model.linear or model:get(#model), #classes) end
      return model
    end,
    -- the official code leaves the last layer's bias out of weight decay
    param_groups = function(model) return cbnet.optim.split_decay(model, o.wd) end,
    loss = r.beta and function(logits, labels)
      return loss.class_balanced(logits, labels, r.weights, {type = o.loss_type, gamma = o.gamma})
    end or function(logits, labels) return cbnet.F.cross_entropy(logits, labels) end,
    hparams = {epochs = o.epochs, learning_rate = o.lr, reg = o.wd, batch_size = o.batch_size,
               beta = r.beta, gamma = r.beta and o.gamma or nil, loss = r.label},
  }
end

-- ---- before training: the data and the weights ----

local lines = {}
local function say(text)
  print(text)
  lines[#lines + 1] = text
end

if not opts.run then
  say(("# Long-tailed %s: CE against class-balanced %s loss\n"):format(dataset, opts.loss_type))
  say(("%s, %s profile, imbalance %g: %d training images (test set balanced, %d images).\n"):format(
    dataset, opts.profile, opts.imbalance, train:size(), test:size()))
  local header, count_row = {"class"}, {"training images"}
  for c, name in ipairs(classes) do header[c + 1], count_row[c + 1] = ("%d %s"):format(c - 1, name), counts[c] end
  say(report.markdown_table(header, {count_row}) .. "\n")
  say("Class-balanced weights (1 - beta) / (1 - beta^n_c), normalised to sum to " .. #classes .. ":\n")
  local weight_rows = {}
  for _, r in ipairs(runs) do
    if r.beta then
      local row = {("beta=%s"):format(r.beta)}
      for c, w in ipairs(r.weights:totable()) do row[c + 1] = w end
      weight_rows[#weight_rows + 1] = row
    end
  end
  header[1] = "beta"
  say(report.markdown_table(header, weight_rows) .. "\n")
  print(("training %d runs%s; output in %s"):format(#runs, opts.jobs > 1 and
    (", %d at a time"):format(opts.jobs) or "", opts.out))
end

local results, failures, interrupted = experiment.sweep(runs, opts, train_run, arg)

-- ---- the tables ----

local best_cb -- the class-balanced run with the best accuracy
for _, r in ipairs(runs) do
  local res = results[r.id]
  if r.beta and res and (not best_cb or res.best.accuracy > results[best_cb.id].best.accuracy) then best_cb = r end
end
say("\n## Per-class test accuracy of each run (at its best epoch)\n")
say(report.best_epoch_table(runs, results, classes) .. "\n")
say("## Best accuracy of each run\n")
for _, r in ipairs(runs) do
  local res = results[r.id]
  if res then
    local h = res.hparams
    say(("- %s: Best Accuracy: %.4f (best epoch: %d of %d, learning_rate: %g, reg: %g%s)"):format(r.label,
      res.best.accuracy, res.best.epoch, h.epochs, h.learning_rate, h.reg, r.beta and (", beta=" .. r.beta) or ""))
  end
end
if results.ce and best_cb then
  say(("\n## CE against the best class-balanced run (%s)\n"):format(best_cb.label))
  say(report.comparison_table("CE", results.ce, best_cb.label, results[best_cb.id], classes) .. "\n")
end
for _, f in ipairs(failures) do say(("- run %s FAILED: %s"):format(f.id, f.error)) end

-- ---- files ----

report.write_atomic(opts.out .. "/results.md", table.concat(lines, "\n") .. "\n")
local weights = {}
for _, r in ipairs(runs) do if r.beta then weights[tostring(r.beta)] = r.weights:totable() end end
local options_used = {}
for k, v in pairs(opts) do if k:sub(1, 1) ~= "_" then options_used[k] = v end end
report.write_json(opts.out .. "/results.json", {dataset = dataset, classes = classes, train_counts = counts,
  test_size = test:size(), cb_weights = weights, runs = results, failures = failures,
  best_cb = best_cb and best_cb.id, options = options_used})
report.learning_curves(opts.out .. "/learning_curves.svg",
  ("Test accuracy on %s (long-tailed training)"):format(dataset), runs, results)
if results.ce and best_cb then
  report.per_class_bars(opts.out .. "/per_class.svg",
    "Per-class test accuracy: CE against the best class-balanced run", classes,
    {{name = "CE", values = results.ce.best.per_class},
     {name = best_cb.label, values = results[best_cb.id].best.per_class}},
    "class (n = training images, most to fewest)", counts)
end
print(("wrote %s/{results.md, results.json, learning_curves.svg, per_class.svg, runs/}"):format(opts.out))
if interrupted then os.exit(130) end
if #failures > 0 then os.exit(1) end
