-- The everyday ops a PyTorch user reaches for (issue 11).
local cbnet = require "cbnet"

local function values(t) return t:contiguous():view(-1):totable() end

describe("everyday ops", function()
  it("scatter_ writes src (or a number) at the index along dim, in place", function()
    local t = cbnet.zeros(2, 4)
    t:scatter_(2, cbnet.tensor{{1, 3}, {0, 0}}, cbnet.tensor({{5, 6}, {7, 8}}, "float32"))
    assert.same({0, 5, 0, 6, 8, 0, 0, 0}, values(t)) -- the last write to an element wins
    local u = cbnet.zeros(3, "int64")
    u:scatter_(1, cbnet.tensor{2, 0}, 9)
    assert.same({9, 0, 9}, values(u))
    assert.error_matches(function() t:scatter_(2, cbnet.tensor{{4}, {0}}, t) end, "out of range")
    assert.error_matches(function() t:scatter_(2, cbnet.tensor{{1}, {0}}, cbnet.ones(2, 1, "int64")) end,
      "src is int64")
  end)

  it("one_hot as torch.nn.functional.one_hot", function()
    local o = cbnet.one_hot(cbnet.tensor{2, 0, 1})
    assert.same({3, 3}, o:size())
    assert.equal("int64", o:dtype())
    assert.same({0, 0, 1, 1, 0, 0, 0, 1, 0}, values(o))
    assert.same({2, 1, 5}, cbnet.one_hot(cbnet.tensor{{4}, {0}}, 5):size())
    assert.error_matches(function() cbnet.one_hot(cbnet.tensor{1.5}) end, "int64")
    assert.error_matches(function() cbnet.one_hot(cbnet.tensor{-1}) end, ">= 0")
  end)

  it("logsumexp is stable and differentiable", function()
    local x = cbnet.tensor{{1000, 1000}, {-1, 2}}
    local y = x:logsumexp(2)
    assert.is_true(math.abs(y[1] - (1000 + math.log(2))) < 1e-3)
    assert.is_true(math.abs(y[2] - math.log(math.exp(-1) + math.exp(2))) < 1e-5)
    assert.same({2, 1}, x:logsumexp(2, true):size())
    local all_inf = cbnet.full({1, 2}, -math.huge):logsumexp(2)
    assert.equal(-math.huge, all_inf[1])
    assert.is_true(cbnet.gradcheck(function(a) return a:logsumexp(1) end, {cbnet.randn(3, 4)}))
  end)

  it("zeros_like, ones_like, full_like keep shape and dtype", function()
    local t = cbnet.ones(2, 3, "int64")
    assert.same({2, 3}, cbnet.zeros_like(t):size())
    assert.equal("int64", cbnet.ones_like(t):dtype())
    assert.same({7, 7, 7, 7, 7, 7}, values(cbnet.full_like(t, 7)))
    assert.equal("float32", cbnet.zeros_like(t, "float32"):dtype())
  end)

  it("flip reverses along the dims given, as torch.flip, with gradients", function()
    local t = cbnet.arange(6):float():view(2, 3)
    assert.same({{2, 1, 0}, {5, 4, 3}}, t:flip(2):totable())
    assert.same({{5, 4, 3}, {2, 1, 0}}, t:flip({1, -1}):totable())
    assert.same({{0, 1, 2}, {3, 4, 5}}, t:flip(2):flip(2):totable())
    -- images mirrored left to right, in their own (CNHW) layout
    local img = cbnet.F.conv2d(cbnet.randn(2, 1, 3, 4), cbnet.ones(1, 1, 1, 1))
    local mirrored = img:flip(4)
    local row = img:select(1, 2):select(1, 1):select(1, 3):totable()
    local mirrored_row = mirrored:select(1, 2):select(1, 1):select(1, 3):totable()
    assert.same({row[4], row[3], row[2], row[1]}, mirrored_row)
    local gradcheck = require "cbnet.gradcheck"
    local weights = cbnet.arange(24):float():view(2, 3, 4)
    assert.is_true(gradcheck(function(a) return a:flip({1, 3}) * weights end, {cbnet.randn(2, 3, 4)}))
    assert.error_matches(function() t:flip(3) end, "flip: dim 3 out of range for a 2%-d tensor")
    assert.error_matches(function() t:flip(1.5) end, "flip: dims must be integers")
    local one = cbnet.ones(1)
    assert.is_false(rawequal(one, one:flip(1))) -- always a copy
  end)

  it("gradcheck is there for users, and catches a wrong gradient", function()
    assert.is_true(cbnet.gradcheck(function(a, b) return a * b end, {cbnet.randn(3), cbnet.randn(3)}))
    -- detach cuts the gradient of one branch: autograd and finite differences disagree
    assert.error_matches(function()
      cbnet.gradcheck(function(a) return a * a:detach() end, {cbnet.randn(3)})
    end, "autograd .* finite differences")
  end)
end)

describe("PyTorch names for state dicts", function()
  it("numbers Sequential children from 0 and back", function()
    local checkpoint = require "cbnet.checkpoint"
    local nn = cbnet.nn
    local m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Sequential(nn.Linear(2, 2)))
    local torch = checkpoint.to_torch_names(m:state_dict())
    local names = {}
    for k in pairs(torch) do names[#names + 1] = k end
    table.sort(names)
    assert.same({"0.bias", "0.weight", "1.bias", "1.num_batches_tracked", "1.running_mean", "1.running_var",
                 "1.weight", "2.0.bias", "2.0.weight"}, names)
    local back = checkpoint.from_torch_names(torch)
    m:load_state_dict(back) -- strict: every name fits
    assert.is_true(m:state_dict()["3.1.weight"]:allclose(back["3.1.weight"]))
  end)
end)

describe("cbnet.json numbers", function()
  it("read back exactly, short when they can be", function()
    local json = require "cbnet.json"
    for _, v in ipairs{0.1, 0.1 + 0.2, 1 / 3, 1e-300, 5.0, 2 ^ 60, -7, math.maxinteger} do
      local text = json.encode(v)
      assert.equal(v, json.decode(text), text)
      assert.equal(math.type(v), math.type(json.decode(text)), text)
    end
    assert.equal("0.1", json.encode(0.1))
  end)
end)
