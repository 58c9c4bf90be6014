#!/bin/sh
# Runs the C unit tests, the busted specs, a short run of each fuzz target
# and of the API fuzzer; prints one closing line
# "tests: N passed, N failed" and exits non-zero if anything failed.
# Usage: tests/run.sh PATH/TO/ctest
ctest=${1:-build/tests/ctest}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "== C unit tests"
"$ctest" > "$log" 2>&1
c_status=$?
cat "$log"
c_passed=$(sed -n 's/^c: \([0-9]*\) passed, \([0-9]*\) failed$/\1/p' "$log")
c_failed=$(sed -n 's/^c: \([0-9]*\) passed, \([0-9]*\) failed$/\2/p' "$log")
[ -n "$c_passed" ] || { c_passed=0; c_failed=1; }   # crashed before its summary

echo "== Lua specs (busted on lua5.4)"
busted --lua=lua5.4 > "$log" 2>&1
lua_status=$?
cat "$log"
summary=$(grep -E '^[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors? ' "$log" | tail -1)
l_passed=$(echo "$summary" | sed -n 's/^\([0-9]*\) success.*/\1/p')
l_failed=$(echo "$summary" | sed -n 's/^[0-9]* success[es]* \/ \([0-9]*\) failure[s]* \/ \([0-9]*\) error.*/\1 \2/p' | awk '{print $1 + $2}')
[ -n "$l_passed" ] || { l_passed=0; l_failed=1; }

echo "== fuzz targets, a short run each"
make --no-print-directory fuzz-smoke > "$log" 2>&1
fuzz_status=$?
cat "$log"
f_passed=$(grep -c ', no crash$' "$log")
f_failed=$(grep -c ': FAILED$' "$log")
[ "$fuzz_status" -eq 0 ] || [ "$f_failed" -gt 0 ] || f_failed=1

echo "== the API fuzzer under ASan + UBSan, ${FUZZ_API_SECONDS:-20} s"
tests/fuzz/api_fuzz.sh "${FUZZ_API_SECONDS:-20}" > "$log" 2>&1
api_status=$?
cat "$log"
if [ "$api_status" -eq 0 ]; then a_passed=1 a_failed=0; else a_passed=0 a_failed=1; fi

passed=$((c_passed + l_passed + f_passed + a_passed))
failed=$((c_failed + l_failed + f_failed + a_failed))
if [ "$c_status" -ne 0 ] || [ "$lua_status" -ne 0 ]; then
  [ "$failed" -gt 0 ] || failed=1
fi
echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
