#!/bin/sh
# Runs the random-call API fuzzer (tests/fuzz/api_fuzz.lua) seed after seed,
# each in its own process under AddressSanitizer + UndefinedBehaviorSanitizer
# (the build/san module), with a memory limit and a timeout, until SECONDS
# have passed. A seed whose process dies (a sanitizer report, a signal) is a
# crash; one that outlives its timeout is a hang. Logs of failing seeds stay
# in build/fuzz/api/.
#   tests/fuzz/api_fuzz.sh [SECONDS [CALLS_PER_SEED [FIRST_SEED]]]
# Closes with "fuzz_api: N seeds, N calls, N crashes, N hangs" and exits
# non-zero when there was any crash or hang.
seconds=${1:-20}
calls=${2:-400}
seed=${3:-1}
root=$(cd "$(dirname "$0")/../.." && pwd)
logs="$root/build/fuzz/api"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$logs"
asan=$(gcc -print-file-name=libasan.so)
ubsan=$(gcc -print-file-name=libubsan.so)
# Allocations above 4 GiB fail (as they would on a smaller machine) so the
# out-of-memory paths run; past 6 GiB resident the process is stopped.
export ASAN_OPTIONS=allocator_may_return_null=1:max_allocation_size_mb=4096:hard_rss_limit_mb=6144:detect_leaks=0:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export CBNET_NUM_THREADS=2
end=$(( $(date +%s) + seconds ))
runs=0 crashes=0 hangs=0
while [ "$(date +%s)" -lt "$end" ] || [ "$runs" -eq 0 ]; do
  dir="$scratch/$seed"
  mkdir -p "$dir"
  ( cd "$dir" && LD_PRELOAD="$asan $ubsan" timeout -s KILL 300 lua5.4 \
      -e "package.path='$root/lua/?.lua;$root/lua/?/init.lua;'..package.path; package.cpath='$root/build/san/lib/?.so;'..package.cpath" \
      "$root/tests/fuzz/api_fuzz.lua" "$seed" "$calls" ) > "$scratch/log" 2>&1
  status=$?
  if [ "$status" -eq 137 ]; then
    hangs=$((hangs + 1)); cp "$scratch/log" "$logs/hang-$seed.log"
    echo "seed $seed: no end within 300 s (log: build/fuzz/api/hang-$seed.log)"
  elif [ "$status" -ne 0 ]; then
    crashes=$((crashes + 1)); cp "$scratch/log" "$logs/crash-$seed.log"
    echo "seed $seed: exit $status (log: build/fuzz/api/crash-$seed.log)"
    tail -30 "$scratch/log"
  fi
  rm -rf "$dir"
  runs=$((runs + 1))
  seed=$((seed + 1))
done
echo "fuzz_api: $runs seeds, $((runs * calls)) calls, $crashes crashes, $hangs hangs"
[ "$crashes" -eq 0 ] && [ "$hangs" -eq 0 ]
