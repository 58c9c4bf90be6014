-- A small demo of cbnet's tensors: least-squares fit of a noisy line, solved
-- in closed form, then by gradient descent written with plain tensor ops.
-- Run it with `build/bin/cbnet experiments/demo.lua`.
local cbnet = require "cbnet"

local g = cbnet.Generator(0)
local n = 1000
local x = cbnet.rand(n, 1, g) * 4 - 2                -- inputs in [-2, 2)
local y = x * 3 + 0.5 + cbnet.randn(n, 1, g) * 0.1    -- y = 3x + 0.5 + noise

-- closed form: w = (A^T A)^-1 A^T y, with A = [x, 1]
local A = cbnet.cat({x, cbnet.ones(n, 1)}, 2)
local AtA, Aty = A:t():matmul(A), A:t():matmul(y)
local a, b, c, d = AtA[1][1], AtA[1][2], AtA[2][1], AtA[2][2]
local det = a * d - b * c
local slope = (d * Aty[1][1] - b * Aty[2][1]) / det
local intercept = (a * Aty[2][1] - c * Aty[1][1]) / det
print(("closed form:      y = %.4f x + %.4f"):format(slope, intercept))

-- gradient descent on the mean squared error
local w, bias = cbnet.zeros(1, 1), cbnet.zeros(1)
for step = 1, 200 do
  local err = x:matmul(w) + bias - y                  -- {n, 1}
  local grad_w = x:t():matmul(err) * (2 / n)
  local grad_b = err:mean() * 2
  w:sub_(grad_w * 0.1)
  bias:sub_(grad_b * 0.1)
  if step % 50 == 0 then
    print(("step %3d  mse %.5f"):format(step, (err * err):mean():item()))
  end
end
print(("gradient descent: y = %.4f x + %.4f"):format(w:item(), bias:item()))
print(cbnet.info().blas_kernel .. " kernel, " .. cbnet.get_num_threads() .. " threads")
