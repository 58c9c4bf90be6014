--- cbnet.loss: classification losses for (imbalanced) training, each a few
-- lines over differentiable operations or a fused C kernel. Every function
-- takes logits (N x C float32) and target (N int64 class labels 0..C-1) and
-- returns a scalar (or, with reduction = "none", a loss per sample).
--
-- Writing a new loss needs no C: use tensor operations and cbnet.F, and
-- autograd differentiates it (see experiments/custom_loss.lua).
local cbnet = require "cbnet"
local F = require "cbnet.functional"
local options = require "cbnet.options"

local loss = {}

local function as_float_tensor(v)
  if cbnet.is_tensor(v) then return v:float() end
  return cbnet.tensor(v, "float32")
end

--- loss.cross_entropy(logits, target[, {weight, label_smoothing, reduction}])
--   sample i: (1 - e) w[y_i] (-log p_i[y_i]) + e/C sum_c w[c] (-log p_i[c]);
--   "mean" divides the sum by sum_i w[y_i] (PyTorch's definition). Fused C kernel.
function loss.cross_entropy(logits, target, opts)
  return F.cross_entropy(logits, target, opts)
end

--- loss.focal(logits, target[, {gamma = 1, weight, reduction = "mean"}])
-- Focal loss on softmax probabilities (Lin et al. 2017):
--   FL_i = -w[y_i] (1 - p_i[y_i])^gamma log p_i[y_i];   "mean": the batch mean of FL_i.
function loss.focal(logits, target, opts)
  opts = options.check(opts, "focal", {"gamma", "weight", "reduction"})
  local gamma = opts.gamma or 1
  local log_p = F.log_softmax(logits, 2):gather(2, target:view(-1, 1)):view(-1)
  local per_sample = -((1 - log_p:exp()) ^ gamma) * log_p
  if gamma == 0 then per_sample = -log_p end
  if opts.weight then per_sample = per_sample * as_float_tensor(opts.weight):index_select(1, target) end
  local reduction = opts.reduction or "mean"
  if reduction == "none" then return per_sample end
  return reduction == "sum" and per_sample:sum() or per_sample:mean()
end

--- loss.cb_weights(counts, beta): the class-balanced weights of Cui et al.
-- (CVPR 2019) from the effective number of samples E_c = (1 - beta^n_c)/(1 - beta):
--   w_c = (1 - beta) / (1 - beta^n_c), normalised so that sum_c w_c = C.
-- counts: a Lua list or a tensor of per-class sample counts.
function loss.cb_weights(counts, beta)
  assert(beta >= 0 and beta < 1, "cb_weights: beta must be in [0, 1)")
  if cbnet.is_tensor(counts) then counts = counts:totable() end
  local raw, total = {}, 0
  for c, n in ipairs(counts) do
    assert(n > 0, ("cb_weights: class %d has %s samples"):format(c, n))
    raw[c] = (1 - beta) / (1 - beta ^ n)
    total = total + raw[c]
  end
  for c = 1, #raw do raw[c] = raw[c] / total * #raw end
  return cbnet.tensor(raw, "float32")
end

-- Per-sample weights w[y_i] as an N x 1 column.
local function sample_weights(weights, target)
  return as_float_tensor(weights):index_select(1, target):view(-1, 1)
end

local function one_hot(target, classes) return cbnet.one_hot(target, classes):float() end

-- Binary cross-entropy with logits, element-wise, stable for any x:
--   bce(x, z) = max(x, 0) - x z + log(1 + exp(-|x|)) = softplus(x) - x z.
local function bce_with_logits(x, z)
  return F.softplus(x) - x * z
end

--- The class-balanced losses as in Cui et al.'s official code; weights are
-- per class (e.g. loss.cb_weights(counts, beta)), N the batch size:
--   "softmax": (1/N) sum_i w[y_i] CE_i
--   "sigmoid": (1/N) sum_i sum_c w[y_i] bce(x_ic, z_ic), z the one-hot labels
--   "focal":   (1/N) sum_i sum_c w[y_i] m_ic bce(x_ic, z_ic), with the modulator
--              m = (1 - p_t)^gamma computed stably in log space as
--              m = exp(-gamma z x - gamma log(1 + exp(-x)))
-- For the sigmoid forms the paper starts the last layer's bias at -log(C - 1)
-- (loss.init_sigmoid_bias) and leaves that bias out of weight decay.
function loss.class_balanced(logits, target, weights, opts)
  opts = options.check(opts, "class_balanced", {"type", "gamma"})
  local kind, gamma = opts.type or "focal", opts.gamma or 1
  local n, classes = logits:size(1), logits:size(2)
  local w = sample_weights(weights, target)
  if kind == "softmax" then
    return (F.cross_entropy(logits, target, {reduction = "none"}):view(-1, 1) * w):sum() / n
  end
  local z = one_hot(target, classes)
  local per = bce_with_logits(logits, z)
  if kind == "focal" and gamma ~= 0 then
    per = per * (logits * z * -gamma - F.softplus(-logits) * gamma):exp()
  elseif kind ~= "sigmoid" and kind ~= "focal" then
    error("class_balanced: type must be 'softmax', 'sigmoid' or 'focal', got " .. tostring(kind), 2)
  end
  return (per * w):sum() / n
end

--- Sets a Linear layer's bias to -log(C - 1), so that initial sigmoid
-- probabilities are 1/C (Cui et al., following Lin et al.'s focal loss).
function loss.init_sigmoid_bias(linear, classes)
  cbnet.no_grad(function() linear.bias:fill_(-math.log(classes - 1)) end)
  return linear
end

--- LDAM (Cao et al. 2019): per-class margins m_c proportional to n_c^(-1/4),
-- scaled so the largest is max_margin (0.5); the target logit loses its
-- margin and logits are scaled by s (30):  CE(s (x - m_y onehot_y), y; weight).
function loss.ldam_margins(counts, max_margin)
  if cbnet.is_tensor(counts) then counts = counts:totable() end
  local m, largest = {}, 0
  for c, n in ipairs(counts) do
    m[c] = n ^ -0.25
    largest = math.max(largest, m[c])
  end
  for c = 1, #m do m[c] = m[c] * (max_margin or 0.5) / largest end
  return cbnet.tensor(m, "float32")
end

function loss.ldam(logits, target, margins, opts)
  opts = options.check(opts, "ldam", {"s", "weight", "reduction"})
  local m = as_float_tensor(margins):index_select(1, target):view(-1, 1)
  local z = one_hot(target, logits:size(2))
  local adjusted = (logits - z * m) * (opts.s or 30)
  return F.cross_entropy(adjusted, target, {weight = opts.weight, reduction = opts.reduction})
end

--- Logit adjustment (Menon et al. 2021) / balanced softmax (Ren et al. 2020):
-- training uses CE(x + tau log prior, y), prior_c = n_c / sum n; tau = 1 is
-- balanced softmax. Predict with the plain logits. opts: tau (1),
-- label_smoothing (0), smoothing_prior (false), reduction.
-- Label smoothing spreads its mass uniformly over the classes of the
-- adjusted logits, which in the plain logits (the balanced world predictions
-- are made in) asks for tail classes ~ n_head / n_tail times more: an
-- under-trained net then favours the tail. smoothing_prior = true spreads it
-- as the training prior instead, which is uniform in the balanced world:
-- (1 - e) CE(x + tau log prior, y) - e sum_k prior_k log softmax(x + tau log prior)_k
-- (mean reduction only).
function loss.logit_adjusted(logits, target, counts, opts)
  opts = options.check(opts, "logit_adjusted", {"tau", "label_smoothing", "smoothing_prior", "reduction"})
  local prior = as_float_tensor(cbnet.is_tensor(counts) and counts or cbnet.tensor(counts, "float32"))
  prior = prior / prior:sum()
  local adjusted = logits + prior:log():view(1, -1) * (opts.tau or 1)
  local e = opts.label_smoothing or 0
  if opts.smoothing_prior and e > 0 then
    if opts.reduction and opts.reduction ~= "mean" then
      error("logit_adjusted: smoothing_prior takes the mean reduction only", 2)
    end
    local spread = -(F.log_softmax(adjusted, 2) * prior:view(1, -1)):sum(2):mean()
    return F.cross_entropy(adjusted, target) * (1 - e) + spread * e
  end
  return F.cross_entropy(adjusted, target, {reduction = opts.reduction, label_smoothing = e})
end

--- balanced_softmax(logits, target, counts[, {label_smoothing, smoothing_prior,
-- reduction}]): logit_adjusted with tau = 1.
function loss.balanced_softmax(logits, target, counts, opts)
  opts = options.check(opts, "balanced_softmax", {"label_smoothing", "smoothing_prior", "reduction"})
  return loss.logit_adjusted(logits, target, counts, {tau = 1, reduction = opts.reduction,
    label_smoothing = opts.label_smoothing, smoothing_prior = opts.smoothing_prior})
end

return loss
