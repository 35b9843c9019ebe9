import Foundation
import Yams

/// Reads a YAML configuration (a controller's, an agent's, a job file) and reports *every*
/// problem at once, each with its line and column: YAML syntax, unknown keys at any level,
/// values of the wrong type. Decoding goes on past a bad value (the key keeps its default) so
/// one run shows all of them; range checks (`problems()`) are located the same way.
public enum ConfigFile {
    /// One problem found while decoding: where (the key path) and what.
    public struct Problem: Sendable {
        public var path: [String]
        public var message: String
    }

    /// Collects problems during one decode (handed to the decoders through `userInfo`).
    public final class Collector: @unchecked Sendable {
        var problems: [Problem] = []
        func add(_ path: [any CodingKey], _ message: String) {
            problems.append(Problem(path: path.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }, message: message))
        }
    }

    /// The collector of the decode in progress on this task (decoding is synchronous).
    @TaskLocal static var active: Collector?

    /// What a decode gives: the value (keys with problems keep their defaults), the YAML tree
    /// (for locating later problems) and the problems found, each "line L, column C: key: what".
    public struct Decoded<T> {
        public var value: T
        public var node: Node?
        public var problems: [String]
    }

    /// Decodes `text`; throws a `ConfigError` only when there is no value at all (bad YAML, a
    /// document that is not a mapping). Otherwise the caller adds its own checks to `problems`
    /// (located with `locate`) and reports them all together.
    public static func decode<T: Decodable>(_ type: T.Type, from text: String, source: String) throws -> Decoded<T> {
        let complex = complexKeys(in: text)
        if !complex.isEmpty { throw ConfigError(source: source, problems: complex) }
        let node: Node?
        do {
            node = try Yams.compose(yaml: text)
        } catch let e as YamlError {
            throw ConfigError(source: source, problems: [syntax(e)])
        }
        guard let node else {
            return Decoded(value: try YAMLDecoder().decode(type, from: "{}"), node: nil, problems: [])
        }
        let traps = baseSixtyTraps(in: node)
        if !traps.isEmpty { throw ConfigError(source: source, problems: traps) }
        let collector = Collector()
        var value: T?
        do {
            value = try ConfigFile.$active.withValue(collector) { try YAMLDecoder().decode(type, from: node) }
        } catch let e as DecodingError {
            collector.problems.append(problem(e))
        } catch let e as YamlError {
            collector.problems.append(Problem(path: [], message: syntax(e)))
        }
        let problems = collector.problems.map { locate($0, in: node) }
        guard let value else { throw ConfigError(source: source, problems: problems) }
        return Decoded(value: value, node: node, problems: problems)
    }

    /// Mapping keys that are not plain values: the explicit key indicator (`? `) and flow
    /// collections used as keys (`[a]: b`, `{a: b}: c`). No configuration, job or service file
    /// has them, and Yams' duplicate-key check compares such keys in time exponential in their
    /// nesting: 1.2 KB of nested `? -` stopped the loader for minutes (found by the
    /// controller-config fuzz target; through `POST /api/v1/jobs` a job file reaches the
    /// national scheduler). Refused before Yams sees the text, each with its line and column.
    /// A lexical scan: quoted strings, comments and block scalars (`|`, `>`) are skipped.
    static func complexKeys(in text: String) -> [String] {
        var out: [String] = []
        var quote: UInt8? = nil          // inside a quoted scalar that may span lines
        var blockIndent: Int? = nil      // inside a block scalar: lines indented more than this
        var lineNumber = 0
        for line in text.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            let bytes = Array(line.last == UInt8(ascii: "\r") ? line.dropLast() : line[...])
            let indent = bytes.prefix(while: { $0 == 0x20 }).count
            if let b = blockIndent {
                if indent == bytes.count || indent > b { continue }  // blank or content
                blockIndent = nil
            }
            var i = quote == nil ? indent : 0
            var tokenStart = quote == nil
            var lastSignificant = -1     // index of the last byte outside quotes and comments
            while i < bytes.count {
                let c = bytes[i]
                if let q = quote {
                    if q == UInt8(ascii: "\"") && c == UInt8(ascii: "\\") { i += 2; continue }
                    if c == q {
                        if q == UInt8(ascii: "'"), i + 1 < bytes.count, bytes[i + 1] == q { i += 2; continue }
                        quote = nil
                        lastSignificant = i
                        tokenStart = false
                    }
                    i += 1
                    continue
                }
                let next: UInt8? = i + 1 < bytes.count ? bytes[i + 1] : nil
                let spaceAfter = next == nil || next == 0x20 || next == 0x09
                if c == UInt8(ascii: "#"), i == 0 || bytes[i - 1] == 0x20 || bytes[i - 1] == 0x09 { break }
                if tokenStart {
                    if c == UInt8(ascii: "\"") || c == UInt8(ascii: "'") { quote = c; i += 1; continue }
                    if c == UInt8(ascii: "?") && spaceAfter {
                        out.append("line \(lineNumber), column \(i + 1): an explicit mapping key ('? '): keys here are plain names; write 'name: value'")
                        return out
                    }
                }
                if (c == UInt8(ascii: "]") || c == UInt8(ascii: "}")) {
                    var j = i + 1
                    while j < bytes.count, bytes[j] == 0x20 || bytes[j] == 0x09 { j += 1 }
                    if j < bytes.count, bytes[j] == UInt8(ascii: ":"),
                       j + 1 == bytes.count || [0x20, 0x09, UInt8(ascii: ","), UInt8(ascii: "]"), UInt8(ascii: "}")].contains(bytes[j + 1]) {
                        out.append("line \(lineNumber), column \(i + 1): a list or mapping used as a mapping key: keys here are plain names; write 'name: value'")
                        return out
                    }
                }
                if c != 0x20 && c != 0x09 { lastSignificant = i }
                // A node starts at the line's start, after a sequence indicator ('- '), after a
                // key's ': ' and after a flow indicator; blanks keep the state; anything else is
                // inside a plain scalar.
                if c != 0x20 && c != 0x09 {
                    tokenStart = c == UInt8(ascii: "[") || c == UInt8(ascii: "{") || c == UInt8(ascii: ",")
                        || (c == UInt8(ascii: ":") && spaceAfter) || (c == UInt8(ascii: "-") && tokenStart && spaceAfter)
                }
                i += 1
            }
            // A block scalar header ends its line: '|' or '>' with optional indicators.
            if quote == nil, lastSignificant >= 0 {
                var k = lastSignificant
                while k > 0, bytes[k] == UInt8(ascii: "+") || bytes[k] == UInt8(ascii: "-") || (bytes[k] >= 0x30 && bytes[k] <= 0x39) { k -= 1 }
                if bytes[k] == UInt8(ascii: "|") || bytes[k] == UInt8(ascii: ">"), k == 0 || bytes[k - 1] == 0x20 || bytes[k - 1] == 0x09 {
                    blockIndent = indent
                }
            }
        }
        return out
    }

    /// Yams reads a plain scalar holding ':' as a YAML 1.1 base-60 integer when it decodes an
    /// integer ("1:30" is 90), in unchecked arithmetic: a large one, or one of 11 parts or
    /// more, stops the process (found by the job-file fuzz target). Such scalars are refused
    /// before decoding, each with its line and column.
    static func baseSixtyTraps(in root: Node) -> [String] {
        var out: [String] = []
        func visit(_ node: Node) {
            switch node {
            case .scalar(let s):
                guard s.style == .plain || s.style == .any, s.string.contains(":"), overflowsBaseSixty(s.string) else { return }
                let at = s.mark.map { "line \($0.line), column \($0.column): " } ?? ""
                out.append("\(at)'\(s.string.prefix(80))' is a base-60 number (YAML 1.1 'a:b:c') too large for an integer; quote it if it is text")
            case .mapping(let m): for (_, v) in m { visit(v) }
            case .sequence(let q): for v in q { visit(v) }
            case .alias: return
            }
        }
        visit(root)
        return out
    }

    /// Whether Yams' base-60 reading of `text` (as an `Int`) would overflow.
    static func overflowsBaseSixty(_ text: String) -> Bool {
        var t = text.replacingOccurrences(of: "_", with: "")
        if t.hasPrefix("-") || t.hasPrefix("+") { t.removeFirst() }
        let parts = t.components(separatedBy: ":").map { Int($0, radix: 10) }
        guard !parts.contains(where: { $0 == nil }) else { return false }  // not a number: Yams gives up
        var base = 1, value = 0
        for digit in parts.reversed().map({ $0! }) {
            let (product, o1) = digit.multipliedReportingOverflow(by: base)
            let (sum, o2) = value.addingReportingOverflow(product)
            let (next, o3) = base.multipliedReportingOverflow(by: 60)
            if o1 || o2 || o3 { return true }
            value = sum
            base = next
        }
        return value == .min
    }

    /// Prefixes each `problems()` line that starts with a key path ("accelerators.count: …")
    /// with that key's line and column.
    public static func locate(_ problems: [String], in node: Node?) -> [String] {
        guard let node else { return problems }
        return problems.map { p in
            guard let colon = p.firstIndex(of: ":") else { return p }
            let head = p[..<colon]
            guard !head.isEmpty, head.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "." || $0 == "[" || $0 == "]" || $0 == "(" || $0 == ")" }) else { return p }
            let path = head.split(separator: ".").map { part -> String in
                // "regions[0] (west)" style: keep the index, drop the note.
                String(part.split(separator: " ").first ?? part)
            }.flatMap { part -> [String] in
                guard let bracket = part.firstIndex(of: "[") else { return [part] }
                return [String(part[..<bracket]), String(part[bracket...])]
            }
            guard let mark = find(path, in: node)?.mark else { return p }
            return "line \(mark.line), column \(mark.column): \(p)"
        }
    }

    /// Problems in the order of the file (those without a line last, in their order).
    public static func inFileOrder(_ problems: [String]) -> [String] {
        func line(_ p: String) -> Int {
            guard p.hasPrefix("line "), let n = Int(p.dropFirst(5).prefix { $0.isNumber }) else { return .max }
            return n
        }
        return problems.enumerated().sorted { (line($0.element), $0.offset) < (line($1.element), $1.offset) }.map(\.element)
    }

    static func locate(_ p: Problem, in node: Node) -> String {
        let path = p.path.joined(separator: ".").replacingOccurrences(of: ".[", with: "[")
        let at = path.isEmpty ? "" : "\(path): "
        // The deepest node of the path that exists (a missing key: its parent).
        var probe = p.path
        while !probe.isEmpty {
            if let mark = find(probe, in: node)?.mark { return "line \(mark.line), column \(mark.column): \(at)\(p.message)" }
            probe.removeLast()
        }
        return "\(at)\(p.message)"
    }

    /// The node at a key path (mapping keys; "[i]" indexes sequences). Returns the *key* node
    /// for mapping entries, so the line is the one the key is written on.
    static func find(_ path: [String], in root: Node) -> Node? {
        var node = root
        var keyNode: Node? = nil
        for part in path {
            if part.hasPrefix("["), let i = Int(part.dropFirst().dropLast()), case .sequence(let s) = node, i < s.count {
                node = s[i]
                keyNode = node
            } else if case .mapping(let m) = node, let entry = m.first(where: { $0.key.string == part }) {
                node = entry.value
                keyNode = entry.key
            } else {
                return nil
            }
        }
        return keyNode ?? node
    }

    static func syntax(_ e: YamlError) -> String {
        switch e {
        case let .scanner(context, problem, mark, _), let .parser(context, problem, mark, _), let .composer(context, problem, mark, _):
            return "line \(mark.line), column \(mark.column): YAML syntax: \(context.map { "\($0.text) (line \($0.mark.line)), " } ?? "")\(problem)"
        default:
            return "YAML: \(e)"
        }
    }

    static func problem(_ e: DecodingError) -> Problem {
        func keys(_ p: [any CodingKey]) -> [String] { p.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue } }
        switch e {
        case .typeMismatch(let type, let ctx):
            return Problem(path: keys(ctx.codingPath), message: "expected \(describe(type))")
        case .valueNotFound(let type, let ctx):
            return Problem(path: keys(ctx.codingPath), message: "missing \(describe(type)) value")
        case .keyNotFound(let key, let ctx):
            return Problem(path: keys(ctx.codingPath + [key]), message: "required key missing")
        case .dataCorrupted(let ctx):
            return Problem(path: keys(ctx.codingPath), message: ctx.debugDescription)
        @unknown default:
            return Problem(path: [], message: "\(e)")
        }
    }

    /// "Int" → "a whole number", for people who do not read Swift.
    static func describe(_ type: Any.Type) -> String {
        switch "\(type)" {
        case "Int", "Int64", "Int32", "UInt32", "UInt64": return "a whole number"
        case "Double", "Float": return "a number"
        case "Bool": return "true or false"
        case "String": return "text"
        case let t where t.hasPrefix("Array"): return "a list"
        case let t where t.hasPrefix("Dictionary"): return "a mapping (key: value)"
        default: return "\(type)"
        }
    }

}
