--- cbnet.longtail: the methods of the long-tail literature as option values,
-- and the measures it reports. longtail.method(name, counts, opts) returns
-- the pieces experiment.train takes:
--   {loss = function(logits, labels, epoch), sampler = function(epoch) or nil,
--    adjust = function(logits) or nil (post-hoc, at evaluation),
--    normed = true when the model wants the cosine classifier (LDAM)}
-- counts: training images per class; opts: beta (0.9999), gamma (1), tau (1),
-- max_margin (0.5), s (30), defer (the epoch DRW/DRS switch on; default the
-- schedule's first step, 160 of 200), dataset (for the samplers), seed.
--
--   ce              cross-entropy
--   focal           focal loss (Lin et al. 2017), gamma
--   cb-softmax, cb-sigmoid, cb-focal
--                   class-balanced losses (Cui et al. 2019), beta, gamma
--   ce-drw          CE, re-weighted by cb_weights(beta) from epoch `defer` (Cao et al. 2019)
--   ldam            LDAM loss with margins ~ n^-1/4 (Cao et al. 2019), cosine classifier
--   ldam-drw        LDAM + deferred re-weighting: the row LDAM-DRW of the literature
--   balanced-softmax  CE(x + log prior) (Ren et al. 2020)
--   la-loss         logit-adjusted loss CE(x + tau log prior) (Menon et al. 2021)
--   la-posthoc      CE training, predictions from x - tau log prior (Menon et al. 2021)
--   cb-resample     CE with class-balanced sampling from the first epoch
--   drs             CE with deferred re-sampling: class-balanced from epoch `defer`
local cbnet = require "cbnet"
local data = require "cbnet.data"
local loss = require "cbnet.loss"
local options = require "cbnet.options"

local longtail = {}

longtail.methods = {"ce", "focal", "cb-softmax", "cb-sigmoid", "cb-focal", "ce-drw", "ldam", "ldam-drw",
                    "balanced-softmax", "la-loss", "la-posthoc", "cb-resample", "drs"}

--- log(n_c / n) of the class counts, as a 1 x classes tensor (the shift of
-- logit adjustment).
function longtail.log_prior(counts)
  local total = 0
  for _, n in ipairs(counts) do total = total + n end
  local l = {}
  for c, n in ipairs(counts) do l[c] = math.log(n / total) end
  return cbnet.tensor(l, "float32"):view(1, -1)
end

--- Post-hoc logit adjustment (Menon et al. 2021): a function mapping logits
-- to logits - tau * log prior, or nil when tau is 0.
function longtail.posthoc_adjust(counts, tau)
  if tau == 0 then return nil end
  local shift = longtail.log_prior(counts) * tau
  return function(logits) return logits - shift end
end

function longtail.method(name, counts, opts)
  opts = options.check(opts, "longtail.method", {"beta", "gamma", "tau", "defer", "max_margin", "s", "dataset", "seed"})
  local beta, gamma, tau = opts.beta or 0.9999, opts.gamma or 1, opts.tau or 1
  local defer = opts.defer or 160
  local function ce(logits, labels, weight) return cbnet.F.cross_entropy(logits, labels, {weight = weight}) end
  local cb = loss.cb_weights(counts, beta)
  -- epochs count from 1: "from epoch 160" of a 0-based schedule is epoch 161 here
  local function deferred(epoch) return epoch - 1 >= defer and cb or nil end
  local function balanced_sampler()
    assert(opts.dataset, "longtail: re-sampling needs opts.dataset")
    return data.ClassBalancedSampler(opts.dataset, {seed = opts.seed})
  end
  local m = {}
  if name == "ce" then
    m.loss = function(x, y) return ce(x, y) end
  elseif name == "focal" then
    m.loss = function(x, y) return loss.focal(x, y, {gamma = gamma}) end
  elseif name == "cb-softmax" or name == "cb-sigmoid" or name == "cb-focal" then
    local kind = name:match("cb%-(%a+)")
    m.loss = function(x, y) return loss.class_balanced(x, y, cb, {type = kind, gamma = gamma}) end
    m.sigmoid_bias = kind ~= "softmax" -- the last bias starts at -log(C - 1)
  elseif name == "ce-drw" then
    m.loss = function(x, y, epoch) return ce(x, y, deferred(epoch)) end
  elseif name == "ldam" or name == "ldam-drw" then
    local margins = loss.ldam_margins(counts, opts.max_margin or 0.5)
    m.normed = true
    m.loss = function(x, y, epoch)
      return loss.ldam(x, y, margins, {s = opts.s or 30, weight = name == "ldam-drw" and deferred(epoch) or nil})
    end
  elseif name == "balanced-softmax" then
    m.loss = function(x, y) return loss.balanced_softmax(x, y, counts) end
  elseif name == "la-loss" then
    m.loss = function(x, y) return loss.logit_adjusted(x, y, counts, {tau = tau}) end
  elseif name == "la-posthoc" then
    m.loss = function(x, y) return ce(x, y) end
    m.adjust = longtail.posthoc_adjust(counts, tau)
  elseif name == "cb-resample" then
    m.loss = function(x, y) return ce(x, y) end
    m.sampler = function() return balanced_sampler() end
  elseif name == "drs" then
    m.loss = function(x, y) return ce(x, y) end
    m.sampler = function(epoch) return epoch - 1 >= defer and balanced_sampler() or nil end
  else
    error(("unknown method '%s' (known: %s)"):format(tostring(name), table.concat(longtail.methods, ", ")), 2)
  end
  return m
end

--- A loss written by a user, from a Lua file that returns
-- function(logits, labels, ctx) -> scalar, ctx = {epoch, counts, cb_weights
-- (a function of beta), loss (cbnet.loss), F}; wrapped as a method.
function longtail.loss_file(path, counts)
  local chunk, err = loadfile(path)
  if not chunk then error("--loss: " .. err, 0) end
  local fn = chunk()
  if type(fn) ~= "function" then error(("--loss: %s must return a function(logits, labels, ctx)"):format(path), 0) end
  local ctx = {counts = counts, loss = loss, F = cbnet.F,
               cb_weights = function(beta) return loss.cb_weights(counts, beta) end}
  return {loss = function(x, y, epoch) ctx.epoch = epoch return fn(x, y, ctx) end}
end

--- Many / medium / few-shot accuracy: the mean per-class accuracy over the
-- classes with more than `many` training images, with `few` to `many`, and
-- with fewer than `few`. The defaults (100, 20) are those of Liu et al.
-- (OLTR, CVPR 2019), which the long-tail papers follow. A group with no
-- class is nil (CIFAR-10-LT at imbalance 100 has no class below 50).
function longtail.shot_accuracy(per_class, counts, many, few)
  many, few = many or 100, few or 20
  local sums, ns = {many = 0, medium = 0, few = 0}, {many = 0, medium = 0, few = 0}
  for c, acc in ipairs(per_class) do
    local n = counts[c]
    local group = n > many and "many" or (n < few and "few" or "medium")
    if acc == acc then sums[group], ns[group] = sums[group] + acc, ns[group] + 1 end
  end
  local out = {}
  for _, g in ipairs{"many", "medium", "few"} do out[g] = ns[g] > 0 and sums[g] / ns[g] or nil end
  return out
end

--- Mean and (sample) standard deviation of a list of numbers (std 0 for one).
function longtail.mean_std(values)
  local n, sum = #values, 0
  for _, v in ipairs(values) do sum = sum + v end
  if n == 0 then return nil, nil end
  local mean, sq = sum / n, 0
  for _, v in ipairs(values) do sq = sq + (v - mean) ^ 2 end
  return mean, n > 1 and math.sqrt(sq / (n - 1)) or 0
end

--- The learning-rate schedule of LDAM-DRW, scaled to `epochs`: linear
-- warm-up over the first 5/200 of them, x0.01 at 160/200 and x0.0001 at
-- 180/200. Returns milestones, warm-up epochs and the DRW switch epoch.
function longtail.schedule(epochs)
  local first, second = math.floor(epochs * 160 / 200 + 0.5), math.floor(epochs * 180 / 200 + 0.5)
  return {first, second}, math.max(1, math.floor(epochs * 5 / 200 + 0.5)), first
end

return longtail
