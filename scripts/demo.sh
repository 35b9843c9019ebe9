#!/usr/bin/env bash
# `make demo`: a national scheduler, two regions and six simulated agents on loopback, the
# sample jobs in examples/jobs, a table of where each ran and how it ended, clean shutdown.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# Service replicas name their model files relative to here (examples/services/tiny-mlp.yaml).
cd "$ROOT" || exit 1
BIN="${BIN:-$ROOT/.build/debug}"
RUN="$ROOT/run"
LOGS="$RUN/logs"
NATIONAL=tcp://127.0.0.1:7700
PIDS=()
NAMES=()

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ ${#PIDS[@]} -gt 0 ]; then
    log "stopping ${#PIDS[@]} processes (SIGTERM)"
    # Agents first, then regions, then the national scheduler.
    for ((i=${#PIDS[@]}-1; i>=0; i--)); do kill -TERM "${PIDS[$i]}" 2>/dev/null || true; done
    local deadline=$((SECONDS + 15))
    for i in "${!PIDS[@]}"; do
      local pid=${PIDS[$i]}
      while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
      if kill -0 "$pid" 2>/dev/null; then
        echo "demo: ${NAMES[$i]} (pid $pid) ignored SIGTERM; killing" >&2
        kill -KILL "$pid" 2>/dev/null || true
        status=1
      fi
      wait "$pid" 2>/dev/null
      local rc=$?
      if [ $rc -ne 0 ] && [ $rc -ne 143 ]; then
        echo "demo: ${NAMES[$i]} exited with status $rc (log: $LOGS/${NAMES[$i]}.log)" >&2
        status=1
      fi
    done
    local left
    left=$(pgrep -f "$BIN/grid-(agent|controller)" || true)
    if [ -n "$left" ]; then
      echo "demo: processes left behind: $left" >&2
      status=1
    else
      log "all processes stopped; logs in ${LOGS#"$ROOT"/}"
    fi
  fi
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start() { # name binary args...
  local name=$1; shift
  "$@" >"$LOGS/$name.out" 2>"$LOGS/$name.log" </dev/null &
  PIDS+=($!)
  NAMES+=("$name")
}

wait_listening() { # name
  local name=$1 deadline=$((SECONDS + 20))
  until grep -q "listening on" "$LOGS/$name.out" 2>/dev/null; do
    if ! kill -0 "${PIDS[-1]}" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
      echo "demo: $name did not start; its log:" >&2
      cat "$LOGS/$name.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "    $(cat "$LOGS/$name.out")"
}

for b in grid-controller grid-agent grid-job-shim gridctl; do
  [ -x "$BIN/$b" ] || { echo "demo: $BIN/$b is missing; run 'make demo' (it builds first)" >&2; exit 1; }
done
rm -rf "$RUN"
mkdir -p "$LOGS"

log "CURVE keys for every controller, agent and the demo's operator (scripts/demo-keys.sh; docs/security.md)"
"$ROOT/scripts/demo-keys.sh" "$BIN" | sed 's/^/    /'
# gridctl speaks CURVE to the national scheduler with the demo operator's key, pinning its key.
export GRID_KEY_FILE="$ROOT/controller-config/keys/operator.key" GRID_SERVER_KEY="$ROOT/controller-config/keys/national.pub"

log "starting the national scheduler and three regional controllers"
start national "$BIN/grid-controller" --config "$ROOT/controller-config/national.yaml"
wait_listening national
for r in guian zhongwei demozone; do
  start "region-$r" "$BIN/grid-controller" --config "$ROOT/controller-config/region-$r.yaml"
  wait_listening "region-$r"
done

log "starting seven agents with simulated accelerators (captured vendor-tool outputs)"
for a in gz-a100 gz-v100 gz-ascend nx-t4 nx-mi100 nx-gaudi sh-a10g; do
  start "agent-$a" "$BIN/grid-agent" run --config "$ROOT/agent-config/$a.yaml"
  echo "    $a: $(sed -n 's/^# Simulated node for `make demo`: //p' "$ROOT/agent-config/$a.yaml")"
done

log "waiting for the regions to report all nodes to the national scheduler"
"$BIN/gridctl" --help >/dev/null
"$BIN/gridctl" nodes --controller "$NATIONAL" --expect 7 --within 60 || exit 1
echo
"$BIN/gridctl" regions --controller "$NATIONAL"

log "submitting the sample jobs in examples/jobs"
"$BIN/gridctl" submit --controller "$NATIONAL" "$ROOT"/examples/jobs/*.yaml || exit 1

log "waiting for every job to end"
"$BIN/gridctl" wait --controller "$NATIONAL" --within 120
rc=$?
echo
if [ $rc -eq 0 ]; then
  log "all sample jobs succeeded"
else
  log "some jobs did not succeed (gridctl wait exit $rc)"
  exit $rc
fi

log "routing by price, carbon, jurisdiction and time (examples/routing; region profiles in controller-config/national.yaml)"
for j in west-for-price kept-in-jurisdiction delayed-to-cheaper-hour; do
  "$BIN/gridctl" submit --controller "$NATIONAL" --id "$j" "$ROOT/examples/routing/$j.yaml" || exit 1
done
"$BIN/gridctl" wait --controller "$NATIONAL" --within 60 west-for-price kept-in-jurisdiction || exit 1
for j in west-for-price kept-in-jurisdiction delayed-to-cheaper-hour; do
  echo
  log "gridctl explain $j"
  "$BIN/gridctl" explain --controller "$NATIONAL" "$j" || exit 1
done
echo
log "a model as a service: examples/services/tiny-mlp.yaml (SERVICES.md): 2 replicas, probes, the region's gateway"
"$BIN/gridctl" deploy --controller "$NATIONAL" examples/services/tiny-mlp.yaml --wait --within 90 || exit 1
endpoint=$("$BIN/gridctl" service --controller "$NATIONAL" tiny-mlp -o json |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["endpoints"][0])') || exit 1
log "one answer from the service: POST $endpoint/v1/predict"
python3 - "$endpoint" <<'PY' || exit 1
import json, sys, urllib.request
body = json.dumps({"inputs": [[5.1, 3.5, 1.4, 0.2, 1, 0, 0, 1]]}).encode()
req = urllib.request.Request(sys.argv[1] + "/v1/predict", data=body, headers={"Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=10) as r:
    answer = json.load(r)
    print("    replica", r.headers.get("X-Grid-Replica"), "version", answer["version"], "precision", answer["precision"])
    print("    ", dict(zip(answer["labels"], answer["outputs"][0])))
PY
echo
log "delayed-to-cheaper-hour stays held in the national scheduler's store (run/national) until its hour"
echo
log "watch it: dashboard http://127.0.0.1:7780/ · metrics http://127.0.0.1:7780/metrics · API http://127.0.0.1:7780/openapi.yaml"
echo "    regions: guian http://127.0.0.1:7791/ · zhongwei http://127.0.0.1:7792/ · demozone http://127.0.0.1:7793/"
echo "    service: $endpoint (gridctl services; gridctl service tiny-mlp)"
echo "    gridctl from another shell: export GRID_KEY_FILE=$GRID_KEY_FILE GRID_SERVER_KEY=$GRID_SERVER_KEY"
if [ -t 0 ] && [ -t 1 ]; then
  printf '    the network keeps serving; press Enter to stop it '
  read -r _ || true
fi
