-- Sweeps on the real engines (issue 12): a single-node Slurm started here
-- (tests/cluster/slurm.sh: munged, slurmctld, slurmd as root, stopped by pid
-- at the end) and GNU parallel. Run by `make test-cluster`.
local report = require "cbnet.report"
local json = require "cbnet.json"

local ROOT = io.popen("pwd"):read("l")
local CBNET = ROOT .. "/build/bin/cbnet"
local tmp = require("shell").fresh_dir()
local SLURM = tmp .. "/slurm"
local ENV = ("SLURM_CONF=%s/slurm.conf"):format(SLURM)

local sh = require("shell").run

-- the spec's CIFAR: 10 classes of flat colours, 50 training and 10 test images each
local function make_cifar(dir)
  assert(os.execute("mkdir -p " .. dir))
  local function batch(per_class)
    local records = {}
    for c = 0, 9 do
      for _ = 1, per_class do records[#records + 1] = string.char(c) .. string.rep(string.char(c * 25), 3072) end
    end
    return table.concat(records)
  end
  for b = 1, 5 do report.write_atomic(("%s/data_batch_%d.bin"):format(dir, b), batch(10)) end
  report.write_atomic(dir .. "/test_batch.bin", batch(10))
end
local DATA = tmp .. "/cifar"
make_cifar(DATA)

local SWEEP = ("--quick --data %s --imbalance 10 --widths 4,8 --betas 0.9999,0.9 --threads 1"):format(DATA)

describe("sweeps on a cluster", function()
  setup(function()
    local code, out = sh(("tests/cluster/slurm.sh start %s"):format(SLURM))
    assert(code == 0, out)
  end)
  teardown(function() sh(("tests/cluster/slurm.sh stop %s"):format(SLURM)) end)

  it("runs a sweep as one Slurm job array, merges it, and resubmits only the failed run", function()
    local out = tmp .. "/array"
    local code, output = sh(("cd %s && %s FAIL_RUN=cb-focal-beta-0.9 %s run tests/spec/fixtures/failing_run.lua "
      .. "%s --out %s --launcher slurm --wait"):format(ROOT, ENV, CBNET, SWEEP, out))
    assert.equal(1, code, output)
    assert.matches("sbatch --parsable --array=0-2 --cpus-per-task=1", output, 1, true)
    assert.matches("run cb-focal-beta-0.9 FAILED", output, 1, true)
    local results = json.decode(report.read_file(out .. "/results.json"))
    assert.truthy(results.runs.ce and results.runs["cb-focal-beta-0.9999"])
    assert.is_nil(results.runs["cb-focal-beta-0.9"])
    -- the same command with --resume submits the failed run alone
    code, output = sh(("cd %s && %s %s run experiments/imbalance.lua --resume %s --launcher slurm --wait"):format(
      ROOT, ENV, CBNET, out))
    assert.equal(0, code, output)
    assert.matches("sbatch --parsable --array=0-0 ", output, 1, true)
    assert.equal("cb-focal-beta-0.9\n", report.read_file(out .. "/cluster/runs.txt"))
    results = json.decode(report.read_file(out .. "/results.json"))
    assert.truthy(results.runs["cb-focal-beta-0.9"])
  end)

  it("submits without waiting; --resume merges the finished array later", function()
    local out = tmp .. "/nowait"
    local code, output = sh(("cd %s && %s %s run experiments/imbalance.lua %s --out %s --launcher slurm"):format(
      ROOT, ENV, CBNET, SWEEP, out))
    assert.equal(0, code, output)
    local job = output:match("submitted job array (%d+)")
    assert.truthy(job, output)
    for _ = 1, 600 do -- until the array has left the queue
      local _, queue = sh(("%s squeue -h -j %s"):format(ENV, job))
      if queue == "" then break end
      os.execute("sleep 0.2")
    end
    code, output = sh(("cd %s && %s run experiments/imbalance.lua --resume %s"):format(ROOT, CBNET, out))
    assert.equal(0, code, output)
    assert.is_nil(output:find("epoch  1/", 1, true)) -- merged, nothing trained again
    local results = json.decode(report.read_file(out .. "/results.json"))
    for _, id in ipairs{"ce", "cb-focal-beta-0.9999", "cb-focal-beta-0.9"} do assert.truthy(results.runs[id], id) end
  end)

  it("runs a sweep through GNU parallel", function()
    local out = tmp .. "/parallel"
    local code, output = sh(("cd %s && %s run experiments/imbalance.lua %s --out %s --launcher parallel --jobs 2"):format(
      ROOT, CBNET, SWEEP, out))
    assert.equal(0, code, output)
    assert.matches("parallel --will-cite --jobs 2", output, 1, true)
    local results = json.decode(report.read_file(out .. "/results.json"))
    for _, id in ipairs{"ce", "cb-focal-beta-0.9999", "cb-focal-beta-0.9"} do assert.truthy(results.runs[id], id) end
  end)

  it("a task that cannot see the output folder says so", function()
    local out = tmp .. "/parallel"
    local moved = tmp .. "/elsewhere"
    assert(os.rename(out, moved))
    local code, output = sh(("SLURM_ARRAY_TASK_ID=0 sh %s/cluster/task.sh"):format(moved))
    assert(os.rename(moved, out))
    assert.equal(3, code)
    assert.matches("cannot see the output folder " .. out .. ": it must be on a filesystem every node shares",
      output, 1, true)
  end)
end)

describe("data-parallel training over MPI (issue 12)", function()
  teardown(function() os.execute("rm -rf " .. tmp) end)
  it("two ranks give the weights of one process with the same global batch", function()
    local one, two = tmp .. "/mpi-1", tmp .. "/mpi-2"
    local code, output = sh(("cd %s && %s run tests/cluster/mpi_train.lua %s %s"):format(ROOT, CBNET, DATA, one))
    assert.equal(0, code, output)
    code, output = sh(("cd %s && mpirun --allow-run-as-root --oversubscribe -np 2 %s run tests/cluster/mpi_train.lua %s %s"):format(
      ROOT, CBNET, DATA, two))
    assert.equal(0, code, output)
    local core = require "cbnet.core"
    local a, b = core.load_safetensors(one .. "/best.safetensors"), core.load_safetensors(two .. "/best.safetensors")
    local n = 0
    for name, t in pairs(a) do
      assert.is_true((t - b[name]):abs():max():item() < 1e-5, name)
      n = n + 1
    end
    assert.equal(4, n)
    -- rank 0 alone wrote: one metrics line per epoch
    assert.equal(2, #report.read_metrics(two .. "/metrics.jsonl"))
  end)

  it("with --sync-bn, batch norm over two ranks trains as one process (local statistics do not)", function()
    local function train(out, ranks, kind)
      local cmd = ("%s run tests/cluster/mpi_train.lua %s %s bn %s"):format(CBNET, DATA, out, kind)
      if ranks > 1 then cmd = "mpirun --allow-run-as-root --oversubscribe -np 2 " .. cmd end
      local code, output = sh(("cd %s && %s"):format(ROOT, cmd))
      assert.equal(0, code, output)
      return require("cbnet.core").load_safetensors(out .. "/checkpoint.safetensors")
    end
    local one = train(tmp .. "/bn-1", 1, "sync")
    local synced = train(tmp .. "/bn-2", 2, "sync")
    local separate = train(tmp .. "/bn-2-local", 2, "local")
    local worst_synced, worst_separate, n = 0, 0, 0
    for name, t in pairs(one) do
      if name:match("^model%.") and t:dtype() == "float32" then
        local scale = t:abs():max():item() + 1e-12
        worst_synced = math.max(worst_synced, (t - synced[name]):abs():max():item() / scale)
        worst_separate = math.max(worst_separate, (t - separate[name]):abs():max():item() / scale)
        n = n + 1
      end
    end
    assert.equal(16, n) -- 3 convs' weights and biases, 2 BNs' weight, bias and running statistics, linear
    assert.is_true(worst_synced < 1e-3, "synchronised: " .. worst_synced)
    assert.is_true(worst_separate > 1e-3, "local statistics: " .. worst_separate)
  end)

  it("a rank that fails ends the whole job with its error, not a hang", function()
    local script = tmp .. "/fail_rank.lua"
    report.write_atomic(script, [[
      local experiment = require "cbnet.experiment"
      local dist = experiment.distributed()
      if dist.rank == 1 then error("rank 1 gives up") end
      dist.mpi.allreduce_sum_(require("cbnet").zeros(4)) -- rank 0 waits here for rank 1
    ]])
    local code, output = sh(("timeout 60 mpirun --allow-run-as-root --oversubscribe -np 2 %s run %s"):format(CBNET, script))
    assert.is_true(code ~= 0 and code ~= 124, output) -- failed, and not by the timeout
    assert.matches("rank 1 gives up", output, 1, true)
  end)
end)
