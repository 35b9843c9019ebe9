#!/usr/bin/env bash
# Regenerates docs/man/*.1 from the executables' argument parsers (swift-argument-parser's
# generate-manual plugin). Run after changing a command's options or help; commit the result.
# `make install` installs docs/man; CI never runs this.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build --product gridctl
swift build --product grid-agent
swift build --product grid-controller
swift package --allow-writing-to-directory docs/man generate-manual --help >/dev/null  # builds the tool
tool=$(find .build \( -path '*/debug/generate-manual' -o -path '*/debug/generate-manual-tool' \) -type f -perm -u+x | head -1)
[ -n "$tool" ] || { echo "generate-manual was not built" >&2; exit 1; }
mkdir -p docs/man
for t in gridctl grid-agent grid-controller; do
  "$tool" ".build/debug/$t" --date "$(date -u +%Y-%m-%d)" --authors "ComputeGrid developers" -o docs/man
done
ls -l docs/man
