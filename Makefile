# cbnet: C core + Lua 5.4 binding.
#   make          build (no network)
#   make deps     install the Debian packages cbnet needs (as root)
#   make run      deps + build + the main job
#   make test     deps + build + every test (C unit tests, then busted specs)
#   make check    C tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   make test-cpus the kernel specs as other x86-64 kinds, under qemu-user
#   make install  install the command and the Lua modules under PREFIX

PREFIX  ?= /usr/local
CC      ?= gcc
LUA     ?= lua5.4
LUA_INC ?= /usr/include/lua5.4
BLAS_INC ?= /usr/include/x86_64-linux-gnu

# -fno-math-errno: sqrtf and friends compile to instructions (cbnet never reads errno)
OPT     ?= -O3 -march=x86-64-v2 -mtune=native -fno-math-errno -ffp-contract=fast
CFLAGS  += -std=c11 -D_GNU_SOURCE -fPIC -Wall -Wextra -Wshadow -Wno-unused-parameter $(OPT) -g
CPPFLAGS += -Icore -I$(BLAS_INC)
LDLIBS  += -lz -lm -lpthread -ldl

ifeq ($(SAN),1)
  BUILD   := build/san
  CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  LDFLAGS += -fsanitize=address,undefined
else
  BUILD   := build
endif

CORE_SRC := $(wildcard core/*/*.c)
CORE_HDR := $(wildcard core/*.h core/*/*.h)
CORE_OBJ := $(CORE_SRC:%.c=$(BUILD)/%.o)
BIND_SRC := $(filter-out binding/main.c binding/repl.c binding/mpi_binding.c,$(wildcard binding/*.c))
BIND_OBJ := $(BIND_SRC:%.c=$(BUILD)/%.o)
MAIN_OBJ := $(BUILD)/binding/main.o $(BUILD)/binding/repl.o
CTEST_SRC := $(wildcard tests/c/*.c)
CTEST_OBJ := $(CTEST_SRC:%.c=$(BUILD)/%.o)

# cbnet.mpi, for data-parallel training, where Open MPI's headers are (mpicc)
MPICC   := $(shell command -v mpicc 2>/dev/null)
MPI_MODULE := $(if $(MPICC),$(BUILD)/lib/cbnet/mpi.so)
LIB     := $(BUILD)/libcbnetcore.a
MODULE  := $(BUILD)/lib/cbnet/core.so
CMD     := $(BUILD)/bin/cbnet
CTESTS  := $(BUILD)/tests/ctest

DEBIAN_PACKAGES := lua5.4 liblua5.4-dev libopenblas-dev libstb-dev zlib1g-dev \
                   lua-busted luarocks libreadline-dev dataset-fashion-mnist gcc make clang libclang-rt-14-dev gzip
# For the tests only: qemu-user, under which the specs run the code of other
# x86-64 kinds (tests/spec/cpu_kinds_spec.lua).
TEST_PACKAGES := qemu-user

.PHONY: all deps test-deps run bench test test-cpus ctest spec check fuzz fuzz-smoke fuzz-api valgrind test-cluster install clean
all: $(CMD) $(MODULE) $(MPI_MODULE)

$(BUILD)/%.o: %.c $(CORE_HDR) $(wildcard binding/*.h) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/binding/%.o: CPPFLAGS += -I$(LUA_INC)

# The image operations round to uint8 as torchvision does: a * x + b * y with
# two roundings, not one fused multiply-add (bench/parity_augment.py checks).
$(BUILD)/core/data/image_ops.o: override OPT += -ffp-contract=off

# Batch norm's y = x * scale + shift is a multiply and an add, never fused:
# the same as the convolutions' input normalisation (conv_direct.c, winograd.c)
# and the same for every element. With contraction on, GCC fused a loop's
# main vector body and scalar tail but not its narrower vector epilogue, so a
# value depended on where in a run it fell, on the layout and on -mtune.
$(BUILD)/core/nn/norm.o: override OPT += -ffp-contract=off

# Upstream stb code's benign undefined behaviour, left unchecked there only
# (UBSan keeps every check for cbnet's own files, and its bounds checks for
# stb's too): stb_image_write's JPEG encoder shifts signed ints left, and
# stb_image copies a PNG's zero-length chunk with memcpy(NULL, p, 0).
STB_NO_SANITIZE := -fno-sanitize=shift,nonnull-attribute,pointer-overflow
ifeq ($(SAN),1)
$(BUILD)/core/data/stb_impl.o: CFLAGS += $(STB_NO_SANITIZE)
endif

$(LIB): $(CORE_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(MODULE): $(BIND_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) -shared $(LDFLAGS) -o $@ $(BIND_OBJ) $(LIB) $(LDLIBS)

# The MPI module's symbols for the core come from cbnet.core (or the command),
# loaded first in the same process.
$(BUILD)/lib/cbnet/mpi.so: binding/mpi_binding.c binding/binding.h $(CORE_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -I$(LUA_INC) $(shell mpicc --showme:compile) $(CFLAGS) -shared $(LDFLAGS) \
	  -o $@ $< $(shell mpicc --showme:link)

$(CMD): $(MAIN_OBJ) $(BIND_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -rdynamic -o $@ $(MAIN_OBJ) $(BIND_OBJ) $(LIB) -llua5.4 -lreadline $(LDLIBS)

$(CTESTS): $(CTEST_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(CTEST_OBJ) $(LIB) $(LDLIBS)

# Installs only what is missing; needs root (CI and the README's set-up run as root).
deps:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# deps' recipe for the packages only the tests need
test-deps: deps
	@$(MAKE) --no-print-directory deps DEBIAN_PACKAGES="$(TEST_PACKAGES)"

# The main job: the seed study's imbalance sweep on CIFAR-10 (or Fashion-MNIST
# when no CIFAR-10 is found); RUN_ARGS passes options, e.g. RUN_ARGS=--quick.
run: deps all
	$(CMD) run experiments/imbalance.lua $(RUN_ARGS)

ctest: $(CTESTS)
	$(CTESTS)

# The speed benchmark against PyTorch (never part of make test): Debian's
# python3-torch and the current PyTorch from PyPI in build/torch-venv; on an
# AVX-512 machine also both engines held to AVX2 (bench.lua --isa avx2); then
# the per-layer profile. BENCH_ARGS passes options, e.g. BENCH_ARGS="--repeats 3".
BENCH_VENV := build/torch-venv
bench: deps all
	@missing=$$(for p in python3-torch python3-torchvision python3-venv; do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@test -x $(BENCH_VENV)/bin/python && $(BENCH_VENV)/bin/python -c 'import torch' 2>/dev/null || \
	  { echo "installing PyTorch from PyPI into $(BENCH_VENV)"; rm -rf $(BENCH_VENV); \
	    /usr/bin/python3 -m venv $(BENCH_VENV) && $(BENCH_VENV)/bin/pip install -q torch; }
	$(CMD) run bench/bench.lua $(BENCH_ARGS)
	@# on an AVX-512 machine, the AVX2-only kind too (both engines held to AVX2), 2 threads
	@if grep -qw avx512f /proc/cpuinfo; then \
	  echo; echo "The same, both engines held to AVX2 (an AVX2-only machine kind emulated):"; \
	  $(CMD) run bench/bench.lua $(BENCH_ARGS) --threads 2 --isa avx2; fi
	$(CMD) run bench/profile.lua

spec: $(MODULE) $(CMD) $(CTESTS)
	busted --lua=$(LUA) tests/spec

test: test-deps
	@$(MAKE) --no-print-directory all $(CTESTS) fuzz
	@$(MAKE) --no-print-directory SAN=1 build/san/lib/cbnet/core.so
	@sh tests/run.sh $(CTESTS)

# Every test of `make test` under ASan + UBSan: the C tests, then all the
# Lua specs through the sanitizer build of the module and of the command.
SAN_ENV := ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 \
           UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
check: test-deps all $(CTESTS)
	@$(MAKE) --no-print-directory SAN=1 build/san/tests/ctest build/san/lib/cbnet/core.so build/san/bin/cbnet
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 build/san/tests/ctest
	LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	  $(SAN_ENV) CBNET_BIN=$(CURDIR)/build/san/bin/cbnet \
	  busted --lua=$(LUA) --cpath="build/san/lib/?.so"

# The kernel specs under qemu-user as an AVX2-only EPYC and as a CPU without
# AVX (about 15 minutes; make test runs a quick subset): CPU_KINDS picks others.
CPU_KINDS ?= EPYC-Rome Nehalem
test-cpus: test-deps all
	tests/cpu_kinds/specs.sh $(CPU_KINDS)

# The real engines: a single-node Slurm (started and stopped by the spec;
# needs root), GNU parallel and Open MPI (mpirun -np 2), from Debian's packages.
CLUSTER_PACKAGES := slurm-wlm munge parallel openmpi-bin libopenmpi-dev
test-cluster: deps
	@missing=$$(for p in $(CLUSTER_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@$(MAKE) --no-print-directory all  # now with cbnet.mpi (mpicc is there)
	busted --lua=$(LUA) tests/cluster/cluster_spec.lua

# The random-call API fuzzer under the sanitizers: `make test` runs it for
# FUZZ_API_SECONDS (20); `make fuzz-api` for an hour, or as long as asked.
FUZZ_API_SECONDS ?= 3600
fuzz-api: deps all
	@$(MAKE) --no-print-directory SAN=1 build/san/lib/cbnet/core.so
	tests/fuzz/api_fuzz.sh $(FUZZ_API_SECONDS)

# A quick experiment under valgrind's memcheck (on Fashion-MNIST, which
# loads fast): no invalid access, no use of uninitialised memory, no leak
# of cbnet's own. One thread each for cbnet and OpenBLAS (valgrind runs
# threads one at a time anyway).
valgrind: deps all
	@command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
	@rm -rf build/valgrind && mkdir -p build/valgrind
	cd build/valgrind && HOME=$(CURDIR)/build/valgrind CBNET_DATA=none OPENBLAS_NUM_THREADS=1 \
	  CBNET_NUM_THREADS=1 valgrind --error-exitcode=99 --quiet \
	  --suppressions=$(CURDIR)/tests/valgrind.supp $(CURDIR)/$(CMD) run \
	  $(CURDIR)/experiments/convnet.lua --quick --widths 4,8 --out run

# Fuzz targets for the file parsers (libFuzzer, with ASan and UBSan); the
# core is compiled once for all of them. UBSan's first report ends a run
# (tests/fuzz/ubsan_options.c says why and how).
FUZZ_TARGETS := idx cifar image safetensors
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=address,undefined -Icore -I$(BLAS_INC)
FUZZ_OBJ := $(CORE_SRC:core/%.c=build/fuzz/obj/%.o)
fuzz: $(FUZZ_TARGETS:%=build/fuzz/fuzz_%)
.SECONDARY: $(FUZZ_OBJ)

build/fuzz/obj/%.o: core/%.c $(CORE_HDR) Makefile
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@
build/fuzz/obj/data/stb_impl.o: FUZZ_CFLAGS += $(STB_NO_SANITIZE)

build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/ubsan_options.c $(FUZZ_OBJ)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $^ -lz -lm -lpthread -ldl

# A short run of each target from generated seeds (make test runs it); for a
# long one: build/fuzz/fuzz_image -max_total_time=3600 build/fuzz/corpus/image
fuzz-smoke: fuzz $(CMD)
	@$(CMD) run tests/fuzz/make_seeds.lua build/fuzz/corpus
	@for t in $(FUZZ_TARGETS); do \
	  build/fuzz/fuzz_$$t -runs=20000 -max_total_time=8 -max_len=8192 -timeout=10 \
	    -artifact_prefix=build/fuzz/$$t- \
	    build/fuzz/corpus/$$t > build/fuzz/$$t.log 2>&1 \
	    || { tail -40 build/fuzz/$$t.log; echo "fuzz_$$t: FAILED"; exit 1; }; \
	  echo "fuzz_$$t: $$(grep -o 'Done [0-9]* runs' build/fuzz/$$t.log || echo 'ran'), no crash"; \
	done

# PREFIX, or each folder (LuaRocks passes BINDIR, LUADIR, LIBDIR).
BINDIR ?= $(PREFIX)/bin
LUADIR ?= $(PREFIX)/share/lua/5.4
LIBDIR ?= $(PREFIX)/lib/lua/5.4
LUA_MODULES := $(shell cd lua && find cbnet -name '*.lua')
install: all
	install -d $(BINDIR) $(LIBDIR)/cbnet
	install -m 755 $(CMD) $(BINDIR)/cbnet
	install -m 755 $(MODULE) $(LIBDIR)/cbnet/core.so
	if [ -n "$(MPI_MODULE)" ]; then install -m 755 $(MPI_MODULE) $(LIBDIR)/cbnet/mpi.so; fi
	if [ "$(LUA_MODULES_BY)" != luarocks ]; then \
	  for f in $(LUA_MODULES); do install -D -m 644 lua/$$f $(LUADIR)/$$f || exit 1; done; \
	fi

clean:
	rm -rf build
