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
-- The Makefile is the one description of the build: LuaRocks runs `make`
-- and `make install` with its folders, so the module list and the C sources
-- cannot drift from the tree.
build = {
  type = "make",
  build_variables = {
    LUA_INC = "$(LUA_INCDIR)",
    BLAS_INC = "$(OPENBLAS_INCDIR)/x86_64-linux-gnu",
  },
  install_variables = {
    BINDIR = "$(BINDIR)",
    LUADIR = "$(LUADIR)",
    LIBDIR = "$(LIBDIR)",
  },
}
test = {
  type = "busted",
}
