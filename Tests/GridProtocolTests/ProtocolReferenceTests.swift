import Foundation
import Testing

/// docs/protocol-reference.md is generated from grid.proto (scripts/protocol-reference.py, run by
/// scripts/generate-protos.sh). CI never runs the generator; this checks that the committed
/// reference lists every message and every field with its number, so it cannot fall behind.
@Suite struct ProtocolReferenceTests {
    static let root: URL = {
        var d = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        while d.lastPathComponent != "Tests", d.pathComponents.count > 1 { d.deleteLastPathComponent() }
        return d.deletingLastPathComponent()
    }()

    /// (message, field, number) for every field of every top-level message, read from the .proto.
    static func fields() throws -> [(message: String, field: String, number: Int)] {
        let text = try String(contentsOf: root.appendingPathComponent("Sources/GridProtocol/Proto/computegrid/v1/grid.proto"), encoding: .utf8)
        let field = try Regex(#"^\s*(?:repeated\s+)?(?:map<[^>]+>|[A-Za-z0-9_.]+)\s+([a-z_0-9]+)\s*=\s*(\d+)\s*;"#)
        let message = try Regex(#"^\s*message\s+([A-Za-z0-9_]+)\s*\{"#)
        var stack: [String] = []
        var out: [(String, String, Int)] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let code = line.split(separator: "//", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
            if let m = try message.firstMatch(in: code) {
                stack.append(String(m.output[1].substring ?? ""))
            } else if code.contains("{") {
                stack.append("")  // an enum or oneof block
            }
            if stack.count == 1, !stack[0].isEmpty, let f = try field.firstMatch(in: code) {
                out.append((stack[0], String(f.output[1].substring ?? ""), Int(f.output[2].substring ?? "") ?? -1))
            }
            if code.contains("}") { _ = stack.popLast() }
        }
        return out
    }

    @Test func everyFieldOfGridProtoIsInTheReference() throws {
        let reference = try String(contentsOf: Self.root.appendingPathComponent("docs/protocol-reference.md"), encoding: .utf8)
        let fields = try Self.fields()
        #expect(fields.count > 300, "the .proto parse found only \(fields.count) fields")
        // Each message's section, and in it each field's row with its number.
        let sections = Dictionary(uniqueKeysWithValues: reference.components(separatedBy: "\n### `").dropFirst().map { section in
            (String(section.prefix { $0 != "`" }), section)
        })
        for (message, field, number) in fields {
            guard let section = sections[message] else {
                Issue.record("docs/protocol-reference.md has no section for \(message): run scripts/generate-protos.sh")
                continue
            }
            #expect(section.contains("| `\(field)` | \(number) |"),
                    "docs/protocol-reference.md lacks \(message).\(field) = \(number): run scripts/generate-protos.sh")
        }
    }
}
