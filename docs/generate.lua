-- Writes docs/api.md, the API reference, from the doc comments of the Lua
-- modules: each file's opening comment, then every `---` comment with the
-- function or value it documents. Run from the repository root:
--   build/bin/cbnet docs/generate.lua > docs/api.md
-- (tests/spec/docs_spec.lua checks that the committed file is current).
local MODULES = {
  {"cbnet", "lua/cbnet/init.lua"}, {"cbnet.F", "lua/cbnet/functional.lua"},
  {"cbnet.nn", "lua/cbnet/nn/init.lua"}, {"cbnet.nn.Module", "lua/cbnet/nn/module.lua"},
  {"cbnet.nn layers", "lua/cbnet/nn/container.lua"}, {"", "lua/cbnet/nn/linear.lua"},
  {"", "lua/cbnet/nn/conv.lua"}, {"", "lua/cbnet/nn/batchnorm.lua"},
  {"", "lua/cbnet/nn/activation.lua"}, {"", "lua/cbnet/nn/pooling.lua"},
  {"", "lua/cbnet/nn/dropout.lua"}, {"", "lua/cbnet/nn/basic_block.lua"},
  {"", "lua/cbnet/nn/normed_linear.lua"}, {"cbnet.nn.init", "lua/cbnet/nn/initializers.lua"},
  {"cbnet.loss", "lua/cbnet/loss.lua"}, {"cbnet.optim", "lua/cbnet/optim.lua"},
  {"cbnet.data", "lua/cbnet/data.lua"}, {"cbnet.experiment", "lua/cbnet/experiment.lua"},
  {"cbnet.launch", "lua/cbnet/launch.lua"}, {"cbnet.models", "lua/cbnet/models.lua"},
  {"cbnet.longtail", "lua/cbnet/longtail.lua"}, {"cbnet.cli", "lua/cbnet/cli.lua"}, {"cbnet.report", "lua/cbnet/report.lua"},
  {"cbnet.plot", "lua/cbnet/plot.lua"}, {"cbnet.checkpoint", "lua/cbnet/checkpoint.lua"},
  {"cbnet.json", "lua/cbnet/json.lua"}, {"cbnet.gradcheck", "lua/cbnet/gradcheck.lua"},
  {"cbnet.numpy_random", "lua/cbnet/numpy_random.lua"},
}

local out = {"# cbnet API reference", "",
  "Generated from the modules' doc comments by `docs/generate.lua`; the tensor methods of the",
  "C binding are listed by name at the end. Positions and dims are 1-based; values inside index",
  "tensors are 0-based, as in PyTorch.", ""}

local function strip(line) return (line:gsub("^%-%-%-? ?", "")) end

for _, m in ipairs(MODULES) do
  local name, path = m[1], m[2]
  local lines = {}
  for line in io.lines(path) do lines[#lines + 1] = line end
  if name ~= "" then out[#out + 1] = "## " .. name; out[#out + 1] = "" end
  -- the file's opening comment
  local i = 1
  while lines[i] and lines[i]:match("^%-%-") do
    out[#out + 1] = strip(lines[i])
    i = i + 1
  end
  out[#out + 1] = ""
  -- every --- block and the line after it
  while i <= #lines do
    if lines[i]:match("^%-%-%-") then
      local doc = {}
      while lines[i] and lines[i]:match("^%-%-") do
        doc[#doc + 1] = strip(lines[i])
        i = i + 1
      end
      local what = lines[i] or ""
      local signature = what:match("^function ([%w_.:]+%b())") or what:match("^([%w_.]+) = ")
      if signature then out[#out + 1] = ("- **`%s`**: %s"):format(signature, table.concat(doc, " "))
      else out[#out + 1] = "- " .. table.concat(doc, " ") end
    end
    i = i + 1
  end
  out[#out + 1] = ""
end

-- the tensor methods, by name
local cbnet = require "cbnet"
local names = {}
for k in pairs(cbnet.methods) do names[#names + 1] = "`" .. k .. "`" end
table.sort(names)
out[#out + 1] = "## Tensor methods"
out[#out + 1] = ""
out[#out + 1] = "Every tensor has these methods (`t:name(...)`), plus the fields `grad`, `requires_grad`,"
out[#out + 1] = "`is_leaf`, `grad_fn` and the operators `+ - * / % ^`, unary `-`, `#`, `==`, `<`, `<=`,"
out[#out + 1] = "`t[i]` and `t[i] = v`. A mistyped name is an error that names the nearest method."
out[#out + 1] = ""
out[#out + 1] = table.concat(names, ", ")
out[#out + 1] = ""
io.write(table.concat(out, "\n"))
