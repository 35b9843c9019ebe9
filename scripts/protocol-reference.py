#!/usr/bin/env python3
"""Writes docs/protocol-reference.md: every message, field and enum of grid.proto with its
number, type, unit, zero value and the .proto's own comment. Run by scripts/generate-protos.sh
after a .proto change; commit the result with the .proto. CI never runs it (a test checks that
every field of grid.proto is in the committed reference).

Needs protoc (Debian: protobuf-compiler) and python3-protobuf.
"""
import os
import subprocess
import sys
import tempfile

from google.protobuf import descriptor_pb2 as d

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTO_ROOT = os.path.join(ROOT, "Sources/GridProtocol/Proto")
PROTO = "computegrid/v1/grid.proto"
OUT = os.path.join(ROOT, "docs/protocol-reference.md")
# Field names by message and number, for error messages that name the field (FieldBounds).
NAMES_OUT = os.path.join(ROOT, "Sources/GridProtocol/Generated/FieldNames.swift")

T = d.FieldDescriptorProto
SCALAR = {
    T.TYPE_DOUBLE: "double", T.TYPE_FLOAT: "float", T.TYPE_INT64: "int64", T.TYPE_UINT64: "uint64",
    T.TYPE_INT32: "int32", T.TYPE_UINT32: "uint32", T.TYPE_BOOL: "bool", T.TYPE_STRING: "string",
    T.TYPE_BYTES: "bytes", T.TYPE_SINT64: "sint64", T.TYPE_SINT32: "sint32", T.TYPE_FIXED64: "fixed64",
}
ZERO = {"double": "0", "float": "0", "bool": "false", "string": '""', "bytes": "empty"}

# Units are in field names (PROTOCOL.md, "Messages"): the suffix says it.
UNITS = [
    ("_unix_ms", "Unix time, ms"), ("_ms", "ms"), ("_mib", "MiB"), ("_seconds", "s"), ("_s", "s"),
    ("_percent", "%"), ("_w", "W"), ("_c", "°C"), ("_gcu", "GCU"), ("_kwh", "per kWh"),
    ("_g_per_kwh", "gCO₂e/kWh"), ("_hours", "h"),
]
IDS = {"node_id", "job_id", "assignment_id", "update_id", "region_id"}


def unit(name):
    for suffix, u in sorted(UNITS, key=lambda x: -len(x[0])):
        if name.endswith(suffix):
            return u
    return ""


def text(loc):
    if loc is None:
        return ""
    parts = [loc.leading_comments.strip(), loc.trailing_comments.strip()]
    return " ".join(" ".join(p.split()) for p in parts if p).replace("|", "\\|")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "d.pb")
        subprocess.run(["protoc", f"--proto_path={PROTO_ROOT}", "--include_source_info", f"--descriptor_set_out={out}", PROTO],
                       check=True)
        fs = d.FileDescriptorSet()
        with open(out, "rb") as f:
            fs.ParseFromString(f.read())
    f = fs.file[0]
    locs = {tuple(loc.path): loc for loc in f.source_code_info.location}
    lines = [
        "# Protocol field reference (generated)",
        "",
        "Generated from `Sources/GridProtocol/Proto/computegrid/v1/grid.proto` by",
        "`scripts/protocol-reference.py` (run by `scripts/generate-protos.sh`); do not edit by hand.",
        "PROTOCOL.md says who sends each message and what answers it; this lists every field.",
        "",
        "Conventions: every field is optional on the wire and absent means its zero value (`0`,",
        "`false`, `\"\"`, empty list); where zero is a real value the comment names the sentinel",
        "(`-1` unknown, `-1000` °C unknown). The unit is in the field name (`_ms`, `_unix_ms`,",
        "`_mib`, `_seconds`, `_w`, `_c`, `_percent`, `_gcu`). Fields marked *id* are identifiers:",
        "1–128 bytes of `A-Z a-z 0-9 - _ . :`, checked by the receiver (PROTOCOL.md, \"Envelope\").",
        "Device and partition ids are resource-name segments (PROTOCOL.md, \"Resource names\").",
        "",
        "## Enums",
        "",
    ]

    def enum_block(e, path, prefix=""):
        out = [f"### `{prefix}{e.name}`", ""]
        doc = text(locs.get(path))
        if doc:
            out += [doc, ""]
        out += ["| Value | Number | Meaning |", "|---|---|---|"]
        for k, v in enumerate(e.value):
            out.append(f"| `{v.name}` | {v.number} | {text(locs.get(path + (2, k))) or '—'} |")
        return out + [""]

    for i, e in enumerate(f.enum_type):
        lines += enum_block(e, (5, i))
    nested_enums = []
    lines += ["## Messages", ""]
    for i, m in enumerate(f.message_type):
        path = (4, i)
        lines.append(f"### `{m.name}`")
        lines.append("")
        doc = text(locs.get(path))
        if doc:
            lines += [doc, ""]
        if not m.field:
            lines += ["No fields.", ""]
        else:
            lines += ["| Field | # | Type | Unit | Zero value | Meaning |", "|---|---|---|---|---|---|"]
            maps = {n.name: n for n in m.nested_type if n.options.map_entry}
            for j, fld in enumerate(m.field):
                if fld.type in (T.TYPE_MESSAGE, T.TYPE_ENUM):
                    typ = fld.type_name.split(".")[-1]
                else:
                    typ = SCALAR.get(fld.type, str(fld.type))
                repeated = fld.label == T.LABEL_REPEATED
                entry = maps.get(fld.type_name.split(".")[-1]) if fld.type == T.TYPE_MESSAGE else None
                if entry is not None:
                    kt, vt = entry.field[0], entry.field[1]
                    key = SCALAR.get(kt.type, "?")
                    val = vt.type_name.split(".")[-1] if vt.type in (T.TYPE_MESSAGE, T.TYPE_ENUM) else SCALAR.get(vt.type, "?")
                    typ, zero = f"map<{key}, {val}>", "empty"
                elif repeated:
                    typ, zero = f"repeated {typ}", "empty"
                elif fld.type == T.TYPE_MESSAGE:
                    zero = "unset"
                elif fld.type == T.TYPE_ENUM:
                    zero = "0 (first value)"
                else:
                    zero = ZERO.get(typ, "0")
                meaning = text(locs.get(path + (2, j)))
                if fld.name in IDS and fld.type == T.TYPE_STRING:
                    meaning = ("*id*. " + meaning).strip()
                lines.append(f"| `{fld.name}` | {fld.number} | {typ} | {unit(fld.name)} | {zero} | {meaning or '—'} |")
            lines.append("")
        for k, e in enumerate(m.enum_type):
            nested_enums += enum_block(e, path + (4, k), prefix=m.name + ".")
    if nested_enums:
        lines += ["## Enums inside messages", ""] + nested_enums
    with open(OUT, "w") as out:
        out.write("\n".join(lines).rstrip() + "\n")
    print(f"generated: {os.path.relpath(OUT, ROOT)}")
    names = [
        "// Generated from grid.proto by scripts/protocol-reference.py (run by scripts/generate-protos.sh);",
        "// do not edit by hand. Field names by message and number, so errors name the field.",
        "enum FieldNames {",
        "    static let byMessage: [String: [Int: String]] = [",
    ]
    def walk(messages, prefix):
        for m in messages:
            full = f"{prefix}.{m.name}"
            if m.field:
                pairs = ", ".join(f'{fld.number}: "{fld.name}"' for fld in m.field)
                names.append(f'        "{full}": [{pairs}],')
            walk([n for n in m.nested_type if not n.options.map_entry], full)
    walk(f.message_type, f.package)
    names += ["    ]", "}"]
    with open(NAMES_OUT, "w") as out:
        out.write("\n".join(names) + "\n")
    print(f"generated: {os.path.relpath(NAMES_OUT, ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
