-- cbnet side of bench/parity.py: reads the cases' inputs from a safetensors
-- file, computes every forward output and gradient, writes them to another.
--   build/bin/cbnet run bench/parity.lua INPUTS.safetensors OUTPUTS.safetensors
-- Input names are "<case>/<tensor>"; a case's kind and parameters come from
-- the file's metadata (key = case, value = "kind k=v k=v ..."). Outputs are
-- "<case>[@path]/<name>": convolutions run once per conv path this CPU has.
local cbnet = require "cbnet"
local models = require "cbnet.models"
local checkpoint = require "cbnet.checkpoint"
local F = cbnet.F

local inputs, meta = cbnet.load_safetensors(arg[1])
local out = {}

local function params_of(spec)
  local kind = spec:match("^(%S+)")
  local p = {}
  for k, v in spec:gmatch("(%w+)=(%S+)") do p[k] = tonumber(v) or v end
  return kind, p
end

local function leaf(t) return t:clone():requires_grad_() end

-- t (n x c x h x w) in the CNHW layout when cnhw is 1 (as a convolution's
-- output is), else as it is.
local function in_layout(t, cnhw)
  if cnhw == 1 then return t:permute(2, 1, 3, 4):contiguous():permute(2, 1, 3, 4) end
  return t
end

-- Runs fn(leaves...) -> output, backpropagates the case's "gy" (or the scalar),
-- stores the output and each leaf's gradient under prefix. p.cnhw: x and r in
-- CNHW; p.xgrad == 0: x needs no gradient.
local function forward_backward(prefix, case, names, fn, p)
  p = p or {}
  local leaves = {}
  for i, name in ipairs(names) do
    local t = inputs[case .. "/" .. name]
    if name == "x" or name == "r" then t = in_layout(t, p.cnhw) end
    leaves[i] = (name == "x" and p.xgrad == 0) and t:clone() or leaf(t)
  end
  local y = fn(table.unpack(leaves))
  local gy = inputs[case .. "/gy"]
  if gy then y:backward(gy) else y:backward() end
  out[prefix .. "/y"] = y:detach():contiguous()
  for i, name in ipairs(names) do
    if leaves[i].grad then out[prefix .. "/d" .. name] = leaves[i].grad:contiguous() end
  end
end

-- fn(prefix) once per conv path this CPU has, prefix "<case>@<path>".
local function each_conv_path(case, fn)
  local previous = cbnet.conv_path()
  for _, path in ipairs(cbnet.conv_paths()) do
    cbnet.conv_path(path)
    fn(case .. "@" .. path)
  end
  cbnet.conv_path(previous)
end

local function conv_opts(p)
  return {stride = p.stride, padding = p.padding, dilation = p.dilation, groups = p.groups}
end

local kinds = {}

function kinds.conv2d(case, p)
  local names = p.bias == 1 and {"x", "w", "b"} or {"x", "w"}
  each_conv_path(case, function(prefix)
    forward_backward(prefix, case, names, function(x, w, b) return F.conv2d(x, w, b, conv_opts(p)) end, p)
  end)
end

-- A training case's batch norm running statistics: 0 and 1 at the start, written
-- out under prefix (as they are when the case ends).
local function fresh_statistics(prefix, c)
  local rm, rv = cbnet.zeros(c), cbnet.ones(c)
  out[prefix .. "/running_mean"], out[prefix .. "/running_var"] = rm, rv
  return rm, rv
end

local function fused_opts(p, g, beta)
  local opts = conv_opts(p)
  opts.bn_weight, opts.bn_bias, opts.training = g, beta, true
  return opts
end

-- A fused op of batch norm and convolution, on every conv path:
-- op(x, w, b, running_mean, running_var, opts).
local function fused_kind(op)
  return function(case, p)
    local names = p.bias == 1 and {"x", "g", "beta", "w", "b"} or {"x", "g", "beta", "w"}
    each_conv_path(case, function(prefix)
      local rm, rv = fresh_statistics(prefix, inputs[case .. "/g"]:size(1))
      forward_backward(prefix, case, names, function(x, g, beta, w, b)
        return op(x, w, b, rm, rv, fused_opts(p, g, beta))
      end, p)
    end)
  end
end

kinds.bn_relu_conv = fused_kind(function(x, w, b, rm, rv, opts)
  return F.batch_norm_relu_conv2d(x, rm, rv, w, b, opts)
end)
kinds.conv_bn_relu_pool = fused_kind(F.conv2d_batch_norm_relu_pool)

function kinds.bn_add_relu(case, p)
  local rm, rv = fresh_statistics(case, inputs[case .. "/w"]:size(1))
  forward_backward(case, case, {"x", "w", "b", "r"}, function(x, w, b, r)
    return F.batch_norm(x, rm, rv, {weight = w, bias = b, training = true, relu = true, residual = r})
  end, p)
end

function kinds.batch_norm(case, p)
  local rm, rv = fresh_statistics(case, inputs[case .. "/w"]:size(1))
  forward_backward(case, case, {"x", "w", "b"}, function(x, w, b)
    return F.batch_norm(x, rm, rv, {weight = w, bias = b, training = true, momentum = 0.1, eps = 1e-5})
  end, p)
end

function kinds.bn_relu_pool(case, p)
  local rm, rv = fresh_statistics(case, inputs[case .. "/w"]:size(1))
  forward_backward(case, case, {"x", "w", "b"}, function(x, w, b)
    return F.batch_norm(x, rm, rv, {weight = w, bias = b, training = true, relu = true, pool = 2})
  end, p)
end

function kinds.max_pool2d(case, p)
  forward_backward(case, case, {"x"}, function(x) return F.max_pool2d(x, p.kernel, p.stride, p.padding) end, p)
end

function kinds.avg_pool2d(case, p)
  forward_backward(case, case, {"x"}, function(x) return F.avg_pool2d(x, p.kernel, p.stride, p.padding) end, p)
end

function kinds.adaptive_avg_pool2d(case, p)
  forward_backward(case, case, {"x"}, function(x) return F.adaptive_avg_pool2d(x, p.size) end, p)
end

function kinds.linear(case)
  forward_backward(case, case, {"x", "w", "b"}, function(x, w, b) return F.linear(x, w, b) end)
end

function kinds.cross_entropy(case, p)
  local target = inputs[case .. "/target"]
  forward_backward(case, case, {"x"}, function(x)
    return F.cross_entropy(x, target, {label_smoothing = p.smoothing})
  end)
end

-- A whole net in training mode: its initial state (for PyTorch to load), the
-- loss, the logits and every parameter's gradient.
function kinds.net(case, p)
  cbnet.manual_seed(p.seed)
  local model = models.get(p.name)
  local state = checkpoint.to_torch_names(model:state_dict())
  for name, t in pairs(state) do out[case .. "/state/" .. name] = t:clone() end -- before training
  local x, y = inputs[case .. "/x"], inputs[case .. "/target"]
  local logits = model(x)
  local loss = F.cross_entropy(logits, y)
  loss:backward()
  out[case .. "/logits"], out[case .. "/loss"] = logits:detach():contiguous(), loss:detach()
  local grads = {}
  for name, param in model:named_parameters() do grads[name] = param.grad end
  for name, g in pairs(checkpoint.to_torch_names(grads)) do out[case .. "/grad/" .. name] = g:contiguous() end
end

for case, spec in pairs(meta) do
  local kind, p = params_of(spec)
  assert(kinds[kind], "parity: unknown case kind " .. kind)
  kinds[kind](case, p)
end
cbnet.save_safetensors(arg[2], out)
