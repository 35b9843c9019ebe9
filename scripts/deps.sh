#!/usr/bin/env bash
# Installs the system packages ComputeGrid builds against, when missing.
# As root: installs them with apt-get. Otherwise: prints the exact apt line and fails.
set -euo pipefail
# python3: the demo model served by `make demo` (examples/model/serve.py, standard library only).
PACKAGES="libzmq3-dev libsqlite3-dev pkg-config libxml2-dev python3"
# `deps.sh --test`: also what the test suite drives for real: a headless browser for the
# dashboard, Prometheus's own text-format parser, curl for the event stream, pyzmq and
# protobuf for the Python conformance peer (Tests/Conformance).
if [ "${1:-}" = "--test" ]; then
  PACKAGES="$PACKAGES chromium python3-prometheus-client curl python3-zmq python3-protobuf"
  # Node drives the browser over the DevTools pipe (Tests/Browser/cdp-driver.mjs).
  command -v node >/dev/null 2>&1 || PACKAGES="$PACKAGES nodejs"
fi
missing=""
for p in $PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# `--test`: Kubernetes' own schemas for the manifests in deploy/kubernetes (kubernetes-validate
# from PyPI, kept under .build/pytools so nothing system-wide changes).
pytools() {
  [ "${1:-}" = "--test" ] || return 0
  [ -d .build/pytools/kubernetes_validate ] && return 0
  echo "deps: installing kubernetes-validate into .build/pytools (PyPI)"
  python3 -m pip install --quiet --disable-pip-version-check --target .build/pytools kubernetes-validate==1.37.0 2>&1 | grep -v "WARNING: Running pip as" >&2 || true
  [ -d .build/pytools/kubernetes_validate ] || { echo "deps: could not install kubernetes-validate (python3 -m pip install --target .build/pytools kubernetes-validate)" >&2; exit 1; }
}
if [ -z "$missing" ]; then
  pytools "${1:-}"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "deps: missing system packages:$missing (no apt-get here: install libzmq, SQLite 3 headers and pkg-config by hand)" >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
  echo "deps: installing$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
  echo "deps: missing system packages:$missing" >&2
  echo "deps: run:  sudo apt-get update && sudo apt-get install -y$missing" >&2
  exit 1
fi
pytools "${1:-}"
