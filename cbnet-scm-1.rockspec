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
        "core/autograd/autograd.c", "core/data/augment.c", "core/data/cifar.c",
        "core/data/dataset.c", "core/data/idx.c", "core/data/image_folder.c",
        "core/data/stb_impl.c", "core/io/file.c", "core/io/safetensors.c",
        "core/nn/activation.c", "core/nn/conv.c", "core/nn/linear.c", "core/nn/norm.c",
        "core/nn/optim.c", "core/nn/pool.c", "core/nn/softmax.c", "core/ops/index.c",
        "core/ops/matmul.c", "core/ops/pointwise.c", "core/ops/reduce.c", "core/ops/views.c",
        "core/tensor/blas.c", "core/tensor/error.c", "core/tensor/generator.c",
        "core/tensor/iter.c", "core/tensor/tensor.c", "core/tensor/threadpool.c",
        "lua/binding.c", "lua/data_binding.c", "lua/nn_binding.c", "lua/optim_binding.c",
        "lua/tensor_binding.c",
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
