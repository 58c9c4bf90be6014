--- cbnet.nn.Module: the base of every layer and model, as in PyTorch.
--
-- A module holds parameters (tensors that require grad), buffers (state such
-- as batch-norm running statistics) and child modules, each registered under
-- a name and kept in registration order. Calling a module runs its forward.
--
--   local Square = nn.Module:extend("Square")
--   function Square:init(n) self:register_parameter("scale", cbnet.ones(n)) end
--   function Square:forward(x) return x * x * self.scale end
--   local m = Square(3)            -- instances are made by calling the class
local cbnet = require "cbnet"

local Module = {name = "Module"}
Module.__index = Module

local function make_class(parent, name)
  local class = setmetatable({name = name}, {
    __index = parent,
    __call = function(cls, ...) return cls.new(cls, ...) end,
  })
  class.__index = class
  -- metamethods are looked up raw: copy them so every class has them
  class.__call = parent.__call
  class.__tostring = parent.__tostring
  return class
end

--- A subclass named `name`; define its init and forward methods.
function Module:extend(name)
  assert(type(name) == "string", "extend: the class needs a name")
  return make_class(self, name)
end

function Module.new(class, ...)
  local self = setmetatable({
    training = true,
    _parameters = {}, -- names, in order
    _buffers = {},
    _modules = {},
  }, class)
  if class.init then class.init(self, ...) end
  return self
end

setmetatable(Module, {__call = Module.new})

--- Calling a module runs forward.
function Module:__call(...) return self:forward(...) end

function Module:forward()
  error(("%s has no forward method"):format(self.name), 2)
end

local function register(self, list, name, value)
  assert(type(name) == "string" and name ~= "", "a registered name must be a non-empty string")
  if rawget(self, name) == nil then list[#list + 1] = name end
  rawset(self, name, value)
end

--- Registers t as a trainable parameter (it is made to require grad).
function Module:register_parameter(name, t)
  t.requires_grad = true
  register(self, self._parameters, name, t)
  return t
end

--- Registers t as a buffer: saved in the state dict, never trained.
function Module:register_buffer(name, t)
  register(self, self._buffers, name, t)
  return t
end

--- Registers a child module.
function Module:add_module(name, module)
  register(self, self._modules, name, module)
  return module
end

--- Visits (prefix .. name, value) for this module's and its children's
-- entries of one kind ("_parameters" or "_buffers"), depth first.
local function walk(self, kind, prefix, visit)
  for _, name in ipairs(self[kind]) do visit(prefix .. name, self[name]) end
  for _, name in ipairs(self._modules) do walk(self[name], kind, prefix .. name .. ".", visit) end
end

-- An iterator over (name, tensor) for one kind of entry.
local function named(self, kind)
  local list = {}
  walk(self, kind, "", function(name, t) list[#list + 1] = {name, t} end)
  local i = 0
  return function()
    i = i + 1
    if list[i] then return list[i][1], list[i][2] end
  end
end

--- for name, p in model:named_parameters() do ... end
function Module:named_parameters() return named(self, "_parameters") end

--- for name, b in model:named_buffers() do ... end
function Module:named_buffers() return named(self, "_buffers") end

--- A list of every parameter, in a fixed order (what optimizers take).
function Module:parameters()
  local list = {}
  walk(self, "_parameters", "", function(_, p) list[#list + 1] = p end)
  return list
end

--- The direct children, in order: for name, child in model:named_children().
function Module:named_children()
  local i = 0
  return function()
    i = i + 1
    local name = self._modules[i]
    if name then return name, self[name] end
  end
end

function Module:children()
  local list = {}
  for _, name in ipairs(self._modules) do list[#list + 1] = self[name] end
  return list
end

--- Every module in the tree, this one first.
function Module:modules()
  local list = {self}
  for _, name in ipairs(self._modules) do
    for _, m in ipairs(self[name]:modules()) do list[#list + 1] = m end
  end
  return list
end

--- Training mode (batch statistics, dropout) or evaluation mode.
function Module:train(mode)
  if mode == nil then mode = true end
  for _, m in ipairs(self:modules()) do m.training = mode end
  return self
end

function Module:eval() return self:train(false) end

--- Clears every parameter's gradient.
function Module:zero_grad()
  for _, p in ipairs(self:parameters()) do p.grad = nil end
end

function Module:num_parameters()
  local n = 0
  for _, p in ipairs(self:parameters()) do n = n + p:numel() end
  return n
end

--- name -> tensor for every parameter and buffer (sharing their memory).
function Module:state_dict()
  local state = {}
  walk(self, "_parameters", "", function(name, p) state[name] = p:detach() end)
  walk(self, "_buffers", "", function(name, b) state[name] = b:detach() end)
  return state
end

--- Copies a state dict into the parameters and buffers. strict (the default)
-- rejects missing and unexpected names; shapes must always match.
function Module:load_state_dict(state, strict)
  if strict == nil then strict = true end
  local seen, problems = {}, {}
  cbnet.no_grad(function()
    local function load(name, target)
      local source = state[name]
      if source == nil then
        if strict then problems[#problems + 1] = "missing " .. name end
        return
      end
      seen[name] = true
      local want, got = target:size(), source:size()
      if #want ~= #got or table.concat(want, ",") ~= table.concat(got, ",") then
        problems[#problems + 1] = ("%s has shape {%s}, the model wants {%s}"):format(name,
          table.concat(got, ", "), table.concat(want, ", "))
        return
      end
      target:copy_(source)
    end
    walk(self, "_parameters", "", load)
    walk(self, "_buffers", "", load)
  end)
  if strict then
    local unexpected = {}
    for name in pairs(state) do
      if not seen[name] then unexpected[#unexpected + 1] = name end
    end
    table.sort(unexpected)
    for _, name in ipairs(unexpected) do problems[#problems + 1] = "unexpected " .. name end
  end
  if #problems > 0 then
    error("load_state_dict: " .. table.concat(problems, "; "), 2)
  end
  return self
end

--- One line of settings shown by tostring (override in layers).
function Module:extra_repr() return "" end

local function with_commas(n)
  local s = tostring(n)
  repeat
    local k
    s, k = s:gsub("^(%d+)(%d%d%d)", "%1,%2")
  until k == 0
  return s
end

local function describe(self, indent)
  local head = self.name .. "(" .. self:extra_repr()
  if #self._modules == 0 then
    local n = self:num_parameters()
    return head .. ")" .. (n > 0 and ("  -- " .. with_commas(n) .. " parameters") or "")
  end
  local lines = {head}
  for _, name in ipairs(self._modules) do
    lines[#lines + 1] = indent .. "  (" .. name .. "): " .. describe(self[name], indent .. "  ")
  end
  lines[#lines + 1] = indent .. ")"
  return table.concat(lines, "\n")
end

--- The architecture, one line per layer with its parameter count.
function Module:__tostring()
  return describe(self, "") .. "\n-- " .. with_commas(self:num_parameters()) .. " parameters in all"
end

return Module
