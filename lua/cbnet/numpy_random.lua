--- cbnet.numpy_random: numpy's legacy generator (np.random.seed / RandomState),
-- bit for bit, for what a Python reference code drew with it.
--
--   local npr = require "cbnet.numpy_random"
--   local rs = npr.RandomState(0)            -- np.random.seed(0)
--   local p = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
--   rs:shuffle(p)                            -- np.random.shuffle: 2 8 4 9 1 6 7 3 0 5
--
-- Why: the long-tail papers' subsets (Cao et al.'s IMBALANCECIFAR10, copied by
-- most of the literature) are "np.random.seed(0), then shuffle each class's
-- indices and keep the first n_i"; cbnet's own Generator draws other images.
-- This reproduces numpy's draws exactly, so data.longtail(ds, {draw = "numpy"})
-- keeps the reference code's images. It is the 32-bit Mersenne Twister
-- (Matsumoto and Nishimura 1998) seeded as numpy seeds a scalar (init_genrand),
-- and numpy's shuffle: Fisher-Yates from the end, each position drawn by
-- masked rejection (numpy's random_interval). Plain Lua, as it draws a few
-- thousand numbers per dataset.
local npr = {}

local N, M = 624, 397
local MASK32 = 0xffffffff

local RandomState = {}
RandomState.__index = RandomState

--- npr.RandomState(seed): seed an integer in 0 .. 2^32 - 1, as numpy accepts.
function npr.RandomState(seed)
  if math.type(seed) ~= "integer" or seed < 0 or seed > MASK32 then
    error("RandomState: seed must be an integer in 0 .. 2^32 - 1, got " .. tostring(seed), 2)
  end
  local mt = {[0] = seed}
  for i = 1, N - 1 do
    local prev = mt[i - 1]
    mt[i] = (1812433253 * (prev ~ (prev >> 30)) + i) & MASK32
  end
  return setmetatable({mt = mt, pos = N}, RandomState)
end

-- The next 624 words of the state (the twist).
local function twist(mt)
  for i = 0, N - 1 do
    local y = (mt[i] & 0x80000000) | (mt[(i + 1) % N] & 0x7fffffff)
    local v = mt[(i + M) % N] ~ (y >> 1)
    if y & 1 == 1 then v = v ~ 0x9908b0df end
    mt[i] = v
  end
end

--- rs:uint32(): the next 32-bit output (numpy's next_uint32, genrand_int32).
function RandomState:uint32()
  if self.pos >= N then
    twist(self.mt)
    self.pos = 0
  end
  local y = self.mt[self.pos]
  self.pos = self.pos + 1
  y = y ~ (y >> 11)
  y = y ~ ((y << 7) & 0x9d2c5680)
  y = y ~ ((y << 15) & 0xefc60000)
  return y ~ (y >> 18)
end

--- rs:interval(max): an integer in 0 .. max (numpy's random_interval, for
-- max < 2^32): the smallest all-ones mask over max, redrawn until <= max.
function RandomState:interval(max)
  if max == 0 then return 0 end
  local mask = max
  mask = mask | (mask >> 1)
  mask = mask | (mask >> 2)
  mask = mask | (mask >> 4)
  mask = mask | (mask >> 8)
  mask = mask | (mask >> 16)
  local v
  repeat v = self:uint32() & mask until v <= max
  return v
end

--- rs:shuffle(t): shuffles the array t[1..#t] in place as np.random.shuffle
-- shuffles a 1-d array of the same length; returns t.
function RandomState:shuffle(t)
  local n = #t
  if n >= 2 ^ 32 then error("shuffle: more than 2^32 elements", 2) end
  for i = n - 1, 1, -1 do
    local j = self:interval(i)
    t[i + 1], t[j + 1] = t[j + 1], t[i + 1]
  end
  return t
end

return npr
