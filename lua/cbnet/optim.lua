--- cbnet.optim: optimizers (updates in C, state here) and learning-rate
-- schedules. Formulas and defaults are PyTorch's.
--
--   local opt = optim.SGD(model:parameters(), {lr = 0.1, momentum = 0.9, weight_decay = 5e-4})
--   -- or parameter groups with their own options:
--   local opt = optim.SGD(optim.split_decay(model, 5e-4), {lr = 0.1, momentum = 0.9})
--   loss:backward(); opt:step(); opt:zero_grad()
local cbnet = require "cbnet"
local core = require "cbnet.core"
local options = require "cbnet.options"

local optim = {}

local Optimizer = {}
Optimizer.__index = Optimizer

-- A list of tensors, or a list of groups {params = {...}, option = value, ...}.
local function make_groups(params, defaults, name, names)
  assert(type(params) == "table" and #params > 0, name .. ": expected a non-empty list of parameters")
  local groups = {}
  local group_names = {"params", "initial_lr", table.unpack(names)}
  if cbnet.is_tensor(params[1]) then params = {{params = params}} end
  for i, g in ipairs(params) do
    assert(type(g) == "table" and type(g.params) == "table",
      ("%s: parameter group %d needs a params list"):format(name, i))
    options.check(g, ("%s: parameter group %d"):format(name, i), group_names)
    local group = {params = {}}
    for k, v in pairs(defaults) do group[k] = v end
    for k, v in pairs(g) do if k ~= "params" then group[k] = v end end
    for j, p in ipairs(g.params) do
      assert(cbnet.is_tensor(p), ("%s: group %d, parameter %d is not a tensor"):format(name, i, j))
      group.params[j] = p
    end
    group.initial_lr = group.initial_lr or group.lr
    groups[i] = group
  end
  return groups
end

local function new_optimizer(class, name, params, defaults, opts)
  local merged, names = {}, {}
  for k, v in pairs(defaults) do merged[k], names[#names + 1] = v, k end
  table.sort(names)
  for k, v in pairs(options.check(opts, name, names)) do merged[k] = v end
  local self = setmetatable({name = name, param_groups = make_groups(params, merged, name, names),
                             state = {}}, class)
  return self
end

--- Clears the gradients of every parameter the optimizer updates.
function Optimizer:zero_grad()
  for _, group in ipairs(self.param_groups) do
    for _, p in ipairs(group.params) do p.grad = nil end
  end
end

--- {state = {[index] = {name = tensor or number}}, param_groups = {options}}:
-- the tensors are the live state (copy them to keep a snapshot).
function Optimizer:state_dict()
  local groups, index = {}, 0
  for i, group in ipairs(self.param_groups) do
    local g = {params = {}}
    for k, v in pairs(group) do if k ~= "params" then g[k] = v end end
    for _ in ipairs(group.params) do
      index = index + 1
      g.params[#g.params + 1] = index
    end
    groups[i] = g
  end
  return {state = self.state, param_groups = groups}
end

--- Restores options and state saved by state_dict (the parameters must be
-- the same list, in the same order).
function Optimizer:load_state_dict(saved)
  assert(#saved.param_groups == #self.param_groups, "load_state_dict: parameter groups differ")
  for i, g in ipairs(saved.param_groups) do
    local group = self.param_groups[i]
    assert(#g.params == #group.params, ("load_state_dict: group %d has a different size"):format(i))
    for k, v in pairs(g) do if k ~= "params" then group[k] = v end end
  end
  self.state = {}
  for index, s in pairs(saved.state) do
    local copy = {}
    for k, v in pairs(s) do copy[k] = cbnet.is_tensor(v) and v:clone() or v end
    self.state[index] = copy
  end
end

--- optim.SGD(params, {lr, momentum = 0, dampening = 0, weight_decay = 0, nesterov = false})
local SGD = setmetatable({}, {__index = Optimizer})
SGD.__index = SGD

function optim.SGD(params, opts)
  assert(opts and opts.lr, "SGD: lr is required")
  return new_optimizer(SGD, "SGD", params,
    {lr = 0, momentum = 0, dampening = 0, weight_decay = 0, nesterov = false}, opts)
end

-- One C call per parameter group: its parameters that have a gradient, as
-- parallel lists (the core shares their elements out among the threads).
-- A group's new state is kept only once its update succeeded, so a group
-- whose update fails (a parameter that is not contiguous, say) is left as
-- it was: no parameter of it moved, no buffer or step count started.
function SGD:step()
  local index = 0
  for _, group in ipairs(self.param_groups) do
    local params, grads, buffers, firsts, fresh = {}, {}, group.momentum > 0 and {} or nil, {}, {}
    for _, p in ipairs(group.params) do
      index = index + 1
      local grad = p.grad
      if grad then
        local k = #params + 1
        local state = self.state[index]
        params[k], grads[k], firsts[k] = p, grad, state == nil
        if buffers then
          buffers[k] = state and state.momentum_buffer
          if not buffers[k] then
            buffers[k], firsts[k] = cbnet.zeros(p:size()), true
          end
        end
        if firsts[k] then fresh[index] = {momentum_buffer = buffers and buffers[k]} end
      end
    end
    core.sgd_step(params, grads, buffers, firsts, group.lr, group.momentum, group.dampening,
      group.weight_decay, group.nesterov)
    for i, state in pairs(fresh) do self.state[i] = state end
  end
end

--- optim.Adam(params, {lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 0})
-- adds weight_decay * p to the gradient; optim.AdamW (weight_decay = 1e-2)
-- decays the weights directly (Loshchilov & Hutter).
local Adam = setmetatable({}, {__index = Optimizer})
Adam.__index = Adam

local function adam(name, decoupled, default_decay)
  return function(params, opts)
    local self = new_optimizer(Adam, name, params,
      {lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = default_decay}, opts)
    self.decoupled = decoupled
    return self
  end
end
optim.Adam = adam("Adam", false, 0)
optim.AdamW = adam("AdamW", true, 1e-2)

function Adam:step()
  local index = 0
  for _, group in ipairs(self.param_groups) do
    local params, grads, exp_avgs, exp_avg_sqs, steps, states = {}, {}, {}, {}, {}, {}
    for _, p in ipairs(group.params) do
      index = index + 1
      local grad = p.grad
      if grad then
        local state = self.state[index] or
          {step = 0, exp_avg = cbnet.zeros(p:size()), exp_avg_sq = cbnet.zeros(p:size())}
        local k = #params + 1
        params[k], grads[k], exp_avgs[k], exp_avg_sqs[k], steps[k] =
          p, grad, state.exp_avg, state.exp_avg_sq, state.step + 1
        states[index] = state
      end
    end
    core.adam_step(params, grads, exp_avgs, exp_avg_sqs, steps, group.lr, group.betas[1],
      group.betas[2], group.eps, group.weight_decay, self.decoupled)
    for i, state in pairs(states) do
      state.step = state.step + 1
      self.state[i] = state
    end
  end
end

--- Two parameter groups of a model: weights (dims >= 2) with weight_decay,
-- and biases and batch-norm parameters (1-d) without, as is usual.
function optim.split_decay(model, weight_decay)
  local decay, no_decay = {}, {}
  for _, p in ipairs(model:parameters()) do
    if p:dim() >= 2 then decay[#decay + 1] = p else no_decay[#no_decay + 1] = p end
  end
  local groups = {}
  if #decay > 0 then groups[#groups + 1] = {params = decay, weight_decay = weight_decay} end
  if #no_decay > 0 then groups[#groups + 1] = {params = no_decay, weight_decay = 0} end
  return groups
end

-- ---- learning-rate schedules ----
-- A schedule sets every group's lr from its initial_lr for an epoch; call
-- sched:step() once per epoch (after the epoch, as in PyTorch) or
-- sched:set_epoch(e) to jump (resume). Epochs count from 0.

local Schedule = {}
Schedule.__index = Schedule

local function new_schedule(optimizer, factor)
  local self = setmetatable({optimizer = optimizer, factor = factor, epoch = 0}, Schedule)
  self:set_epoch(0)
  return self
end

function Schedule:set_epoch(epoch)
  self.epoch = epoch
  for _, group in ipairs(self.optimizer.param_groups) do
    group.lr = group.initial_lr * self.factor(epoch)
  end
end

function Schedule:step() self:set_epoch(self.epoch + 1) end

--- The learning rate of each group now.
function Schedule:get_last_lr()
  local lrs = {}
  for i, group in ipairs(self.optimizer.param_groups) do lrs[i] = group.lr end
  return lrs
end

function Schedule:state_dict() return {epoch = self.epoch} end
function Schedule:load_state_dict(s) self:set_epoch(s.epoch) end

local function warmup_factor(epoch, warmup)
  return (warmup and warmup > 0 and epoch < warmup) and (epoch + 1) / warmup or nil
end

--- The schedule of the long-tailed literature (LDAM-DRW, Cui et al.): linear
-- warmup over `warmup` epochs (lr * (e + 1) / warmup), then lr * gamma^k
-- after k milestones. opts: milestones (list of epochs), gamma = 0.1, warmup = 0.
function optim.MultiStepLR(optimizer, opts)
  opts = options.check(opts, "MultiStepLR", {"milestones", "gamma", "warmup"})
  local milestones, gamma = opts.milestones or {}, opts.gamma or 0.1
  return new_schedule(optimizer, function(epoch)
    local w = warmup_factor(epoch, opts.warmup)
    if w then return w end
    local k = 0
    for _, m in ipairs(milestones) do if epoch >= m then k = k + 1 end end
    return gamma ^ k
  end)
end

--- Cosine annealing from lr to eta_min over total epochs (after an optional
-- linear warmup): lr_e = eta_min + (lr - eta_min) (1 + cos(pi t / T)) / 2.
-- opts: total (epochs), eta_min = 0 (absolute), warmup = 0.
function optim.CosineLR(optimizer, opts)
  opts = options.check(opts, "CosineLR", {"total", "eta_min", "warmup"})
  assert(opts.total, "CosineLR: total (the number of epochs) is required")
  local warmup = opts.warmup or 0
  local base = optimizer.param_groups[1].initial_lr
  local floor = (opts.eta_min or 0) / base
  return new_schedule(optimizer, function(epoch)
    local w = warmup_factor(epoch, warmup)
    if w then return w end
    local t, span = epoch - warmup, math.max(opts.total - warmup, 1)
    return floor + (1 - floor) * (1 + math.cos(math.pi * math.min(t, span) / span)) / 2
  end)
end

--- optim.EMA(model[, opts]): an exponential moving average of a model's
-- weights (opts.decay, default 0.999), as timm's ModelEmaV2: after each
-- optimizer step, ema:update() moves every floating-point parameter and
-- buffer (batch norm's running statistics) towards the model's,
-- shadow = decay * shadow + (1 - decay) * current, and copies the others.
-- ema:apply(fn) runs fn() with the model holding the averaged weights and
-- puts its own back after (also when fn fails): evaluate with it.
-- ema:state_dict() / ema:load_state_dict(state) for checkpoints.
local EMA = {}
EMA.__index = EMA

function optim.EMA(model, opts)
  opts = options.check(opts, "EMA", {"decay"})
  local decay = opts.decay or 0.999
  assert(type(decay) == "number" and decay >= 0 and decay <= 1, "EMA: decay must be in [0, 1]")
  local self = setmetatable({model = model, decay = decay, shadow = {}}, EMA)
  for name, t in pairs(model:state_dict()) do self.shadow[name] = t:clone() end
  return self
end

function EMA:update()
  local decay = self.decay
  cbnet.no_grad(function()
    for name, t in pairs(self.model:state_dict()) do -- detached views of the model's tensors
      local shadow = self.shadow[name]
      if t:dtype() == "float32" then
        shadow:mul_(decay):add_(t * (1 - decay))
      else
        shadow:copy_(t)
      end
    end
  end)
end

function EMA:apply(fn, ...)
  local state, saved = self.model:state_dict(), {}
  cbnet.no_grad(function()
    for name, t in pairs(state) do
      saved[name] = t:clone()
      t:copy_(self.shadow[name])
    end
  end)
  local results = table.pack(pcall(fn, ...))
  cbnet.no_grad(function()
    for name, t in pairs(state) do t:copy_(saved[name]) end
  end)
  if not results[1] then error(results[2], 0) end
  return table.unpack(results, 2, results.n)
end

function EMA:state_dict()
  local state = {}
  for name, t in pairs(self.shadow) do state[name] = t end
  return state
end

function EMA:load_state_dict(state)
  cbnet.no_grad(function()
    for name, t in pairs(self.shadow) do
      local saved = state[name]
      if not saved then error(("EMA:load_state_dict: %s is missing"):format(name), 2) end
      t:copy_(saved)
    end
  end)
end

return optim
