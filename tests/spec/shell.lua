-- Helpers the specs share for running commands as a user would, and the
-- temporary files and folders they need. Every temporary path lives under
-- one folder per busted process, removed when the process ends (busted
-- exits through os.exit(code, true), which closes the Lua state and so runs
-- the __gc below), so a `make test` leaves nothing behind in /tmp.
local shell = {}

--- Runs cmd through /bin/sh; returns its exit code and its output
-- (stdout and stderr together).
function shell.run(cmd)
  local f = io.popen(cmd .. " 2>&1")
  local out = f:read("a")
  local _, _, code = f:close()
  return code, out
end

local root -- created on first use
local sentinel = setmetatable({}, {__gc = function()
  if root then os.execute("rm -rf '" .. root .. "'") end
end})
shell._sentinel = sentinel -- kept alive as long as the module is

local function tmp_root()
  if not root then
    root = io.popen("mktemp -d /tmp/cbnet-spec.XXXXXX"):read("l")
    assert(root and root ~= "", "shell: mktemp -d failed")
  end
  return root
end

local count = 0
--- A new path under the process's temporary folder (nothing created), ending
-- in suffix ("" by default).
function shell.temp_path(suffix)
  count = count + 1
  return ("%s/t%d%s"):format(tmp_root(), count, suffix or "")
end

--- A new empty folder under the process's temporary folder.
function shell.fresh_dir()
  local dir = shell.temp_path()
  assert(os.execute("mkdir -p " .. dir))
  return dir
end

return shell
