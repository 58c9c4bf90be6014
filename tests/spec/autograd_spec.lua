local cbnet = require "cbnet"
local gradcheck = require "cbnet.gradcheck"

local g = cbnet.Generator(5)
local function randn(...) return cbnet.randn({...}, g) end
local function rand(...) return cbnet.rand({...}, g) end
-- values kept away from 0 (for log, sqrt, division) and from kinks
local function positive(...) return rand(...) * 2 + 0.5 end
local function away_from_zero(...)
  local x = rand(...) + 0.2
  return cbnet.where(rand(...):gt(0.5), x, -x)
end

describe("autograd", function()
  it("accumulates into leaves, as PyTorch does", function()
    local x = cbnet.tensor{1.0, 2.0, 3.0}:requires_grad_()
    local y = (x * x):sum()
    y:backward()
    assert.same({2, 4, 6}, x.grad:totable())
    ;(x * 3):sum():backward()
    assert.same({5, 7, 9}, x.grad:totable())
    x.grad = nil
    assert.is_nil(x.grad)
    assert.is_true(x.is_leaf)
    assert.is_false(y.is_leaf)
    assert.equal("SumBackward", y.grad_fn)
  end)

  it("records nothing under no_grad, as a function or a block", function()
    local x = cbnet.ones(2):requires_grad_()
    local y = cbnet.no_grad(function() return x * 2 end)
    assert.is_false(y.requires_grad)
    do
      local _ <close> = cbnet.no_grad()
      assert.is_false((x + 1).requires_grad)
      assert.is_false(cbnet.is_grad_enabled())
    end
    assert.is_true(cbnet.is_grad_enabled())
    assert.is_true((x + 1).requires_grad)
    assert.has_error(function() cbnet.no_grad(function() error("boom") end) end)
    assert.is_true(cbnet.is_grad_enabled()) -- restored after an error
  end)

  it("detaches, and refuses a second backward through a freed graph", function()
    local x = cbnet.ones(2):requires_grad_()
    local y = (x:exp() * 2):sum()
    assert.is_false(y:detach().requires_grad)
    y:backward()
    assert.error_matches(function() y:backward() end, "second time")
  end)

  it("needs a gradient for a non-scalar root", function()
    local x = cbnet.ones(2, 2):requires_grad_()
    local y = x * 3
    assert.error_matches(function() y:backward() end, "gradient argument is needed")
    y:backward(cbnet.tensor{{1.0, 0.0}, {0.0, 2.0}})
    assert.same({{3, 0}, {0, 6}}, x.grad:totable())
  end)

  it("detects in-place changes to saved tensors and refuses in-place ops on leaves", function()
    local x = cbnet.tensor{1.0, 2.0}:requires_grad_()
    local e = x + 1
    local y = e:sum()
    cbnet.no_grad(function() e:mul_(2) end)
    assert.has_no_error(function() y:backward() end) -- add and sum saved nothing of e
    local z = x:exp()
    local w = (z * z):sum()
    cbnet.no_grad(function() z:add_(1) end)
    assert.error_matches(function() w:backward() end, "modified by an in%-place operation")
    assert.error_matches(function() x:add_(1) end, "in%-place operation on a tensor that requires grad")
    assert.has_no_error(function() cbnet.no_grad(function() x:add_(1) end) end)
  end)

  it("only lets float32 leaves require grad", function()
    assert.error_matches(function() cbnet.tensor{1, 2}:requires_grad_() end, "only float32")
    local y = cbnet.ones(2):requires_grad_() * 2
    assert.error_matches(function() y.requires_grad = false end, "leaf")
  end)
end)

describe("gradients match finite differences", function()
  it("for every unary function", function()
    for _, name in ipairs{"neg", "exp", "sigmoid", "tanh", "sin", "cos"} do
      assert.is_true(gradcheck(function(x) return x[name](x) end, {randn(3, 4)}), name)
    end
    for _, name in ipairs{"log", "sqrt", "rsqrt", "reciprocal"} do
      assert.is_true(gradcheck(function(x) return x[name](x) end, {positive(3, 4)}), name)
    end
    for _, name in ipairs{"abs", "relu"} do
      assert.is_true(gradcheck(function(x) return x[name](x) end, {away_from_zero(3, 4)}), name)
    end
    -- piecewise constant: zero gradient
    local x = randn(5):requires_grad_()
    x:floor():sum():backward()
    assert.same({0, 0, 0, 0, 0}, x.grad:totable())
  end)

  it("for every binary operation, with broadcasting both ways", function()
    local ops = {
      add = function(a, b) return a + b end, sub = function(a, b) return a - b end,
      mul = function(a, b) return a * b end, div = function(a, b) return a / b end,
      pow = function(a, b) return a ^ b end,
    }
    for name, op in pairs(ops) do
      assert.is_true(gradcheck(op, {positive(3, 1), positive(1, 4)}), name)
      assert.is_true(gradcheck(op, {positive(2, 3, 4), positive(4)}), name)
    end
    -- maximum/minimum have a kink at a == b: operands on grids 0.15 apart
    local a = (cbnet.arange(12):float() * 0.3 + 0.05):view(3, 4)
    local b = cbnet.arange(4):float() * 0.9 + 0.2
    assert.is_true(gradcheck(function(x, y) return x:maximum(y) end, {a, b}))
    local at, bt = a:detach():t():contiguous(), b:detach():view(4, 1):clone()
    assert.is_true(gradcheck(function(x, y) return x:minimum(y) end, {at, bt}))
    -- ties share the gradient
    local t1, t2 = cbnet.tensor{1.0, 2.0}:requires_grad_(), cbnet.tensor{1.0, 3.0}:requires_grad_()
    t1:maximum(t2):sum():backward()
    assert.same({0.5, 0}, t1.grad:totable())
    assert.same({0.5, 1}, t2.grad:totable())
    assert.is_true(gradcheck(function(a) return a * 3 - 2 / a + a ^ 2 end, {positive(5)}))
    assert.is_true(gradcheck(function(a) return 1 - a end, {positive(5)}))
  end)

  it("for clamp and where", function()
    local x = cbnet.tensor{-2.0, -0.5, 0.3, 0.7, 2.0}
    assert.is_true(gradcheck(function(a) return a:clamp(-1, 1) end, {x}))
    local cond = cbnet.tensor{{true}, {false}}
    assert.is_true(gradcheck(function(a, b) return cbnet.where(cond, a, b) end,
      {randn(2, 3), randn(3)}))
  end)

  it("for reductions", function()
    local x = randn(3, 4, 2)
    for _, case in ipairs{
      function(a) return a:sum() end, function(a) return a:sum(2) end,
      function(a) return a:sum({1, 3}, true) end, function(a) return a:mean() end,
      function(a) return a:mean(-1) end, function(a) return a:var() end,
      function(a) return a:var(2, true) end, function(a) return a:var(1, false, 0) end,
      function(a) return a:std(3) end, function(a) return a:std() end,
      function(a) return a:max() end, function(a) return a:min(2) end,
      function(a) return (a:max(3)) end, function(a) return (a:min(1, true)) end,
    } do
      assert.is_true(gradcheck(case, {x}))
    end
    local p = positive(3):requires_grad_()
    assert.error_matches(function() p:prod() end, "prod: no gradient")
  end)

  it("for matmul in every shape combination", function()
    assert.is_true(gradcheck(function(a, b) return a:matmul(b) end, {randn(3, 4), randn(4, 2)}))
    assert.is_true(gradcheck(function(a, b) return a:matmul(b:t()) end, {randn(3, 4), randn(2, 4)}))
    assert.is_true(gradcheck(function(a, b) return a:matmul(b) end, {randn(2, 3, 4), randn(4, 2)}))
    assert.is_true(gradcheck(function(a, b) return a:matmul(b) end, {randn(2, 1, 3, 4), randn(3, 4, 2)}))
    assert.is_true(gradcheck(function(a, b) return a:matmul(b) end, {randn(4), randn(4)}))
    assert.is_true(gradcheck(function(a, b) return a:matmul(b) end, {randn(4), randn(2, 4, 3)}))
    assert.is_true(gradcheck(function(a, b) return a:matmul(b) end, {randn(2, 3, 4), randn(4)}))
  end)

  it("for views", function()
    local x = randn(2, 3, 4)
    for _, case in ipairs{
      function(a) return a:view(6, 4) end, function(a) return a:reshape(4, -1) end,
      function(a) return a:transpose(1, 3) end, function(a) return a:permute(3, 1, 2) end,
      function(a) return a:narrow(2, 2, 2) end, function(a) return a:select(3, 4) end,
      function(a) return a:slice(3, 1, -1, 2) end, function(a) return a[2] end,
      function(a) return a[1][3] * 2 end, function(a) return a:flatten(2) end,
      function(a) return a:unsqueeze(2):squeeze(2) end,
      function(a) return a:permute(2, 3, 1):contiguous():view(-1) end,
      function(a) return a:clone() end,
      function(a) return a:select(2, 1):unsqueeze(2):expand(2, 5, 4) end,
    } do
      assert.is_true(gradcheck(case, {x}))
    end
  end)

  it("for gathering, masking and joining", function()
    local x = randn(3, 4)
    assert.is_true(gradcheck(function(a) return a:index_select(1, cbnet.tensor{2, 0, 2}) end, {x}))
    assert.is_true(gradcheck(function(a) return a:index_select(2, cbnet.tensor{3, 3, 1}) end, {x}))
    assert.is_true(gradcheck(function(a) return a:gather(2, cbnet.tensor{{1}, {0}, {3}}) end, {x}))
    local mask = cbnet.tensor{{true, false, true, false}}
    assert.is_true(gradcheck(function(a) return a:masked_fill(mask, 0) end, {x}))
    assert.is_true(gradcheck(function(a) return a:masked_select(mask) end, {x}))
    assert.is_true(gradcheck(function(a, b) return cbnet.cat({a, b, a}, 2) end, {x, randn(3, 2)}))
    assert.is_true(gradcheck(function(a, b) return cbnet.stack({a, b}, 2) end, {x, randn(3, 4)}))
  end)

  it("for a composite: softmax cross-entropy written in Lua", function()
    local labels = cbnet.tensor{1, 0, 2}
    local function loss(logits)
      local shifted = logits - logits:max(2, true)
      local log_probs = shifted - shifted:exp():sum(2, true):log()
      return -log_probs:gather(2, labels:view(-1, 1)):mean()
    end
    assert.is_true(gradcheck(loss, {randn(3, 4)}))
  end)
end)
