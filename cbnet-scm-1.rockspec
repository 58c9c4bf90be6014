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
}
build = {
  type = "builtin",
  modules = {
    ["cbnet"] = "lua/cbnet/init.lua",
    ["cbnet.core"] = {
      sources = {
        "core/blas.c", "core/error.c", "core/generator.c", "core/index.c",
        "core/iter.c", "core/matmul.c", "core/pointwise.c", "core/reduce.c",
        "core/tensor.c", "core/threadpool.c",
        "lua/binding.c", "lua/tensor_binding.c",
      },
      incdirs = { "core", "$(OPENBLAS_INCDIR)/x86_64-linux-gnu" },
      defines = { "_GNU_SOURCE" },
      libraries = { "m", "pthread", "dl" },
    },
  },
}
test = {
  type = "busted",
}
