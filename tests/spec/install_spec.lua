-- Installing cbnet as a user would: `make install PREFIX=...` and
-- `luarocks make` into a fresh tree, then a script run from elsewhere with
-- the installed command and with a plain lua5.4.
local ROOT = io.popen("pwd"):read("l")

-- (without the sanitizer preload of `make check`: these run make, the
-- compiler and the installed, uninstrumented command)
local shell = require "shell"
local function sh(cmd) return shell.run("unset LD_PRELOAD; " .. cmd) end
local fresh_dir = shell.fresh_dir

local SCRIPT = [[print(require("cbnet").ones(2, 3):sum():item(), package.searchpath("cbnet", package.path))]]

local function check_installed(prefix, luadir, libdir)
  local script = prefix .. "/check.lua"
  local f = assert(io.open(script, "w"))
  f:write(SCRIPT)
  f:close()
  -- the installed command, from another folder
  local code, out = sh(("cd / && %s/bin/cbnet %s"):format(prefix, script))
  assert.equal(0, code, out)
  assert.is_true(out == ("6.0\t%s/cbnet/init.lua\n"):format(luadir) or out == ("6.0\t%s/cbnet.lua\n"):format(luadir), out)
  -- a plain lua5.4 with the installed paths
  code, out = sh(("cd / && LUA_PATH='%s/?.lua;%s/?/init.lua;;' LUA_CPATH='%s/?.so;;' lua5.4 %s"):format(
    luadir, luadir, libdir, script))
  assert.equal(0, code, out)
  assert.is_true(out == ("6.0\t%s/cbnet/init.lua\n"):format(luadir) or out == ("6.0\t%s/cbnet.lua\n"):format(luadir), out)
  -- nothing but Lua modules where Lua modules go
  local _, files = sh(("find %s -type f ! -name '*.lua'"):format(luadir))
  assert.equal("", files)
end

describe("installing", function()
  it("make install PREFIX=... gives a working command and require", function()
    local prefix = fresh_dir()
    local code, out = sh(("make -s install PREFIX=%s"):format(prefix))
    assert.equal(0, code, out)
    check_installed(prefix, prefix .. "/share/lua/5.4", prefix .. "/lib/lua/5.4")
    local _, info = sh(prefix .. "/bin/cbnet info")
    assert.matches(("modules: %s/share/lua/5.4/cbnet/init.lua"):format(prefix), info, 1, true)
    os.execute("rm -rf " .. prefix)
  end)

  it("luarocks make into a fresh tree does the same", function()
    if sh("command -v luarocks") ~= 0 then return pending("luarocks is not installed") end
    local tree = fresh_dir()
    local code, out = sh(("luarocks --lua-version 5.4 make %s/cbnet-scm-1.rockspec --tree %s"):format(ROOT, tree))
    assert.equal(0, code, out)
    check_installed(tree, tree .. "/share/lua/5.4", tree .. "/lib/lua/5.4")
    os.execute("rm -rf " .. tree)
  end)

  it("lists every Lua module of the tree in the rockspec, and nothing else", function()
    local spec = {}
    assert(loadfile(ROOT .. "/cbnet-scm-1.rockspec", "t", spec))()
    local listed = {}
    for name, file in pairs(spec.build.install.lua) do
      local expected = "lua/" .. name:gsub("%.", "/") .. ".lua"
      local as_init = "lua/" .. name:gsub("%.", "/") .. "/init.lua"
      assert.is_true(file == expected or file == as_init, name .. " -> " .. file)
      listed[file] = true
    end
    local _, tree = sh("cd " .. ROOT .. " && find lua/cbnet -name '*.lua' | sort")
    for file in tree:gmatch("[^\n]+") do assert.is_true(listed[file], file .. " is not in the rockspec") end
  end)

  it("installs every Lua module of the tree", function()
    local prefix = fresh_dir()
    assert.equal(0, (sh(("make -s install PREFIX=%s"):format(prefix))))
    local _, listed = sh("cd lua && find cbnet -name '*.lua' | sort")
    local _, installed = sh(("cd %s/share/lua/5.4 && find cbnet -name '*.lua' | sort"):format(prefix))
    assert.equal(listed, installed)
    os.execute("rm -rf " .. prefix)
  end)
end)
