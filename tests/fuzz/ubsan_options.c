/* Linked into every libFuzzer target: UBSan's first report ends the run as a
 * crash (with its input saved), for `make fuzz-smoke` and for long runs alike.
 * The code is still compiled to recover from reports, because a check that
 * recovers leaves the branches libFuzzer's coverage counts and steers by
 * (built not to recover, fuzz_image counted 697 edges on its corpus instead of
 * 2054). Without this a report only printed, and an out-of-bounds write inside
 * one of stb_image's structs, which ASan cannot see, passed as "no crash". */
const char *__ubsan_default_options(void);
const char *__ubsan_default_options(void) { return "halt_on_error=1:print_stacktrace=1"; }
