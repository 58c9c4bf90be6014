#!/bin/sh
# The kernel specs as other x86-64 kinds run them, under qemu-user's emulation
# (which answers CPUID as the CPU it is told to be): `make test-cpus`, by hand,
# about 15 minutes (emulated AVX2 runs some 10,000 times slower than the real
# thing; `make test` runs the quick subset in tests/spec/cpu_kinds_spec.lua).
# Usage: tests/cpu_kinds/specs.sh [CPU...]   (default: EPYC-Rome Nehalem)
# Specs that start the cbnet command are left out: it would run outside the
# emulation.
cpus=${*:-EPYC-Rome Nehalem}
specs="tensor autograd everyday_ops loss optim nn longtail nn_kernels"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
failed=0
for cpu in $cpus; do
  for spec in $specs; do
    env -u OPENBLAS_CORETYPE -u CBNET_CONV -u CBNET_WINOGRAD_TILE \
      qemu-x86_64 -cpu "$cpu" "$(command -v lua5.4)" "$(command -v busted)" \
      -f tests/cpu_kinds/busted.lua "tests/spec/${spec}_spec.lua" > "$log" 2>&1
    status=$?
    grep -v '^qemu-x86_64: warning' "$log" | grep -v '^[+-]*$' | tail -n 20
    echo "== $cpu: ${spec}_spec.lua: exit $status"
    [ "$status" -eq 0 ] || failed=1
  done
done
exit $failed
