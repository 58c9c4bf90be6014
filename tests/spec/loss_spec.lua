local cbnet = require "cbnet"
local loss, F = cbnet.loss, cbnet.F
local gradcheck = require "cbnet.gradcheck"

local g = cbnet.Generator(21)
local function assert_close(want, got, tol)
  got = cbnet.is_tensor(got) and got:totable() or got
  assert.equal(#want, #got)
  for i = 1, #want do assert.near(want[i], got[i], tol, ("element %d"):format(i)) end
end

local counts = {5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50}

describe("class-balanced weights", function()
  it("match a numpy computation of (1 - beta)/(1 - beta^n), normalised to C", function()
    -- reference values computed in float64 with numpy
    assert_close({0.050611, 0.076900, 0.121134, 0.195037, 0.318805, 0.524590, 0.868349,
                  1.442627, 2.409223, 3.992724}, loss.cb_weights(counts, 0.9999), 2e-6)
    assert_close({0.999466, 0.999466, 0.999466, 0.999466, 0.999466, 0.999466, 0.999466,
                  0.999467, 0.999625, 1.004644}, loss.cb_weights(counts, 0.9), 2e-6)
    assert_close({1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, loss.cb_weights(counts, 0.5), 1e-6)
    assert.near(10, loss.cb_weights(counts, 0.9999):sum():item(), 1e-5)
    assert.error_matches(function() loss.cb_weights({3, 0}, 0.9) end, "class 2 has 0 samples")
  end)

  it("LDAM margins are proportional to n^(-1/4) with the largest 0.5", function()
    assert_close({0.158114, 0.179697, 0.204238, 0.232091, 0.263829, 0.299768, 0.340675,
                  0.387221, 0.440497, 0.5}, loss.ldam_margins(counts), 2e-6)
  end)
end)

describe("losses against hand-computed values", function()
  -- two samples, three classes: p = softmax(x)
  local x = cbnet.tensor{{2.0, 0.0, 0.0}, {0.0, 1.0, 3.0}}
  local y = cbnet.tensor{0, 1}
  local function p(i, c)
    local row = x[i]:totable()
    local z = 0
    for _, v in ipairs(row) do z = z + math.exp(v) end
    return math.exp(row[c]) / z
  end

  it("cross-entropy with class weights divides by the weights of the targets", function()
    local w = cbnet.tensor{2.0, 0.5, 1.0}
    local want = (2 * -math.log(p(1, 1)) + 0.5 * -math.log(p(2, 2))) / 2.5
    assert.near(want, loss.cross_entropy(x, y, {weight = w}):item(), 1e-6)
  end)

  it("focal loss on softmax, gamma 1 and 2, with weights; gamma 0 is cross-entropy", function()
    local function fl(gamma, w1, w2)
      return (w1 * -(1 - p(1, 1)) ^ gamma * math.log(p(1, 1)) + w2 * -(1 - p(2, 2)) ^ gamma * math.log(p(2, 2))) / 2
    end
    assert.near(fl(1, 1, 1), loss.focal(x, y):item(), 1e-6)
    assert.near(fl(2, 1, 1), loss.focal(x, y, {gamma = 2}):item(), 1e-6)
    assert.near(fl(1, 3, 0.5), loss.focal(x, y, {weight = {3, 0.5, 1}}):item(), 1e-6)
    assert.near(loss.cross_entropy(x, y):item(), loss.focal(x, y, {gamma = 0}):item(), 1e-6)
  end)

  it("class-balanced softmax, sigmoid and focal follow the official code", function()
    local w = {2.0, 0.5, 1.0}
    local function sig(v) return 1 / (1 + math.exp(-v)) end
    local function bce(v, z) return -(z * math.log(sig(v)) + (1 - z) * math.log(1 - sig(v))) end
    local X, wy = x:totable(), {2.0, 0.5}
    local sigmoid, focal = 0, 0
    for i = 1, 2 do
      for c = 1, 3 do
        local z = (c - 1 == y[i]) and 1 or 0
        local pt = z == 1 and sig(X[i][c]) or 1 - sig(X[i][c])
        sigmoid = sigmoid + wy[i] * bce(X[i][c], z)
        focal = focal + wy[i] * (1 - pt) ^ 2 * bce(X[i][c], z)
      end
    end
    local softmax = (2 * -math.log(p(1, 1)) + 0.5 * -math.log(p(2, 2))) / 2
    assert.near(softmax, loss.class_balanced(x, y, w, {type = "softmax"}):item(), 1e-6)
    assert.near(sigmoid / 2, loss.class_balanced(x, y, w, {type = "sigmoid"}):item(), 1e-6)
    assert.near(focal / 2, loss.class_balanced(x, y, w, {type = "focal", gamma = 2}):item(), 1e-5)
    -- the log-space modulator stays finite for huge logits
    local big = cbnet.tensor{{80.0, -80.0, 0.0}}
    local v = loss.class_balanced(big, cbnet.tensor{1}, w, {type = "focal", gamma = 1}):item()
    assert.is_true(v == v and v < math.huge)
  end)

  it("LDAM subtracts the target's margin and scales by s", function()
    local m = cbnet.tensor{0.1, 0.3, 0.5}
    local adjusted = cbnet.tensor{{(2.0 - 0.1) * 30, 0.0, 0.0}, {0.0, (1.0 - 0.3) * 30, 90.0}}
    assert.near(F.cross_entropy(adjusted, y):item(), loss.ldam(x, y, m):item(), 1e-5)
  end)

  it("balanced softmax adds log priors to the logits", function()
    local c = {6, 3, 1}
    local adjusted = x + cbnet.tensor{{math.log(0.6), math.log(0.3), math.log(0.1)}}
    assert.near(F.cross_entropy(adjusted, y):item(), loss.balanced_softmax(x, y, c):item(), 1e-6)
    local half = x + cbnet.tensor{{math.log(0.6), math.log(0.3), math.log(0.1)}} * 0.5
    assert.near(F.cross_entropy(half, y):item(), loss.logit_adjusted(x, y, c, {tau = 0.5}):item(), 1e-6)
  end)

  it("every loss has gradients matching finite differences", function()
    local logits, target = cbnet.randn({4, 3}, g), cbnet.tensor{2, 0, 1, 1}
    local w = loss.cb_weights({50, 20, 5}, 0.99)
    for name, fn in pairs{
      focal = function(a) return loss.focal(a, target, {gamma = 2, weight = w}) end,
      cb_softmax = function(a) return loss.class_balanced(a, target, w, {type = "softmax"}) end,
      cb_sigmoid = function(a) return loss.class_balanced(a, target, w, {type = "sigmoid"}) end,
      cb_focal = function(a) return loss.class_balanced(a, target, w, {type = "focal", gamma = 1}) end,
      ldam = function(a) return loss.ldam(a, target, loss.ldam_margins({50, 20, 5}), {s = 5}) end,
      balanced = function(a) return loss.balanced_softmax(a, target, {50, 20, 5}) end,
    } do
      local ok, err = pcall(gradcheck, fn, {logits})
      assert(ok, name .. ": " .. tostring(err))
    end
  end)
end)
