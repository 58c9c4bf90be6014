-- The code other x86-64 machines would run, run here under qemu-user's
-- emulation of them: cbnet picks its paths from CPUID (cb_cpu_detect, the
-- loader's choice among CB_VECTOR_CLONES, OpenBLAS's kernel), and qemu-user
-- answers CPUID as the CPU it is told to be. An AVX-512 machine so runs the
-- AVX2 code an EPYC runs and the plain code of a CPU without AVX; an AVX2
-- machine, the plain code. (qemu 7.2 emulates no AVX-512.) Emulated vector
-- code is some 10,000 times slower than the real thing: the C unit tests and
-- one step of three small networks (tests/cpu_kinds/steps.lua) on every
-- convolution path of that kind, against this machine's im2col path.
local core = require "cbnet.core"
local shell = require "shell"

local ROOT = io.popen("pwd"):read("l")
-- the production build (the sanitizers' runtime does not run under qemu-user)
local CBNET, CTEST = ROOT .. "/build/bin/cbnet", ROOT .. "/build/tests/ctest"
-- what would choose another path or preload the sanitizers into the guest
local CLEAN_ENV = "env -u OPENBLAS_CORETYPE -u CBNET_CONV -u CBNET_WINOGRAD_TILE -u LD_PRELOAD "

local KINDS = {
  {cpu = "EPYC-Rome", features = "avx2 fma", paths = "im2col,avx2,avx2-winograd", blas = "Haswell"},
  {cpu = "Nehalem", features = "no AVX2", paths = "im2col", blas = "Nehalem"},
}

local function qemu_available()
  return shell.run("command -v qemu-x86_64") == 0
end

-- runs cmd as that kind; returns its exit code and output, without qemu's
-- warnings about the features of the named CPU it does not emulate
local function emulated(kind, cmd)
  local code, out = shell.run(CLEAN_ENV .. "qemu-x86_64 -cpu " .. kind.cpu .. " " .. cmd)
  return code, (out:gsub("qemu%-x86_64: warning: [^\n]*\n", ""))
end

-- Compares every tensor "<net>.<path>.<what>" of `got` with the reference
-- run's "<net>.im2col.<what>": the largest difference may be `tolerance` of
-- the reference's largest magnitude, plus 1e-6 (the gradient of a bias
-- before batch norm is zero but for rounding, ~1e-8). Returns how many were
-- compared and the problems found.
local function compare(reference, got, tolerance)
  local compared, problems = 0, {}
  for key, t in pairs(got) do
    local net, path, what = key:match("^(%w+)%.([%w%-]+)%.(.+)$")
    local r = reference[net .. ".im2col." .. what]
    if not r then
      problems[#problems + 1] = key .. ": no reference"
    elseif table.concat(t:size(), "x") ~= table.concat(r:size(), "x") then
      problems[#problems + 1] = key .. ": shape differs"
    else
      local err = (t - r):abs():max():item()
      if not (err <= tolerance * r:abs():max():item() + 1e-6) then
        problems[#problems + 1] = ("%s differs by %g"):format(key, err)
      end
      compared = compared + 1
    end
  end
  table.sort(problems)
  return compared, problems
end

describe("other x86-64 kinds under qemu-user", function()
  local reference, reference_count
  setup(function()
    local out = shell.temp_path(".safetensors")
    local code, log = shell.run(CLEAN_ENV .. CBNET .. " run tests/cpu_kinds/steps.lua " .. out)
    assert(code == 0, log)
    reference = core.load_safetensors(out)
    reference_count = 0
    for key in pairs(reference) do
      if key:match("^%w+%.im2col%.") then reference_count = reference_count + 1 end
    end
  end)

  for _, kind in ipairs(KINDS) do
    describe(kind.cpu .. " (" .. kind.features .. ")", function()
      -- make test installs qemu-user; a bare busted without it says so
      local it_or_pending = qemu_available() and it or function(name)
        pending(name .. ": qemu-x86_64 not found (make test installs qemu-user)")
      end
      it_or_pending("is seen as that kind by cbnet and OpenBLAS", function()
        local code, out = emulated(kind, CBNET .. " info")
        assert.equal(0, code, out)
        assert.truthy(out:find("CPU:%s+" .. kind.features:gsub("%s", "%%s") .. "\n"), out)
        assert.truthy(out:find("kernel:%s+" .. kind.blas), out)
        assert.truthy(out:find("of " .. kind.paths:gsub(",", ", "):gsub("%-", "%%-") .. ";"), out)
      end)

      it_or_pending("passes the C unit tests", function()
        local code, out = emulated(kind, CTEST)
        assert.equal(0, code, out)
        assert.truthy(out:match("\nc: %d+ passed, 0 failed"), out)
      end)

      it_or_pending("takes the same training steps on each of its paths as this machine's im2col path", function()
        local file = shell.temp_path(".safetensors")
        local code, out = emulated(kind, CBNET .. " run tests/cpu_kinds/steps.lua " .. file)
        assert.equal(0, code, out)
        local got, metadata = core.load_safetensors(file)
        assert.equal(kind.paths, metadata.conv_paths)
        local compared, problems = compare(reference, got, 2e-5)
        assert.same({}, problems)
        -- every tensor of every path is there
        local _, path_count = kind.paths:gsub("[^,]+", "")
        assert.equal(reference_count * path_count, compared)
      end)
    end)
  end
end)
