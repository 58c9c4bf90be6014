-- Re-reads tuning runs' final EMA weights on a larger validation set:
-- classes 1..9: K images per class after the long-tailed ones (unused by
-- any tuning run's training); the head class: its 100 held out (the only
-- head images no --val 100 run trained on). Balanced accuracy = mean of
-- the per-class accuracies (fast_lt.md's third round).
--   [DS=d,d,...] [TTAS=flip,translate,diag4,axis4,even9] [ENSEMBLE=1] \
--     build/bin/cbnet run bench/fast_lt_readout.lua K RUN_DIR[:seedN] ...
-- RUN_DIR: a `fast_lt --tune` output folder (its runs/seedN/checkpoint);
-- ENSEMBLE=1 also scores the mean of all the runs' logits. Not part of the
-- recipe: a reader of tuning runs for choosing among them. CIFAR10_DIR: the
-- CIFAR-10 folder (default ../shared/data/cifar10-jpg).
local cbnet = require "cbnet"
local data = require "cbnet.data"
local models = require "cbnet.models"
local experiment = require "cbnet.experiment"
local checkpoint = require "cbnet.checkpoint"
local longtail = require "cbnet.longtail"
local json = require "cbnet.json"
local K = tonumber(arg[1])
local moved = experiment.translated
local F = experiment.flip_tta
local PREDICT = {
  flip = F, translate = experiment.translate_tta,
  diag4 = function(m, x) -- half centre, the rest over the four diagonal moves
    return F(m, x) * 0.5 + (F(m, moved(x, 1, 1)) + F(m, moved(x, -1, -1)) + F(m, moved(x, 1, -1)) + F(m, moved(x, -1, 1))) * 0.125
  end,
  axis4 = function(m, x)
    return F(m, x) * 0.5 + (F(m, moved(x, 1, 0)) + F(m, moved(x, -1, 0)) + F(m, moved(x, 0, 1)) + F(m, moved(x, 0, -1))) * 0.125
  end,
  even9 = function(m, x)
    local s = F(m, x)
    for _, d in ipairs{{1,1},{-1,-1},{1,-1},{-1,1},{1,0},{-1,0},{0,1},{0,-1}} do s = s + F(m, moved(x, d[1], d[2])) end
    return s * (1 / 9)
  end,
}
local DS = {}
for v in (os.getenv("DS") or "0,0.25,0.375,0.5,0.75"):gmatch("[^,]+") do DS[#DS + 1] = tonumber(v) end
local TTAS = {}
for v in (os.getenv("TTAS") or "flip,translate"):gmatch("[^,]+") do TTAS[#TTAS + 1] = v end
local full = data.cifar10(os.getenv("CIFAR10_DIR") or "../shared/data/cifar10-jpg", "train")
local lt100 = data.longtail(full, {imbalance = 100, seed = 0, holdout = 100})
local ltK = data.longtail(full, {imbalance = 100, seed = 0, holdout = K})
local counts = lt100:counts()
local norm = {mean = {0.4914, 0.4822, 0.4465}, std = {0.2470, 0.2435, 0.2616}}
local function score(name, tta, la, ya, lb, yb)
  local row = {}
  for _, d in ipairs(DS) do
    local adjust = longtail.posthoc_adjust(counts, d) or function(l) return l end
    local function per_class(l, y)
      local hit = adjust(l):argmax(2):eq(y):float():totable()
      local yy = y:totable()
      local n, c = {}, {}
      for i = 1, #yy do local k = yy[i] + 1; n[k] = (n[k] or 0) + 1; c[k] = (c[k] or 0) + hit[i] end
      local pc = {}
      for k = 1, 10 do pc[k] = (c[k] or 0) / n[k] end
      return pc
    end
    local a, b = per_class(la, ya), per_class(lb, yb)
    local pc = {a[1]}; for c = 2, 10 do pc[c] = b[c] end
    local s = 0; for c = 1, 10 do s = s + pc[c] end
    row[#row + 1] = ("d=%g %.2f"):format(d, 100 * s / 10)
    local t = {} for c = 1, 10 do t[c] = ("%.1f"):format(100 * pc[c]) end
    io.stderr:write(name, " ", tta, " d=", d, " per class ", table.concat(t, " "), "\n")
  end
  print(name, tta, table.concat(row, "  "))
end
local ens = {}
for i = 2, #arg do
  local dir, sub = arg[i]:match("^([^:]+):?(.*)$")
  if sub == "" then sub = "seed0" end
  local cfg = json.decode(io.open(dir .. "/config.json"):read("a"))
  local model = models.fastnet{classes = 10, widths = cfg.widths, logit_scale = cfg.logit_scale, generator = cbnet.Generator(0)}
  local ema = cbnet.optim.EMA(model, {decay = cfg.ema})
  local meta = checkpoint.load(dir .. "/runs/" .. sub .. "/checkpoint.safetensors", {model = model, ema = ema})
  local function logits_of(ds, predict)
    local out, labs = {}, {}
    ema:apply(function()
      model:eval()
      cbnet.no_grad(function()
        for images, labels in data.Loader(ds, {batch_size = 256, transform = norm}):batches(0) do
          out[#out + 1] = predict(model, images); labs[#labs + 1] = labels
        end
      end)
      model:train()
    end)
    return cbnet.cat(out, 1), cbnet.cat(labs, 1)
  end
  for _, tta in ipairs(TTAS) do
    local la, ya = logits_of(lt100.holdout, PREDICT[tta])
    local lb, yb = logits_of(ltK.holdout, PREDICT[tta])
    score(("%s epoch %d"):format(arg[i], meta.epoch), tta, la, ya, lb, yb)
    ens[tta] = ens[tta] or {n = 0}
    local e = ens[tta]
    e.la = e.la and e.la + la or la; e.lb = e.lb and e.lb + lb or lb; e.ya, e.yb, e.n = ya, yb, e.n + 1
  end
end
if os.getenv("ENSEMBLE") then
  for _, tta in ipairs(TTAS) do
    local e = ens[tta]
    score(("ensemble of %d"):format(e.n), tta, e.la * (1 / e.n), e.ya, e.lb * (1 / e.n), e.yb)
  end
end
