local cbnet = require "cbnet"
local optim = cbnet.optim

-- one parameter [1, -2] with a fixed gradient [0.5, 1] each step
local function param() return cbnet.tensor{1.0, -2.0}:requires_grad_() end
local function set_grad(p) p.grad = cbnet.tensor{0.5, 1.0} end
local function assert_close(want, got, tol)
  for i = 1, #want do assert.near(want[i], got[i], tol or 1e-6) end
end

describe("SGD", function()
  it("plain step: p -= lr g", function()
    local p = param()
    local opt = optim.SGD({p}, {lr = 0.1})
    set_grad(p)
    opt:step()
    assert_close({0.95, -2.1}, p:totable())
  end)

  it("momentum, weight decay, dampening and nesterov, by hand", function()
    local p = param()
    local opt = optim.SGD({p}, {lr = 0.1, momentum = 0.9, weight_decay = 0.01})
    set_grad(p)
    opt:step() -- d = g + 0.01 p = [0.51, 0.98]; buf = d; p -= 0.1 d
    assert_close({0.949, -2.098}, p:totable())
    set_grad(p)
    opt:step() -- d = [0.50949, 0.97902]; buf = 0.9 [0.51, 0.98] + d
    assert_close({0.949 - 0.1 * (0.459 + 0.50949), -2.098 - 0.1 * (0.882 + 0.97902)}, p:totable())
    local q = param()
    local nes = optim.SGD({q}, {lr = 0.1, momentum = 0.5, nesterov = true})
    set_grad(q)
    nes:step() -- buf = g; d = g + 0.5 buf = 1.5 g
    assert_close({1 - 0.075, -2 - 0.15}, q:totable())
    local r = param()
    local damp = optim.SGD({r}, {lr = 1, momentum = 0.5, dampening = 0.5})
    set_grad(r)
    damp:step() -- first step: buf = g (no dampening)
    set_grad(r)
    damp:step() -- buf = 0.5 g + 0.5 g = g
    assert_close({1 - 1.0, -2 - 2.0}, r:totable())
    assert.error_matches(function() optim.SGD({p}, {lr = 0.1, momentum = 0, nesterov = true}):step() end,
      "nesterov needs momentum")
  end)

  it("parameter groups keep their own options; split_decay skips 1-d parameters", function()
    local a, b = param(), param()
    local opt = optim.SGD({{params = {a}, weight_decay = 1}, {params = {b}, lr = 1}}, {lr = 0.1})
    set_grad(a)
    set_grad(b)
    opt:step()
    assert_close({1 - 0.1 * 1.5, -2 - 0.1 * (1 - 2)}, a:totable())
    assert_close({0.5, -3}, b:totable())
    local model = cbnet.nn.Sequential(cbnet.nn.Linear(3, 2), cbnet.nn.BatchNorm1d(2))
    local groups = optim.split_decay(model, 5e-4)
    assert.equal(1, #groups[1].params)  -- the Linear weight
    assert.equal(3, #groups[2].params)  -- its bias, BN weight and bias
    assert.equal(0, groups[2].weight_decay)
    assert.error_matches(function() optim.SGD({a}, {lr = 0.1, momentun = 0.9}) end, "unknown option 'momentun'")
  end)
end)

describe("Adam and AdamW", function()
  it("follow the paper's bias-corrected update", function()
    local p = param()
    local opt = optim.Adam({p}, {lr = 0.1})
    set_grad(p)
    opt:step() -- first step: m_hat = g, v_hat = g^2, so p -= lr * g / (|g| + eps)
    assert_close({0.9, -2.1}, p:totable(), 1e-6)
    set_grad(p)
    opt:step() -- constant gradient: the same step again
    assert_close({0.8, -2.2}, p:totable(), 1e-5) -- float32 rounding of m and v
  end)

  it("Adam adds weight decay to the gradient, AdamW decays the weights", function()
    local p, q = param(), param()
    local adam = optim.Adam({p}, {lr = 0.1, weight_decay = 0.5})
    local adamw = optim.AdamW({q}, {lr = 0.1, weight_decay = 0.5})
    set_grad(p)
    set_grad(q)
    adam:step()  -- g' = g + 0.5 p = [1, 0]: p -= 0.1 * sign(g')
    adamw:step() -- q *= 1 - 0.05, then q -= 0.1 * sign(g)
    assert_close({0.9, -2.0}, p:totable(), 1e-6)
    assert_close({0.95 - 0.1, -1.9 - 0.1}, q:totable(), 1e-6)
  end)

  it("saves and restores its state", function()
    local p = param()
    local opt = optim.Adam({p}, {lr = 0.1})
    set_grad(p)
    opt:step()
    local saved = opt:state_dict()
    assert.equal(1, saved.state[1].step)
    local q = cbnet.tensor{0.9, -2.1}:requires_grad_()
    local opt2 = optim.Adam({q}, {lr = 0.5})
    opt2:load_state_dict(saved)
    set_grad(p)
    opt:step()
    q.grad = cbnet.tensor{0.5, 1.0}
    opt2:step()
    assert_close(p:totable(), q:totable(), 1e-6)
  end)
end)

describe("one update per parameter group", function()
  -- sizes around the pool's grain (65536), so that the workers' ranges
  -- start and end inside tensors and cross from one into the next
  local sizes = {{3, 5}, {70000}, {1}, {0}, {64, 1200}, {7}, {40000}}
  local function group()
    cbnet.manual_seed(11)
    local ps, gs = {}, {}
    for i, s in ipairs(sizes) do
      ps[i] = cbnet.randn(table.unpack(s)):requires_grad_()
      gs[i] = cbnet.randn(table.unpack(s))
    end
    return ps, gs
  end
  local function max_diff(a, b)
    if a:numel() == 0 then return 0 end
    return (a - b):abs():max():item()
  end

  it("SGD with momentum: every element of every tensor, as the formula by tensor ops", function()
    local ps, gs = group()
    local want, buf = {}, {}
    for i, p in ipairs(ps) do -- two steps: buf = d, then buf = 0.9 buf + d
      local p0 = p:detach():clone()
      local d1 = gs[i] + p0 * 0.01
      local p1 = p0 - d1 * 0.1
      local d2 = gs[i] * 2 + p1 * 0.01
      buf[i] = d1 * 0.9 + d2
      want[i] = p1 - buf[i] * 0.1
    end
    local opt = optim.SGD(ps, {lr = 0.1, momentum = 0.9, weight_decay = 0.01})
    for i, p in ipairs(ps) do p.grad = gs[i] end
    opt:step()
    for i, p in ipairs(ps) do p.grad = gs[i] * 2 end
    opt:step()
    for i, p in ipairs(ps) do
      assert.is_true(max_diff(want[i], p:detach()) <= 1e-5, "parameter " .. i)
      assert.is_true(max_diff(buf[i], opt.state[i].momentum_buffer) <= 1e-5, "buffer " .. i)
    end
  end)

  it("Adam: every element, each parameter with its own step count", function()
    local ps, gs = group()
    local p0 = {}
    for i, p in ipairs(ps) do p0[i] = p:detach():clone() end
    local opt = optim.Adam(ps, {lr = 0.01})
    ps[2].grad = gs[2] -- only parameter 2 steps first: its step count runs ahead
    opt:step()
    assert.equal(1, opt.state[2].step)
    assert.is_nil(opt.state[1])
    for i, p in ipairs(ps) do p.grad = gs[i] end
    opt:step()
    for i, p in ipairs(ps) do
      -- a constant gradient: m and v bias-corrected are g and g^2, so each
      -- step moves by lr g / (|g| + eps)
      local steps = i == 2 and 2 or 1
      assert.equal(steps, opt.state[i].step)
      local want = p0[i] - gs[i] / (gs[i]:abs() + 1e-8) * (0.01 * steps)
      assert.is_true(max_diff(want, p:detach()) <= 1e-6, "parameter " .. i)
    end
  end)

  it("checks every parameter before updating any, and keeps no state from a failed step", function()
    local a = param()
    local b = cbnet.zeros(3, 2):t():requires_grad_() -- strided: the core refuses it
    local opt = optim.SGD({a, b}, {lr = 0.1, momentum = 0.9})
    set_grad(a)
    b.grad = cbnet.ones(2, 3)
    assert.error_matches(function() opt:step() end, "sgd: parameter 2: .*the parameter contiguous")
    assert_close({1, -2}, a:totable(), 0)
    assert.is_nil(next(opt.state))
    local good = optim.SGD({a}, {lr = 0.1, momentum = 0.9})
    good:step() -- the first step: buf = g, p -= 0.1 g
    assert_close({0.95, -2.1}, a:totable())
    assert_close({0.5, 1}, good.state[1].momentum_buffer:totable())
    local adam = optim.Adam({a, b}, {lr = 0.1})
    assert.error_matches(function() adam:step() end, "adam: parameter 2")
    assert.is_nil(next(adam.state))
    assert_close({0.95, -2.1}, a:totable())
  end)

  it("refuses a parameter listed twice, or two views of one tensor", function()
    local a = param()
    set_grad(a)
    assert.error_matches(function() optim.SGD({a, a}, {lr = 0.1}):step() end,
      "sgd: parameter 1's values and parameter 2's values share memory %(a parameter listed twice%?%)")
    -- a gradient that is another parameter (or a view of one) would be read while it is updated
    local b = param()
    b.grad = a:detach()
    assert.error_matches(function() optim.SGD({a, b}, {lr = 0.1, momentum = 0.9}):step() end,
      "sgd: parameter 1's values and parameter 2's gradient share memory")
    assert_close({1, -2}, a:totable(), 0)
    local w = cbnet.zeros(4, 3):requires_grad_()
    local rows = {w:narrow(1, 1, 2), w:narrow(1, 2, 2)}
    for _, r in ipairs(rows) do r.grad = cbnet.ones(2, 3) end
    assert.error_matches(function() optim.Adam(rows, {lr = 0.1}):step() end,
      "adam: parameter 1's values and parameter 2's values share memory")
    assert.equal(0, w:abs():max():item())
  end)

  it("the core call names a bad list element", function()
    local core = require "cbnet.core"
    local a = param()
    assert.error_matches(function() core.sgd_step({a}, {"x"}, nil, {true}, 0.1) end,
      "element 1 is not a tensor")
    assert.error_matches(function() core.sgd_step({a}, {}, nil, {true}, 0.1) end,
      "0 entries for 1 parameters")
    assert.error_matches(function()
      core.adam_step({a}, {a}, {a}, {a}, {1.5}, 0.1, 0.9, 0.999, 1e-8)
    end, "step 1 is not an integer")
    assert.error_matches(function() core.adam_step({a}, {a}, {a}, {a}, nil, 0.1, 0.9, 0.999, 1e-8) end,
      "bad argument #5 .*table expected, got nil")
    assert.error_matches(function() core.sgd_step({a}, {a}, nil, nil, 0.1) end,
      "bad argument #4 .*table expected, got nil")
  end)
end)

describe("learning-rate schedules", function()
  it("multi-step with linear warmup, as LDAM-DRW", function()
    local opt = optim.SGD({param()}, {lr = 0.1})
    local sched = optim.MultiStepLR(opt, {milestones = {160, 180}, gamma = 0.01, warmup = 5})
    local seen = {}
    for epoch = 0, 199 do
      seen[epoch] = opt.param_groups[1].lr
      sched:step()
    end
    assert.near(0.02, seen[0], 1e-12)
    assert.near(0.1, seen[4], 1e-12)
    assert.near(0.1, seen[159], 1e-12)
    assert.near(0.001, seen[160], 1e-12)
    assert.near(0.00001, seen[180], 1e-12)
  end)

  it("cosine from lr to eta_min", function()
    local opt = optim.SGD({param()}, {lr = 1})
    local sched = optim.CosineLR(opt, {total = 10, eta_min = 0.1})
    assert.near(1, opt.param_groups[1].lr, 1e-12)
    sched:set_epoch(5)
    assert.near(0.55, opt.param_groups[1].lr, 1e-12)
    sched:set_epoch(10)
    assert.near(0.1, opt.param_groups[1].lr, 1e-12)
  end)
end)

describe("optim.EMA", function()
  local nn = cbnet.nn

  it("averages parameters and running statistics, copies integer buffers", function()
    local m = nn.Sequential(nn.Linear(2, 1), nn.BatchNorm1d(1))
    local lin, bn = m["1"], m["2"]
    local ema = cbnet.optim.EMA(m, {decay = 0.9})
    local w0 = lin.weight:detach():clone()
    -- the model's weight moves to 1 and stays there: after k updates the
    -- shadow is 0.9^k w0 + (1 - 0.9^k)
    cbnet.no_grad(function() lin.weight:fill_(1) end)
    for _ = 1, 3 do ema:update() end
    local want = w0 * 0.9 ^ 3 + (1 - 0.9 ^ 3)
    assert.near(0, (ema.shadow["1.weight"] - want):abs():max():item(), 1e-6)
    -- running statistics are averaged too; num_batches_tracked is copied
    bn(cbnet.randn(8, 1) * 3 + 5)
    ema:update()
    local rm = bn.running_mean:item()
    assert.near(0.1 * rm, ema.shadow["2.running_mean"]:item(), 1e-6)
    assert.equal(1, ema.shadow["2.num_batches_tracked"]:item())
  end)

  it("apply runs with the averaged weights and restores the model's, also on error", function()
    local m = nn.Linear(3, 2)
    local ema = cbnet.optim.EMA(m, {decay = 0.5})
    local before = m.weight:detach():clone()
    cbnet.no_grad(function() m.weight:fill_(2) end)
    ema:update()
    local inside = ema:apply(function() return m.weight:detach():clone() end)
    assert.near(0, (inside - (before * 0.5 + 1)):abs():max():item(), 1e-6)
    assert.equal(2, m.weight:max():item())
    assert.error_matches(function() ema:apply(function() error("boom") end) end, "boom")
    assert.equal(2, m.weight:min():item())
    -- a state dict round trip
    local other = cbnet.optim.EMA(nn.Linear(3, 2), {decay = 0.5})
    other:load_state_dict(ema:state_dict())
    assert.near(0, (other.shadow.weight - ema.shadow.weight):abs():max():item(), 0)
    assert.error_matches(function() other:load_state_dict({}) end, "EMA:load_state_dict: %a+ is missing")
  end)
end)
