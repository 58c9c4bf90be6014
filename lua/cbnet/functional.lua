--- cbnet.functional (also cbnet.F): the neural-network kernels as functions,
-- differentiable through autograd. Sizes may be a number or a {h, w} pair.
local core = require "cbnet.core"
local options = require "cbnet.options"

local F = {}

--- conv2d(x, weight[, bias[, opts]]); opts: stride, padding, dilation, groups,
-- relu (false: true gives max(0, conv2d(x)), clamped as the output is written
-- when no gradient is recorded).
function F.conv2d(x, weight, bias, opts)
  opts = options.check(opts, "conv2d", {"stride", "padding", "dilation", "groups", "relu"})
  return core.conv2d(x, weight, bias, opts.stride, opts.padding, opts.dilation, opts.groups,
    opts.relu or false)
end

--- linear(x, weight[, bias]): x W^T + b.
F.linear = core.linear

--- batch_norm(x, running_mean, running_var[, opts]); opts: weight, bias,
-- training (default false), momentum (0.1), eps (1e-5), relu (false: true
-- gives max(0, batch_norm(x)) in the same passes over memory), residual (a
-- tensor of x's shape added before the ReLU: max(0, batch_norm(x) + residual),
-- the end of a ResNet block in one pass), pool (2: then 2x2 max pooling with
-- stride 2, max_pool2d(max(0, batch_norm(x)), 2), with relu and without a
-- residual, the batch norm's output never written), sync (a reducer from
-- cbnet.mpi.reducer(): statistics over every rank's batch).
function F.batch_norm(x, running_mean, running_var, opts)
  opts = options.check(opts, "batch_norm",
    {"weight", "bias", "training", "momentum", "eps", "relu", "sync", "residual", "pool"})
  if opts.pool ~= nil and opts.pool ~= 2 then
    error("batch_norm: pool must be 2 (2x2 max pooling after the ReLU), got " .. tostring(opts.pool), 2)
  end
  return core.batch_norm(x, opts.weight, opts.bias, running_mean, running_var,
    opts.training or false, opts.momentum, opts.eps, opts.relu or false, opts.sync, opts.residual,
    opts.pool == 2)
end

-- A batch norm and convolution in one op (name, core's fn): the options of both.
local function batch_norm_with_conv(name, fn, x, weight, bias, running_mean, running_var, opts)
  opts = options.check(opts, name, {"bn_weight", "bn_bias", "training", "momentum", "eps", "stride",
    "padding", "dilation", "groups"})
  return fn(x, opts.bn_weight, opts.bn_bias, running_mean, running_var, opts.training or false,
    opts.momentum, opts.eps, weight, bias, opts.stride, opts.padding, opts.dilation, opts.groups)
end

--- batch_norm_relu_conv2d(x, running_mean, running_var, weight[, bias[, opts]]):
-- conv2d(max(0, batch_norm(x)), weight, bias) in one op, the middle of a ResNet
-- block: the convolution normalises x as it reads it, so the batch norm's output
-- is neither written nor kept for backward (which recomputes it), a quarter of
-- a ResNet's activations. opts: batch_norm's bn_weight, bn_bias, training,
-- momentum, eps (no sync) and conv2d's stride, padding, dilation, groups.
function F.batch_norm_relu_conv2d(x, running_mean, running_var, weight, bias, opts)
  return batch_norm_with_conv("batch_norm_relu_conv2d", core.batch_norm_relu_conv2d, x, weight, bias,
    running_mean, running_var, opts)
end

--- conv2d_batch_norm_relu_pool(x, weight, bias, running_mean, running_var[, opts]):
-- max_pool2d(max(0, batch_norm(conv2d(x, weight, bias))), 2) in one op, a
-- CNN's first layer: when x needs no gradient, backward takes the
-- convolution's weight gradient from the batch norm's gradient a few images
-- at a time, never writing all of it. opts: conv2d's stride, padding,
-- dilation, groups and batch_norm's bn_weight, bn_bias, training, momentum,
-- eps (no sync).
function F.conv2d_batch_norm_relu_pool(x, weight, bias, running_mean, running_var, opts)
  return batch_norm_with_conv("conv2d_batch_norm_relu_pool", core.conv2d_batch_norm_relu_pool, x, weight,
    bias, running_mean, running_var, opts)
end

--- max_pool2d(x, kernel[, stride[, padding]]), stride defaults to kernel.
F.max_pool2d = core.max_pool2d
--- avg_pool2d(x, kernel[, stride[, padding[, count_include_pad]]]).
F.avg_pool2d = core.avg_pool2d
--- adaptive_avg_pool2d(x, size): size 1 is global average pooling.
F.adaptive_avg_pool2d = core.adaptive_avg_pool2d

function F.relu(x) return x:relu() end
function F.sigmoid(x) return x:sigmoid() end
function F.tanh(x) return x:tanh() end
--- leaky_relu(x[, negative_slope = 0.01]).
F.leaky_relu = core.leaky_relu
--- gelu(x): the exact (erf) form.
F.gelu = core.gelu
--- softplus(x[, beta = 1]).
F.softplus = core.softplus
--- dropout(x[, p = 0.5[, training = true[, generator]]]).
F.dropout = core.dropout
--- softmax(x[, dim = -1]), log_softmax(x[, dim = -1]).
F.softmax = core.softmax
F.log_softmax = core.log_softmax

--- cross_entropy(logits, target[, opts]); opts: weight (per class),
-- label_smoothing (0), reduction ("mean" | "sum" | "none"). As PyTorch's:
-- "mean" with weights divides by the sum of the targets' weights.
function F.cross_entropy(logits, target, opts)
  opts = options.check(opts, "cross_entropy", {"weight", "label_smoothing", "reduction"})
  return core.cross_entropy(logits, target, opts.weight, opts.label_smoothing, opts.reduction)
end

return F
