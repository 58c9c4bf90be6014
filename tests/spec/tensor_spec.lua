local cbnet = require "cbnet"

local function values(t) return t:contiguous():view(-1):totable() end

describe("tensor creation", function()
  it("infers dtypes like PyTorch", function()
    assert.equal("int64", cbnet.tensor{1, 2, 3}:dtype())
    assert.equal("float32", cbnet.tensor{1, 2.5}:dtype())
    assert.equal("bool", cbnet.tensor{true, false}:dtype())
    assert.equal("float32", cbnet.tensor({1, 2}, "float32"):dtype())
    assert.same({2, 3}, cbnet.tensor{{1, 2, 3}, {4, 5, 6}}:size())
  end)

  it("builds zeros, ones, full, arange, empty from sizes or a table", function()
    assert.same({0, 0, 0, 0, 0, 0}, values(cbnet.zeros(2, 3)))
    assert.same({1, 1}, values(cbnet.ones({2}, "int64")))
    assert.same({7.5, 7.5}, values(cbnet.full({2}, 7.5)))
    assert.same({0, 1, 2, 3}, values(cbnet.arange(4)))
    assert.same({1, 3}, values(cbnet.arange(1, 5, 2)))
    assert.same({0, 0.25, 0.5, 0.75}, values(cbnet.arange(0, 1, 0.25)))
    assert.equal(0, cbnet.empty(0, 3):numel())
  end)

  it("rejects bad sizes with clear errors", function()
    assert.has_error(function() cbnet.zeros(2, -1) end, "tensor: negative size -1 in dim 2")
    assert.error_matches(function() cbnet.zeros(1, 1, 1, 1, 1, 1, 1, 1, 1) end, "at most 8 dims")
    assert.error_matches(function() cbnet.zeros(2.5) end, "size must be an integer")
    assert.error_matches(function() cbnet.tensor{{1, 2}, {3}} end, "ragged nested table")
    assert.error_matches(function() cbnet.tensor{"a"} end, "element 1 is a string")
    assert.error_matches(function() cbnet.zeros(2, "float64") end, "unknown dtype 'float64'")
  end)

  it("draws reproducible random numbers from seeded generators", function()
    local g1, g2 = cbnet.Generator(7), cbnet.Generator(7)
    assert.same(values(cbnet.randn(5, g1)), values(cbnet.randn(5, g2)))
    cbnet.manual_seed(3)
    local a = values(cbnet.rand(4))
    cbnet.manual_seed(3)
    assert.same(a, values(cbnet.rand(4)))
    local r = cbnet.randint(0, 10, {1000}, g1)
    assert.equal("int64", r:dtype())
    assert.is_true(r:min():item() >= 0 and r:max():item() <= 9)
    local p = values(cbnet.randperm(10, g1))
    table.sort(p)
    assert.same({0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, p)
    local u = cbnet.rand(10000, g1)
    assert.near(0.5, u:mean():item(), 0.02)
    assert.near(1 / 12, u:var():item(), 0.005)
  end)
end)

describe("indexing and views", function()
  local m
  before_each(function() m = cbnet.arange(1, 13):view(3, 4) end)

  it("is 1-based, with negative positions from the end", function()
    assert.equal(1, m[1][1])
    assert.equal(12, m[3][4])
    assert.equal(12, m[-1][-1])
    assert.same({5, 6, 7, 8}, values(m[2]))
    assert.equal(3, #m)
    assert.error_matches(function() return m[4] end, "index 4 out of range for dim 1 of size 3")
    assert.error_matches(function() return m[0] end, "1%-based")
  end)

  it("writes through views into the shared storage", function()
    local col = m:select(2, 2)
    col:fill_(0)
    assert.same({1, 0, 3, 4}, values(m[1]))
    m[3] = 9
    assert.same({9, 9, 9, 9}, values(m[3]))
    m[1][4] = -1
    assert.equal(-1, m[1][4])
    local t = m:t()
    t[1][2] = 100 -- m[2][1]
    assert.equal(100, m[2][1])
  end)

  it("narrows, slices, permutes, expands and squeezes without copying", function()
    assert.same({2, 3}, values(m:narrow(2, 2, 2)[1]))
    assert.same({1, 3}, values(m:slice(2, 1, -1, 2)[1]))
    assert.same({4, 3}, m:transpose(1, 2):size())
    local p = cbnet.zeros(2, 3, 4):permute(3, 1, 2)
    assert.same({4, 2, 3}, p:size())
    assert.is_false(p:is_contiguous())
    assert.is_true(p:contiguous():is_contiguous())
    local e = cbnet.tensor{1, 2}:unsqueeze(2):expand(2, 3)
    assert.same({1, 1, 1, 2, 2, 2}, values(e))
    assert.same({1, 0}, e:stride())
    assert.same({3}, cbnet.zeros(1, 3, 1):squeeze():size())
    assert.same({1, 3}, cbnet.zeros(1, 3, 1):squeeze(-1):size())
    assert.same({12}, m:flatten():size())
    assert.error_matches(function() m:t():view(12) end, "cannot be viewed")
    assert.same({12}, m:t():reshape(-1):size())
  end)
end)

describe("element-wise operations", function()
  it("broadcast like NumPy, with numbers on either side", function()
    local a = cbnet.tensor{{1, 2, 3}, {4, 5, 6}}
    local col = cbnet.tensor{{10}, {20}}
    assert.same({11, 12, 13, 24, 25, 26}, values(a + col))
    assert.same({9, 8, 7, 6, 5, 4}, values(10 - a))
    assert.same({0.5, 1, 1.5, 2, 2.5, 3}, values(a / 2))
    assert.same({1, 4, 9, 16, 25, 36}, values(a ^ 2))
    assert.same({-1, -2, -3, -4, -5, -6}, values(-a))
    assert.same({1, 2, 0, 1, 2, 0}, values(a % 3))
    assert.same({2, 1, 0, 2, 1, 0}, values(-a % 3)) -- the sign of the divisor, as Lua's %
    assert.same({-0.5, -0.5}, values(cbnet.tensor{1.5, -1.5} % -1))
    assert.equal("float32", (a * 0.5):dtype())
    assert.equal("int64", (a * 2):dtype())
    assert.has_error(function() return a + cbnet.ones(3, 2) end,
      "add: shapes {2, 3} and {3, 2} cannot be broadcast together")
  end)

  it("compute unary functions, comparisons, clamp and where", function()
    local x = cbnet.tensor{-2.0, -0.5, 0.0, 0.5, 2.0}
    assert.same({0, 0, 0, 0.5, 2}, values(x:relu()))
    assert.same({-1, -0.5, 0, 0.5, 1}, values(x:clamp(-1, 1)))
    assert.same({-2, -0.5, 0, 0.5, 1}, values(x:clamp(nil, 1)))
    assert.same({false, false, false, true, true}, values(x:gt(0)))
    assert.same({0, 0, 0, 0.5, 2}, values(cbnet.where(x:gt(0), x, 0)))
    local s = x:sigmoid()
    for i = 1, 5 do assert.near(1 / (1 + math.exp(-x[i])), s[i], 1e-6) end
    assert.is_true(x:exp():log():allclose(x, 1e-5, 1e-6))
  end)

  it("update in place and return the tensor", function()
    local t = cbnet.ones(3)
    assert.equal(t, t:mul_(3):add_(1))
    assert.same({4, 4, 4}, values(t))
    assert.error_matches(function() cbnet.ones(3):add_(cbnet.ones(2, 3)) end, "output has shape {3}")
  end)
end)

describe("reductions", function()
  local a = cbnet.tensor{{1.0, 5.0, 3.0}, {4.0, 2.0, 6.0}}

  it("sum, mean, var over all or chosen dims, with keepdim", function()
    assert.equal(21, a:sum():item())
    assert.same({5, 7, 9}, values(a:sum(1)))
    assert.same({2, 1}, a:mean(2, true):size())
    assert.same({3, 4}, values(a:mean(2)))
    assert.near(3.5, a:var():item(), 1e-6)       -- unbiased
    assert.near(35 / 12, a:var(nil, false, 0):item(), 1e-6)
    assert.near(math.sqrt(3.5), a:std():item(), 1e-6)
    assert.equal(21, a:sum({1, 2}):item())
  end)

  it("max and min give values and 0-based indices", function()
    local v, i = a:max(2)
    assert.same({5, 6}, values(v))
    assert.same({1, 2}, values(i))
    assert.same({1, 2}, values(a:argmax(2)))
    assert.equal(5, a:argmax():item())
    assert.equal(1, a:min():item())
    assert.error_matches(function() a:sum(3) end, "dim 3 out of range for a 2%-d tensor")
  end)
end)

describe("matmul", function()
  local function naive(a, b)
    local n, k, m = a:size(1), a:size(2), b:size(2)
    local out = {}
    for i = 1, n do
      for j = 1, m do
        local s = 0
        for q = 1, k do s = s + a[i][q] * b[q][j] end
        out[#out + 1] = s
      end
    end
    return out
  end

  it("matches a naive loop, also on transposed operands", function()
    local g = cbnet.Generator(1)
    for _, dims in ipairs{{1, 1, 1}, {3, 4, 5}, {33, 17, 9}} do
      local a, b = cbnet.randn(dims[1], dims[2], g), cbnet.randn(dims[3], dims[2], g):t()
      local want, got = naive(a, b), values(a:matmul(b))
      for i = 1, #want do assert.near(want[i], got[i], 1e-4) end
    end
  end)

  it("handles vectors and batches, and names both shapes on mismatch", function()
    local v = cbnet.tensor{1.0, 2.0, 3.0}
    assert.equal(14, v:matmul(v):item())
    local batch = cbnet.ones(4, 2, 3)
    assert.same({4, 2}, batch:matmul(v):size())
    assert.same({4, 2, 5}, batch:matmul(cbnet.ones(3, 5)):size())
    assert.has_error(function() cbnet.ones(2, 3):matmul(cbnet.ones(2, 3)) end,
      "matmul: shapes {2, 3} and {2, 3} do not fit (inner sizes differ)")
    assert.error_matches(function() cbnet.ones(2, 2, "int64"):matmul(cbnet.ones(2, 2)) end,
      "expected float32")
  end)
end)

describe("gathering and joining", function()
  it("index_select, gather, scatter_add and masks", function()
    local a = cbnet.tensor{{1.0, 2.0}, {3.0, 4.0}, {5.0, 6.0}}
    assert.same({5, 6, 1, 2}, values(a:index_select(1, cbnet.tensor{2, 0})))
    local labels = cbnet.tensor{1, 0, 1}
    assert.same({2, 3, 6}, values(a:gather(2, labels:unsqueeze(2))))
    local counts = cbnet.zeros(2):scatter_add_(1, labels, cbnet.ones(3))
    assert.same({1, 2}, values(counts))
    assert.same({4, 5, 6}, values(a:masked_select(a:gt(3.5))))
    assert.same({1, 2, 3, 0, 0, 0}, values(a:masked_fill(a:gt(3.5), 0)))
    assert.error_matches(function() a:index_select(1, cbnet.tensor{3}) end,
      "index 3 out of range for dim 1 of size 3")
  end)

  it("cat and stack", function()
    local a, b = cbnet.ones(2, 3), cbnet.zeros(1, 3)
    assert.same({3, 3}, cbnet.cat({a, b}):size())
    assert.same({2, 6}, cbnet.cat({a, a}, 2):size())
    assert.same({2, 2, 3}, cbnet.stack({a, a}):size())
    assert.same({2, 3, 2}, cbnet.stack({a, a}, -1):size())
    assert.error_matches(function() cbnet.cat({a, b}, 2) end, "tensor 2 has shape {1, 3}")
  end)
end)

describe("printing", function()
  it("shows values, dtype and shape", function()
    assert.equal("cbnet.tensor({{1, 2},\n              {3, 4}})  -- int64 {2, 2}",
      tostring(cbnet.tensor{{1, 2}, {3, 4}}))
    assert.equal("cbnet.tensor({0.5000, 1.2500})  -- float32 {2}", tostring(cbnet.tensor{0.5, 1.25}))
    assert.equal("cbnet.tensor(3.)  -- float32 {}", tostring(cbnet.tensor(3.0)))
    local big = tostring(cbnet.zeros(100, 100))
    assert.truthy(big:find("...", 1, true))
    assert.truthy(#big < 2000)
  end)
end)

describe("memory", function()
  it("is given back by the garbage collector in a long loop", function()
    collectgarbage()
    local before = cbnet.memory()
    local most = 0
    for _ = 1, 400 do
      local t = cbnet.zeros(1024, 1024) -- 4 MiB, 1.6 GiB over the loop
      t:add_(1)
      most = math.max(most, cbnet.memory() - before)
    end
    -- without collections paced by the tensors' memory nearly all of it would still be
    -- held; with them, at most 16 MiB of garbage and the live tensor
    assert.is_true(most <= 24 * 1024 * 1024, ("%d MiB held"):format(most // 2 ^ 20))
  end)

  it("frees at once with <close>", function()
    collectgarbage()
    local before = cbnet.memory()
    do
      local t <close> = cbnet.zeros(1000, 1000)
      assert.equal(before + 4000000, cbnet.memory())
    end
    assert.equal(before, cbnet.memory())
  end)

  it("keeps storage alive while a view exists", function()
    local v = cbnet.arange(10):view(2, 5)[2]
    collectgarbage()
    collectgarbage()
    assert.same({5, 6, 7, 8, 9}, values(v))
  end)

  it("rejects a closed tensor", function()
    local t = cbnet.ones(2)
    getmetatable(t).__close(t)
    assert.error_matches(function() return t + 1 end, "closed")
  end)
end)

describe("the thread pool", function()
  it("says where its time went (pool_stats)", function()
    local threads = cbnet.get_num_threads()
    local x = cbnet.randn(64, 64, 32, 32) -- 4M floats: shared out to the threads
    cbnet.set_num_threads(2)
    cbnet.pool_stats_reset()
    assert.same({loops = 0, loop_seconds = 0, thread_seconds = 0, busy_seconds = 0}, cbnet.pool_stats())
    local t0 = cbnet.clock()
    local _ = (x * 2):relu()
    local elapsed = cbnet.clock() - t0
    local s = cbnet.pool_stats()
    assert.is_true(s.loops >= 1)
    assert.is_true(s.loop_seconds > 0 and s.loop_seconds <= elapsed)
    assert.equal(2 * s.loop_seconds, s.thread_seconds) -- every loop in 2 chunks
    assert.is_true(s.busy_seconds > 0 and s.busy_seconds <= s.thread_seconds)
    -- on one thread the loops run in the caller: none on the pool
    cbnet.set_num_threads(1)
    cbnet.pool_stats_reset()
    _ = (x * 2):relu()
    cbnet.set_num_threads(threads)
    assert.equal(0, cbnet.pool_stats().loops)
  end)
end)
