--- cbnet.experiment: what the seed study's scripts share: standard options,
-- output folders, the default dataset, the reference CNN, a training run with
-- per-epoch metrics, checkpoints and resume, evaluation per class, and sweeps
-- of independent runs (in this process or in --jobs parallel processes).
local cbnet = require "cbnet"
local cli = require "cbnet.cli"
local checkpoint = require "cbnet.checkpoint"
local data = require "cbnet.data"
local json = require "cbnet.json"
local launch = require "cbnet.launch"
local report = require "cbnet.report"

local experiment = {}

--- The options every experiment takes (recipe defaults given by the script).
function experiment.standard_options(defaults)
  return {
    {"data", cli.NONE, "the dataset's folder or a folder holding it (else CBNET_DATA, the search list; Fashion-MNIST if none)",
     type = "string", shown = "searched"},
    {"out", cli.NONE, "output folder", type = "string", shown = "runs/<experiment>-<time>"},
    {"model", defaults.model or "convnet", "the network (cbnet.models): resnet20, resnet32, resnet44, resnet56, convnet or fastnet"},
    {"epochs", defaults.epochs, "training epochs"},
    {"batch-size", defaults.batch_size, "batch size"},
    {"lr", defaults.lr, "learning rate", type = "number"},
    {"optimizer", defaults.optimizer or "sgd", "sgd (with momentum) or adam"},
    {"momentum", defaults.momentum or 0.9, "SGD momentum", type = "number"},
    {"schedule", defaults.schedule or "none", "learning-rate schedule: none, cosine (to 0 over the epochs) or step (linear warm-up, x0.01 at 80% and 90% of the epochs)"},
    {"wd", defaults.wd, "weight decay (not on biases and batch-norm parameters unless --wd-norms)", type = "number"},
    {"wd-norms", defaults.wd_norms or false, "weight decay on every parameter, biases and batch norm's too", type = "flag"},
    {"no-wd-norms", false, "no weight decay on biases and batch norm's parameters"},
    {"time-limit", 0, "minutes each run may take, training and evaluation (0: no limit): when the "
     .. "epochs so far say the run would end later, its schedule is shortened to the epochs that fit "
     .. "(the metrics record planned_epochs)", type = "number"},
    {"eval-every", 1, "evaluate (test set, and validation set) every N epochs and after the last; the best epoch is chosen among those"},
    {"sync-bn", false, "under mpirun: batch-norm statistics over every rank's batch, as one process with the whole batch (default: each rank its own)"},
    {"ema", defaults.ema or 0, "decay of an exponential moving average of the weights (e.g. 0.999), which is then what is evaluated and saved as best (0: off)", type = "number"},
    {"seed", defaults.seed or 0, "random seed (model, data order, augmentation)"},
    {"threads", cbnet.get_num_threads(), "threads"},
    {"augment", true, "CIFAR augmentation: pad-4 crop, flip (normalisation always)", type = "flag"},
    {"no-augment", false, "train without crop and flip"},
    {"trivial-augment", false, "with the augmentation: TrivialAugmentWide, one random image operation per training image (Mueller & Hutter 2021)"},
    {"quick", false, "smoke run: 2 epochs of 4 batches on a subset, seconds long"},
    {"jobs", 1, "runs of a sweep at once, in separate processes (threads divided)"},
    {"launcher", "local", "where a sweep's runs go: local (--jobs processes here), slurm (one job "
     .. "array; OUT must be on a filesystem every node shares) or parallel (GNU parallel, --hosts)"},
    {"sbatch", cli.NONE, 'more sbatch options for --launcher slurm, e.g. "--partition=cpu --time=4:00:00"',
     type = "string"},
    {"wait", false, "--launcher slurm: wait for the array to end and write the tables (else merge "
     .. "later with --resume OUT)"},
    {"hosts", cli.NONE, "--launcher parallel: ssh logins, comma-separated (GNU parallel's --sshlogin)",
     type = "string"},
    {"resume", cli.NONE, "continue the interrupted run (or sweep) in this output folder", type = "string"},
    {"sweep", cli.NONE, 'a grid of runs: "batch-size=64,128 lr=1e-3,1e-4" trains every combination '
     .. "(a list option takes lists separated by /: widths=16,32/32,64)", type = "string"},
    {"run", cli.NONE, "internal: run only this run of a sweep", type = "string", hidden = true},
  }
end

-- ---- set-up ----

local MEANS = {
  ["CIFAR-10"] = {mean = {0.4914, 0.4822, 0.4465}, std = {0.2470, 0.2435, 0.2616}},
  ["Fashion-MNIST"] = {mean = {0.2860}, std = {0.3530}},
}

--- Loads the default dataset: CIFAR-10 from --data or the search list, else
-- Fashion-MNIST from Debian's package (saying so). Returns train, test, and
-- the dataset's name and normalisation. With --quick the test set is a
-- random 512 of its images.
function experiment.load_data(opts)
  local train, test, name, normalization = experiment.find_data(opts)
  if opts.quick then -- a random 512 of the test set keeps evaluation short
    local g = cbnet.Generator(opts.seed + 1)
    test = test:subset(cbnet.randperm(test:size(), g):narrow(1, 1, math.min(512, test:size())))
  end
  return train, test, name, normalization
end

function experiment.find_data(opts)
  local ok, train = pcall(data.cifar10, opts.data, "train")
  if ok then
    return train, data.cifar10(opts.data, "test"), "CIFAR-10", MEANS["CIFAR-10"]
  end
  if opts.data then error(train, 0) end -- a path was given: its error stands
  local fm_ok, fm = pcall(data.fashion_mnist, "train")
  if not fm_ok then
    error("no dataset found.\n" .. tostring(train) .. "\n\nFashion-MNIST (the fallback) is missing too: "
      .. tostring(fm), 0)
  end
  print("CIFAR-10 was not found; running the same study on Fashion-MNIST (28x28x1) from "
    .. "Debian's dataset-fashion-mnist instead. (Use --data or CBNET_DATA for CIFAR-10.)")
  return fm, data.fashion_mnist("test"), "Fashion-MNIST", MEANS["Fashion-MNIST"]
end

local LAUNCH_OPTIONS = {resume = true, jobs = true, threads = true, launcher = true, sbatch = true,
                        wait = true, hosts = true}

--- Prepares the output folder and writes config.json; on --resume, reads
-- the options of the run being resumed instead (the folder's config.json),
-- except how to run it (--jobs, --threads, ...) and the options named in
-- report_options (ones that change only the tables, e.g. thresholds) when
-- the resuming command gives them.
function experiment.setup(name, opts, report_options)
  if opts.resume then
    local saved = report.read_json(opts.resume .. "/config.json")
    if not saved then error(("--resume: %s/config.json not found"):format(opts.resume), 0) end
    local own = {}
    for _, k in ipairs(report_options or {}) do own[k] = opts._given[k] end
    for k, v in pairs(saved) do
      -- how to run (not what to run) is the resuming command's own choice
      if not LAUNCH_OPTIONS[k] and not own[k] then opts[k] = v end
    end
    opts.out = opts.resume
  end
  if not opts.out then
    opts.out = ("runs/%s-%s"):format(name, os.date("%Y%m%d-%H%M%S"))
  end
  report.mkdir(opts.out)
  cbnet.set_num_threads(opts.threads)
  if opts.resume then return opts end -- the saved config.json is the run's, unchanged
  if opts.no_augment then opts.augment = false end
  if opts.no_wd_norms then opts.wd_norms = false end
  if opts.quick and not opts._given.epochs then opts.epochs = 2 end
  if not opts.run then
    local config = {}
    for k, v in pairs(opts) do if k:sub(1, 1) ~= "_" then config[k] = v end end
    config.experiment = name
    config.provenance = experiment.provenance()
    report.write_json(opts.out .. "/config.json", config)
  end
  return opts
end

--- Where a run comes from: the exact command, the cbnet version and the git
-- commit of the script's repository (with "+changes" when its files differ
-- from that commit), for config.json.
function experiment.provenance()
  local command = arg and cli.self_command(arg) or "?"
  for i = 1, #(arg or {}) do command = command .. " '" .. tostring(arg[i]):gsub("'", "'\\''") .. "'" end
  local dir = (arg and arg[0] or "."):match("^(.*)/[^/]*$") or "."
  local function git(args)
    local p = io.popen(("git -C '%s' %s 2>/dev/null"):format(dir:gsub("'", "'\\''"), args))
    local text = p:read("a")
    p:close()
    return text
  end
  local commit = git("rev-parse HEAD"):match("%x+")
  if commit and git("status --porcelain --untracked-files=no") ~= "" then commit = commit .. "+changes" end
  return {command = command, cbnet = cbnet.version, commit = commit or "unknown",
          date = os.date("!%Y-%m-%dT%H:%M:%SZ"), machine = experiment.machine()}
end

--- The machine a run's times belong to: the CPU's name (Linux's /proc/cpuinfo,
-- with its family and model), cbnet's threads, convolution path and OpenBLAS kernel.
function experiment.machine()
  local cpu
  local f = io.open("/proc/cpuinfo")
  if f then
    local text = f:read("a")
    f:close()
    cpu = text:match("model name%s*:%s*([^\n]-)%s*\n")
    -- a virtual machine's name can be generic: family and model tell the kind
    local family, model = text:match("cpu family%s*:%s*(%d+)"), text:match("\nmodel%s*:%s*(%d+)")
    if cpu and family and model then cpu = ("%s (family %s, model %s)"):format(cpu, family, model) end
  end
  local info = cbnet.info()
  return {cpu = cpu or "unknown", threads = cbnet.get_num_threads(), conv = cbnet.conv_path(),
          blas_kernel = info.blas_kernel, blas_kernel_source = info.blas_kernel_source}
end

--- The network --model names, for data of in_channels x image_size^2 and
-- `classes` classes; widths and second_pool shape the convnet.
function experiment.model(opts, in_channels, image_size, classes, widths, second_pool)
  return require("cbnet.models").get(opts.model, {in_channels = in_channels, image_size = image_size,
    classes = classes, widths = widths, second_pool = second_pool})
end

--- The reference CNN of the seed study (cbnet.models.convnet): conv3x3 + BN +
-- ReLU + maxpool2, a second conv3x3 + BN + ReLU (+ maxpool2 unless
-- second_pool is false), then a linear classifier.
function experiment.convnet(in_channels, image_size, classes, widths, second_pool)
  return require("cbnet.models").convnet{in_channels = in_channels, image_size = image_size,
    classes = classes, widths = widths, second_pool = second_pool}
end

-- ---- evaluation ----

--- Accuracy overall and per class (a Lua list, class c at c + 1) on ds, and
-- the confusion matrix (a list of rows: confusion[true + 1][predicted + 1]
-- counts). label (optional) names the progress line shown on a terminal;
-- adjust (optional) maps the logits before the argmax (post-hoc logit
-- adjustment); predict (optional, function(model, images) -> logits) stands
-- for model(images), e.g. experiment.flip_tta.
function experiment.evaluate(model, ds, normalization, batch_size, max_batches, label, adjust, predict)
  model:eval()
  local classes = ds:num_classes()
  local confusion = cbnet.zeros(classes * classes)
  local loader = data.Loader(ds, {batch_size = batch_size or 256, transform = normalization})
  local progress = report.progress(label or "evaluating", max_batches or #loader)
  cbnet.no_grad(function()
    for images, labels in loader:batches(0) do
      local logits = predict and predict(model, images) or model(images)
      if adjust then logits = adjust(logits) end
      local cell = labels * classes + logits:argmax(2)
      confusion:scatter_add_(1, cell, cbnet.ones(labels:size(1)))
      progress:update(labels:size(1))
      if max_batches and progress.done >= max_batches then break end
    end
  end)
  progress:finish()
  model:train()
  local matrix, per_class, correct, total = confusion:view(classes, classes):long():totable(), {}, 0, 0
  for c = 1, classes do
    local row_total = 0
    for _, n in ipairs(matrix[c]) do row_total = row_total + n end
    per_class[c] = row_total > 0 and matrix[c][c] / row_total or 0 / 0
    correct, total = correct + matrix[c][c], total + row_total
  end
  return correct / math.max(total, 1), per_class, matrix
end

--- Test-time augmentation for evaluate's predict: the mean of the logits of
-- the images and of their mirror images (left-right).
function experiment.flip_tta(model, images)
  return (model(images) + model(images:flip(4))) * 0.5
end

--- An ensemble for experiment.evaluate: a model-like object (eval, train,
-- and a call on images) whose logits are the mean of its members' logits,
-- each member {model = m[, ema = its optim.EMA]} evaluated through
-- predict(model, images) (e.g. experiment.flip_tta; nil: the model's own
-- call) on its moving average's weights when it has one.
function experiment.ensemble(members, predict)
  assert(#members > 0, "ensemble: no members")
  local ensemble = {members = members}
  function ensemble.eval() for _, m in ipairs(members) do m.model:eval() end end
  function ensemble.train() for _, m in ipairs(members) do m.model:train() end end
  local function logits(m, images)
    if predict then return predict(m.model, images) end
    return m.model(images)
  end
  return setmetatable(ensemble, {__call = function(_, images)
    local sum
    for _, m in ipairs(members) do
      local l = m.ema and m.ema:apply(logits, m, images) or logits(m, images)
      sum = sum and sum + l or l
    end
    return sum * (1 / #members)
  end})
end

--- experiment.translated(images, dy, dx): N x C x H x W images moved by dy
-- rows (down) and dx columns (right), zeros (the mean colour, after
-- normalisation) coming in at the edges; for test-time views.
function experiment.translated(images, dy, dx)
  local n, c, h, w = table.unpack(images:size())
  local function moved(x, dim, d, size)
    if d == 0 then return x end
    local rest = x:narrow(dim, d > 0 and 1 or 1 - d, size - math.abs(d))
    local shape = x:size()
    shape[dim] = math.abs(d)
    local zeros = cbnet.zeros(table.unpack(shape))
    return cbnet.cat(d > 0 and {zeros, rest} or {rest, zeros}, dim)
  end
  return moved(moved(images, 4, dx, w), 3, dy, h)
end

--- Test-time augmentation with translations (airbench's mirror-translate,
-- with zeros for its reflection padding): half flip_tta of the images, a
-- quarter each flip_tta of the images moved one pixel down-right and one
-- pixel up-left. Six forward passes.
function experiment.translate_tta(model, images)
  local flip, moved = experiment.flip_tta, experiment.translated
  return flip(model, images) * 0.5 + flip(model, moved(images, 1, 1)) * 0.25 + flip(model, moved(images, -1, -1)) * 0.25
end

-- Beta(alpha, alpha) from two Gamma draws (Marsaglia and Tsang), for mixup.
local function gamma_draw(shape, g)
  if shape < 1 then return gamma_draw(shape + 1, g) * g:random() ^ (1 / shape) end
  local d = shape - 1 / 3
  local c = 1 / math.sqrt(9 * d)
  while true do
    local x = cbnet.randn(1, g):item()
    local v = (1 + c * x) ^ 3
    if v > 0 and math.log(g:random()) < 0.5 * x * x + d - d * v + d * math.log(v) then return d * v end
  end
end

function experiment.beta_draw(alpha, g)
  local a, b = gamma_draw(alpha, g), gamma_draw(alpha, g)
  return a / (a + b)
end

--- CutMix (Yun et al. 2019): images (N x C x H x W) with a box of each
-- replaced by the same box of source (the batch shuffled, or other images);
-- the box covers about 1 - lambda of the image, centred anywhere (clipped at
-- the borders), drawn from g. Returns the mixed images and lambda corrected
-- to the box's true area (the share of each image that is its own).
function experiment.cutmix(images, source, lambda, g)
  local h, w = images:size(3), images:size(4)
  local ratio = math.sqrt(1 - lambda)
  local cy, cx = math.floor(g:random() * h), math.floor(g:random() * w)
  local half_h, half_w = math.floor(h * ratio / 2), math.floor(w * ratio / 2)
  local y0, y1 = math.max(cy - half_h, 0), math.min(cy + half_h, h)
  local x0, x1 = math.max(cx - half_w, 0), math.min(cx + half_w, w)
  local mixed = images:clone()
  if y1 > y0 and x1 > x0 then
    local box = function(t) return t:narrow(3, y0 + 1, y1 - y0):narrow(4, x0 + 1, x1 - x0) end
    box(mixed):copy_(box(source))
  end
  return mixed, 1 - (y1 - y0) * (x1 - x0) / (h * w)
end

-- ---- one training run, in its steps ----

--- The optimizer that opts ask for (--optimizer sgd|adam, --lr, --momentum;
-- a script may set opts.nesterov), over the parameter groups given (default:
-- weight decay on the weights, not on biases and norms, unless
-- opts.wd_norms). Its learning-rate schedule is experiment.schedule's.
function experiment.optimizer(model, opts, groups)
  if not groups and opts.wd_norms then groups = {{params = model:parameters(), weight_decay = opts.wd}} end
  groups = groups or cbnet.optim.split_decay(model, opts.wd)
  local opt
  if opts.optimizer == "adam" then opt = cbnet.optim.Adam(groups, {lr = opts.lr})
  elseif opts.optimizer == "sgd" then
    opt = cbnet.optim.SGD(groups, {lr = opts.lr, momentum = opts.momentum, nesterov = opts.nesterov})
  else error("--optimizer must be sgd or adam, got " .. tostring(opts.optimizer), 0) end
  return opt
end

--- The learning-rate schedule opts.schedule names (none: nil) for a run of
-- `epochs` epochs.
function experiment.schedule(opt, opts, epochs)
  if opts.schedule == "cosine" then return cbnet.optim.CosineLR(opt, {total = epochs})
  elseif opts.schedule == "step" then
    -- LDAM-DRW's: warm-up over 5/200 of the epochs, x0.01 at 160/200, x0.0001 at 180/200
    local milestones, warmup = require("cbnet.longtail").schedule(epochs)
    return cbnet.optim.MultiStepLR(opt, {milestones = milestones, gamma = 0.01, warmup = warmup})
  elseif opts.schedule ~= "none" then
    error("--schedule must be none, cosine or step, got " .. tostring(opts.schedule), 0)
  end
end

--- The epochs a run with a time limit can have: after `epoch` of `epochs`,
-- `elapsed` seconds spent, `train_seconds` the mean training time of an
-- epoch and `eval_seconds` what the last epoch's evaluation will take, the
-- largest total that ends within `limit` seconds (never more than epochs,
-- never fewer than epoch: at worst this epoch is the last).
function experiment.fit_epochs(epoch, epochs, elapsed, train_seconds, eval_seconds, limit)
  local left = limit - elapsed - eval_seconds
  local more = train_seconds > 0 and math.floor(left / train_seconds) or epochs
  return math.max(epoch, math.min(epochs, epoch + more))
end

--- One epoch of training: every batch of loader (at most max_batches),
-- loss_fn(logits, labels, epoch) minimised by opt. Returns the mean loss,
-- the training accuracy and images/s. label names the run in the progress
-- line. With mixup = {alpha, generator} each batch is mixed with a shuffle
-- of itself (Zhang et al. 2018): x = l x + (1 - l) x[perm], l ~ Beta(alpha,
-- alpha), loss = l loss(y) + (1 - l) loss(y[perm]); with mixup.cutmix, a box
-- of x[perm] pasted into x instead (experiment.cutmix), l its complement, and
-- with mixup.source (a Loader) the boxes come from its batches instead (CMO:
-- a class-balanced source pastes the rare classes into the frequent ones'
-- images); mixup.prob: the share of batches mixed (1 unless given).
function experiment.train_epoch(model, loader, loss_fn, opt, epoch, label, max_batches, mixup, sync,
                                after_step)
  local progress = report.progress(label, max_batches or #loader)
  local loss_sum, hits, seen = 0, 0, 0
  local source = mixup and mixup.source and mixup.source:batches(epoch)
  for images, labels in loader:batches(epoch) do
    local logits, loss
    local other_images, other_labels
    local mixing = mixup and (not mixup.prob or mixup.generator:random() < mixup.prob)
    if mixing and source then -- a source batch only for the batches mixed
      other_images, other_labels = source()
      if not (other_images and other_images:size(1) >= labels:size(1)) then
        mixing = false -- the source ran short (a smaller epoch than the loader's): this batch unmixed
      end
    end
    if mixing then
      local lambda = experiment.beta_draw(mixup.alpha, mixup.generator)
      if source then
        other_images = other_images:narrow(1, 1, labels:size(1))
        other_labels = other_labels:narrow(1, 1, labels:size(1))
      else
        local perm = cbnet.randperm(labels:size(1), mixup.generator)
        other_images, other_labels = images:index_select(1, perm), labels:index_select(1, perm)
      end
      local mixed
      if mixup.cutmix then mixed, lambda = experiment.cutmix(images, other_images, lambda, mixup.generator)
      else mixed = images * lambda + other_images * (1 - lambda) end
      logits = model(mixed)
      loss = loss_fn(logits, labels, epoch) * lambda + loss_fn(logits, other_labels, epoch) * (1 - lambda)
    else
      logits = model(images)
      loss = loss_fn(logits, labels, epoch)
    end
    opt:zero_grad()
    loss:backward()
    if sync then sync() end -- data-parallel: the gradients averaged over the ranks
    opt:step()
    if after_step then after_step() end
    local value = loss:item()
    if value ~= value then error(("%s: the loss became NaN"):format(label), 0) end
    loss_sum = loss_sum + value * labels:size(1)
    hits = hits + logits:argmax(2):eq(labels):float():sum():item()
    seen = seen + labels:size(1)
    progress:update(labels:size(1), value)
    if max_batches and progress.done >= max_batches then break end
  end
  local speed = progress:finish()
  return loss_sum / math.max(seen, 1), hits / math.max(seen, 1), speed
end

-- The state a run resumes from: the epoch to start at, the history and the
-- best epoch so far (fresh when there is no checkpoint). metrics.jsonl is cut
-- back to the checkpoint's epochs, since a run killed between writing an
-- epoch's metrics and its checkpoint trains that epoch again.
local function resume_state(spec, ckpt_path, metrics_path, model, opt, writer, ema)
  if not (spec.opts.resume and report.read_file(ckpt_path)) then
    return 1, {}, {accuracy = -1}
  end
  local meta = checkpoint.load(ckpt_path, {model = model, optimizer = opt, ema = ema})
  local kept = {}
  for _, record in ipairs(report.read_metrics(metrics_path)) do
    if record.epoch <= meta.epoch then kept[#kept + 1] = json.encode(record) .. "\n" end
  end
  if writer then report.write_atomic(metrics_path, table.concat(kept)) end
  print(("%s: resuming after epoch %d"):format(spec.name, meta.epoch))
  return meta.epoch + 1, meta.extra.history, meta.extra.best
end

-- After each epoch: the metrics line first, then the best weights (when
-- this epoch is the best so far: by validation accuracy when there is a
-- validation set, else by test accuracy), then the checkpoint a resume
-- starts from. Returns the best epoch so far.
local function save_epoch(out, metrics, record, model, opt, history, best, confusion, ema)
  metrics:log(record)
  local score = record.val_accuracy or record.test_accuracy -- nil: not evaluated this epoch
  if score and score > (best.score or best.accuracy) then
    best = {accuracy = record.test_accuracy, epoch = record.epoch, per_class = record.per_class,
            score = score, confusion = confusion}
    local function save_best() checkpoint.save_weights(out .. "/best.safetensors", model) end
    if ema then ema:apply(save_best) else save_best() end -- the weights that were evaluated
  end
  checkpoint.save(out .. "/checkpoint.safetensors", {model = model, optimizer = opt, ema = ema,
    epoch = record.epoch, extra = {history = history, best = best}})
  return best
end

--- The data-parallel context when the process runs under mpirun with more
-- than one rank: {mpi, rank, size}; nil otherwise (and when cbnet.mpi is
-- missing while mpirun asks for ranks, an error says how to build it).
function experiment.distributed()
  local size = tonumber(os.getenv("OMPI_COMM_WORLD_SIZE") or "1") or 1
  if size <= 1 then return nil end
  if not experiment._distributed then
    local ok, mpi = pcall(require, "cbnet.mpi")
    if not ok then
      error("running under mpirun with " .. size .. " ranks, but cbnet.mpi is not built "
        .. "(apt-get install libopenmpi-dev, then make): " .. tostring(mpi), 0)
    end
    local rank, n = mpi.init()
    experiment._distributed = {mpi = mpi, rank = rank, size = n}
  end
  return experiment._distributed
end

-- Averages every parameter's gradient over the ranks: one flat buffer, one
-- allreduce (the sum), divided by the number of ranks.
local function gradient_sync(model, dist)
  local params = model:parameters()
  return function()
    local parts = {}
    for _, p in ipairs(params) do
      if p.grad then parts[#parts + 1] = p.grad:contiguous():view(-1) end
    end
    if #parts == 0 then return end
    local flat = cbnet.cat(parts)
    dist.mpi.allreduce_sum_(flat)
    flat = flat / dist.size
    local at = 1
    cbnet.no_grad(function()
      for _, p in ipairs(params) do
        if p.grad then
          local n = p.grad:numel()
          p.grad = flat:narrow(1, at, n):view(p.grad:size()):clone()
          at = at + n
        end
      end
    end)
  end
end

-- The training images' transform: normalization, and with opts.augment the
-- crop, flip, cutout and TrivialAugment the spec asks for.
local function train_transform(spec, opts)
  local transform = {mean = spec.normalization.mean, std = spec.normalization.std}
  if opts.augment then
    transform.crop_padding, transform.flip, transform.cutout = (spec.crop_padding or 4), true, spec.cutout
    transform.trivial_augment = spec.trivial_augment or opts.trivial_augment
  end
  return transform
end

-- experiment.train_epoch's mixup argument from spec.mixup / spec.cutmix
-- (alpha), spec.mix_prob and spec.mix_source (a sampler), or nil.
local function mix_settings(spec, opts, transform, batch_size, dist)
  if (spec.mixup or 0) > 0 and (spec.cutmix or 0) > 0 then error("mixup or cutmix, not both", 0) end
  local alpha = (spec.mixup or 0) > 0 and spec.mixup or spec.cutmix
  if not (alpha and alpha > 0) then return nil end
  return {alpha = alpha, cutmix = (spec.cutmix or 0) > 0, generator = cbnet.Generator(opts.seed + 7),
    prob = spec.mix_prob, source = spec.mix_source and data.Loader(spec.train, {batch_size = batch_size,
      transform = transform, sampler = spec.mix_source, seed = opts.seed + 13 + (dist and dist.rank or 0)})}
end

-- The epochs a time-limited run can have after `epoch`, from the seconds
-- spent before it and each epoch's training time so far (experiment.fit_epochs);
-- under mpirun every rank takes rank 0's plan.
local function replan(spec, dist, epoch, epochs, elapsed, train_seconds, eval_seconds, time_limit)
  -- the last epoch's evaluation: as long as one measured, else guessed from the training
  -- speed (a forward pass costs about a third of a training step; test-time augmentation
  -- x spec.predict_views, 2 unless given)
  local views = spec.predict_views or (spec.predict and 2 or 1)
  local evaluated_images = (spec.test:size() + (spec.val and spec.val:size() or 0)) * views
  local this_epoch = train_seconds[#train_seconds]
  local guess = eval_seconds or this_epoch * evaluated_images / (3 * spec.train:size())
  local mean = 0
  for _, t in ipairs(train_seconds) do mean = mean + t / #train_seconds end
  local fit = experiment.fit_epochs(epoch, epochs, elapsed + this_epoch, mean, guess, time_limit)
  if dist then
    local plan = cbnet.tensor({dist.rank == 0 and fit or 0}, "float32")
    dist.mpi.allreduce_sum_(plan)
    fit = math.floor(plan:item() + 0.5)
  end
  return fit
end

-- The test set's accuracy, per-class accuracy and confusion matrix, and the
-- validation set's accuracy if the spec has one, through `evaluated` (the
-- EMA's weights when there is one).
local function evaluate_sets(spec, model, transform, label, evaluated)
  local norm = {mean = transform.mean, std = transform.std}
  local test_acc, per_class, confusion = evaluated(experiment.evaluate, model, spec.test, norm, 256,
    nil, label .. " evaluating", spec.adjust, spec.predict)
  local val_acc = spec.val and evaluated(experiment.evaluate, model, spec.val, norm, 256, nil,
    label .. " validating", spec.adjust, spec.predict)
  return test_acc, per_class, confusion, val_acc or nil
end

--- Trains one run; spec: name, model (a function returning a fresh model),
-- loss (function(logits, labels, epoch)), train, test (datasets),
-- normalization, opts (the parsed options), out (this run's folder), and
-- optionally: param_groups (function(model) -> groups), schedule
-- (function(optimizer, epochs) -> a schedule over that many epochs, instead
-- of --schedule), time_limit (seconds, instead of --time-limit: when the
-- epochs would end later, the run is shortened to those that fit and the
-- schedule made again for them; epoch-numbered switches such as a sampler's
-- or a loss's keep their epochs), sampler
-- (function(epoch) -> a sampler for that epoch, or nil to shuffle), mixup
-- (alpha), cutmix (alpha; mixup or cutmix, not both), mix_source (a sampler
-- over train: the other images of mixup / cutmix come from it, e.g.
-- data.ClassBalancedSampler for CMO), mix_prob (the share of batches
-- mixed), val (a dataset: the best epoch is chosen on it, not on the test
-- set), adjust (function(logits) -> logits, applied before predictions),
-- predict (function(model, images) -> logits at evaluation, e.g.
-- experiment.flip_tta; predict_views: its forward passes per image, 2 unless
-- given, for a time limit's estimate), crop_padding (4), cutout (a square's side, 0: none),
-- trivial_augment (true: data.cifar_augmentation's),
-- evaluate (false: no evaluation at all, e.g. a member of an ensemble that is
-- evaluated as a whole; a time limit still keeps time for predict_views
-- passes over the test set), hparams (recorded with the result).
-- Writes out/metrics.jsonl, out/checkpoint.safetensors after every epoch,
-- out/best.safetensors (weights of the best epoch) and out/result.json at
-- the end (last and best epoch, per-class accuracy, confusion matrices);
-- resumes from out/checkpoint.safetensors. Returns the result, the model and
-- (with --ema) its optim.EMA, whose apply() evaluates what was evaluated.
function experiment.train(spec)
  local opts, out = spec.opts, spec.out
  report.mkdir(out)
  cbnet.manual_seed(opts.seed)
  local model = spec.model()
  if opts.sync_bn then
    for _, m in ipairs(model:modules()) do
      if m.name == "BatchNorm1d" or m.name == "BatchNorm2d" then m.sync = true end
    end
  end
  local opt = experiment.optimizer(model, opts, spec.param_groups and spec.param_groups(model))
  -- spec.schedule(opt, epochs) or the one --schedule names, remade when a time limit shortens the run
  local function make_schedule(epochs)
    if spec.schedule then return spec.schedule(opt, epochs) end
    return experiment.schedule(opt, opts, epochs)
  end
  local transform = train_transform(spec, opts)
  -- data-parallel (under mpirun): each rank takes its shard of the same
  -- per-epoch permutation, batch_size / ranks images a step; gradients are
  -- averaged; batch-norm statistics stay local unless --sync-bn; rank 0 alone
  -- evaluates and writes
  local dist = experiment.distributed()
  local batch_size = opts.batch_size
  if dist then
    if batch_size % dist.size ~= 0 then
      error(("--batch-size %d does not split over %d ranks"):format(batch_size, dist.size), 0)
    end
    batch_size = batch_size // dist.size
  end
  local function loader_for(epoch)
    local sampler = spec.sampler and spec.sampler(epoch)
    if dist then
      sampler = data.ShardSampler(sampler or data.RandomSampler(spec.train, {seed = opts.seed}), dist.rank, dist.size)
    end
    return data.Loader(spec.train, {batch_size = batch_size, shuffle = true, seed = opts.seed,
      transform = transform, sampler = sampler})
  end
  local writer = not dist or dist.rank == 0
  local mixup = mix_settings(spec, opts, transform, batch_size, dist)
  local max_batches = opts.quick and 4 or nil
  local ckpt_path, metrics_path = out .. "/checkpoint.safetensors", out .. "/metrics.jsonl"
  -- --ema: the moving average of the weights is what gets evaluated
  local ema = opts.ema and opts.ema > 0 and cbnet.optim.EMA(model, {decay = opts.ema}) or nil
  local function evaluated(fn, ...)
    if ema then return ema:apply(fn, ...) end
    return fn(...)
  end
  local start_epoch, history, best = resume_state(spec, ckpt_path, metrics_path, model, opt, writer, ema)
  local last_confusion = best.confusion
  local metrics = writer and report.metrics(metrics_path, start_epoch > 1)
  local sync = dist and gradient_sync(model, dist)
  -- a time limit (spec.time_limit seconds, else --time-limit minutes) counts
  -- the seconds of the epochs before a resume too, and keeps a shortened plan
  local time_limit = spec.time_limit or ((opts.time_limit or 0) > 0 and opts.time_limit * 60) or nil
  local epochs = history[#history] and history[#history].planned_epochs or opts.epochs
  local schedule = make_schedule(epochs)
  local elapsed, train_seconds, eval_seconds = 0, {}, nil
  for _, h in ipairs(history) do elapsed = elapsed + h.seconds end
  local epoch = start_epoch
  while epoch <= epochs do
    do -- a block: its end is where the ranks that do not write skip to
      if schedule then schedule:set_epoch(epoch - 1) end
      local t0 = report.now()
      local label = ("%s epoch %d/%d"):format(spec.name, epoch, epochs)
      if mixup then mixup.generator:seed(opts.seed * 1000003 + epoch) end -- the same draws on resume
      local loss, train_acc, speed = experiment.train_epoch(model, loader_for(epoch), spec.loss, opt,
        epoch, label, max_batches, mixup, sync, ema and function() ema:update() end)
      train_seconds[#train_seconds + 1] = report.now() - t0
      if time_limit and epoch < epochs then
        local fit = replan(spec, dist, epoch, epochs, elapsed, train_seconds, eval_seconds, time_limit)
        if fit < epochs then
          print(("%s: %d epochs will not fit in the time limit (%.1f min): shortened to %d"):format(
            spec.name, epochs, time_limit / 60, fit))
          epochs, schedule = fit, make_schedule(fit)
          label = ("%s epoch %d/%d"):format(spec.name, epoch, epochs)
        end
      end
      if not writer then goto next_epoch end
      -- --eval-every N: the test (and validation) set every N epochs and after the last
      local test_acc, per_class, confusion, val_acc
      if spec.evaluate ~= false and (epoch % math.max(opts.eval_every or 1, 1) == 0 or epoch == epochs) then
        local e0 = report.now()
        test_acc, per_class, confusion, val_acc = evaluate_sets(spec, model, transform, label, evaluated)
        eval_seconds = math.max(eval_seconds or 0, report.now() - e0)
      end
      local record = {epoch = epoch, train_loss = loss, train_accuracy = train_acc,
                      test_accuracy = test_acc, per_class = per_class, val_accuracy = val_acc,
                      images_per_second = speed, seconds = report.now() - t0, lr = opt.param_groups[1].lr,
                      planned_epochs = time_limit and epochs or nil}
      history[#history + 1] = record
      elapsed = elapsed + record.seconds
      print(("%s epoch %2d/%d  loss %.4f  train acc %.4f  %s%s(%.0f img/s, %.1f s)"):format(
        spec.name, epoch, epochs, loss, train_acc,
        record.val_accuracy and ("val acc %.4f  "):format(record.val_accuracy) or "",
        test_acc and ("test acc %.4f  "):format(test_acc) or "", speed, record.seconds))
      best = save_epoch(out, metrics, record, model, opt, history, best, confusion, ema)
      last_confusion = confusion or last_confusion
      ::next_epoch::
    end
    epoch = epoch + 1
  end
  if dist then -- one data-parallel training per process: the ranks part here
    dist.mpi.barrier()
    dist.mpi.finalize()
    if not writer then os.exit(0) end
  end
  metrics:close()
  local last = history[#history]
  local result = {name = spec.name, hparams = spec.hparams or {}, history = history, best = best,
                  best_chosen_on = spec.val and "validation" or "test",
                  final = {accuracy = last.test_accuracy, per_class = last.per_class, epoch = last.epoch,
                           confusion = last_confusion}}
  report.write_json(out .. "/result.json", result)
  return result, model, ema
end

-- ---- sweeps ----

--- Whether the cbnet command saw Ctrl-C (its handler marks the registry, so
-- code that catches errors can tell an interrupt from a failure).
function experiment.interrupted()
  return debug.getregistry()["cbnet.interrupted"] == true
end

--- Runs every run of a sweep (a list of {id, ...}; run(r, opts, out) trains
-- it and returns its result). With opts.jobs > 1 the runs go to separate
-- processes, opts.jobs at a time, each with an equal share of the threads;
-- their output (a line per epoch at least) is shown as it comes, each line
-- led by the run's id. A failed run is reported and the others complete.
-- Ctrl-C stops the sweep: running children are stopped too, and the sweep
-- returns what finished. Returns results by id (missing for failed runs),
-- the list of failures, and whether it was interrupted (the caller writes
-- its tables, then exits 130).
function experiment.sweep(runs, opts, run, args)
  if opts.run then -- a child process of a parallel sweep: just that run
    for _, r in ipairs(runs) do
      if r.id == opts.run then
        run(r, opts, ("%s/runs/%s"):format(opts.out, r.id))
        os.exit(0)
      end
    end
    error("--run: no run named " .. opts.run, 0)
  end
  local results, failures = {}, {}
  local function folder(r) return ("%s/runs/%s"):format(opts.out, r.id) end
  local function collect(r, ok, err)
    local result = report.read_json(folder(r) .. "/result.json")
    if ok and result then results[r.id] = result
    else failures[#failures + 1] = {id = r.id, error = tostring(err or "no result.json")} end
  end
  local pending = {}
  for _, r in ipairs(runs) do
    -- finished runs of a resumed sweep are not trained again
    if opts.resume and report.read_file(folder(r) .. "/result.json") then collect(r, true)
    else pending[#pending + 1] = r end
  end
  local ok, err
  if opts.launcher == "slurm" or opts.launcher == "parallel" then
    ok, err = pcall(launch.cluster, pending, opts, args, folder, collect)
  elseif opts.launcher ~= "local" then
    error("--launcher must be local, slurm or parallel, got " .. tostring(opts.launcher), 0)
  elseif opts.jobs <= 1 then
    ok, err = pcall(function()
      for _, r in ipairs(pending) do
        local run_ok, run_err = pcall(run, r, opts, folder(r))
        if not run_ok and experiment.interrupted() then error(run_err, 0) end
        if not run_ok then io.stderr:write(("run %s failed: %s\n"):format(r.id, tostring(run_err))) end
        collect(r, run_ok, run_err)
      end
    end)
  else
    ok, err = pcall(launch.processes, pending, opts, args, folder, collect)
  end
  if not ok then
    if not experiment.interrupted() then error(err, 0) end
    io.stderr:write("interrupted: the sweep stops; the tables show the runs that finished\n")
  end
  return results, failures, not ok
end

--- Runs --sweep's grid: train(run_opts, out, name) -> result for every
-- combination (run_opts: opts with the combination's values), as any sweep
-- (--jobs, --resume, Ctrl-C); writes OUT/results.md and OUT/sweep.json with
-- each run's settings and its best and last test accuracy, and prints the
-- table. Returns results by id, failures, interrupted.
function experiment.grid_sweep(opts, args, train)
  local grid, names = cli.grid(opts.sweep, opts._spec)
  for _, point in ipairs(grid) do point.label = point.id end
  local results, failures, interrupted = experiment.sweep(grid, opts, function(r, o, out)
    local run_opts = setmetatable({}, {__index = o})
    for k, v in pairs(r.settings) do run_opts[k] = v end
    return train(run_opts, out, r.id)
  end, args)
  local header = {}
  for i, n in ipairs(names) do header[i] = n end
  for _, h in ipairs{"best accuracy", "best epoch", "last accuracy"} do header[#header + 1] = h end
  local rows, records = {}, {}
  for _, point in ipairs(grid) do
    local res = results[point.id]
    local row = {}
    for i = 1, #point.words do row[i] = point.words[i]:match("=(.*)$") end
    if res then
      row[#row + 1], row[#row + 2], row[#row + 3] = res.best.accuracy, res.best.epoch, res.final.accuracy
    else
      row[#row + 1] = "failed"
    end
    rows[#rows + 1] = row
    records[#records + 1] = {id = point.id, settings = point.settings,
      best = res and res.best.accuracy, best_epoch = res and res.best.epoch, last = res and res.final.accuracy}
  end
  local md = ("## Sweep: %s\n\n%s\n"):format(opts.sweep, report.markdown_table(header, rows))
  print(md)
  report.write_atomic(opts.out .. "/results.md", md)
  report.write_json(opts.out .. "/sweep.json", {sweep = opts.sweep, runs = records, failures = failures})
  report.learning_curves(opts.out .. "/learning_curves.svg", "Test accuracy: " .. opts.sweep, grid, results)
  return results, failures, interrupted
end

return experiment
