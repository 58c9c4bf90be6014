local cbnet = require "cbnet"
local nn, F = cbnet.nn, cbnet.F
local gradcheck = require "cbnet.gradcheck"

local function small_cnn()
  return nn.Sequential(
    nn.Conv2d(3, 8, 3, {padding = 1}), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(8, 16, 3, {padding = 1}), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(16 * 2 * 2, 4))
end

describe("nn.Module", function()
  it("lists parameters and buffers by name, in registration order", function()
    cbnet.manual_seed(1)
    local m = small_cnn()
    local names = {}
    for name in m:named_parameters() do names[#names + 1] = name end
    assert.same({"1.weight", "1.bias", "2.weight", "2.bias", "5.weight", "5.bias", "6.weight",
                 "6.bias", "10.weight", "10.bias"}, names)
    assert.equal(10, #m:parameters())
    assert.equal(8 * 27 + 8 + 16 + 16 * 72 + 16 + 32 + 64 * 4 + 4, m:num_parameters())
    local buffers = {}
    for name in m:named_buffers() do buffers[#buffers + 1] = name end
    assert.same({"2.running_mean", "2.running_var", "2.num_batches_tracked", "6.running_mean",
                 "6.running_var", "6.num_batches_tracked"}, buffers)
    for _, p in ipairs(m:parameters()) do assert.is_true(p.requires_grad) end
  end)

  it("runs a batch norm and the ReLU after it as one layer, with the values and gradients of two", function()
    cbnet.manual_seed(3)
    local bn, relu = nn.BatchNorm2d(4), nn.ReLU()
    local seq = nn.Sequential(nn.Conv2d(2, 4, 3, {padding = 1}), bn, relu, nn.Flatten())
    local fused_calls = 0
    local bn_forward = bn.forward
    bn.forward = function(self, x, fuse)
      if fuse then fused_calls = fused_calls + 1 end
      return bn_forward(self, x, fuse)
    end
    relu.forward = function() error("the ReLU should have been fused into the batch norm") end
    local x = cbnet.randn(3, 2, 5, 5)
    local y = seq(x)
    assert.equal(1, fused_calls)
    bn.forward, relu.forward = nil, nil -- the classes' own: batch norm, then ReLU, separately
    local conv_grads = {}
    y:sum():backward()
    for _, p in ipairs(seq:parameters()) do conv_grads[#conv_grads + 1] = p.grad:clone() end
    seq:zero_grad()
    local apart = bn(seq:get(1)(x)):relu():flatten(2)
    apart:sum():backward()
    assert.near(0, (y - apart):abs():max():item(), 1e-6)
    assert.is_true(y:min():item() == 0 and y:max():item() > 0)
    for i, p in ipairs(seq:parameters()) do
      assert.near(0, (conv_grads[i] - p.grad):abs():max():item(), 1e-5)
    end
    -- the running statistics moved once per forward pass, fused or not
    assert.equal(2, bn.num_batches_tracked:item())
  end)

  it("folds a batch norm into the convolution before it in evaluation without gradients", function()
    cbnet.manual_seed(4)
    for _, case in ipairs{{relu = "module"}, {relu = "fused"}, {relu = "none"}, {stride = 2}, {bias = false}} do
      local bn = nn.BatchNorm2d(6, {relu = case.relu == "fused"})
      local conv = nn.Conv2d(3, 6, 3, {padding = 1, stride = case.stride, bias = case.bias})
      local seq = nn.Sequential(conv, bn)
      if case.relu == "module" or case.stride or case.bias == false then seq:append(nn.ReLU()) end
      seq:append(nn.Flatten())
      for _ = 1, 3 do seq(cbnet.randn(4, 3, 8, 8) * 2 + 1) end -- running statistics away from 0 and 1
      cbnet.no_grad(function() bn.weight:uniform_(0.5, 2); bn.bias:uniform_(-1, 1) end)
      seq:eval()
      local x = cbnet.randn(5, 3, 8, 8)
      local fold_calls, bn_fold = 0, bn.fold
      bn.fold = function(...) fold_calls = fold_calls + 1; return bn_fold(...) end
      local y = cbnet.no_grad(function() return seq(x) end)
      assert.equal(1, fold_calls)
      local apart = cbnet.no_grad(function()
        local z = F.batch_norm(conv(x), bn.running_mean, bn.running_var, {weight = bn.weight, bias = bn.bias})
        if #seq > 3 or case.relu == "fused" then z = z:relu() end
        return z:flatten(2)
      end)
      assert.near(0, (y - apart):abs():max():item(), 1e-5 * apart:abs():max():item())
      -- with gradients recorded nothing is folded, and the gradients reach the batch norm
      local with_grad = seq(x)
      assert.equal(1, fold_calls)
      assert.near(0, (with_grad:detach() - apart):abs():max():item(), 1e-5 * apart:abs():max():item())
    end
  end)

  it("prints the architecture with parameter counts", function()
    local text = tostring(small_cnn())
    assert.matches("(1): Conv2d(3, 8, kernel_size=3x3, stride=1, padding=1)  -- 224 parameters", text, 1, true)
    assert.matches("(10): Linear(64, 4)  -- 260 parameters", text, 1, true)
    assert.matches("-- 1,700 parameters in all", text, 1, true)
  end)

  it("initialises Linear and Conv2d as PyTorch: uniform within 1/sqrt(fan_in)", function()
    local lin = nn.Linear(400, 50)
    local bound = 1 / math.sqrt(400)
    assert.is_true(lin.weight:abs():max():item() <= bound)
    assert.is_true(lin.weight:abs():max():item() > 0.9 * bound)
    assert.near(bound ^ 2 / 3, lin.weight:var():item(), 0.1 * bound ^ 2 / 3) -- U(-b, b) variance
    local conv = nn.Conv2d(16, 8, 3)
    assert.is_true(conv.weight:abs():max():item() <= 1 / math.sqrt(16 * 9))
    local bn = nn.BatchNorm2d(4)
    assert.same({1, 1, 1, 1}, bn.weight:totable())
    assert.same({0, 0, 0, 0}, bn.running_mean:totable())
  end)

  it("switches train/eval through the tree and zeroes gradients", function()
    local m = small_cnn()
    m:eval()
    for _, child in ipairs(m:modules()) do assert.is_false(child.training) end
    m:train()
    assert.is_true(m:get(2).training)
    F.cross_entropy(m(cbnet.randn(2, 3, 8, 8)), cbnet.tensor{0, 3}):backward()
    assert.truthy(m:get(1).weight.grad)
    m:zero_grad()
    assert.is_nil(m:get(1).weight.grad)
  end)

  it("round-trips the state dict and names what does not fit", function()
    cbnet.manual_seed(2)
    local a, b = small_cnn(), small_cnn()
    a(cbnet.randn(4, 3, 8, 8)) -- moves a's running statistics
    b:load_state_dict(a:state_dict())
    a:eval()
    b:eval()
    local x = cbnet.randn(2, 3, 8, 8)
    assert.equal(0, (a(x) - b(x)):abs():max():item())
    local state = a:state_dict()
    state["10.bias"] = cbnet.zeros(5)
    state["extra"] = cbnet.zeros(1)
    state["1.weight"] = nil
    local ok, err = pcall(b.load_state_dict, b, state)
    assert.is_false(ok)
    assert.matches("missing 1.weight", err, 1, true)
    assert.matches("10.bias has shape {5}, the model wants {4}", err, 1, true)
    assert.matches("unexpected extra", err, 1, true)
  end)

  it("BatchNorm uses batch statistics in training and running ones in eval", function()
    local bn = nn.BatchNorm1d(3)
    local x = cbnet.randn(16, 3) * 3 + 2
    local y = bn(x)
    assert.near(0, y:mean(1):abs():max():item(), 1e-5)
    assert.equal(1, bn.num_batches_tracked:item())
    bn:eval()
    local e = bn(x)
    local want = (x - bn.running_mean) / (bn.running_var + 1e-5):sqrt()
    assert.near(0, (e - want):abs():max():item(), 1e-5)
    assert.error_matches(function() bn(cbnet.randn(2, 3, 4, 4)) end, "expected a 2 or 3%-d input")
  end)

  it("BasicBlock keeps or changes the shape, with either shortcut, and has gradients", function()
    local x = cbnet.randn(2, 4, 6, 6)
    assert.same({2, 4, 6, 6}, nn.BasicBlock(4, 4)(x):size())
    assert.same({2, 8, 3, 3}, nn.BasicBlock(4, 8, 2)(x):size())
    assert.same({2, 8, 3, 3}, nn.BasicBlock(4, 8, 2, {shortcut = "pad"})(x):size())
    -- the kernels are gradient-checked one by one (nn_kernels_spec); here the
    -- block's wiring: its gradients equal those of the same graph by hand
    local block = nn.BasicBlock(2, 4, 2, {shortcut = "pad"})
    local input = cbnet.randn(3, 2, 4, 4):requires_grad_()
    local w = cbnet.randn(3, 4, 2, 2)
    ;(block(input) * w):sum():backward()
    local by_block = {input.grad, block.conv1.weight.grad, block.conv2.weight.grad}
    local x2 = input:detach():requires_grad_()
    local c1, c2 = block.conv1.weight:detach():requires_grad_(), block.conv2.weight:detach():requires_grad_()
    local function bn(t, m) return F.batch_norm(t, nil, nil, {weight = m.weight, bias = m.bias, training = true}) end
    -- the middle, conv2(relu(bn1(.))), is one op (nn_kernels_spec checks it against the three)
    local h = F.batch_norm_relu_conv2d(F.conv2d(x2, c1, nil, {stride = 2, padding = 1}), nil, nil, c2, nil,
      {bn_weight = block.bn1.weight, bn_bias = block.bn1.bias, training = true, padding = 1})
    h = bn(h, block.bn2)
    local s = x2:slice(3, 1, -1, 2):slice(4, 1, -1, 2)
    s = cbnet.cat({cbnet.zeros(3, 1, 2, 2), s, cbnet.zeros(3, 1, 2, 2)}, 2)
    ;((h + s):relu() * w):sum():backward()
    for i, t in ipairs{x2.grad, c1.grad, c2.grad} do
      assert.equal(0, (t - by_block[i]):abs():max():item())
    end
  end)
end)

describe("training", function()
  it("a small CNN overfits a small synthetic set to 100% training accuracy", function()
    cbnet.manual_seed(3)
    local g = cbnet.Generator(3)
    local x = cbnet.randn({32, 3, 8, 8}, g)
    local y = cbnet.randint(0, 4, {32}, g)
    local model = small_cnn()
    local opt = cbnet.optim.Adam(model:parameters(), {lr = 0.01})
    local accuracy
    for _ = 1, 200 do
      local logits = model(x)
      local loss = F.cross_entropy(logits, y)
      opt:zero_grad()
      loss:backward()
      opt:step()
      accuracy = logits:argmax(2):eq(y):float():mean():item()
      if accuracy == 1 then break end
    end
    assert.equal(1, accuracy)
  end)

  it("a loss written in Lua (no C) trains a model", function()
    -- squared hinge on the margin between the target logit and the best other one
    local function margin_loss(logits, target)
      local picked = logits:gather(2, target:view(-1, 1))
      local others = logits:masked_fill(cbnet.zeros(logits:size()):scatter_add_(2,
        target:view(-1, 1), cbnet.ones(target:size(1), 1)):bool(), -1e9)
      local margin = picked - others:max(2, true) -- negative when wrong
      return ((1 - margin):relu() ^ 2):mean()
    end
    cbnet.manual_seed(4)
    local g = cbnet.Generator(4)
    local x = cbnet.randn({64, 10}, g)
    local y = x:narrow(2, 1, 3):argmax(2) -- the label is the largest of the first 3 features
    local model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3))
    local opt = cbnet.optim.Adam(model:parameters(), {lr = 0.01})
    local first, last
    for step = 1, 150 do
      local loss = margin_loss(model(x), y)
      if step == 1 then first = loss:item() end
      last = loss:item()
      opt:zero_grad()
      loss:backward()
      opt:step()
    end
    assert.is_true(last < 0.1 * first, ("loss went from %g to %g"):format(first, last))
    assert.is_true(model(x):argmax(2):eq(y):float():mean():item() >= 0.95)
  end)
end)
