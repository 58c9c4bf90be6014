-- Helpers the specs share for running commands as a user would.
local shell = {}

--- Runs cmd through /bin/sh; returns its exit code and its output
-- (stdout and stderr together).
function shell.run(cmd)
  local f = io.popen(cmd .. " 2>&1")
  local out = f:read("a")
  local _, _, code = f:close()
  return code, out
end

--- A new empty folder under /tmp.
function shell.fresh_dir()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. dir))
  return dir
end

return shell
