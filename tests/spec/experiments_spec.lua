-- The seed study's scripts, run as a user runs them, on data made here.
local cbnet = require "cbnet"
local core = require "cbnet.core"
local json = require "cbnet.json"
local report = require "cbnet.report"

local ROOT = io.popen("pwd"):read("l")
-- CBNET_BIN: the command to test (make check passes the sanitizer build)
local CBNET = os.getenv("CBNET_BIN") or (ROOT .. "/build/bin/cbnet")
local tmp = require("shell").fresh_dir()

local sh = require("shell").run

local function run(script, args, env)
  return sh(("cd %s && %s %s run %s/experiments/%s %s"):format(ROOT, env or "", CBNET, ROOT, script, args))
end

-- A small CIFAR-10 in the binary layout: 10 classes, each a colour and a
-- stripe pattern, so a CNN can tell them apart quickly.
local function make_cifar(dir, per_class_train, per_class_test)
  assert(os.execute("mkdir -p " .. dir))
  local g = cbnet.Generator(7)
  local function batch(count)
    local records = {}
    for c = 0, 9 do
      for _ = 1, count do
        local noise = (cbnet.rand({3, 32, 32}, g) * 60):long()
        local base = cbnet.zeros({3, 32, 32}, "int64")
        base[c % 3 + 1] = 120
        base[(c // 3) % 3 + 1]:narrow(1, 1 + 3 * c, 3):fill_(250)
        local img = (base + noise):clamp(0, 255):byte():view(-1):totable()
        local bytes = {string.char(c)}
        for i = 1, #img do bytes[#bytes + 1] = string.char(img[i]) end
        records[#records + 1] = table.concat(bytes)
      end
    end
    return table.concat(records)
  end
  for b = 1, 5 do
    local f = assert(io.open(("%s/data_batch_%d.bin"):format(dir, b), "wb"))
    f:write(batch(per_class_train // 5))
    f:close()
  end
  local f = assert(io.open(dir .. "/test_batch.bin", "wb"))
  f:write(batch(per_class_test))
  f:close()
end

local DATA = tmp .. "/cifar"
make_cifar(DATA, 50, 10)

local function is_svg(path)
  local text = report.read_file(path)
  return text and text:match("^<svg ") and text:match("</svg>\n$") and select(2, text:gsub("<text", "")) > 5
end

describe("experiments/convnet.lua", function()
  it("runs --quick on the given data and writes results, curves and checkpoints", function()
    local out = tmp .. "/convnet"
    local code, output = run("convnet.lua", ("--quick --data %s --out %s --widths 8,16"):format(DATA, out))
    assert.equal(0, code, output)
    assert.matches("convnet epoch  2/2", output, 1, true)
    assert.matches("final test accuracy", output, 1, true)
    local result = report.read_json(out .. "/result.json")
    assert.equal(2, #result.history)
    assert.is_true(result.best.accuracy >= 0 and result.best.accuracy <= 1)
    assert.equal(10, #result.final.per_class)
    assert.equal(2, #report.read_metrics(out .. "/metrics.jsonl"))
    assert.truthy(is_svg(out .. "/learning_curve.svg"))
    local weights = core.load_safetensors(out .. "/best.safetensors")
    assert.same({8, 3, 3, 3}, weights["1.weight"]:size())
  end)

  it("rejects unknown options and lists every option with --help", function()
    local code, output = run("convnet.lua", "--epohcs 3")
    assert.equal(2, code)
    assert.matches("unknown option --epohcs", output, 1, true)
    code, output = run("convnet.lua", "--help")
    assert.equal(0, code)
    for _, name in ipairs{"--data", "--out", "--epochs", "--batch-size", "--lr", "--wd", "--seed",
                          "--threads", "--quick", "--jobs", "--resume"} do
      assert.matches(name, output, 1, true)
    end
    assert.matches("--batch-size INTEGER", output, 1, true)
    assert.matches("[64]", output, 1, true)
    code, output = run("convnet.lua", "--lr fast")
    assert.equal(2, code)
    assert.matches("--lr expects a number, got 'fast'", output, 1, true)
  end)

  -- convnet.lua with args for 2 epochs in full, and for 1 epoch then resumed
  -- to 2 in part; checks both end with the same checkpoint, and returns the
  -- full run's checkpoint tensors.
  local function resumed_equals_full(args, full, part)
    local common = ("--quick --data %s --widths 8,16 --seed 3 %s"):format(DATA, args)
    assert.equal(0, (run("convnet.lua", ("%s --epochs 2 --out %s"):format(common, full))))
    -- a run of 2 epochs stopped after the first: its checkpoint and metrics
    assert.equal(0, (run("convnet.lua", ("%s --epochs 1 --out %s"):format(common, part))))
    local config = report.read_json(part .. "/config.json")
    config.epochs = 2
    report.write_json(part .. "/config.json", config)
    local code, output = run("convnet.lua", "--resume " .. part)
    assert.equal(0, code, output)
    assert.matches("resuming after epoch 1", output, 1, true)
    local a, b = core.load_safetensors(full .. "/checkpoint.safetensors"), core.load_safetensors(part .. "/checkpoint.safetensors")
    for name, t in pairs(a) do
      assert.equal(0, (t:float() - b[name]:float()):abs():max():item(), name)
    end
    assert.equal(2, #report.read_metrics(part .. "/metrics.jsonl"))
    return a
  end

  it("resumes an interrupted run to the same final weights", function()
    resumed_equals_full("", tmp .. "/full", tmp .. "/part")
  end)

  it("--eval-every N evaluates every N epochs and after the last", function()
    local out = tmp .. "/every"
    local code, output = run("convnet.lua", ("--quick --data %s --widths 8,16 --epochs 3 --eval-every 2 --out %s"):format(DATA, out))
    assert.equal(0, code, output)
    local lines = report.read_metrics(out .. "/metrics.jsonl")
    assert.equal(3, #lines)
    assert.is_nil(lines[1].test_accuracy)
    assert.is_number(lines[2].test_accuracy)
    assert.is_number(lines[3].test_accuracy)
    local result = report.read_json(out .. "/result.json")
    assert.is_true(result.best.epoch == 2 or result.best.epoch == 3)
    assert.equal(3, result.final.epoch)
    assert.is_truthy(report.read_file(out .. "/learning_curve.svg"))
  end)

  it("--ema evaluates and saves the moving average, and resumes it exactly", function()
    local full = tmp .. "/ema-full"
    local a = resumed_equals_full("--ema 0.9", full, tmp .. "/ema-part")
    local averaged = 0
    for name in pairs(a) do
      if name:match("^ema%.") then averaged = averaged + 1 end
    end
    assert.is_true(averaged > 0)
    -- the average differs from the weights, and best.safetensors holds the
    -- average of its epoch (the last one here, or the first)
    local w, e = a["model.1.weight"], a["ema.1.weight"]
    assert.is_true((w - e):abs():max():item() > 0)
    local best = core.load_safetensors(full .. "/best.safetensors")
    local result = report.read_json(full .. "/result.json")
    if result.best.epoch == 2 then
      assert.equal(0, (best["1.weight"] - e):abs():max():item())
    end
  end)
end)

describe("experiments/imbalance.lua", function()
  it("runs the sweep --quick and writes the report's tables, JSON and charts", function()
    local out = tmp .. "/imbalance"
    local code, output = run("imbalance.lua",
      ("--quick --data %s --out %s --imbalance 10 --widths 8,16 --betas 0.9999,0.9"):format(DATA, out))
    assert.equal(0, code, output)
    assert.matches("| training images |", output, 1, true)
    assert.matches("| beta=0.9999 ", output, 1, true)
    assert.matches("CE: Best Accuracy: %d%.%d%d%d%d %(best epoch: %d of 2, learning_rate: 0%.001, reg: 0%.0005%)", output)
    assert.matches("CB focal beta=0.9999: Best Accuracy: %d%.%d%d%d%d %(best epoch: %d of 2, learning_rate: 0%.001, reg: 0%.0005, beta=0%.9999%)", output)
    assert.matches("## CE against the best class-balanced run", output, 1, true)
    local md = report.read_file(out .. "/results.md")
    assert.matches("| CE ", md, 1, true)
    local results = json.decode(report.read_file(out .. "/results.json"))
    assert.same({50, 38, 29, 23, 17, 13, 10, 8, 6, 5}, results.train_counts) -- floor(50 * 0.1^(i/9))
    assert.equal(10, #results.cb_weights["0.9999"])
    assert.truthy(results.runs.ce and results.runs["cb-focal-beta-0.9999"] and results.runs["cb-focal-beta-0.9"])
    assert.equal(10, #results.runs.ce.best.per_class)
    assert.truthy(is_svg(out .. "/learning_curves.svg"))
    assert.truthy(is_svg(out .. "/per_class.svg"))
  end)

  it("runs a sweep in parallel processes, reports a failed run and completes the others", function()
    local out = tmp .. "/parallel"
    local code, output = sh(("cd %s && FAIL_RUN=cb-focal-beta-0.9 %s run %s/tests/spec/fixtures/failing_run.lua %s"):format(
      ROOT, CBNET, ROOT,
      ("--quick --data %s --out %s --imbalance 10 --widths 8,16 --betas 0.9999,0.9 --jobs 2"):format(DATA, out)))
    assert.equal(1, code, output)
    assert.matches("run cb-focal-beta-0.9 FAILED", output, 1, true)
    local results = json.decode(report.read_file(out .. "/results.json"))
    assert.truthy(results.runs.ce and results.runs["cb-focal-beta-0.9999"])
    assert.is_nil(results.runs["cb-focal-beta-0.9"])
    -- resuming the sweep trains only the failed run
    code, output = run("imbalance.lua", "--resume " .. out)
    assert.equal(0, code, output)
    assert.is_nil(output:find("ce epoch", 1, true))
    results = json.decode(report.read_file(out .. "/results.json"))
    assert.truthy(results.runs["cb-focal-beta-0.9"])
  end)

  it("falls back to Fashion-MNIST, saying so first, when CIFAR-10 is nowhere", function()
    local f = io.open("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", "rb")
    if not f then return pending("dataset-fashion-mnist is not installed") end
    f:close()
    local out = tmp .. "/fashion"
    local code, output = sh(("cd %s && env CBNET_DATA=%s/none HOME=%s %s run %s/experiments/imbalance.lua --quick --out %s --widths 8,16 --betas 0.9999"):format(
      tmp, tmp, tmp, CBNET, ROOT, out))
    assert.equal(0, code, output)
    assert.matches("^CIFAR%-10 was not found; running the same study on Fashion%-MNIST", output)
    local results = json.decode(report.read_file(out .. "/results.json"))
    assert.equal("Fashion-MNIST", results.dataset)
    assert.equal(6000, results.train_counts[1])
  end)
end)

describe("safetensors", function()
  it("round-trips tensors of every dtype and string metadata", function()
    local path = tmp .. "/t.safetensors"
    local tensors = {w = cbnet.randn(2, 3):t(), i = cbnet.tensor{-1, 2, 3}, u = cbnet.zeros({2}, "uint8"),
                     b = cbnet.tensor{true, false}, s = cbnet.tensor(1.5), e = cbnet.zeros(0, 4)}
    core.save_safetensors(path, tensors, {note = 'quote " and \\ and \n'})
    local back, meta = core.load_safetensors(path)
    for name, t in pairs(tensors) do
      assert.same(t:size(), back[name]:size(), name)
      assert.equal(t:dtype(), back[name]:dtype(), name)
      assert.same(t:contiguous():totable(), back[name]:totable(), name)
    end
    assert.equal('quote " and \\ and \n', meta.note)
  end)

  it("reads a file written by hand to the specification", function()
    -- header: 8-byte little-endian length, then JSON; data little-endian
    local header = '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
      .. '"b":{"dtype":"I64","shape":[1,1],"data_offsets":[8,16]},"__metadata__":{"k":"v"}}'
    local bytes = string.pack("<I8", #header) .. header .. string.pack("<ff", 1.5, -2) .. string.pack("<i8", -7)
    local f = io.open(tmp .. "/hand.safetensors", "wb")
    f:write(bytes)
    f:close()
    local t, meta = core.load_safetensors(tmp .. "/hand.safetensors")
    assert.same({1.5, -2}, t.a:totable())
    assert.same({{-7}}, t.b:totable())
    assert.equal("v", meta.k)
  end)

  it("rejects corrupt files, naming them", function()
    local function write(name, bytes)
      local f = io.open(tmp .. "/" .. name, "wb")
      f:write(bytes)
      f:close()
      return tmp .. "/" .. name
    end
    local h = '{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}'
    assert.error_matches(function() core.load_safetensors(write("short.st", string.pack("<I8", #h) .. h .. "1234")) end,
      "short.st: tensor 'a': offsets %[0, 16%) do not hold its shape in 4 data bytes")
    assert.error_matches(function() core.load_safetensors(write("len.st", string.pack("<I8", 1000) .. h)) end,
      "len.st: header length 1000 does not fit")
    assert.error_matches(function() core.load_safetensors(write("json.st", string.pack("<I8", 5) .. "{\"a\":")) end,
      "json.st: bad safetensors header")
    local bad_dtype = '{"a":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}}'
    assert.error_matches(function() core.load_safetensors(write("f16.st", string.pack("<I8", #bad_dtype) .. bad_dtype .. "xx")) end,
      "unsupported dtype")
  end)
end)

describe("durability of what a run writes (issue 9)", function()
  it("a full disk leaves the old file and raises an error (row 14)", function()
    local mnt = tmp .. "/full"
    assert(os.execute("mkdir -p " .. mnt))
    if not os.execute("mount -t tmpfs -o size=64k tmpfs " .. mnt .. " 2>/dev/null") then
      return pending("mounting a small tmpfs needs root")
    end
    local ok, err = pcall(function()
      report.write_json(mnt .. "/config.json", {epochs = 4})
      local big = string.rep("x", 200 * 1024)
      local wrote, werr = pcall(report.write_atomic, mnt .. "/config.json", big)
      assert.is_false(wrote)
      assert.matches("config.json: write failed .*No space left", werr)
      assert.same({epochs = 4}, report.read_json(mnt .. "/config.json"))
      local files = io.popen("ls -a " .. mnt):read("a")
      assert.is_nil(files:find(".tmp.", 1, true), files)
      -- the C writers take the same path
      local saved = pcall(cbnet.save_safetensors, mnt .. "/config.json", {w = cbnet.zeros(100000)})
      assert.is_false(saved)
      assert.same({epochs = 4}, report.read_json(mnt .. "/config.json"))
    end)
    os.execute("umount " .. mnt)
    assert(ok, err)
  end)

  it("removes temporaries of killed writers at the next write, not of live ones (row 16)", function()
    local dir = tmp .. "/stale"
    assert(os.execute("mkdir -p " .. dir))
    local pid_max = tonumber(io.open("/proc/sys/kernel/pid_max"):read("l"))
    local dead = dir .. "/result.json.tmp." .. (pid_max + 1) -- no process can have it
    local alive = dir .. "/result.json.tmp.1"
    local other = dir .. "/other.json.tmp." .. (pid_max + 1)
    for _, p in ipairs{dead, alive, other} do io.open(p, "w"):close() end
    report.write_json(dir .. "/result.json", {ok = true})
    assert.is_nil(io.open(dead))
    assert.truthy(io.open(alive))
    assert.truthy(io.open(other))
    assert.same({ok = true}, report.read_json(dir .. "/result.json"))
  end)

  it("--resume drops metrics lines after the checkpoint's epoch (row 15)", function()
    local out = tmp .. "/killed"
    local common = ("--quick --data %s --widths 8,16"):format(DATA)
    assert.equal(0, (run("convnet.lua", ("%s --epochs 1 --out %s"):format(common, out))))
    -- killed after logging epoch 2's metrics, before its checkpoint
    local f = assert(io.open(out .. "/metrics.jsonl", "ab"))
    f:write(json.encode({epoch = 2, test_accuracy = 0.5}), "\n")
    f:close()
    local config = report.read_json(out .. "/config.json")
    config.epochs = 2
    report.write_json(out .. "/config.json", config)
    local code, output = run("convnet.lua", "--resume " .. out)
    assert.equal(0, code, output)
    local epochs = {}
    for _, r in ipairs(report.read_metrics(out .. "/metrics.jsonl")) do epochs[#epochs + 1] = r.epoch end
    assert.same({1, 2}, epochs)
  end)

  it("Ctrl-C stops a --jobs 1 sweep with exit 130, not just its current run (row 17)", function()
    local out, log = tmp .. "/sigint", tmp .. "/sigint.log"
    local cmd = ("cd %s && { %s run experiments/imbalance.lua --data %s --out %s --imbalance 10 " ..
      "--widths 8,16 --betas 0.9999,0.9 --epochs 50 > %s 2>&1 & pid=$!; " ..
      "for i in $(seq 300); do grep -q 'epoch  1/50' %s && break; sleep 0.1; done; " ..
      "kill -INT $pid; wait $pid; echo \"exit=$?\"; }"):format(ROOT, CBNET, DATA, out, log, log)
    local _, output = sh(cmd)
    local text = report.read_file(log)
    assert.matches("exit=130", output, 1, true)
    assert.is_nil(text:find("cb-focal-beta-0.9999 epoch", 1, true), text) -- no next run
    assert.is_nil(text:find("failed", 1, true), text)
  end)
end)

describe("options as a user types them (issue 11)", function()
  it("takes fractions for a whole-number default, suggests names, hides internals", function()
    local out = tmp .. "/wd"
    local code, output = run("convnet.lua", ("--quick --data %s --out %s --widths 8,16 --wd 0.0005 --epochs 1"):format(DATA, out))
    assert.equal(0, code, output)
    assert.equal(0.0005, report.read_json(out .. "/config.json").wd)
    code, output = run("convnet.lua", "--widht 8,16")
    assert.equal(2, code)
    assert.matches("unknown option --widht (did you mean --widths?)", output, 1, true)
    code, output = run("convnet.lua", "--help")
    assert.is_nil(output:find("--run", 1, true))
    assert.is_nil(output:find("[runs/<experiment>-<time>] [none]", 1, true))
    assert.matches("--out STRING                 output folder [runs/<experiment>-<time>]", output, 1, true)
  end)

  it("resuming a --quick run keeps its epochs and its config.json", function()
    local out = tmp .. "/quick4"
    assert.equal(0, (run("convnet.lua", ("--quick --epochs 3 --data %s --out %s --widths 8,16"):format(DATA, out))))
    local before = report.read_file(out .. "/config.json")
    local code, output = run("convnet.lua", "--resume " .. out)
    assert.equal(0, code, output)
    assert.equal(before, report.read_file(out .. "/config.json"))
    assert.equal(3, report.read_json(out .. "/config.json").epochs)
  end)

  it("--data takes the dataset's folder or one holding it, as CBNET_DATA does", function()
    local parent = tmp .. "/holder"
    assert(os.execute(("mkdir -p %s && ln -sfn %s %s/cifar-10-batches-bin"):format(parent, DATA, parent)))
    for _, how in ipairs{"--data " .. parent, "--data " .. DATA} do
      local code, output = run("convnet.lua", ("--quick --epochs 1 --widths 8,16 --out %s/d %s"):format(tmp, how))
      assert.equal(0, code, output)
      assert.matches("^CIFAR%-10", output)
    end
    local code, output = run("convnet.lua", ("--quick --epochs 1 --widths 8,16 --out %s/e"):format(tmp),
      "CBNET_DATA=" .. DATA)
    assert.equal(0, code, output)
    assert.matches("^CIFAR%-10", output)
  end)
end)

describe("sweeps in processes (issue 11)", function()
  it("--jobs 2 shows each run's epochs as they come; Ctrl-C stops the children and exits 130", function()
    local out, log = tmp .. "/jobs-int", tmp .. "/jobs-int.log"
    local cmd = ("cd %s && { %s run experiments/imbalance.lua --data %s --out %s --imbalance 10 " ..
      "--widths 8,16 --betas 0.9999,0.9 --epochs 50 --jobs 2 > %s 2>&1 & pid=$!; " ..
      "for i in $(seq 600); do [ $(grep -c 'epoch  1/50' %s) -ge 2 ] && break; sleep 0.1; done; " ..
      "kill -INT $pid; wait $pid; echo \"exit=$?\"; }"):format(ROOT, CBNET, DATA, out, log, log)
    local _, output = sh(cmd)
    local text = report.read_file(log)
    assert.matches("exit=130", output, 1, true)
    assert.matches("[ce] ce epoch  1/50", text, 1, true) -- streamed while the run went on
    assert.matches("interrupted: the sweep stops", text, 1, true)
    -- no child is left running, and the sweep wrote its (partial) results
    -- (read from /proc: procps tools do not run under the sanitizer preload)
    local left = {}
    for pid in io.popen("ls /proc"):lines() do
      local f = pid:match("^%d+$") and io.open("/proc/" .. pid .. "/cmdline", "rb")
      if f then
        local cmdline = f:read("a"):gsub("%z", " ")
        f:close()
        if cmdline:find("--resume " .. out, 1, true) then left[#left + 1] = cmdline end
      end
    end
    assert.same({}, left)
    assert.truthy(report.read_file(out .. "/results.md"))
    for _, id in ipairs{"ce", "cb-focal-beta-0.9999"} do
      assert.equal("130", (report.read_file(("%s/runs/%s/exit.txt"):format(out, id)) or ""):match("%d+"))
    end
  end)
end)

describe("the README's 'Write your own experiment' script", function()
  it("runs as written, --quick, with --jobs 2", function()
    local readme = report.read_file(ROOT .. "/README.md")
    local code = readme:match("## Write your own experiment.-```lua\n(.-)```")
    assert.truthy(code)
    local script = tmp .. "/my_study.lua"
    report.write_atomic(script, code)
    local out = tmp .. "/my_study"
    local status, output = sh(("cd %s && %s %s --quick --data %s --out %s --jobs 2"):format(tmp, CBNET, script, DATA, out))
    assert.equal(0, status, output)
    assert.matches("| width 16 ", output, 1, true)
    assert.matches("| width 32 ", output, 1, true)
    assert.truthy(is_svg(out .. "/curves.svg"))
  end)
end)

describe("experiments/cifar_lt.lua (issue 10)", function()
  it("runs methods x seeds --quick, a loss from a file, and writes the benchmark's tables", function()
    local out = tmp .. "/cifar_lt"
    local loss_file = tmp .. "/my_loss.lua"
    report.write_atomic(loss_file, [[
      -- cross-entropy with class-balanced weights from beta = 0.99
      return function(logits, labels, ctx)
        return ctx.F.cross_entropy(logits, labels, {weight = ctx.cb_weights(0.99)})
      end
    ]])
    local code, output = run("cifar_lt.lua", ("--quick --data %s --out %s --imbalance 10 --model convnet "
      .. "--methods ce,ldam-drw,la-posthoc --seeds 0,1 --val 2 --loss %s --jobs 2 --draw numpy"):format(DATA, out, loss_file))
    assert.equal(0, code, output)
    local md = report.read_file(out .. "/results.md")
    for _, row in ipairs{"| ce ", "| ldam-drw ", "| la-posthoc ", "| " .. loss_file} do
      assert.matches(row, md, 1, true)
    end
    assert.matches("best validation accuracy", md, 1, true)
    assert.matches("± ", md, 1, true) -- two seeds: mean ± std
    assert.matches("| training images ", md, 1, true)
    assert.truthy(is_svg(out .. "/confusion-ldam-drw.svg"))
    assert.truthy(is_svg(out .. "/learning_curves.svg"))
    assert.matches("| 9 truck", report.read_file(out .. "/confusion-ce.md"), 1, true)
    local results = json.decode(report.read_file(out .. "/results.json"))
    assert.same({48, 38, 29, 23, 17, 13, 10, 8, 6, 5}, results.train_counts) -- 50 - 2 held out at the head
    assert.equal(20, results.val_size)
    assert.equal(2, #results.summary["ldam-drw"].last)
    local config = report.read_json(out .. "/config.json")
    assert.matches("cifar_lt.lua", config.provenance.command, 1, true)
    assert.matches("^%x+", config.provenance.commit)
    assert.equal(cbnet.version, config.provenance.cbnet)
    -- the machine the times belong to: the path and kernel this process runs too
    local machine = config.provenance.machine
    assert.equal(cbnet.conv_path(), machine.conv)
    assert.equal(cbnet.info().blas_kernel, machine.blas_kernel)
    assert.is_true(machine.threads >= 1 and #machine.cpu > 0)
    assert.equal("numpy", config.draw) -- the reference code's images (data_spec checks which)
    -- the finished sweep's tables again with other many/few thresholds, nothing trained
    assert.matches("classes with > 100, 20%-100, < 20 training images", md)
    code, output = run("cifar_lt.lua", ("--resume %s --many 20 --few 8"):format(out))
    assert.equal(0, code, output)
    assert.is_nil(output:find("epoch 1/", 1, true))
    md = report.read_file(out .. "/results.md")
    assert.matches("classes with > 20, 8%-20, < 8 training images", md)
    assert.equal(100, report.read_json(out .. "/config.json").many) -- the run's own config, unchanged
  end)
end)

describe("experiments/fast_lt.lua (issue 13)", function()
  it("--tune never reads the test set; otherwise the test set is evaluated once, after the last epoch", function()
    local no_test = tmp .. "/cifar-no-test"
    -- a test file that cannot be read: --tune must not try
    assert(os.execute(("mkdir -p %s && cp %s/data_batch_*.bin %s/ && printf abc > %s/test_batch.bin")
      :format(no_test, DATA, no_test, no_test)))
    local out = tmp .. "/fast_lt_tune"
    local code, output = run("fast_lt.lua", ("--quick --tune --val 2 --imbalance 10 --budget 5 --widths 8,16 "
      .. "--seeds 0,1 --posthoc 0,1 --data %s --out %s"):format(no_test, out))
    assert.equal(0, code, output)
    local md = report.read_file(out .. "/results.md")
    assert.matches("validation (2 per class, held out)", md, 1, true)
    local tuned = json.decode(report.read_file(out .. "/results.json"))
    assert.truthy(tuned.runs.seed0 and tuned.runs.seed1) -- two seeds, mean ± std in the table
    assert.matches("± ", md, 1, true)
    -- --posthoc: every value on the validation set; d = 0 is the last epoch's own evaluation
    assert.matches("Post-hoc adjustment", md, 1, true)
    -- tuning trains the whole recipe: no time limit unless one is given
    assert.is_nil(report.read_metrics(out .. "/runs/seed0/metrics.jsonl")[1].planned_epochs)
    for _, id in ipairs{"seed0", "seed1"} do
      local rows = tuned.runs[id].posthoc
      assert.same({0, 1}, {rows[1].d, rows[2].d})
      assert.equal(tuned.runs[id].final.accuracy, rows[1].accuracy)
      assert.equal(10, #rows[2].per_class)
    end
    out = tmp .. "/fast_lt"
    code, output = run("fast_lt.lua", ("--quick --imbalance 10 --budget 5 --widths 8,16 --cutmix 1 --mix-source balanced "
      .. "--mix-prob 0.5 --trivial-augment --data %s --out %s"):format(DATA, out))
    assert.equal(0, code, output)
    local config = report.read_json(out .. "/config.json")
    assert.same({1, "balanced", 0.5, true}, {config.cutmix, config.mix_source, config.mix_prob, config.trivial_augment})
    assert.is_false(config.tta_translate) -- the 5-minute budget predicts with flips only
    local records = report.read_metrics(out .. "/runs/seed0/metrics.jsonl")
    assert.equal(2, #records)
    assert.equal(2, records[1].planned_epochs) -- the budget's time limit, with room to spare
    assert.is_nil(records[1].test_accuracy)
    assert.is_number(records[2].test_accuracy)
    local results = json.decode(report.read_file(out .. "/results.json"))
    assert.same({50, 38, 29, 23, 17, 13, 10, 8, 6, 5}, results.counts)
    assert.equal("test", results.evaluated_on)
    -- a time limit no epoch fits in: the run ends after its first epoch, evaluated, and says so
    code, output = run("fast_lt.lua", ("--quick --imbalance 10 --widths 8,16 --time-limit 1e-6 --data %s --out %s/fast_lt_limited")
      :format(DATA, tmp))
    assert.equal(0, code, output)
    assert.matches("2 epochs will not fit in the time limit", output, 1, true)
    records = report.read_metrics(tmp .. "/fast_lt_limited/runs/seed0/metrics.jsonl")
    assert.equal(1, #records)
    assert.same({1, 1}, {records[1].planned_epochs, records[1].epoch})
    assert.is_number(records[1].test_accuracy)
    assert.matches(" 1 |\n$", report.read_file(tmp .. "/fast_lt_limited/results.md")) -- epochs run
    -- the hour's budget (the default) adds the translated views and TrivialAugment and predicts
    -- with d = 0.25 (all chosen on the validation set); --no-trivial-augment turns it off
    local hour = report.read_json(tmp .. "/fast_lt_limited/config.json")
    assert.same({true, true, {0.25}}, {hour.tta_translate, hour.trivial_augment, hour.posthoc})
    code, output = run("fast_lt.lua", ("--quick --imbalance 10 --widths 8,16 --time-limit 1e-6 --no-trivial-augment "
      .. "--data %s --out %s/fast_lt_plain"):format(DATA, tmp))
    assert.equal(0, code, output)
    assert.is_false(report.read_json(tmp .. "/fast_lt_plain/config.json").trivial_augment)
    -- --ensemble 2: two networks (seeds 0 and 1000), each in its folder, not evaluated alone;
    -- the run's figure is their mean's, and its epochs say both
    out = tmp .. "/fast_lt_ensemble"
    code, output = run("fast_lt.lua", ("--quick --imbalance 10 --budget 5 --widths 8,16 --ensemble 2 --data %s --out %s")
      :format(DATA, out))
    assert.equal(0, code, output)
    assert.matches("seed0: the ensemble of 2, test accuracy", output, 1, true)
    for k = 1, 2 do
      local member = report.read_metrics(("%s/runs/seed0/net%d/metrics.jsonl"):format(out, k))
      assert.equal(2, #member)
      assert.is_nil(member[2].test_accuracy)
      assert.equal(2, member[1].planned_epochs) -- each with its share of the time limit
    end
    local ens = report.read_json(out .. "/runs/seed0/result.json")
    assert.equal("2+2", ens.final.epoch)
    assert.is_number(ens.final.accuracy)
    assert.equal(4, #ens.history)
    assert.equal(1000, report.read_json(out .. "/runs/seed0/net2/result.json").hparams.seed)
    assert.matches(" 2%+2 |\n$", report.read_file(out .. "/results.md"))
    code, output = run("fast_lt.lua", ("--quick --ensemble 0 --data %s --out %s/fast_lt_e0"):format(DATA, tmp))
    assert.is_not.equal(0, code)
    assert.matches("--ensemble must be a whole number >= 1, got 0", output, 1, true)
    -- a test run takes one post-hoc adjustment: choosing among several is tuning on the test set
    code, output = run("fast_lt.lua", ("--quick --posthoc 0,1 --data %s --out %s/fast_lt_2"):format(DATA, tmp))
    assert.is_not.equal(0, code)
    assert.matches("--posthoc: a test run takes one value", output, 1, true)
    code, output = run("fast_lt.lua", ("--quick --mixup 0.2 --cutmix 1 --data %s --out %s/fast_lt_3"):format(DATA, tmp))
    assert.is_not.equal(0, code)
    assert.matches("mixup or cutmix, not both", output, 1, true)
  end)
end)

describe("--model on every experiment (issue 10)", function()
  it("trains a CIFAR ResNet in the seed study's scripts too", function()
    local code, output = run("imbalance.lua", ("--quick --data %s --out %s/im-resnet --imbalance 10 --betas 0.9999 "
      .. "--model resnet20 --epochs 1"):format(DATA, tmp))
    assert.equal(0, code, output)
    assert.equal("resnet20", report.read_json(tmp .. "/im-resnet/config.json").model)
    code, output = run("convnet.lua", "--quick --model resnet99 --data " .. DATA)
    assert.equal(1, code)
    assert.matches("unknown model 'resnet99'", output, 1, true)
  end)
end)

describe("--sweep: a grid of any options (issue 12)", function()
  it("trains every combination, in parallel, with one table of best and last accuracy", function()
    local out = tmp .. "/grid"
    local code, output = run("convnet.lua", ("--quick --data %s --out %s --widths 8,16 --jobs 2 "
      .. [[--sweep "batch-size=32,64 lr=1e-3,1e-2 epochs=1,2"]]):format(DATA, out))
    assert.equal(0, code, output)
    local sweep = report.read_json(out .. "/sweep.json")
    assert.equal(8, #sweep.runs)
    assert.equal("batch-size=32,lr=1e-3,epochs=1", sweep.runs[1].id)
    assert.same({batch_size = 32, lr = 1e-3, epochs = 1}, sweep.runs[1].settings)
    for _, r in ipairs(sweep.runs) do
      assert.is_true(r.best >= 0 and r.best <= 1 and r.last >= 0)
      local history = report.read_json(("%s/runs/%s/result.json"):format(out, r.id)).history
      assert.equal(r.settings.epochs, #history) -- each run trained with its own settings
    end
    assert.matches("| batch-size |   lr | epochs | best accuracy | best epoch | last accuracy |",
      report.read_file(out .. "/results.md"), 1, true)
    -- resuming the finished sweep trains nothing again
    code, output = run("convnet.lua", "--resume " .. out)
    assert.equal(0, code, output)
    assert.is_nil(output:find("epoch  1/", 1, true))
    code, output = run("convnet.lua", [[--quick --sweep "bach-size=32"]])
    assert.equal(2, code)
    assert.matches("--sweep: unknown option bach-size (did you mean batch-size?)", output, 1, true)
  end)
end)
