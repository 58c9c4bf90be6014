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
build = {
  type = "builtin",
  modules = {
    ["cbnet"] = "lua/cbnet/init.lua",
    ["cbnet.functional"] = "lua/cbnet/functional.lua",
    ["cbnet.data"] = "lua/cbnet/data.lua",
    ["cbnet.loss"] = "lua/cbnet/loss.lua",
    ["cbnet.optim"] = "lua/cbnet/optim.lua",
    ["cbnet.nn"] = "lua/cbnet/nn/init.lua",
    ["cbnet.nn.module"] = "lua/cbnet/nn/module.lua",
    ["cbnet.nn.initializers"] = "lua/cbnet/nn/initializers.lua",
    ["cbnet.nn.linear"] = "lua/cbnet/nn/linear.lua",
    ["cbnet.nn.conv"] = "lua/cbnet/nn/conv.lua",
    ["cbnet.nn.batchnorm"] = "lua/cbnet/nn/batchnorm.lua",
    ["cbnet.nn.activation"] = "lua/cbnet/nn/activation.lua",
    ["cbnet.nn.pooling"] = "lua/cbnet/nn/pooling.lua",
    ["cbnet.nn.dropout"] = "lua/cbnet/nn/dropout.lua",
    ["cbnet.nn.container"] = "lua/cbnet/nn/container.lua",
    ["cbnet.nn.basic_block"] = "lua/cbnet/nn/basic_block.lua",
    ["cbnet.core"] = {
      sources = {
        "core/activation.c", "core/augment.c", "core/autograd.c", "core/blas.c",
        "core/cifar.c", "core/conv.c", "core/dataset.c", "core/error.c",
        "core/generator.c", "core/idx.c", "core/image_folder.c", "core/index.c",
        "core/iter.c", "core/linear.c", "core/matmul.c", "core/norm.c", "core/optim.c",
        "core/pointwise.c", "core/pool.c", "core/reduce.c", "core/softmax.c",
        "core/stb_impl.c", "core/tensor.c", "core/threadpool.c", "core/views.c",
        "lua/binding.c", "lua/data_binding.c", "lua/nn_binding.c", "lua/tensor_binding.c",
      },
      incdirs = { "core", "$(OPENBLAS_INCDIR)/x86_64-linux-gnu" },
      defines = { "_GNU_SOURCE" },
      libraries = { "z", "m", "pthread", "dl" },
    },
  },
}
test = {
  type = "busted",
}
