--- cbnet.launch: where the runs of a sweep go. experiment.sweep calls one of
--   launch.processes: child processes on this machine, opts.jobs at a time,
--                     their output streamed as it comes (--launcher local);
--   launch.cluster:   a Slurm job array or GNU parallel (--launcher slurm |
--                     parallel), on nodes that share the output folder.
-- Every run is the same command, `cbnet run SCRIPT --resume OUT --run ID`,
-- which leaves log.txt and exit.txt in its folder; collect(r, ok, err)
-- records each run as it ends.
local cbnet = require "cbnet"
local cli = require "cbnet.cli"
local report = require "cbnet.report"

local launch = {}

local function shell_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- The absolute, resolved path of an existing folder.
local function absolute_path(path)
  local info = require("cbnet.core").file_info(path)
  if not info then error("cannot resolve " .. tostring(path), 0) end
  return info.path
end

-- ---- runs on a cluster: Slurm job arrays, GNU parallel ----

local function write_executable(path, text)
  report.write_atomic(path, text)
  os.execute(("chmod +x %s"):format(shell_quote(path)))
end

-- The script one task runs: `cbnet run SCRIPT --resume OUT --run ID`, ID the
-- line of runs.txt its task id names (Slurm) or its argument (parallel). It
-- first checks that this node sees the output folder, which every node must
-- share, and leaves log.txt and exit.txt in the run's folder as the local
-- launcher does.
local function task_script(out, base, threads)
  return ([[#!/bin/sh
# One run of a cbnet sweep (written by cbnet.experiment).
cd %s || exit 3 # the folder the sweep was started in: the command's relative paths
out=%s
id=${1:-$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" "$out/cluster/runs.txt")}
if [ ! -f "$out/config.json" ]; then
  echo "cbnet: $(hostname) cannot see the output folder $out: it must be on a filesystem every node shares" >&2
  exit 3
fi
mkdir -p "$out/runs/$id"
%s --resume "$out" --run "$id" --threads %d > "$out/runs/$id/log.txt" 2>&1
code=$?
echo $code > "$out/runs/$id/exit.txt"
exit $code
]]):format(shell_quote(absolute_path(".")), shell_quote(out), base, threads)
end

--- Runs the pending runs through Slurm (one job array, opts.sbatch passed
-- on; with opts.wait this waits for it and collects every run) or GNU
-- parallel (opts.jobs at a time on this machine, or on opts.hosts by ssh),
-- each task running the same `cbnet run SCRIPT --resume OUT --run ID` as the
-- local launcher. Without opts.wait a Slurm sweep returns after submitting:
-- the same command with --resume OUT merges the tables later, and submits
-- again only the runs that are missing or failed.
function launch.cluster(pending, opts, args, folder, collect)
  if #pending == 0 then return end
  local out = absolute_path(opts.out)
  local dir = out .. "/cluster"
  report.mkdir(dir)
  local ids = {}
  for i, r in ipairs(pending) do
    ids[i] = r.id
    os.remove(folder(r) .. "/exit.txt")
  end
  report.write_atomic(dir .. "/runs.txt", table.concat(ids, "\n") .. "\n")
  local base = cli.self_command(args)
  write_executable(dir .. "/task.sh", task_script(out, base, opts.threads))
  local command
  if opts.launcher == "slurm" then
    command = ("sbatch --parsable --array=0-%d --cpus-per-task=%d --job-name=cbnet-sweep --output=%s %s %s %s"):format(
      #ids - 1, opts.threads, shell_quote(dir .. "/%A_%a.out"), opts.wait and "--wait" or "",
      opts.sbatch or "", shell_quote(dir .. "/task.sh"))
  else
    command = ("parallel --will-cite --jobs %d %s --joblog %s %s {} :::: %s"):format(opts.jobs,
      opts.hosts and ("--sshlogin " .. shell_quote(opts.hosts)) or "", shell_quote(dir .. "/joblog"),
      shell_quote(dir .. "/task.sh"), shell_quote(dir .. "/runs.txt"))
  end
  print(("%s: %d run(s): %s"):format(opts.launcher, #ids, command))
  local p = io.popen(command .. " 2>&1")
  local text = p:read("a")
  p:close()
  if opts.launcher == "slurm" and not opts.wait then
    local job = text:match("^(%d+)")
    if not job then error("sbatch failed: " .. text, 0) end
    print(("submitted job array %s; when it has ended, run the same command with --resume %s to "
      .. "merge the tables (and to submit again what failed)"):format(job, out))
    return
  end
  for _, r in ipairs(pending) do
    local code = tonumber((report.read_file(folder(r) .. "/exit.txt") or ""):match("%d+"))
    local log = (report.read_file(folder(r) .. "/log.txt") or text):sub(-400)
    if code ~= 0 then io.stderr:write(("run %s failed (exit %s)\n"):format(r.id, tostring(code))) end
    collect(r, code == 0, code ~= 0 and ("exit %s: %s"):format(tostring(code), log) or nil)
  end
end

-- ---- runs in child processes ----


-- Starts `cbnet run SCRIPT --resume OUT --run ID` in the background with its
-- output in the run's folder (log.txt), its process id in pid.txt and its
-- exit code written after it (exit.txt); returns the job.
local function start_child(r, opts, base, threads, folder)
  local dir = folder(r)
  report.mkdir(dir)
  os.remove(dir .. "/exit.txt")
  local cmd = ("%s --resume %s --run %s --threads %d"):format(base, shell_quote(opts.out),
    shell_quote(r.id), threads)
  os.remove(dir .. "/pid.txt")
  local sh = ("(%s > %s 2>&1 & echo $! > %s; wait $!; echo $? > %s) < /dev/null > /dev/null 2>&1 &"):format(
    cmd, shell_quote(dir .. "/log.txt"), shell_quote(dir .. "/pid.txt"), shell_quote(dir .. "/exit.txt"))
  os.execute(sh)
  return {run = r, log = dir .. "/log.txt", exit = dir .. "/exit.txt", pid_file = dir .. "/pid.txt", seen = 0}
end

-- Prints the lines a child added to its log since the last look.
local function show_new_lines(job)
  local f = io.open(job.log, "rb")
  if not f then return end
  f:seek("set", job.seen)
  local text = f:read("a")
  f:close()
  local complete = text:match("^(.*\n)") or ""
  job.seen = job.seen + #complete
  for line in complete:gmatch("([^\n]*)\n") do
    line = line:gsub("^.*\r", "") -- the last state of a rewritten progress line
    if line ~= "" then print(("[%s] %s"):format(job.run.id, line)) end
  end
  io.stdout:flush()
end

-- The child's exit code once it has ended, else nil.
local function exit_code(job)
  local text = report.read_file(job.exit)
  return text and tonumber(text:match("%d+"))
end

--- Runs the pending runs as child processes, opts.jobs at a time, showing
-- their output as it comes; collect(r, ok, err) records each. On Ctrl-C the
-- running children get SIGINT too, and this waits for them to stop.
function launch.processes(pending, opts, args, folder, collect)
  local threads = math.max(1, opts.threads // opts.jobs)
  local base = cli.self_command(args)
  local running, next_run = {}, 1
  local ok, err = pcall(function()
    while next_run <= #pending or #running > 0 do
      while #running < opts.jobs and next_run <= #pending do
        running[#running + 1] = start_child(pending[next_run], opts, base, threads, folder)
        next_run = next_run + 1
      end
      cbnet.sleep(0.2)
      for i = #running, 1, -1 do
        local job = running[i]
        show_new_lines(job)
        local code = exit_code(job)
        if code then
          table.remove(running, i)
          if code ~= 0 then io.stderr:write(("run %s failed (exit %d)\n"):format(job.run.id, code)) end
          local tail = (report.read_file(job.log) or ""):sub(-400)
          collect(job.run, code == 0, code ~= 0 and ("exit %d: %s"):format(code, tail) or nil)
        end
      end
    end
  end)
  if not ok then -- stop the children and wait for them (a second Ctrl-C kills this process)
    for _, job in ipairs(running) do
      local pid
      for _ = 1, 50 do -- the child writes its pid as it starts
        pid = tonumber((report.read_file(job.pid_file) or ""):match("%d+"))
        if pid or exit_code(job) then break end
        cbnet.sleep(0.1)
      end
      if pid then os.execute(("kill -INT %d 2>/dev/null"):format(pid)) end
    end
    for _, job in ipairs(running) do
      while not exit_code(job) do cbnet.sleep(0.1) end
      show_new_lines(job)
    end
    error(err, 0)
  end
end

return launch
