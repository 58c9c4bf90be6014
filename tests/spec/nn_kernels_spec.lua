local cbnet = require "cbnet"
local F = cbnet.F
local nn = cbnet.nn
local gradcheck = require "cbnet.gradcheck"

local g = cbnet.Generator(11)
local function randn(...) return cbnet.randn({...}, g) end
local function values(t) return t:contiguous():view(-1):totable() end
local function assert_close(want, got, tol)
  assert.equal(#want, #got)
  for i = 1, #want do assert.near(want[i], got[i], tol or 1e-4, ("element %d"):format(i)) end
end

-- A direct loop over the definition of a convolution.
local function naive_conv(x, w, b, stride, pad, dil, groups)
  local n, c, h, wd = table.unpack(x:size())
  local o, cg, kh, kw = table.unpack(w:size())
  local oh = (h + 2 * pad - dil * (kh - 1) - 1) // stride + 1
  local ow = (wd + 2 * pad - dil * (kw - 1) - 1) // stride + 1
  local X, W = x:totable(), w:totable()
  local out = {}
  for ni = 1, n do for oi = 1, o do
    local grp = (oi - 1) // (o // groups)
    for i = 1, oh do for j = 1, ow do
      local s = b and b[oi] or 0
      for ci = 1, cg do for a = 1, kh do for bb = 1, kw do
        local ih = (i - 1) * stride - pad + (a - 1) * dil + 1
        local iw = (j - 1) * stride - pad + (bb - 1) * dil + 1
        if ih >= 1 and ih <= h and iw >= 1 and iw <= wd then
          s = s + X[ni][grp * cg + ci][ih][iw] * W[oi][ci][a][bb]
        end
      end end end
      out[#out + 1] = s
    end end
  end end
  return out
end

describe("image layouts", function()
  -- CNHW: each channel's N x H x W block contiguous (strides H*W, N*H*W, W, 1)
  local function is_cnhw(t)
    local n, c, h, w = table.unpack(t:size())
    local s = t:stride()
    return s[1] == h * w and s[2] == n * h * w and s[3] == w and s[4] == 1
  end

  it("conv2d writes CNHW and the layers after it keep it, forward and backward", function()
    local x = randn(3, 2, 8, 8):requires_grad_()
    local conv = F.conv2d(x, randn(4, 2, 3, 3), nil, {padding = 1})
    assert.is_true(is_cnhw(conv))
    local bn = F.batch_norm(conv, nil, nil, {training = true})
    local pooled = F.max_pool2d(bn:relu(), 2)
    for _, t in ipairs{bn, bn:relu(), pooled, F.avg_pool2d(bn, 2), bn + conv, conv:clone()} do
      assert.is_true(is_cnhw(t))
    end
    local c2 = F.conv2d(pooled, randn(5, 4, 3, 3), nil, {padding = 1})
    c2:sum():backward()
    assert.is_true(is_cnhw(c2))
    -- x was NCHW: its gradient is too
    assert.same({128, 64, 8, 1}, x.grad:stride())
  end)

  it("contiguous() gives NCHW, and view asks for reshape on CNHW", function()
    local conv = F.conv2d(randn(3, 2, 4, 4), randn(4, 2, 1, 1))
    assert.same({64, 16, 4, 1}, conv:contiguous():stride())
    assert.error_matches(function() conv:view(3, 64) end, "use reshape")
    assert.same({3, 64}, conv:reshape(3, 64):size())
    assert.near(0, (conv:reshape(3, 64) - conv:contiguous():view(3, 64)):abs():max():item(), 0)
  end)
end)

describe("conv2d", function()
  it("matches the definition with stride, padding, dilation, groups and bias", function()
    for _, case in ipairs{
      {c = 3, o = 4, k = 3, stride = 1, pad = 1, dil = 1, groups = 1},
      {c = 4, o = 6, k = 3, stride = 2, pad = 0, dil = 1, groups = 2},
      {c = 2, o = 2, k = 2, stride = 1, pad = 2, dil = 2, groups = 1},
      {c = 4, o = 4, k = 1, stride = 1, pad = 0, dil = 1, groups = 4},
    } do
      local x, w, b = randn(2, case.c, 6, 5), randn(case.o, case.c // case.groups, case.k, case.k), randn(case.o)
      local y = F.conv2d(x, w, b, {stride = case.stride, padding = case.pad, dilation = case.dil, groups = case.groups})
      assert_close(naive_conv(x, w, b:totable(), case.stride, case.pad, case.dil, case.groups), values(y), 1e-4)
    end
    -- 16 output columns and more with a stride: im2col's vector loop over strided columns
    for _, case in ipairs{{w = 32, stride = 2, pad = 1}, {w = 35, stride = 2, pad = 0}, {w = 50, stride = 3, pad = 2}} do
      local x, w = randn(1, 2, 4, case.w), randn(3, 2, 3, 3)
      local y = F.conv2d(x, w, nil, {stride = case.stride, padding = case.pad})
      assert_close(naive_conv(x, w, {0, 0, 0}, case.stride, case.pad, 1, 1), values(y), 1e-4)
    end
  end)

  it("has correct gradients for input, weight and bias, also through a chain", function()
    local x, w, b = randn(2, 2, 5, 4), randn(3, 2, 3, 3), randn(3)
    assert.is_true(gradcheck(function(a, c, d) return F.conv2d(a, c, d, {padding = 1}) end, {x, w, b}))
    assert.is_true(gradcheck(function(a, c) return F.conv2d(a, c, nil, {stride = 2, groups = 2}) end,
      {randn(2, 4, 5, 5), randn(2, 2, 2, 2)}))
    -- strided columns (im2col's gather, col2im's pairs and lone last column
    -- from 16 output columns on, the per-column loops below): even and odd
    -- widths, paddings that leave the first or the last column out
    for _, case in ipairs{{w = 32, k = 3, stride = 2, pad = 1}, {w = 33, k = 3, stride = 2, pad = 1},
                          {w = 34, k = 2, stride = 2, pad = 0}, {w = 35, k = 3, stride = 2, pad = 2},
                          {w = 50, k = 3, stride = 3, pad = 2}, {w = 7, k = 3, stride = 2, pad = 1}} do
      assert.is_true(gradcheck(function(a, c)
        return F.conv2d(a, c, nil, {stride = case.stride, padding = case.pad})
      end, {randn(1, 2, 4, case.w), randn(2, 2, case.k, case.k)}), case.w .. " wide, stride " .. case.stride)
    end
    -- every other column of a wider input (column stride 2, groups: im2col)
    assert.is_true(gradcheck(function(a, c)
      return F.conv2d(a:slice(4, 1, -1, 2), c, nil, {padding = 1, groups = 2})
    end, {randn(1, 4, 3, 37), randn(4, 2, 3, 3)}))
    local w2 = randn(2, 3, 3, 3)
    assert.is_true(gradcheck(function(a, c, d)
      return F.conv2d(F.conv2d(a, c, nil, {padding = 1}), d, nil, {padding = 1})
    end, {x, w, w2}))
  end)

  it("computes the same outputs and gradients on every path this CPU runs", function()
    -- the direct paths take stride 1 (and 2 with 3x3, padding 1, even sizes), dilation 1,
    -- groups 1, padding < kernel;
    -- odd sizes leave partial tiles, a batch of 13 partial image stacks, a
    -- transposed view of the input non-unit strides
    local cases = {
      {n = 13, c = 16, o = 16, h = 32, w = 32, kh = 3, kw = 3, pad = {1, 1}, bias = true},
      {n = 3, c = 5, o = 7, h = 9, w = 25, kh = 3, kw = 3, pad = {1, 1}, bias = true},
      {n = 2, c = 3, o = 6, h = 8, w = 27, kh = 3, kw = 3, pad = {0, 0}, bias = true},
      {n = 5, c = 3, o = 6, h = 6, w = 32, kh = 3, kw = 3, pad = {1, 1}, bias = true}, -- dW reads dY in place
      {n = 2, c = 4, o = 5, h = 7, w = 26, kh = 5, kw = 3, pad = {2, 1}},
      {n = 4, c = 2, o = 9, h = 6, w = 24, kh = 1, kw = 1, pad = {0, 0}, bias = true},
      {n = 2, c = 3, o = 4, h = 6, w = 25, kh = 3, kw = 3, pad = {2, 2}, transposed_input = true},
      {n = 1, c = 64, o = 64, h = 8, w = 24, kh = 3, kw = 3, pad = {1, 1}},
      {n = 70, c = 8, o = 8, h = 5, w = 4, kh = 3, kw = 3, pad = {1, 1}, bias = true}, -- several stacks a worker
      {n = 2, c = 2, o = 3, h = 1, w = 1, kh = 1, kw = 1, pad = {0, 0}},
      -- 32 channels and more: the *-winograd paths take 3x3 kernels (odd sizes: partial tiles)
      {n = 3, c = 32, o = 36, h = 9, w = 13, kh = 3, kw = 3, pad = {1, 1}, bias = true},
      {n = 2, c = 33, o = 32, h = 7, w = 5, kh = 3, kw = 3, pad = {0, 0}},
      {n = 5, c = 40, o = 32, h = 4, w = 6, kh = 3, kw = 3, pad = {2, 2}, transposed_input = true},
      {n = 9, c = 32, o = 64, h = 8, w = 8, kh = 3, kw = 3, pad = {1, 1}}, -- rows of 4 tiles: 2 at once
      {n = 3, c = 32, o = 32, h = 8, w = 7, kh = 3, kw = 3, pad = {1, 1}, bias = true}, -- 4 tiles, odd width
      {n = 2, c = 32, o = 32, h = 5, w = 37, kh = 3, kw = 3, pad = {1, 1}}, -- rows of 19 tiles: 8 + 8 + 3
      {n = 2, c = 16, o = 16, h = 5, w = 7, kh = 3, kw = 3, pad = {2, 2}}, -- odd 7x9 output, padding 2
      {n = 4, c = 16, o = 18, h = 20, w = 34, kh = 3, kw = 3, pad = {1, 1}}, -- dW's 4 x 4 sums: 2 rows past the last, several blocks
      -- AVX-512's 16 tiles at a time: 16 in a row (odd width: the last tile half), two rows of 8
      {n = 3, c = 16, o = 24, h = 6, w = 31, kh = 3, kw = 3, pad = {1, 1}, bias = true},
      {n = 5, c = 32, o = 32, h = 16, w = 16, kh = 3, kw = 3, pad = {1, 1}},
      {n = 3, c = 16, o = 20, h = 9, w = 15, kh = 3, kw = 3, pad = {1, 1}, bias = true},
      -- those read in place, as by the stack (a transposed input): an odd count of rows of 8
      -- tiles made even
      {n = 3, c = 16, o = 16, h = 16, w = 16, kh = 3, kw = 3, pad = {1, 1}, bias = true},
      {n = 3, c = 16, o = 16, h = 16, w = 16, kh = 3, kw = 3, pad = {1, 1}, transposed_input = true},
      {n = 2, c = 16, o = 20, h = 5, w = 32, kh = 3, kw = 3, pad = {1, 1}, transposed_input = true},
      {n = 4, c = 20, o = 16, h = 7, w = 30, kh = 3, kw = 3, pad = {0, 0}},
      -- the weight gradient's own products: 3 and 4 + 1 vectors of 16 input channels, output
      -- channels past the last whole register tile
      {n = 3, c = 48, o = 22, h = 6, w = 9, kh = 3, kw = 3, pad = {1, 1}, bias = true},
      {n = 2, c = 80, o = 18, h = 6, w = 6, kh = 3, kw = 3, pad = {1, 1}},
      -- 64 channels and more: F(4x4, 3x3), 8 tiles at a time wherever they lie
      {n = 3, c = 64, o = 68, h = 9, w = 13, kh = 3, kw = 3, pad = {1, 1}, bias = true},
      {n = 2, c = 65, o = 64, h = 7, w = 5, kh = 3, kw = 3, pad = {0, 0}},
      {n = 5, c = 64, o = 64, h = 4, w = 6, kh = 3, kw = 3, pad = {2, 2}, transposed_input = true},
      {n = 9, c = 64, o = 64, h = 8, w = 8, kh = 3, kw = 3, pad = {1, 1}},
      {n = 2, c = 64, o = 64, h = 5, w = 37, kh = 3, kw = 3, pad = {1, 1}},
      {n = 3, c = 64, o = 72, h = 8, w = 9, kh = 3, kw = 3, pad = {1, 1}, transposed_input = true}, -- by the stack
      -- stacks of small images: blocks whose last tiles fill 1, 2 or 3 of a micro-kernel's 4 vectors
      {n = 128, c = 64, o = 64, h = 4, w = 4, kh = 3, kw = 3, pad = {1, 1}, bias = true},
      {n = 60, c = 64, o = 64, h = 4, w = 4, kh = 3, kw = 3, pad = {1, 1}},
      {n = 37, c = 16, o = 16, h = 4, w = 4, kh = 3, kw = 3, pad = {1, 1}},
      -- stride 2 (3x3, padding 1, even sizes: the direct paths' phases; odd: im2col everywhere):
      -- outputs 16 wide (dW direct, dY in place), 8 wide (dW by im2col), strided and CNHW
      -- inputs, small images several stacks a worker
      {n = 13, c = 16, o = 32, h = 32, w = 32, kh = 3, kw = 3, pad = {1, 1}, stride = 2, bias = true},
      {n = 3, c = 32, o = 64, h = 16, w = 16, kh = 3, kw = 3, pad = {1, 1}, stride = 2},
      {n = 5, c = 3, o = 8, h = 10, w = 34, kh = 3, kw = 3, pad = {1, 1}, stride = 2, transposed_input = true},
      {n = 7, c = 5, o = 6, h = 6, w = 32, kh = 3, kw = 3, pad = {1, 1}, stride = 2, cnhw_input = true, bias = true},
      {n = 70, c = 8, o = 8, h = 4, w = 4, kh = 3, kw = 3, pad = {1, 1}, stride = 2, bias = true},
      {n = 2, c = 4, o = 4, h = 7, w = 9, kh = 3, kw = 3, pad = {1, 1}, stride = 2},
    }
    -- and shapes no one chose: 30 drawn from a fixed seed, half of them with the
    -- input in the CNHW layout a convolution writes (bench/parity.py --random
    -- draws more, against PyTorch)
    local draw = cbnet.Generator(2026)
    local function pick(list) return list[cbnet.randint(1, #list + 1, {1}, draw):item()] end
    for _ = 1, 30 do
      local k = pick{1, 2, 3, 3, 3, 5}
      local pad = pick{0, 1, 2, 3, 4}
      pad = pad < k and pad or k - 1
      local c, o = pick{1, 3, 8, 15, 16, 17, 32, 33, 64, 65}, pick{1, 4, 16, 18, 32, 35, 64, 70}
      local h, w = pick{1, 4, 7, 8, 13, 16, 32}, pick{1, 5, 8, 15, 16, 31, 32}
      h, w = math.max(h, k - 2 * pad), math.max(w, k - 2 * pad)
      cases[#cases + 1] = {n = pick{1, 2, 3, 7, 13}, c = c, o = o, h = h, w = w, kh = k, kw = k,
                           pad = {pad, pad}, bias = pick{true, false}, cnhw_input = pick{true, false}}
    end
    local previous = cbnet.conv_path()
    local function run(case, path)
      cbnet.conv_path(path)
      local gen = cbnet.Generator(7)
      local function normal(...) return cbnet.randn({...}, gen) end
      local x = normal(case.n, case.c, case.h, case.w)
      if case.transposed_input then x = normal(case.n, case.c, case.w, case.h):transpose(3, 4) end
      if case.cnhw_input then x = normal(case.c, case.n, case.h, case.w):transpose(1, 2) end
      local w, b = normal(case.o, case.c, case.kh, case.kw), case.bias and normal(case.o) or nil
      x.requires_grad, w.requires_grad = true, true
      if b then b.requires_grad = true end
      local y = F.conv2d(x, w, b, {padding = case.pad, stride = case.stride or 1})
      local gy = normal(table.unpack(y:size()))
      ;(y * gy):sum():backward()
      return {y = y:detach(), dx = x.grad, dw = w.grad, db = b and b.grad}
    end
    for _, case in ipairs(cases) do
      local reference = run(case, "im2col")
      for _, path in ipairs(cbnet.conv_paths()) do
        local got = run(case, path)
        for _, key in ipairs{"y", "dx", "dw", "db"} do
          if reference[key] then
            local scale = reference[key]:abs():max():item()
            local err = (got[key] - reference[key]):abs():max():item()
            assert(err <= 1e-5 * scale + 1e-6, ("%s, %dx%d kernel, %s, %d x %d x %d x %d -> %d: %s differs by %g"):format(
              path, case.kh, case.kw, table.concat(case.pad, ","), case.n, case.c, case.h, case.w, case.o,
              key, err))
          end
        end
      end
    end
    cbnet.conv_path(previous)
  end)

  it("adds its input gradient into a shortcut's gradient so far exactly as a separate add would", function()
    -- x feeds the convolution and a shortcut: backward runs the shortcut's
    -- side first, and the convolution (and a slice) then add into x's
    -- gradient so far (cb_node_grad_so_far); the sum must be the one the
    -- engine's own add makes, bit for bit, on every path and layout
    local previous = cbnet.conv_path()
    local cases = {{c = 16, size = 8, stride = 1}, {c = 64, size = 8, stride = 1},  -- F(2x2), F(4x4)
                   {c = 3, size = 9, stride = 1}, {c = 16, size = 8, stride = 2}}  -- direct, phases
    for _, case in ipairs(cases) do
      for _, cnhw in ipairs{false, true} do
        for _, conv_first in ipairs{false, true} do
          local x0 = randn(5, case.c, case.size, case.size)
          if cnhw then x0 = randn(case.c, 5, case.size, case.size):transpose(1, 2) end
          local w = randn(case.c, case.c, 3, 3) * 0.2
          local opts = {padding = 1, stride = case.stride}
          local function shortcut(x)
            if case.stride == 1 then return x end
            return x:slice(3, 1, -1, 2):slice(4, 1, -1, 2)
          end
          local gy = randn(table.unpack(F.conv2d(x0, w, nil, opts):size()))
          for _, path in ipairs(cbnet.conv_paths()) do
            cbnet.conv_path(path)
            local leaf = x0:clone():requires_grad_()
            local x = leaf * 1 -- not a leaf: its gradient so far is the engine's own
            local y = conv_first and F.conv2d(x, w, nil, opts) + shortcut(x)
                                  or shortcut(x) + F.conv2d(x, w, nil, opts)
            ;(y * gy):sum():backward()
            -- the two parts apart, then one add
            local a = x0:clone():requires_grad_()
            F.conv2d(a, w, nil, opts):backward(gy)
            local b = x0:clone():requires_grad_()
            shortcut(b):backward(gy)
            local expected = conv_first and b.grad + a.grad or a.grad + b.grad
            local where = ("%s, %d channels, stride %d, %s"):format(path, case.c, case.stride,
              cnhw and "CNHW" or "NCHW")
            assert.equal(0, (leaf.grad - expected):abs():max():item(), where)
            assert.is_true(a.grad:abs():max():item() > 0 and b.grad:abs():max():item() > 0, where)
          end
        end
      end
    end
    cbnet.conv_path(previous)
  end)

  it("with relu = true is conv2d then ReLU on every path, with and without gradients", function()
    local previous = cbnet.conv_path()
    -- direct, Winograd F(2x2) and F(4x4) shapes (9 images: several stacks), and stride 2 (im2col)
    for _, case in ipairs{{c = 3, o = 8, stride = 1}, {c = 16, o = 16, stride = 1},
                          {c = 64, o = 64, stride = 1}, {c = 8, o = 8, stride = 2}} do
      local x, w, b = randn(9, case.c, 10, 10), randn(case.o, case.c, 3, 3), randn(case.o)
      for _, path in ipairs(cbnet.conv_paths()) do
        cbnet.conv_path(path)
        local opts = {padding = 1, stride = case.stride}
        local reference = F.conv2d(x, w, b, opts):relu()
        opts.relu = true
        local fused = cbnet.no_grad(function() return F.conv2d(x, w, b, opts) end)
        assert.equal(0, (fused - reference):abs():max():item(), path)
        local wg = w:clone():requires_grad_()
        local recorded = F.conv2d(x, wg, b, opts) -- a gradient to record: the ReLU op after
        assert.equal(0, (recorded:detach() - reference):abs():max():item(), path)
        recorded:sum():backward()
        local wr = w:clone():requires_grad_()
        F.conv2d(x, wr, b, {padding = 1, stride = case.stride}):relu():sum():backward()
        assert.equal(0, (wg.grad - wr.grad):abs():max():item(), path)
      end
    end
    cbnet.conv_path(previous)
  end)

  it("gives the same results when the batch is split into chunks internally", function()
    -- 16 x 3 x 3 = 144 rows of 32 x 32 columns per image: the kernel works in
    -- chunks of 7 images, so 9 images take two chunks
    local x, w, b = randn(9, 16, 32, 32), randn(4, 16, 3, 3), randn(4)
    x.requires_grad, w.requires_grad = true, true
    local y = F.conv2d(x, w, b, {padding = 1})
    local gy = randn(9, 4, 32, 32)
    ;(y * gy):sum():backward()
    local dw_chunked, dx_chunked = w.grad, x.grad
    w.grad = nil
    local parts, dx_parts = {}, {}
    for i = 1, 9 do
      local xi = x:detach():narrow(1, i, 1):clone():requires_grad_()
      local yi = F.conv2d(xi, w, b, {padding = 1})
      ;(yi * gy:narrow(1, i, 1)):sum():backward()
      parts[i], dx_parts[i] = yi:detach(), xi.grad
    end
    assert.near(0, (cbnet.cat(parts) - y):abs():max():item(), 1e-4)
    assert.near(0, (cbnet.cat(dx_parts) - dx_chunked):abs():max():item(), 1e-4)
    assert.near(0, ((w.grad - dw_chunked):abs():max() / dw_chunked:abs():max()):item(), 1e-5)
  end)

  it("names both shapes when they do not fit", function()
    assert.error_matches(function() F.conv2d(randn(1, 3, 4, 4), randn(2, 2, 3, 3)) end,
      "conv2d: input {1, 3, 4, 4} and weight {2, 2, 3, 3} do not fit")
    assert.error_matches(function() F.conv2d(randn(3, 4, 4), randn(2, 3, 3, 3)) end, "4%-d input")
    assert.error_matches(function() F.conv2d(randn(1, 3, 2, 2), randn(2, 3, 3, 3)) end, "smaller than")
  end)
end)

describe("linear", function()
  it("is x W^T + b with gradients", function()
    local x, w, b = randn(4, 3), randn(2, 3), randn(2)
    assert_close(values(x:matmul(w:t()) + b), values(F.linear(x, w, b)), 1e-5)
    assert.is_true(gradcheck(F.linear, {x, w, b}))
    assert.is_true(gradcheck(function(a, c) return F.linear(a, c) end, {randn(2, 3, 3), w}))
    assert.error_matches(function() F.linear(x, randn(2, 4)) end, "linear: input {4, 3} does not fit weight {2, 4}")
  end)
end)

describe("batch_norm", function()
  it("normalises each channel with batch statistics and moves the running ones", function()
    local x = randn(8, 3, 4, 4) * 2 + 5
    local rm, rv = cbnet.zeros(3), cbnet.ones(3)
    local y = F.batch_norm(x, rm, rv, {training = true, momentum = 0.1})
    local per_channel = y:transpose(1, 2):reshape(3, -1)
    assert_close({0, 0, 0}, values(per_channel:mean(2)), 1e-5)
    assert_close({1, 1, 1}, values(per_channel:var(2, false, 0)), 1e-3)
    local xc = x:transpose(1, 2):reshape(3, -1)
    assert_close(values(xc:mean(2) * 0.1), values(rm), 1e-4)
    assert_close(values(xc:var(2) * 0.1 + 0.9), values(rv), 1e-3) -- unbiased, as PyTorch
    local e = F.batch_norm(x, rm, rv, {weight = cbnet.full({3}, 2.0), bias = cbnet.ones(3)})
    local want = (x - rm:view(1, 3, 1, 1)) / (rv:view(1, 3, 1, 1) + 1e-5):sqrt() * 2 + 1
    assert_close(values(want), values(e), 1e-4)
  end)

  it("has correct gradients in training and evaluation", function()
    local x, w, b = randn(4, 3, 2, 2), randn(3), randn(3)
    assert.is_true(gradcheck(function(a, c, d)
      return F.batch_norm(a, nil, nil, {weight = c, bias = d, training = true})
    end, {x, w, b}))
    assert.is_true(gradcheck(function(a, c) return F.batch_norm(a, nil, nil, {weight = c, training = true}) end,
      {randn(6, 4), randn(4)}))
    local rm, rv = randn(3), cbnet.rand({3}, g) + 0.5
    assert.is_true(gradcheck(function(a, c, d)
      return F.batch_norm(a, rm, rv, {weight = c, bias = d})
    end, {x, w, b}))
  end)

  it("with relu = true is batch norm then ReLU, forward and backward", function()
    for _, case in ipairs{{shape = {5, 3, 4, 6}, training = true}, {shape = {7, 4}, training = true},
                          {shape = {3, 2, 5, 5}, training = false}} do
      local c = case.shape[2]
      local x, w, b, gy = randn(table.unpack(case.shape)), randn(c), randn(c), randn(table.unpack(case.shape))
      local rm, rv = randn(c), cbnet.rand({c}, g) + 0.5
      local results = {}
      for k, fused in ipairs{true, false} do
        local xi, wi, bi = x:clone():requires_grad_(), w:clone():requires_grad_(), b:clone():requires_grad_()
        local opts = {weight = wi, bias = bi, training = case.training, relu = fused}
        local y = F.batch_norm(xi, case.training and nil or rm, case.training and nil or rv, opts)
        if not fused then y = y:relu() end
        y:backward(gy)
        results[k] = {y:detach(), xi.grad, wi.grad, bi.grad}
      end
      for i = 1, 4 do
        assert.near(0, (results[1][i] - results[2][i]):abs():max():item(), 1e-6)
      end
      assert.is_true(results[1][1]:min():item() >= 0)
    end
    -- finite differences away from the ReLU's kink: channels far above and
    -- far below zero
    local w, b = cbnet.tensor{0.5, 0.5, 0.5}, cbnet.tensor{3.0, -3.0, 2.5}
    assert.is_true(gradcheck(function(a, c, d)
      return F.batch_norm(a, nil, nil, {weight = c, bias = d, training = true, relu = true})
    end, {randn(4, 3, 2, 2), w, b}))
  end)

  it("gives the same values and gradients for CNHW inputs (a channel's images one run) as for NCHW", function()
    local function cnhw(t) return t:transpose(1, 2):contiguous():transpose(1, 2) end
    for _, case in ipairs{
      {}, {relu = true}, {relu = true, residual = true}, {residual = true},
      {relu = true, residual = true, nchw_grad = true}, -- CNHW x, NCHW gradient: runs per image
      {relu = true, shape = {6, 3, 8, 8}},             -- 8x8 planes, runs of 64 otherwise
      {relu = true, residual = true, shape = {5, 2, 3, 3}}, -- runs shorter than 8 lanes
    } do
      local shape = case.shape or {4, 3, 5, 6}
      local c = shape[2]
      local x, w, b, gy, r = randn(table.unpack(shape)), randn(c), randn(c), randn(table.unpack(shape)),
                             randn(table.unpack(shape))
      local results = {}
      for k, layout in ipairs{function(t) return t:clone() end, cnhw} do
        local xi, wi, bi = layout(x):requires_grad_(), w:clone():requires_grad_(), b:clone():requires_grad_()
        local ri = case.residual and layout(r):requires_grad_() or nil
        local y = F.batch_norm(xi, nil, nil, {weight = wi, bias = bi, training = true, relu = case.relu,
                                              residual = ri})
        y:backward(case.nchw_grad and gy:clone() or layout(gy))
        assert.are.same(xi:stride(), y:stride()) -- the output keeps the input's layout
        results[k] = {y:detach():contiguous(), xi.grad:contiguous(), wi.grad, bi.grad,
                      ri and ri.grad:contiguous() or cbnet.zeros(1)}
      end
      for i = 1, 5 do
        assert.near(0, (results[1][i] - results[2][i]):abs():max():item(), 1e-6)
      end
    end
  end)

  -- bit for bit: one multiply, one add, then the residual's add, whatever the run a value falls in
  it("with a residual is max(0, batch norm + residual) bit for bit, forward and backward, in any layout", function()
    for _, case in ipairs{
      {shape = {3, 4, 2, 2}, training = true, relu = true, cnhw = true}, -- x CNHW, residual NCHW:
      -- runs of 4 per image where batch norm alone takes one run of 12 per channel
      {shape = {5, 3, 4, 6}, training = true, relu = true},
      {shape = {5, 3, 4, 6}, training = true, relu = false},
      {shape = {3, 2, 5, 5}, training = false, relu = true},
      {shape = {4, 3, 3, 3}, training = true, relu = true, transposed = true}, -- residual not in planes
      {shape = {4, 3, 3, 3}, training = true, relu = true, residual_only = true}, -- no dx wanted
    } do
      local c = case.shape[2]
      local x, w, b, gy = randn(table.unpack(case.shape)), randn(c), randn(c), randn(table.unpack(case.shape))
      local r = randn(table.unpack(case.shape))
      if case.transposed then r = r:transpose(3, 4):contiguous():transpose(3, 4) end
      if case.cnhw then x = x:transpose(1, 2):contiguous():transpose(1, 2) end
      local rm, rv = randn(c), cbnet.rand({c}, g) + 0.5
      local results = {}
      for k, fused in ipairs{true, false} do
        local xi, wi, bi = x:clone(), w:clone():requires_grad_(), b:clone():requires_grad_()
        if not case.residual_only then xi:requires_grad_() end
        local ri = r:detach():requires_grad_()
        local opts = {weight = wi, bias = bi, training = case.training, relu = fused and case.relu,
                      residual = fused and ri or nil}
        local y = F.batch_norm(xi, case.training and nil or rm, case.training and nil or rv, opts)
        if not fused then
          y = y + ri
          if case.relu then y = y:relu() end
        end
        y:backward(gy)
        results[k] = {y:detach(), ri.grad, wi.grad, bi.grad, xi.grad or cbnet.zeros(1)}
      end
      for i = 1, 5 do
        assert.equal(0, (results[1][i] - results[2][i]):abs():max():item(), "result " .. i)
      end
      if case.relu then assert.is_true(results[1][2]:eq(0):float():sum():item() > 0) end -- masked somewhere
    end
    -- finite differences: without the ReLU everywhere; with it, away from its kink
    assert.is_true(gradcheck(function(a, c, d, r)
      return F.batch_norm(a, nil, nil, {weight = c, bias = d, training = true, residual = r})
    end, {randn(3, 2, 2, 3), randn(2), randn(2), randn(3, 2, 2, 3)}))
    assert.is_true(gradcheck(function(a, c, d, r)
      return F.batch_norm(a, nil, nil, {weight = c, bias = d, training = true, relu = true, residual = r})
    end, {randn(4, 3, 2, 2), cbnet.tensor{0.5, 0.5, 0.5}, cbnet.tensor{3.0, -3.0, 2.5},
          randn(4, 3, 2, 2) * 0.1}))
    assert.error_matches(function()
      F.batch_norm(randn(2, 3, 4, 4), nil, nil, {training = true, residual = randn(2, 3, 4, 5)})
    end, "residual must be float32 of the input's shape {2, 3, 4, 4}, got float32 {2, 3, 4, 5}")
  end)
end)

describe("conv2d_batch_norm_relu_pool", function()
  local function four_ops(x, w, b, rm, rv, opts)
    return F.batch_norm(F.conv2d(x, w, b, {padding = opts.padding, stride = opts.stride}), rm, rv,
      {weight = opts.bn_weight, bias = opts.bn_bias, training = opts.training, relu = true, pool = 2})
  end

  it("is max_pool2d(max(0, batch_norm(conv2d)), 2): values, every gradient, running statistics, every path", function()
    local previous = cbnet.conv_path()
    for _, case in ipairs{
      {n = 13, c = 3, o = 8, h = 12, w = 14},                 -- several stacks a worker, the first layer's shape
      {n = 3, c = 3, o = 5, h = 7, w = 9, eval = true},        -- odd sizes: a row and a column no window reads
      {n = 4, c = 2, o = 6, h = 6, w = 8, x_grad = true},      -- x needs a gradient: dx written out
      {n = 5, c = 16, o = 16, h = 8, w = 8, no_bias = true, no_affine = true}, -- Winograd's shapes
      {n = 3, c = 3, o = 4, h = 9, w = 9, stride = 2},         -- not direct: im2col
      {n = 1, c = 3, o = 4, h = 6, w = 10, transposed = true}, -- one image, a transposed view of x
    } do
      for _, path in ipairs(cbnet.conv_paths()) do
        cbnet.conv_path(path)
        local results = {}
        for k, op in ipairs{F.conv2d_batch_norm_relu_pool, four_ops} do
          local gen = cbnet.Generator(3)
          local function normal(...) return cbnet.randn({...}, gen) end
          local x = normal(case.n, case.c, case.h, case.w)
          if case.transposed then x = normal(case.n, case.c, case.w, case.h):transpose(3, 4) end
          local w, b = normal(case.o, case.c, 3, 3):requires_grad_(), normal(case.o):requires_grad_()
          local bw, bb = (normal(case.o) * 0.2 + 1):requires_grad_(), normal(case.o):requires_grad_()
          if case.no_bias then b = nil end
          if case.no_affine then bw, bb = nil, nil end
          if case.x_grad then x:requires_grad_() end
          local rm, rv = normal(case.o) * 0.1, normal(case.o):abs() + 0.5
          local y = op(x, w, b, rm, rv, {bn_weight = bw, bn_bias = bb, training = not case.eval,
                                         padding = 1, stride = case.stride})
          local gy = normal(table.unpack(y:size()))
          ;(y * gy):sum():backward()
          local none = cbnet.zeros(1)
          results[k] = {y:detach(), w.grad, b and b.grad or none, bw and bw.grad or none,
                        bb and bb.grad or none, rm, rv, case.x_grad and x.grad or none}
          if k == 1 then assert.equal("Conv2dBatchNormReluPoolBackward", y.grad_fn) end
        end
        for i = 1, 8 do
          local scale = math.max(results[2][i]:abs():max():item(), 1)
          local err = (results[1][i] - results[2][i]):abs():max():item() / scale
          assert(err <= 1e-5, ("%s, case %dx%d, result %d differs by %g"):format(path, case.h, case.w, i, err))
        end
      end
    end
    cbnet.conv_path(previous)
  end)

  it("has the gradients finite differences give (away from the ReLU's kink and ties)", function()
    local g = cbnet.Generator(17)
    local x = cbnet.randn({3, 2, 4, 4}, g)
    assert.is_true(gradcheck(function(w, b, c, d)
      return F.conv2d_batch_norm_relu_pool(x, w, b, nil, nil, {bn_weight = c, bn_bias = d, training = true,
                                                              padding = 1})
    end, {cbnet.randn({3, 2, 3, 3}, g), cbnet.randn({3}, g), cbnet.tensor{0.5, 0.5, 0.5},
          cbnet.tensor{3.0, -3.0, 2.5}}))
  end)

  it("is what nn.Sequential runs for Conv2d, BatchNorm2d, ReLU, MaxPool2d(2) in training", function()
    local model = nn.Sequential(nn.Conv2d(3, 4, 3, {padding = 1}), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2))
    local x = cbnet.randn(3, 3, 8, 8)
    local y = model(x)
    assert.equal("Conv2dBatchNormReluPoolBackward", y.grad_fn)
    assert.equal(1, model:get(2).num_batches_tracked:item())
    local reference = four_ops(x, model:get(1).weight, model:get(1).bias, nil, nil,
      {bn_weight = model:get(2).weight, bn_bias = model:get(2).bias, training = true, padding = 1})
    assert.near(0, (y - reference):abs():max():item(), 1e-6)
    model:eval() -- evaluation without gradients folds the batch norm into the convolution instead
    assert.is_nil(cbnet.no_grad(function() return model(x) end).grad_fn)
  end)

  it("names what is wrong", function()
    local x, w = cbnet.randn(2, 3, 6, 6), cbnet.randn(4, 3, 3, 3)
    assert.error_matches(function()
      F.conv2d_batch_norm_relu_pool(x, cbnet.randn(4, 2, 3, 3), nil, nil, nil, {training = true})
    end, "conv2d")
    assert.error_matches(function()
      F.conv2d_batch_norm_relu_pool(x, w, nil, nil, nil, {training = true, bn_weight = cbnet.ones(3)})
    end, "weight must be a float32 tensor of shape {4}")
    assert.error_matches(function()
      F.conv2d_batch_norm_relu_pool(cbnet.randn(2, 3, 1, 5), w, nil, nil, nil, {training = true, padding = 1})
    end, "input {2, 4, 1, 5} is smaller than the 2x2 pooling window")
    assert.error_matches(function()
      F.conv2d_batch_norm_relu_pool(x, w, nil, nil, nil, {training = true, sync = true})
    end, "sync")
  end)
end)

describe("batch_norm with pool = 2", function()
  local g = cbnet.Generator(11)
  local function randn(...) return cbnet.randn({...}, g) end

  it("is max_pool2d(max(0, batch norm), 2), forward, running statistics and backward", function()
    for _, case in ipairs{
      {shape = {5, 3, 4, 6}, training = true},
      {shape = {3, 2, 7, 5}, training = true},              -- odd sizes: a row and a column no window reads
      {shape = {4, 3, 6, 8}, training = true, cnhw = true}, -- a convolution's output layout
      {shape = {3, 2, 6, 6}, training = false},             -- the running statistics
      {shape = {2, 2, 4, 4}, training = true, no_affine = true},
      {shape = {1, 2, 2, 2051}, training = true},           -- rows longer than the row buffers: the two ops
      {shape = {3, 2, 6, 32}, training = true, cnhw = true}, -- whole 16-column pieces
      {shape = {2, 3, 5, 41}, training = true},             -- 16 + 16 + 8 columns, then one no window reads
      {shape = {4, 2, 6, 40}, training = true, ties = true}, -- equal values: the first of a window wins
    } do
      local c = case.shape[2]
      local x = randn(table.unpack(case.shape))
      if case.ties then x = cbnet.randint(-2, 3, case.shape, g):float() end
      if case.cnhw then x = x:transpose(1, 2):contiguous():transpose(1, 2) end
      local w, b = cbnet.rand({c}, g) + 0.5, randn(c) * 0.2
      local rm0, rv0 = randn(c) * 0.1, cbnet.rand({c}, g) + 0.5
      local results = {}
      for k, fused in ipairs{true, false} do
        local xi = x:clone():requires_grad_()
        local wi = not case.no_affine and w:clone():requires_grad_() or nil
        local bi = not case.no_affine and b:clone():requires_grad_() or nil
        local rm, rv = rm0:clone(), rv0:clone()
        local opts = {weight = wi, bias = bi, training = case.training, relu = true, pool = fused and 2 or nil}
        local y = F.batch_norm(xi, rm, rv, opts)
        if not fused then y = F.max_pool2d(y, 2) end
        y:backward(cbnet.randn(y:size(), cbnet.Generator(5)))
        results[k] = {y:detach(), xi.grad, wi and wi.grad or cbnet.zeros(1), bi and bi.grad or cbnet.zeros(1), rm, rv}
      end
      assert.same(results[2][1]:size(), results[1][1]:size())
      for i = 1, 6 do
        local scale = math.max(results[2][i]:abs():max():item(), 1)
        assert.near(0, (results[1][i] - results[2][i]):abs():max():item() / scale, 1e-6)
      end
    end
  end)

  it("has the gradients finite differences give (away from the ReLU's kink and ties)", function()
    -- distinct inputs; channels far above and far below zero
    local x = (cbnet.randperm(4 * 3 * 4 * 4, g):float() * 0.05):view(4, 3, 4, 4)
    assert.is_true(gradcheck(function(a, c, d)
      return F.batch_norm(a, nil, nil, {weight = c, bias = d, training = true, relu = true, pool = 2})
    end, {x, cbnet.tensor{0.5, 0.5, 0.5}, cbnet.tensor{3.0, -3.0, 2.5}}))
  end)

  it("nn.Sequential runs BatchNorm2d, ReLU, MaxPool2d(2) as one layer, with the same result", function()
    local model = nn.Sequential(nn.Conv2d(3, 4, 3, {padding = 1}), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                                nn.Conv2d(4, 4, 3, {padding = 1}), nn.BatchNorm2d(4, {relu = true}), nn.MaxPool2d(2))
    local x = randn(3, 3, 8, 8)
    local y = model(x)
    -- the convolutions before them make each group one op (conv2d_batch_norm_relu_pool, below)
    assert.equal("Conv2dBatchNormReluPoolBackward", y.grad_fn) -- a batch norm with relu = true, then the pool
    local first = nn.Sequential(model:get(1), model:get(2), model:get(3), model:get(4))
    assert.equal("Conv2dBatchNormReluPoolBackward", first(x).grad_fn) -- batch norm, nn.ReLU, the pool
    local conv_out = model:get(1)(x)
    assert.equal("BatchNormReluPoolBackward", nn.Sequential(model:get(2), model:get(3), model:get(4))(conv_out).grad_fn)
    assert.equal("BatchNormReluPoolBackward", nn.Sequential(model:get(6), model:get(7))(conv_out).grad_fn)
    assert.equal("MaxPool2dBackward", nn.Sequential(model:get(1), model:get(2), model:get(3),
      nn.MaxPool2d(2, 1))(x).grad_fn) -- stride 1: not fused
    local h = x
    for i = 1, #model do
      local m = model:get(i)
      h = m.name == "BatchNorm2d" and F.batch_norm(h, nil, nil, {weight = m.weight, bias = m.bias,
        training = true, relu = m.relu}) or m(h)
    end
    assert.near(0, (y - h):abs():max():item(), 1e-6)
  end)

  it("names what is wrong", function()
    assert.error_matches(function()
      F.batch_norm(randn(2, 3, 4, 4), nil, nil, {training = true, relu = true, pool = 3})
    end, "pool must be 2")
    assert.error_matches(function()
      F.batch_norm(randn(2, 3, 4, 4), nil, nil, {training = true, pool = 2})
    end, "pooling comes after the ReLU")
    assert.error_matches(function()
      F.batch_norm(randn(2, 3, 4), nil, nil, {training = true, relu = true, pool = 2})
    end, "pooling needs an N x C x H x W input, got {2, 3, 4}")
    assert.error_matches(function()
      F.batch_norm(randn(2, 3, 1, 4), nil, nil, {training = true, relu = true, pool = 2})
    end, "smaller than the 2x2 pooling window")
  end)
end)

describe("batch_norm_relu_conv2d", function()
  local g = cbnet.Generator(12)
  local function randn(...) return cbnet.randn({...}, g) end

  -- conv2d(max(0, batch_norm(x))) by the fused op and by the two ops: the output,
  -- the five inputs' gradients and the running statistics
  local function both(case)
    local c, o = case.shape[2], case.out
    local x = randn(table.unpack(case.shape)) * 1.5 + 0.2
    if case.cnhw then x = x:transpose(1, 2):contiguous():transpose(1, 2) end
    local gamma, beta = cbnet.rand({c}, g) + 0.5, randn(c) * 0.3
    local w, b = randn(o, c, case.k, case.k) * 0.2, randn(o)
    local rm0, rv0 = randn(c) * 0.1, cbnet.rand({c}, g) + 0.5
    local gy
    local results = {}
    for k, fused in ipairs{true, false} do
      local xi, wi = x:clone():requires_grad_(), w:clone():requires_grad_()
      local gi = not case.no_affine and gamma:clone():requires_grad_() or nil
      local bi = not case.no_affine and beta:clone():requires_grad_() or nil
      local cbi = not case.no_bias and b:clone():requires_grad_() or nil
      local rm, rv = rm0:clone(), rv0:clone()
      local conv = {stride = case.stride, padding = case.pad}
      local y
      if fused then
        y = F.batch_norm_relu_conv2d(xi, rm, rv, wi, cbi, {bn_weight = gi, bn_bias = bi,
          training = case.training, stride = case.stride, padding = case.pad})
      else
        y = F.conv2d(F.batch_norm(xi, rm, rv, {weight = gi, bias = bi, training = case.training,
          relu = true}), wi, cbi, conv)
      end
      gy = gy or cbnet.randn(y:size(), cbnet.Generator(5))
      y:backward(gy)
      local none = cbnet.zeros(1)
      results[k] = {y:detach(), xi.grad, wi.grad, gi and gi.grad or none, bi and bi.grad or none,
                    cbi and cbi.grad or none, rm, rv}
    end
    return results
  end

  -- Exactly: the convolution normalises its input as batch norm does, a multiply and an
  -- add, never fused (norm.c is built without contraction), so the two agree bit for bit
  it("is conv2d(max(0, batch norm(x))) bit for bit: values, gradients, running statistics, on every path", function()
    local previous = cbnet.conv_path()
    for _, path in ipairs(cbnet.conv_paths()) do
      cbnet.conv_path(path)
      for _, case in ipairs{
        {shape = {3, 4, 6, 6}, out = 5, k = 3, pad = 1, training = true},
        {shape = {5, 16, 8, 8}, out = 16, k = 3, pad = 1, training = true, cnhw = true}, -- Winograd's
        -- read in place by AVX-512's 16-tile input transform, normalised on the way
        {shape = {3, 16, 16, 16}, out = 16, k = 3, pad = 1, training = true, cnhw = true},
        {shape = {5, 16, 7, 32}, out = 20, k = 3, pad = 1, training = true},
        {shape = {3, 64, 8, 7}, out = 64, k = 3, pad = 1, training = true}, -- F(4x4), in place too
        {shape = {4, 16, 9, 7}, out = 24, k = 3, pad = 1, training = true, no_bias = true},
        {shape = {3, 4, 7, 7}, out = 6, k = 3, pad = 1, stride = 2, training = true}, -- im2col
        -- the direct paths' stride 2 (phases), normalised as the stack is filled
        {shape = {3, 4, 8, 32}, out = 6, k = 3, pad = 1, stride = 2, training = true},
        {shape = {5, 16, 8, 8}, out = 8, k = 3, pad = 1, stride = 2, training = true, cnhw = true},
        {shape = {2, 3, 5, 5}, out = 4, k = 1, pad = 0, training = true, no_affine = true},
        {shape = {3, 4, 6, 6}, out = 5, k = 3, pad = 1, training = false}, -- running statistics
      } do
        local results = both(case)
        assert.same(results[2][1]:size(), results[1][1]:size())
        for i = 1, 8 do
          assert.equal(0, (results[1][i] - results[2][i]):abs():max():item(),
            ("%s, input %s, result %d"):format(path, table.concat(case.shape, "x"), i))
        end
        assert.is_true(results[1][2]:abs():max():item() > 0)
      end
    end
    cbnet.conv_path(previous)
  end)

  it("has the gradients finite differences give (away from the ReLU's kink)", function()
    local x = (cbnet.randperm(3 * 3 * 4 * 4, g):float() * 0.05):view(3, 3, 4, 4)
    assert.is_true(gradcheck(function(a, c, d, w, b)
      return F.batch_norm_relu_conv2d(a, nil, nil, w, b, {bn_weight = c, bn_bias = d, training = true,
        padding = 1})
    end, {x, cbnet.tensor{0.5, 0.5, 0.5}, cbnet.tensor{3.0, -3.0, 2.5}, randn(2, 3, 3, 3), randn(2)}))
  end)

  it("is nn.BasicBlock's middle, with the block's result unchanged", function()
    local block = nn.BasicBlock(4, 4, 1, {generator = g})
    local x = randn(3, 4, 8, 8)
    local y = block(x)
    local h = F.conv2d(F.batch_norm(F.conv2d(x, block.conv1.weight, nil, {padding = 1}), nil, nil,
      {weight = block.bn1.weight, bias = block.bn1.bias, training = true, relu = true}),
      block.conv2.weight, nil, {padding = 1})
    h = F.batch_norm(h, nil, nil, {weight = block.bn2.weight, bias = block.bn2.bias, training = true,
      relu = true, residual = x})
    assert.near(0, (y - h):abs():max():item(), 1e-5)
    y:sum():backward()
    assert.is_true(block.bn1.weight.grad:abs():max():item() > 0)
    assert.is_true(block.conv2.weight.grad:abs():max():item() > 0)
  end)

  it("nn.Sequential runs a BatchNorm2d (relu or an nn.ReLU after it) and a Conv2d as one op", function()
    for _, with_relu_module in ipairs{false, true} do
      local layers = {nn.Conv2d(3, 4, 3, {padding = 1, generator = g}),
                      nn.BatchNorm2d(4, {relu = not with_relu_module})}
      if with_relu_module then layers[#layers + 1] = nn.ReLU() end
      layers[#layers + 1] = nn.Conv2d(4, 5, 3, {padding = 1, generator = g})
      local model = nn.Sequential(table.unpack(layers))
      local x = randn(3, 3, 6, 6)
      local y = model(x)
      assert.equal("BatchNormReluConv2dBackward", y.grad_fn)
      local bn, conv2 = model:get(2), model:get(#model)
      local h = F.conv2d(F.batch_norm(model:get(1)(x), nil, nil, {weight = bn.weight, bias = bn.bias,
        training = true, relu = true}), conv2.weight, conv2.bias, {padding = 1})
      assert.near(0, (y - h):abs():max():item(), 1e-5)
    end
  end)

  it("names what is wrong", function()
    assert.error_matches(function()
      F.batch_norm_relu_conv2d(randn(2, 3, 4, 4), nil, nil, randn(5, 4, 3, 3), nil, {training = true})
    end, "conv2d: input {2, 3, 4, 4} and weight {5, 4, 3, 3} do not fit")
    assert.error_matches(function()
      F.batch_norm_relu_conv2d(randn(2, 3, 4, 4), nil, nil, randn(5, 3, 3, 3), nil,
        {training = true, bn_weight = randn(4)})
    end, "batch_norm: weight must be a float32 tensor of shape {3}")
    assert.error_matches(function()
      F.batch_norm_relu_conv2d(randn(2, 3, 4, 4), nil, nil, randn(5, 3, 3, 3), nil, {training = false})
    end, "evaluation mode needs running statistics")
    assert.error_matches(function()
      F.batch_norm_relu_conv2d(randn(2, 3, 4, 4), nil, nil, randn(5, 3, 3, 3), nil, {relu = true})
    end, "unknown option")
  end)
end)

describe("pooling", function()
  -- distinct values far apart, so finite differences never flip a maximum
  local function spread(...)
    local n = 1
    for _, s in ipairs{...} do n = n * s end
    return (cbnet.randperm(n, g):float() * 0.1):view(...)
  end

  it("max_pool2d picks window maxima and routes gradients to them", function()
    local x = cbnet.tensor{{{{1.0, 2.0, 5.0, 3.0}, {4.0, 0.0, 1.0, 9.0}, {7.0, 8.0, 2.0, 2.5}}}}
    assert.same({4, 9}, values(F.max_pool2d(x, 2)))
    assert.same({4, 5, 9, 8, 8, 9}, values(F.max_pool2d(x, 2, 1)))
    assert.same({1, 5, 3, 7, 8, 9}, values(F.max_pool2d(x, 2, 2, 1))) -- values from PyTorch
    assert.is_true(gradcheck(function(a) return F.max_pool2d(a, 2) end, {spread(2, 3, 4, 6)}))
    assert.is_true(gradcheck(function(a) return F.max_pool2d(a, 2) end, {spread(2, 3, 5, 7)})) -- odd: last row/column unused
    assert.is_true(gradcheck(function(a) return F.max_pool2d(a, 3, 2, 1) end, {spread(1, 2, 5, 5)}))
    assert.is_true(gradcheck(function(a) return F.max_pool2d(a, 2) end, {spread(2, 2, 5, 7)}))
    local odd = F.max_pool2d(spread(1, 1, 5, 5):transpose(3, 4), 2) -- strided rows: the general path
    assert.same({1, 1, 2, 2}, odd:size())
  end)

  it("max_pool2d sends a tie's gradient to the first maximum and a NaN's to the NaN, as PyTorch", function()
    local nan = 0 / 0
    -- windows: all equal; right column larger (tied); bottom row ties the top; a NaN; a
    -- NaN in the bottom row; then an odd last column and row that no window reads
    local x = cbnet.tensor{{{{1.0, 1.0, 1.0, 2.0, 3.0, 1.0, 1.0, nan, 0.0, 5.0, 9.0},
                             {1.0, 1.0, 1.0, 2.0, 1.0, 3.0, 2.0, 0.0, nan, 4.0, 9.0},
                             {9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0}}}}
    for _, upstream in ipairs{"dense", "expanded"} do
      local a = x:clone():requires_grad_()
      local y = F.max_pool2d(a, 2)
      local gy = upstream == "dense" and cbnet.arange(1, 6):float():view(1, 1, 1, 5)
                 or cbnet.ones(1):expand(1, 1, 1, 5) -- strides 0: the one-window-at-a-time path
      y:backward(gy)
      local g = upstream == "dense" and {1, 2, 3, 4, 5} or {1, 1, 1, 1, 1}
      assert.same({{{{g[1], 0, 0, g[2], g[3], 0, 0, g[4], 0, 0, 0},
                      {0, 0, 0, 0, 0, 0, 0, 0, g[5], 0, 0},
                      {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}}}}, a.grad:totable())
    end
  end)

  it("max_pool2d 2x2's vector path picks what the general path picks, ties and NaNs included", function()
    local g = cbnet.Generator(5)
    for _, w in ipairs{32, 37, 70} do -- whole vectors of 16 windows, then one at a time
      -- values from {0, 1, 2} (ties everywhere) with some NaNs
      local base = cbnet.randint(0, 3, {2, 3, w, 9}, g):float()
      base:masked_fill_(cbnet.rand({2, 3, w, 9}, g):lt(0.05), 0 / 0)
      local strided = base:transpose(3, 4) -- rows not contiguous: the general path, with argmax
      local dense = strided:contiguous()   -- the 2x2 path
      local gy = cbnet.randn({2, 3, 4, w // 2}, g)
      local grads, outs = {}, {}
      for i, x in ipairs{strided, dense} do
        local a = x:detach():requires_grad_()
        local y = F.max_pool2d(a, 2)
        y:backward(gy)
        local yv = y:detach():clone()
        outs[i], grads[i] = yv:masked_fill_(yv:ne(yv), -1):totable(), a.grad:totable()
      end
      assert.same(outs[1], outs[2])
      assert.same(grads[1], grads[2])
    end
  end)

  it("avg_pool2d and adaptive_avg_pool2d average their windows", function()
    local x = cbnet.arange(16):float():view(1, 1, 4, 4)
    assert.same({2.5, 4.5, 10.5, 12.5}, values(F.avg_pool2d(x, 2)))
    -- padding counts as zeros by default; expected values from PyTorch 1.13
    assert.same({0, 0.75, 0.75, 3, 7.5, 4.5, 3, 6.75, 3.75}, values(F.avg_pool2d(x, 2, 2, 1)))
    assert.same({0, 1.5, 3, 6, 7.5, 9, 12, 13.5, 15}, values(F.avg_pool2d(x, 2, 2, 1, false)))
    assert.same({7.5}, values(F.adaptive_avg_pool2d(x, 1)))
    assert.same({2.5, 4.5, 10.5, 12.5}, values(F.adaptive_avg_pool2d(x, 2)))
    assert.same({{{{2.5, 3.5, 4.5}, {10.5, 11.5, 12.5}}}}, F.adaptive_avg_pool2d(x, {2, 3}):totable())
    assert.is_true(gradcheck(function(a) return F.avg_pool2d(a, 3, 2, 1) end, {randn(2, 2, 5, 5)}))
    assert.is_true(gradcheck(function(a) return F.adaptive_avg_pool2d(a, {2, 3}) end, {randn(2, 2, 5, 4)}))
  end)

  it("keeps the channel-major order of a conv output", function()
    local y = F.conv2d(randn(2, 3, 6, 6), randn(4, 3, 3, 3), nil, {padding = 1})
    local p = F.max_pool2d(y, 2)
    assert.same({2, 4, 3, 3}, p:size())
    assert.is_true(p:stride(2) > p:stride(1))
    assert_close(values(F.max_pool2d(y:contiguous(), 2)), values(p), 0)
  end)
end)

describe("activations and dropout", function()
  it("leaky_relu, gelu and softplus match their formulas", function()
    local x = cbnet.tensor{-3.0, -0.7, 0.4, 2.0, 30.0}
    assert_close({-0.03, -0.007, 0.4, 2, 30}, values(F.leaky_relu(x)), 1e-6)
    local gelu, sp = values(F.gelu(x)), values(F.softplus(x))
    for i, v in ipairs(values(x)) do
      local erf_approx = F.gelu(cbnet.tensor{v}):item() / (0.5 * v) - 1 -- erf(v/sqrt2)
      assert.near(math.log(1 + math.exp(math.min(v, 30))), sp[i], 1e-4)
      assert.near(0.5 * v * (1 + erf_approx), gelu[i], 1e-6)
    end
    assert.near(0.5 * 2 * (1 + 0.9544997361), gelu[4], 1e-5) -- erf(sqrt 2)
    local away = cbnet.tensor{-2.0, -0.5, 0.3, 1.5}
    assert.is_true(gradcheck(function(a) return F.leaky_relu(a, 0.2) end, {away}))
    assert.is_true(gradcheck(F.gelu, {randn(6)}))
    assert.is_true(gradcheck(function(a) return F.softplus(a, 2) end, {randn(6)}))
  end)

  it("dropout zeroes a fraction p, scales the rest, and is the identity in eval", function()
    local x = cbnet.ones(100000)
    local y = F.dropout(x, 0.3, true, cbnet.Generator(1))
    local zeros = y:eq(0):float():mean():item()
    assert.near(0.3, zeros, 0.01)
    assert.near(1 / 0.7, y:max():item(), 1e-5)
    assert.near(1, y:mean():item(), 0.02)
    assert.equal(0, (F.dropout(x, 0.3, false) - x):abs():sum():item())
    local a = randn(50):requires_grad_()
    local out = F.dropout(a, 0.5, true, cbnet.Generator(2))
    out:sum():backward()
    assert_close(values((out:detach() / a:detach())), values(a.grad), 1e-5)
  end)
end)

describe("softmax and cross_entropy", function()
  it("softmax rows sum to 1; log_softmax is its log; gradients", function()
    local x = randn(3, 5) * 10
    assert_close({1, 1, 1}, values(F.softmax(x):sum(2)), 1e-6)
    assert_close(values(F.softmax(x):log()), values(F.log_softmax(x)), 1e-4)
    assert_close({1, 1, 1, 1, 1}, values(F.softmax(x, 1):sum(1)), 1e-6)
    assert.is_true(gradcheck(function(a) return F.softmax(a) end, {randn(3, 4)}))
    assert.is_true(gradcheck(function(a) return F.log_softmax(a, 1) end, {randn(3, 4)}))
    -- huge logits stay finite
    assert_close({0, 1}, values(F.softmax(cbnet.tensor{{-1000.0, 1000.0}})), 0)
  end)

  -- cross-entropy built from differentiable ops, written out as in nn.h
  local function reference(logits, target, weight, e, reduction)
    local c = logits:size(2)
    local logp = F.log_softmax(logits)
    local w = weight or cbnet.ones(c)
    local wy = w:index_select(1, target)
    local nll = -logp:gather(2, target:view(-1, 1)):view(-1) * wy
    local smooth = -(logp * w):sum(2)
    local per = nll * (1 - e) + smooth * (e / c)
    if reduction == "none" then return per end
    if reduction == "sum" then return per:sum() end
    return per:sum() / wy:sum()
  end

  it("matches PyTorch's definition with weights, label smoothing and every reduction", function()
    local logits, target = randn(6, 4), cbnet.tensor{0, 3, 1, 1, 2, 0}
    local weight = cbnet.tensor{0.5, 2.0, 1.0, 3.0}
    for _, e in ipairs{0, 0.1} do
      for _, w in ipairs{false, true} do
        for _, r in ipairs{"mean", "sum", "none"} do
          local opts = {weight = w and weight or nil, label_smoothing = e, reduction = r}
          local want = reference(logits, target, opts.weight, e, r)
          assert_close(values(want), values(F.cross_entropy(logits, target, opts)), 1e-5)
          assert.is_true(gradcheck(function(a) return F.cross_entropy(a, target, opts) end, {logits}))
        end
      end
    end
    -- a known value: uniform logits cost log C
    assert.near(math.log(4), F.cross_entropy(cbnet.zeros(2, 4), cbnet.tensor{1, 2}):item(), 1e-6)
  end)

  it("rejects labels outside 0..C-1 and wrong dtypes", function()
    assert.error_matches(function() F.cross_entropy(randn(2, 3), cbnet.tensor{0, 3}) end,
      "target 3 %(sample 2%) is not a class label in 0..2")
    assert.error_matches(function() F.cross_entropy(randn(2, 3), cbnet.tensor{0.0, 1.0}) end, "int64")
    assert.error_matches(function() F.cross_entropy(randn(2, 3), cbnet.tensor{0}) end, "N x C")
  end)
end)
