--- nn.BatchNorm1d(num_features[, opts]) for N x C (x L) inputs and
-- nn.BatchNorm2d(num_features[, opts]) for N x C x H x W; opts: eps (1e-5),
-- momentum (0.1), affine (true), track_running_stats (true), relu (false:
-- true makes the layer BatchNorm followed by ReLU, computed in the same passes
-- over memory; the parameters and state are the same), sync (false: true
-- takes the statistics over every rank's batch in data-parallel training
-- under mpirun, as PyTorch's SyncBatchNorm; alone it changes nothing).
-- forward(x[, relu[, residual[, pool]]]): relu = true adds the ReLU for this
-- call (nn.Sequential fuses a following nn.ReLU so), residual a tensor of x's
-- shape added before it (a ResNet block's end: max(0, bn(x) + residual)),
-- pool = 2 a 2x2 max pooling after the ReLU (BatchNorm2d; nn.Sequential fuses
-- a following nn.MaxPool2d(2) so: the batch norm's output is never written).
-- forward(x, true, nil, nil, conv) with an nn.Conv2d: conv(max(0, bn(x))) in
-- one op (F.batch_norm_relu_conv2d, nn.BasicBlock's middle), the batch norm's
-- output neither written nor kept for backward.
-- after_conv(x, conv): max_pool2d(max(0, bn(conv(x))), 2) in one op
-- (F.conv2d_batch_norm_relu_pool; nn.Sequential takes a Conv2d, this layer,
-- its ReLU and a MaxPool2d(2) so, as in the seed CNN).
-- Training uses batch statistics and updates the running ones; eval() uses
-- the running ones.
local cbnet = require "cbnet"
local Module = require "cbnet.nn.module"
local options = require "cbnet.options"

local function batch_norm_class(name, dims)
  local class = Module:extend(name)

  function class:init(num_features, opts)
    opts = options.check(opts, name, {"eps", "momentum", "affine", "track_running_stats", "relu", "sync"})
    self.num_features = num_features
    self.eps, self.momentum = opts.eps or 1e-5, opts.momentum or 0.1
    self.relu = opts.relu or false
    self.sync = opts.sync or false
    if opts.affine ~= false then
      self:register_parameter("weight", cbnet.ones(num_features))
      self:register_parameter("bias", cbnet.zeros(num_features))
    end
    if opts.track_running_stats ~= false then
      self:register_buffer("running_mean", cbnet.zeros(num_features))
      self:register_buffer("running_var", cbnet.ones(num_features))
      self:register_buffer("num_batches_tracked", cbnet.zeros({}, "int64"))
    end
  end

  class.fuses_relu = true -- nn.Sequential calls forward(x, true) for this layer and a ReLU after it
  class.fuses_pool = name == "BatchNorm2d" -- and forward(x, relu, nil, 2) with a 2x2 max pooling after
  class.fuses_conv = name == "BatchNorm2d" -- and forward(x, true, nil, nil, conv) with a Conv2d after the ReLU
  class.fuses_conv_pool = name == "BatchNorm2d" -- and after_conv(x, conv): a Conv2d before, ReLU, MaxPool2d(2) after

  -- Whether to use the batch's statistics, and the reducer that sums them
  -- over the ranks (or nil); counts the batch.
  local function batch_state(self)
    local use_batch = self.training or not self.running_mean
    if self.training and self.num_batches_tracked then
      cbnet.no_grad(function() self.num_batches_tracked:add_(1) end)
    end
    local reducer
    if self.sync and use_batch then -- under mpirun: the ranks' statistics together
      local mpi = package.loaded["cbnet.mpi"]
      reducer = mpi and mpi.reducer()
    end
    return use_batch, reducer
  end

  function class:forward(x, relu, residual, pool, conv)
    local ok = false
    for _, d in ipairs(dims) do ok = ok or x:dim() == d end
    if not ok then
      error(("%s: expected a %s-d input, got shape {%s}"):format(name,
        table.concat(dims, " or "), table.concat(x:size(), ", ")), 2)
    end
    local use_batch, reducer = batch_state(self)
    if conv and not reducer then
      assert(relu or self.relu, "the convolution follows the ReLU")
      return cbnet.F.batch_norm_relu_conv2d(x, self.running_mean, self.running_var, conv.weight,
        conv.bias, {bn_weight = self.weight, bn_bias = self.bias, training = use_batch,
        momentum = self.momentum, eps = self.eps, stride = conv.stride, padding = conv.padding,
        dilation = conv.dilation, groups = conv.groups})
    end
    local y = cbnet.F.batch_norm(x, self.running_mean, self.running_var, {weight = self.weight,
      bias = self.bias, training = use_batch, momentum = self.momentum, eps = self.eps,
      relu = relu or self.relu, residual = residual, pool = pool, sync = reducer})
    if conv then return conv(y) end -- synchronised statistics: the two ops
    return y
  end

  function class:after_conv(x, conv)
    local use_batch, reducer = batch_state(self)
    local opts = {stride = conv.stride, padding = conv.padding, dilation = conv.dilation,
                  groups = conv.groups}
    if reducer then -- synchronised statistics: the ops
      return cbnet.F.batch_norm(cbnet.F.conv2d(x, conv.weight, conv.bias, opts), self.running_mean,
        self.running_var, {weight = self.weight, bias = self.bias, training = use_batch,
        momentum = self.momentum, eps = self.eps, relu = true, pool = 2, sync = reducer})
    end
    opts.bn_weight, opts.bn_bias, opts.training = self.weight, self.bias, use_batch
    opts.momentum, opts.eps = self.momentum, self.eps
    return cbnet.F.conv2d_batch_norm_relu_pool(x, conv.weight, conv.bias, self.running_mean,
      self.running_var, opts)
  end

  --- The weight and bias of a convolution followed by this layer in
  -- evaluation: (w, b) scaled by gamma / sqrt(running_var + eps) and shifted,
  -- so that conv(x; w', b') = bn(conv(x; w, b)). Nil in training or without
  -- running statistics.
  function class:fold(weight, bias)
    if self.training or not self.running_mean then return nil end
    return cbnet.no_grad(function()
      local scale = (self.running_var + self.eps):rsqrt()
      if self.weight then scale = scale * self.weight end
      local shift = bias and (bias - self.running_mean) * scale or -self.running_mean * scale
      if self.bias then shift = shift + self.bias end
      return weight * scale:view(-1, 1, 1, 1), shift
    end)
  end

  function class:extra_repr()
    return ("%d, eps=%g, momentum=%g%s%s"):format(self.num_features, self.eps, self.momentum,
      self.relu and ", relu" or "", self.sync and ", sync" or "")
  end

  return class
end

return {
  BatchNorm1d = batch_norm_class("BatchNorm1d", {2, 3}),
  BatchNorm2d = batch_norm_class("BatchNorm2d", {4}),
}
