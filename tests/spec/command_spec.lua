-- The cbnet command, run as a user would run it.
local shell = require "shell"
local cbnet = require "cbnet"
local CBNET = os.getenv("CBNET_BIN") or (io.popen("pwd"):read("l") .. "/build/bin/cbnet")

local function run(args, env)
  local out_file = shell.temp_path()
  local cmd = ("%s %s %s > %s 2>&1"):format(env or "", CBNET, args, out_file)
  local _, _, code = os.execute(cmd)
  local f = assert(io.open(out_file))
  local out = f:read("a")
  f:close()
  os.remove(out_file)
  return code, out
end

local function script(code)
  local name = shell.temp_path(".lua")
  local f = assert(io.open(name, "w"))
  f:write(code)
  f:close()
  return name
end

describe("cbnet command", function()
  it("runs a script with its arguments in arg and ...", function()
    local s = script([[
      local cbnet = require "cbnet"
      local a, b = ...
      print(a, b, arg[1], arg[2], #arg, cbnet.ones(2):sum():item())
    ]])
    local code, out = run("run " .. s .. " x 42")
    assert.equal(0, code)
    assert.equal("x\t42\tx\t42\t2\t2.0\n", out)
    os.remove(s)
  end)

  it("finds the cbnet modules from any directory", function()
    local s = script('print(require("cbnet").version)')
    local code, out = run("run " .. s, "cd / &&")
    assert.equal(0, code)
    assert.matches("^%d+%.%d+%.%d+\n$", out)
    os.remove(s)
  end)

  it("prints a traceback and exits 1 on error", function()
    local s = script([[
      local cbnet = require "cbnet"
      local function f() return cbnet.zeros(2, 3) + cbnet.zeros(4) end
      f()
    ]])
    local code, out = run("run " .. s)
    assert.equal(1, code)
    assert.matches("add: shapes {2, 3} and {4} cannot be broadcast together", out, 1, true)
    assert.matches("stack traceback:", out, 1, true)
    assert.matches("in local 'f'", out, 1, true)
    os.remove(s)
  end)

  it("exits 2 on usage errors", function()
    assert.equal(2, (run("frobnicate")))
    assert.equal(2, (run("run")))
    local code, out = run("--help")
    assert.equal(0, code)
    assert.matches("cbnet run SCRIPT.lua", out, 1, true)
  end)

  it("reports a missing script", function()
    local code, out = run("run /nonexistent/x.lua")
    assert.equal(1, code)
    assert.matches("cannot open /nonexistent/x.lua", out, 1, true)
  end)

  it("prints version and machine info with the BLAS kernel", function()
    local code, out = run("version")
    assert.equal(0, code)
    assert.matches("^cbnet %d+%.%d+%.%d+", out)
    code, out = run("info")
    assert.equal(0, code)
    assert.matches("kernel:  %S+ %(", out)
    assert.matches("threads: %d+", out)
    assert.matches("OpenBLAS 0%.", out)
  end)

  it("respects OPENBLAS_CORETYPE when the user sets it", function()
    local code, out = run("info", "OPENBLAS_CORETYPE=Haswell")
    assert.equal(0, code)
    assert.matches("kernel:  Haswell (OPENBLAS_CORETYPE set by the user)", out, 1, true)
    -- and says so when the CPU could run a faster kernel than the one forced
    local for_cpu = cbnet.info().blas_kernel_for_cpu
    if for_cpu and for_cpu ~= "Haswell" then
      assert.matches("this CPU runs OpenBLAS's " .. for_cpu .. " kernel", out, 1, true)
    else
      assert.not_matches("this CPU runs", out, 1, true)
    end
  end)

  it("stops a script on Ctrl-C and exits 130", function()
    local s = script([[
      local cbnet = require "cbnet"
      io.stdout:write("started\n") io.stdout:flush()
      while true do local t = cbnet.zeros(10) end
    ]])
    local out_file = shell.temp_path()
    local cmd = ("%s run %s > %s 2>&1 & pid=$!; "):format(CBNET, s, out_file)
      .. ("for i in $(seq 50); do grep -q started %s && break; sleep 0.1; done; "):format(out_file)
      .. "kill -INT $pid; wait $pid"
    local _, _, code = os.execute(cmd)
    local out = io.open(out_file):read("a")
    assert.equal(130, code)
    assert.matches("interrupted", out, 1, true)
    os.remove(s)
    os.remove(out_file)
  end)

  it("tells a plain lua5.4 the paths that make require 'cbnet' work", function()
    local _, out = run("info")
    local lua_path = out:match('export LUA_PATH="([^"]+)"')
    local lua_cpath = out:match('export LUA_CPATH="([^"]+)"')
    assert.truthy(lua_path and lua_cpath)
    local f = io.popen(("cd / && env -u OPENBLAS_CORETYPE LUA_PATH='%s' LUA_CPATH='%s' "
      .. "lua5.4 -e 'local c = require \"cbnet\"; local i = c.info(); "
      .. "print(i.blas_kernel, i.blas_kernel_wanted, c.ones(3):sum():item())' 2>&1"):format(lua_path, lua_cpath))
    local line = f:read("a")
    f:close()
    local kernel, wanted, sum = line:match("^(%S+)\t(.-)\t(%S+)\n$")
    assert.equal("3.0", sum, line)
    -- with no OPENBLAS_CORETYPE, OpenBLAS runs the kernel cbnet chose
    if wanted ~= "(OpenBLAS's own choice)" then assert.equal(wanted:lower(), kernel:lower()) end
  end)

  it("runs the custom-loss example, whose Lua-defined loss trains", function()
    local code, out = run("run experiments/custom_loss.lua 1 200")
    assert.equal(0, code, out)
    local accuracy = tonumber(out:match("training accuracy ([%d.]+)"))
    assert.is_true(accuracy and accuracy >= 0.9, out)
  end)
end)

describe("cbnet command line as lua5.4 has it (issue 11)", function()
  it("runs SCRIPT.lua directly, -e chunks, and -i after them", function()
    local s = script('print("script", ...)')
    local code, out = run(s .. " a b")
    assert.equal(0, code, out)
    assert.equal("script\ta\tb\n", out)
    code, out = run([[-e "x = 40" -e "print(x + 2, cbnet.ones(2):sum():item())"]])
    assert.equal(0, code, out)
    assert.equal("42\t2.0\n", out)
    code, out = run([[-e "y = 7" -i < ]] .. script("=y * 6\nt = cbnet.ones(3)\nt:sum()\n"))
    assert.equal(0, code, out)
    assert.matches("> 42\n", out, 1, true)
    assert.matches("cbnet.tensor(3.)", out, 1, true)
    code, out = run([[-e "error('boom')"]])
    assert.equal(1, code)
    assert.matches("(command line):1: boom", out, 1, true)
    code, out = run("-z")
    assert.equal(2, code)
    assert.matches("unknown option '-z'", out, 1, true)
    code, out = run("no-such-thing")
    assert.equal(2, code)
    assert.matches("unknown command (and no such script) 'no-such-thing'", out, 1, true)
  end)

  it("names the nearest method of a mistyped one", function()
    local code, out = run([[-e "cbnet.ones(2):summ()"]])
    assert.equal(1, code)
    assert.matches("a tensor has no method or field 'summ' (did you mean 'sum'?)", out, 1, true)
    code, out = run([[-e "local g = cbnet.ones(2).gradd"]])
    assert.matches("(did you mean 'grad'?)", out, 1, true)
  end)

  it("reports an error inside a layer at the user's line", function()
    local s = script("local m = cbnet.nn.Linear(3, 2)\n\nlocal y = m(cbnet.ones(4, 5))\n")
    local code, out = run("-e '' " .. s)
    assert.equal(1, code)
    assert.matches(s:gsub("%p", "%%%0") .. ":3: linear: input {4, 5} does not fit weight {2, 3}", out)
  end)

  it("lists and clears the decoded-image cache", function()
    local home = shell.fresh_dir()
    local ok = os.execute(("mkdir -p %s/imgs/a %s/imgs/b %s/link"):format(home, home, home))
    assert(ok)
    local env = ("HOME=%s XDG_CACHE_HOME="):format(home)
    local make = script(([[
      local core = require "cbnet.core"
      local data = require "cbnet.data"
      local img = cbnet.full({3, 4, 4}, 9, "uint8")
      core.write_image(img, "%s/imgs/a/1.png")
      core.write_image(img, "%s/imgs/b/2.png")
      data.image_folder("%s/imgs")
      data.image_folder("%s/imgs/../imgs/")     -- another spelling of the same folder
      os.execute("ln -s %s/imgs %s/link/imgs")
      data.image_folder("%s/link/imgs")         -- and through a symlink
    ]]):format(home, home, home, home, home, home, home))
    local code, out = run(make, env)
    assert.equal(0, code, out)
    code, out = run("cache", env)
    assert.equal(0, code, out)
    assert.matches("1 folder(s)", out, 1, true)
    assert.matches(home .. "/imgs", out, 1, true)
    code, out = run("cache clear", env)
    assert.matches("removed 1 file(s)", out, 1, true)
    code, out = run("cache", env)
    assert.matches("0 folder(s)", out, 1, true)
    code = run("cache wat", env)
    assert.equal(2, code)
    os.execute("rm -rf " .. home)
  end)
end)
