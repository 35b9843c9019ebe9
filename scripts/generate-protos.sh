#!/usr/bin/env bash
# Regenerates Sources/GridProtocol/Generated from the .proto files. Run by hand after editing
# a .proto; commit the .proto and the generated Swift together. CI never runs this.
#
# Needs: protoc (Debian: protobuf-compiler) and protoc-gen-swift built from the swift-protobuf
# version Package.swift resolves, e.g.
#   git clone https://github.com/apple/swift-protobuf.git /tmp/swift-protobuf
#   (cd /tmp/swift-protobuf && git checkout 1.39.0 && swift build -c release --product protoc-gen-swift)
#   PROTOC_GEN_SWIFT=/tmp/swift-protobuf/.build/release/protoc-gen-swift scripts/generate-protos.sh
set -euo pipefail
cd "$(dirname "$0")/.."
plugin="${PROTOC_GEN_SWIFT:-$(command -v protoc-gen-swift || true)}"
if [[ -z "$plugin" || ! -x "$plugin" ]]; then
  echo "protoc-gen-swift not found: set PROTOC_GEN_SWIFT=/path/to/protoc-gen-swift (see header of $0)" >&2
  exit 1
fi
command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler" >&2; exit 1; }
proto_root=Sources/GridProtocol/Proto
out=Sources/GridProtocol/Generated
mkdir -p "$out"
rm -f "$out"/*.pb.swift "$out"/FieldNames.swift
protoc --plugin=protoc-gen-swift="$plugin" \
  --proto_path="$proto_root" \
  --swift_out="$out" \
  --swift_opt=Visibility=Public \
  --swift_opt=FileNaming=DropPath \
  $(cd "$proto_root" && find . -name '*.proto' | sed 's|^\./||' | sort)
echo "generated: $(ls "$out")"
# The conformance suite's Python bindings (Tests/Conformance), from the same .proto.
protoc --proto_path="$proto_root" --python_out=Tests/Conformance \
  $(cd "$proto_root" && find . -name '*.proto' | sed 's|^\./||' | sort)
echo "generated: Tests/Conformance/computegrid/v1/grid_pb2.py"
# The field reference (docs/protocol-reference.md), from the same .proto's comments.
python3 scripts/protocol-reference.py
