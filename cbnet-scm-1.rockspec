rockspec_format = "3.0"
package = "cbnet"
version = "scm-1"
source = {
  url = "git+file://.",
}
description = {
  summary = "Deep-learning research framework: C tensor core, Lua 5.4 scripting",
  detailed = [[
    Strided float32/int64 tensors with broadcasting, reductions, OpenBLAS
    matrix products and multi-threaded kernels, driven from Lua 5.4.
  ]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.4, < 5.5",
}
external_dependencies = {
  OPENBLAS = { header = "x86_64-linux-gnu/cblas.h" },
  STB = { header = "stb/stb_image.h" },
  ZLIB = { header = "zlib.h" },
}
-- The Makefile builds the C module (cbnet.core, and cbnet.mpi where Open MPI
-- is) and the cbnet command; LuaRocks runs `make` and `make install` with its
-- folders. The Lua modules are listed here (tests/spec/install_spec.lua
-- checks the list against lua/cbnet/).
build = {
  type = "make",
  build_variables = {
    LUA_INC = "$(LUA_INCDIR)",
    BLAS_INC = "$(OPENBLAS_INCDIR)/x86_64-linux-gnu",
  },
  install_variables = {
    BINDIR = "$(BINDIR)",
    LIBDIR = "$(LIBDIR)",
    LUA_MODULES_BY = "luarocks", -- the install table below copies them
  },
  install = {
    lua = {
      ["cbnet"] = "lua/cbnet/init.lua",
      ["cbnet.checkpoint"] = "lua/cbnet/checkpoint.lua",
      ["cbnet.cli"] = "lua/cbnet/cli.lua",
      ["cbnet.data"] = "lua/cbnet/data.lua",
      ["cbnet.experiment"] = "lua/cbnet/experiment.lua",
      ["cbnet.functional"] = "lua/cbnet/functional.lua",
      ["cbnet.gradcheck"] = "lua/cbnet/gradcheck.lua",
      ["cbnet.json"] = "lua/cbnet/json.lua",
      ["cbnet.launch"] = "lua/cbnet/launch.lua",
      ["cbnet.longtail"] = "lua/cbnet/longtail.lua",
      ["cbnet.loss"] = "lua/cbnet/loss.lua",
      ["cbnet.models"] = "lua/cbnet/models.lua",
      ["cbnet.nn"] = "lua/cbnet/nn/init.lua",
      ["cbnet.nn.activation"] = "lua/cbnet/nn/activation.lua",
      ["cbnet.nn.basic_block"] = "lua/cbnet/nn/basic_block.lua",
      ["cbnet.nn.batchnorm"] = "lua/cbnet/nn/batchnorm.lua",
      ["cbnet.nn.container"] = "lua/cbnet/nn/container.lua",
      ["cbnet.nn.conv"] = "lua/cbnet/nn/conv.lua",
      ["cbnet.nn.dropout"] = "lua/cbnet/nn/dropout.lua",
      ["cbnet.nn.initializers"] = "lua/cbnet/nn/initializers.lua",
      ["cbnet.nn.linear"] = "lua/cbnet/nn/linear.lua",
      ["cbnet.nn.module"] = "lua/cbnet/nn/module.lua",
      ["cbnet.nn.normed_linear"] = "lua/cbnet/nn/normed_linear.lua",
      ["cbnet.nn.pooling"] = "lua/cbnet/nn/pooling.lua",
      ["cbnet.numpy_random"] = "lua/cbnet/numpy_random.lua",
      ["cbnet.optim"] = "lua/cbnet/optim.lua",
      ["cbnet.options"] = "lua/cbnet/options.lua",
      ["cbnet.plot"] = "lua/cbnet/plot.lua",
      ["cbnet.report"] = "lua/cbnet/report.lua",
    },
  },
}
test = {
  type = "busted",
}
