-- Data-parallel scaling on this machine: ResNet-32 training images/s with
-- one process and with N ranks at the same global batch, and the time of the
-- gradient allreduce (one flat float32 buffer of the model's parameters).
--   build/bin/cbnet run bench/mpi_scaling.lua [steps] [global batch]
--   mpirun --allow-run-as-root -np 2 build/bin/cbnet run bench/mpi_scaling.lua [steps] [global batch]
-- (threads per rank: CBNET_NUM_THREADS; give each rank its share of the cores)
local cbnet = require "cbnet"
local experiment = require "cbnet.experiment"
local models = require "cbnet.models"
local steps, global_batch = tonumber(arg[1]) or 12, tonumber(arg[2]) or 128
local dist = experiment.distributed()
local ranks, rank = dist and dist.size or 1, dist and dist.rank or 0
local batch = global_batch // ranks
cbnet.manual_seed(0)
local model = models.resnet32()
local opt = cbnet.optim.SGD(model:parameters(), {lr = 0.1, momentum = 0.9})
local x, y = cbnet.randn(batch, 3, 32, 32), cbnet.randint(0, 10, {batch})
local params = model:parameters()
local numel = 0
for _, p in ipairs(params) do numel = numel + p:numel() end
local flat = cbnet.zeros(numel)
local clock = cbnet.clock
local compute, reduce = 0, 0
for step = 1, steps do
  local t0 = clock()
  opt:zero_grad()
  cbnet.F.cross_entropy(model(x), y):backward()
  local t1 = clock()
  if dist then dist.mpi.allreduce_sum_(flat) end
  local t2 = clock()
  opt:step()
  if step > 2 then compute, reduce = compute + (t1 - t0), reduce + (t2 - t1) end -- 2 warm-up steps
end
local measured = steps - 2
if rank == 0 then
  print(("ranks %d, threads per rank %d, global batch %d: %.1f img/s; per step %.3f s compute, %.4f s "
    .. "allreduce of %d floats"):format(ranks, cbnet.get_num_threads(), global_batch,
    global_batch * measured / (compute + reduce), compute / measured, reduce / measured, numel))
end
if dist then dist.mpi.finalize() end
