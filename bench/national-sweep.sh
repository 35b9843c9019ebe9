#!/bin/bash
# Issue 10: the policy on the five instances of BENCHMARKS.md ("National decision"), with ten
# past periods of the same generator as its bound-demand history, against the offline optimum.
#
#   bench/national-sweep.sh [grid-bench national options...]   e.g. --replan-order size
#   HISTORY=0 bench/national-sweep.sh                           (no history: protection learned online)
#
# Instances: the three shipped scenarios and seeds 11 and 23 of make-hub-scenario.py (48 h);
# history: seeds 101-110 with each instance's own generator settings (never the instance's seed).
# The optima are `python3 bench/milp_optimum.py FILE --time-limit 300` (scipy HiGHS, proven optimal).
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH="${BENCH:-.build/release/grid-bench}"
DIR="${TMPDIR:-/tmp}/grid-national-sweep"
mkdir -p "$DIR"
gen() { [ -s "$DIR/$1.json" ] || python3 bench/make-hub-scenario.py "${@:2}" > "$DIR/$1.json"; }
gen eval-48h-11 --seed 11
gen eval-48h-23 --seed 23
for s in $(seq 101 110); do
  gen "24h-$s" --hours 24 --jobs 300 --seed "$s"
  gen "48h-$s" --hours 48 --jobs 300 --seed "$s"
  gen "cong-$s" --hours 48 --jobs 300 --capacity-scale 0.12 --seed "$s"
done
hist() { [ "${HISTORY:-1}" = 1 ] || return 0; for s in $(seq 101 110); do printf -- "--history %s " "$DIR/$1-$s.json"; done; }
names=(hubs-24h congested-48h hubs-48h-seed7 seed-11 seed-23)
files=(bench/scenarios/cn-hubs-24h.json bench/scenarios/cn-hubs-congested-48h.json bench/scenarios/cn-hubs-300.json "$DIR/eval-48h-11.json" "$DIR/eval-48h-23.json")
kinds=(24h cong 48h 48h 48h)
optima=(33002 227699 17485 54511 79583)
sum=0; osum=0
printf "%-16s %10s %10s %8s %12s %12s\n" instance policy optimum gap least-loaded decisions/s
for i in "${!files[@]}"; do
  # shellcheck disable=SC2046
  out=$("$BENCH" national --scenario "${files[$i]}" $(hist "${kinds[$i]}") "$@")
  p=$(awk '/^policy/{print $2}' <<<"$out"); rate=$(awk '/^policy/{print $NF}' <<<"$out"); ll=$(awk '/^least-loaded/{print $2}' <<<"$out")
  v=$(awk '/^policy/{print $12}' <<<"$out")
  [ "$v" = 0 ] || { echo "${names[$i]}: $v violations" >&2; exit 1; }
  printf "%-16s %10.0f %10d %+7.1f%% %12.0f %12s\n" "${names[$i]}" "$p" "${optima[$i]}" "$(python3 -c "print(($p/${optima[$i]}-1)*100)")" "$ll" "$rate"
  sum=$(python3 -c "print($sum+$p)"); osum=$((osum + optima[i]))
done
printf "%-16s %10.0f %10d %+7.1f%%\n" sum "$sum" "$osum" "$(python3 -c "print(($sum/$osum-1)*100)")"
