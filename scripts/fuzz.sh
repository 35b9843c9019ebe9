#!/usr/bin/env bash
# Fuzzes the decoders with libFuzzer (docs/security.md, "Fuzzing"): builds grid-fuzz with
# -sanitize=fuzzer,address into .build-fuzz, then runs each target for RUNS executions
# (default 10,000,000) from a seed corpus (captured vendor outputs, sample job and service
# files, encoded messages). A crash leaves its input in .build-fuzz/artifacts/; copy it to
# Tests/Fixtures/fuzz/<target>/ so FuzzRegressionTests replays it in the normal suite.
# Usage: scripts/fuzz.sh [TARGET...]   (targets: envelope vendor job-file service-file
#                                     controller-config agent-config authorized-keys)
# SANITIZE=fuzzer builds without AddressSanitizer into .build-fuzz-plain: 3-5 times the
# executions a second; Swift's own checks (bounds, overflow, unwrapping) still trap, only the
# C parts (libyaml in Yams, libxml2) lose ASan's checks. Use it for the long runs after an ASan run.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-10000000}"
SANITIZE="${SANITIZE:-fuzzer,address}"
DIR=".build-fuzz"
[ "$SANITIZE" = "fuzzer,address" ] || DIR=".build-fuzz-plain"
swift build -c release --product grid-fuzz --build-path "$DIR" \
  -Xswiftc -sanitize="$SANITIZE" -Xswiftc -DFUZZING -Xswiftc -parse-as-library
BIN="$DIR/release/grid-fuzz"
mkdir -p .build-fuzz/artifacts
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(envelope vendor job-file service-file controller-config agent-config authorized-keys)
for t in "${targets[@]}"; do
  corpus=".build-fuzz/corpus/$t"
  mkdir -p "$corpus"
  case "$t" in
    envelope) cp Tests/Fixtures/fuzz/envelope-seeds/* "$corpus"/ 2>/dev/null || true ;;
    vendor) for f in Tests/Fixtures/vendor/*; do printf '\xff' | cat - "$f" > "$corpus/$(basename "$f")"; done ;;
    job-file) cp examples/jobs/*.yaml examples/routing/*.yaml "$corpus"/ ;;
    service-file) cp examples/services/*.yaml "$corpus"/ ;;
    controller-config) cp controller-config/*.yaml deploy/*/*.yaml "$corpus"/ 2>/dev/null || true ;;
    agent-config) cp agent-config/*.yaml "$corpus"/ ;;
    authorized-keys) cp Tests/Fixtures/fuzz/authorized-keys-seeds/* "$corpus"/ 2>/dev/null || true ;;
  esac
  [ -d "Tests/Fixtures/fuzz/$t" ] && cp "Tests/Fixtures/fuzz/$t"/* "$corpus"/ 2>/dev/null || true
  echo "== $t: $RUNS runs"
  start=$(date +%s)
  LSAN_OPTIONS="suppressions=$PWD/scripts/lsan-suppressions.txt:print_suppressions=0" GRID_FUZZ_TARGET="$t" "$BIN" -runs="$RUNS" -max_len=65536 -rss_limit_mb=4096 \
    -artifact_prefix=".build-fuzz/artifacts/$t-" -print_final_stats=1 "$corpus" 2>&1 | tail -12
  echo "== $t: done in $(( $(date +%s) - start )) s"
done
