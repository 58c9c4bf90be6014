--- cbnet.gradcheck: finite-difference gradient checks, for a new op or a
-- loss written in Lua (`cbnet.gradcheck(fn, inputs)`; the specs use it too).
--
-- gradcheck(fn, inputs[, opts]) compares the gradients autograd computes for
-- loss = sum(fn(inputs...) * w) (w fixed random weights) with central
-- differences (loss(x + eps) - loss(x - eps)) / 2 eps for every element of
-- every input. The loss is summed in Lua's doubles, so the only float32
-- rounding is in fn itself; eps = 1e-2 keeps that rounding small against the
-- difference, and the functions checked are smooth at the points used.
local cbnet = require "cbnet"
local options = require "cbnet.options"

local function flat_values(t)
  return t:detach():contiguous():view(-1):totable()
end

local function weighted_sum(out, weights)
  local values, s = flat_values(out), 0
  for i = 1, #values do s = s + values[i] * weights[i] end
  return s
end

local function gradcheck(fn, inputs, opts)
  opts = options.check(opts, "gradcheck", {"eps", "atol", "rtol"})
  local eps, atol, rtol = opts.eps or 1e-2, opts.atol or 2e-3, opts.rtol or 1e-2
  for _, x in ipairs(inputs) do
    x.grad = nil
    x.requires_grad = true
  end
  local out = fn(table.unpack(inputs))
  local g = cbnet.Generator(99)
  local w = cbnet.randn(out:numel(), g)
  local weights = w:totable()
  out:backward(w:view(out:size()))
  for k, x in ipairs(inputs) do
    assert(x.grad, ("input %d received no gradient"):format(k))
    local analytic = flat_values(x.grad)
    local flat = x:detach():view(-1) -- shares x's storage
    for i = 1, x:numel() do
      local original = flat[i]
      local plus, minus
      cbnet.no_grad(function()
        flat[i] = original + eps
        plus = weighted_sum(fn(table.unpack(inputs)), weights)
        flat[i] = original - eps
        minus = weighted_sum(fn(table.unpack(inputs)), weights)
        flat[i] = original
      end)
      local numeric = (plus - minus) / (2 * eps)
      local err = math.abs(analytic[i] - numeric)
      if err > atol + rtol * math.abs(numeric) then -- raised at the caller's line
        error(("gradient of input %d, element %d: autograd %.6g, finite differences %.6g")
          :format(k, i, analytic[i], numeric), 2)
      end
    end
  end
  return true
end

return gradcheck
