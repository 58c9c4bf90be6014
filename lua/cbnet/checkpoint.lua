--- cbnet.checkpoint: training state in safetensors files.
--
-- save(path, {model = m, optimizer = opt, ema = e, epoch = e, extra = {...}})
-- writes the model's state dict as "model.<name>", an optim.EMA's averaged
-- weights as "ema.<name>", the optimizer's tensors as
-- "optimizer.<param index>.<key>", and everything else (epoch, optimizer
-- options and step counts, extra) as JSON in the "cbnet" metadata entry.
-- save_weights(path, model) writes the bare state dict (names as in the
-- model), which other tools read as an ordinary safetensors state dict.
-- Files are written atomically.
local cbnet = require "cbnet"
local core = require "cbnet.core"
local json = require "cbnet.json"

local checkpoint = {}

local FORMAT = "cbnet.checkpoint.v1"

function checkpoint.save_weights(path, model)
  core.save_safetensors(path, model:state_dict(), {format = "cbnet.weights.v1"})
end

function checkpoint.load_weights(path, model)
  local tensors = core.load_safetensors(path)
  model:load_state_dict(tensors)
  return model
end

-- Shifts every all-digit component of each name by delta.
local function renumber(state, delta)
  local out = {}
  for name, t in pairs(state) do
    local renamed = name:gsub("%f[%w](%d+)%f[^%w]", function(n)
      return tostring(tonumber(n) + delta)
    end)
    if out[renamed] then error(("checkpoint: two names become %s"):format(renamed), 3) end
    out[renamed] = t
  end
  return out
end

--- PyTorch's names for a cbnet state dict: nn.Sequential children are
-- numbered from 1 in cbnet (Lua lists) and from 0 in PyTorch, so
-- "1.weight" becomes "0.weight" and "3.2.bias" "2.1.bias"; other names
-- (weight, bias, running_mean, running_var, num_batches_tracked) match.
-- save_safetensors(path, checkpoint.to_torch_names(model:state_dict())) gives
-- a file torch's load_state_dict takes for the same architecture.
function checkpoint.to_torch_names(state) return renumber(state, -1) end

--- The reverse: a PyTorch state dict's names (from a safetensors file) for
-- model:load_state_dict.
function checkpoint.from_torch_names(state) return renumber(state, 1) end

-- The entries of a state dict as "<prefix>.<name>" in tensors, and back.
local function add_prefixed(tensors, prefix, state)
  for name, t in pairs(state) do tensors[prefix .. "." .. name] = t end
end

local function prefixed(tensors, prefix)
  local state, pattern = {}, "^" .. prefix .. "%.(.+)$"
  for name, t in pairs(tensors) do
    local key = name:match(pattern)
    if key then state[key] = t end
  end
  return state
end

function checkpoint.save(path, parts)
  local tensors, meta = {}, {epoch = parts.epoch, extra = parts.extra}
  if parts.model then add_prefixed(tensors, "model", parts.model:state_dict()) end
  if parts.ema then add_prefixed(tensors, "ema", parts.ema:state_dict()) end -- an optim.EMA
  if parts.optimizer then
    local state = parts.optimizer:state_dict()
    local scalars = {}
    for index, s in pairs(state.state) do
      for key, v in pairs(s) do
        if cbnet.is_tensor(v) then tensors[("optimizer.%d.%s"):format(index, key)] = v
        else scalars[tostring(index)] = scalars[tostring(index)] or {}; scalars[tostring(index)][key] = v end
      end
    end
    meta.optimizer = {param_groups = state.param_groups, scalars = scalars}
  end
  core.save_safetensors(path, tensors, {format = FORMAT, cbnet = json.encode(meta)})
end

--- Reads a checkpoint and restores it into parts.model / parts.optimizer /
-- parts.ema
-- (when given); returns the metadata (epoch, extra).
function checkpoint.load(path, parts)
  local tensors, raw = core.load_safetensors(path)
  if raw.format ~= FORMAT then
    error(("%s is not a cbnet checkpoint (format %s)"):format(path, tostring(raw.format)), 2)
  end
  local meta = json.decode(raw.cbnet)
  if parts.model then parts.model:load_state_dict(prefixed(tensors, "model")) end
  if parts.ema then
    local state = prefixed(tensors, "ema")
    if next(state) == nil then
      error(("%s has no moving average of the weights (was it saved without --ema?)"):format(path), 2)
    end
    parts.ema:load_state_dict(state)
  end
  if parts.optimizer and meta.optimizer then
    local state = {}
    for index, s in pairs(meta.optimizer.scalars or {}) do state[tonumber(index)] = s end
    for name, t in pairs(tensors) do
      local index, key = name:match("^optimizer%.(%d+)%.(.+)$")
      if index then
        index = tonumber(index)
        state[index] = state[index] or {}
        state[index][key] = t
      end
    end
    parts.optimizer:load_state_dict({state = state, param_groups = meta.optimizer.param_groups})
  end
  return meta
end

return checkpoint
