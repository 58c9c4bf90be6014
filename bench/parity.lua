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

-- Runs fn(leaves...) -> output, backpropagates the case's "gy" (or the scalar),
-- stores the output and each leaf's gradient under prefix.
local function forward_backward(prefix, case, names, fn)
  local leaves = {}
  for i, name in ipairs(names) do leaves[i] = leaf(inputs[case .. "/" .. name]) end
  local y = fn(table.unpack(leaves))
  local gy = inputs[case .. "/gy"]
  if gy then y:backward(gy) else y:backward() end
  out[prefix .. "/y"] = y:detach():contiguous()
  for i, name in ipairs(names) do out[prefix .. "/d" .. name] = leaves[i].grad:contiguous() end
end

local kinds = {}

function kinds.conv2d(case, p)
  local names = p.bias == 1 and {"x", "w", "b"} or {"x", "w"}
  local previous = cbnet.conv_path()
  for _, path in ipairs(cbnet.conv_paths()) do
    cbnet.conv_path(path)
    forward_backward(case .. "@" .. path, case, names, function(x, w, b)
      return F.conv2d(x, w, b, {stride = p.stride, padding = p.padding})
    end)
  end
  cbnet.conv_path(previous)
end

function kinds.batch_norm(case)
  local rm, rv = cbnet.zeros(inputs[case .. "/w"]:size(1)), cbnet.ones(inputs[case .. "/w"]:size(1))
  forward_backward(case, case, {"x", "w", "b"}, function(x, w, b)
    return F.batch_norm(x, rm, rv, {weight = w, bias = b, training = true, momentum = 0.1, eps = 1e-5})
  end)
  out[case .. "/running_mean"], out[case .. "/running_var"] = rm, rv
end

function kinds.max_pool2d(case, p)
  forward_backward(case, case, {"x"}, function(x) return F.max_pool2d(x, p.kernel, p.stride, p.padding) end)
end

function kinds.avg_pool2d(case, p)
  forward_backward(case, case, {"x"}, function(x) return F.avg_pool2d(x, p.kernel, p.stride, p.padding) end)
end

function kinds.adaptive_avg_pool2d(case, p)
  forward_backward(case, case, {"x"}, function(x) return F.adaptive_avg_pool2d(x, p.size) end)
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
