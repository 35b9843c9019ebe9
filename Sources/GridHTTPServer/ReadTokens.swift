import Foundation
import GridCore
import Synchronization

/// What token files share (the controllers' `http_token_file` and the agent's): `#` comments and
/// blank lines skipped, fields split on spaces and tabs, each token at least 16 characters and
/// on one line only, looked up in constant time per entry.
public enum TokenFile {
    /// The file's lines with their numbers and fields, comments and blank lines left out.
    public static func lines(_ path: String) throws -> [(number: Int, fields: [String])] {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw ConfigError(source: path, problems: ["cannot read the token file: \(error.localizedDescription)"])
        }
        return text.split(separator: "\n", omittingEmptySubsequences: false).enumerated().compactMap { i, raw in
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { return nil }
            return (i + 1, line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init))
        }
    }

    /// What is wrong with `token` of `name` on `line` (too short, or already on another line), or
    /// nil, and then it counts as seen.
    public static func problem(token: String, name: String, line: Int, seen: inout [String: Int]) -> String? {
        guard token.utf8.count >= 16 else {
            return "line \(line): the token of '\(name)' is shorter than 16 characters; use e.g. `openssl rand -hex 32`"
        }
        if let first = seen[token] { return "line \(line): the token of '\(name)' is also on line \(first); give each its own" }
        seen[token] = line
        return nil
    }

    /// The value of the entry whose token is `given`, comparing every byte of every entry.
    public static func match<Value>(_ given: String, in entries: [(token: [UInt8], value: Value)]) -> Value? {
        let bytes = Array(given.utf8)
        var found: Value?
        for e in entries {
            var diff = UInt8(e.token.count == bytes.count ? 0 : 1)
            for i in 0..<e.token.count { diff |= e.token[i] ^ (i < bytes.count ? bytes[i] : 0) }
            if diff == 0 { found = e.value }
        }
        return found
    }
}

/// Bearer tokens that may read a listener's protected routes, from a file of one token per line:
///
///     <name>  <token>
///
/// Names are for logs. Reloadable: a file with a problem leaves the tokens in force and the
/// error names the file and line.
public final class ReadTokens: Sendable {
    private let entries = Mutex<[(token: [UInt8], value: String)]>([])
    public let path: String

    /// `path` "" = no tokens: the protected routes are open (as without this file).
    public init(path: String) throws {
        self.path = path
        try reload()
    }

    public var configured: Bool { !path.isEmpty }
    public var count: Int { entries.withLock { $0.count } }

    public func reload() throws {
        guard !path.isEmpty else { return }
        var out: [(token: [UInt8], value: String)] = []
        var problems: [String] = []
        var seen: [String: Int] = [:]
        for (number, parts) in try TokenFile.lines(path) {
            guard parts.count == 2 else {
                problems.append("line \(number): expected '<name> <token>', got \(parts.count) field(s)")
                continue
            }
            if let p = TokenFile.problem(token: parts[1], name: parts[0], line: number, seen: &seen) {
                problems.append(p)
                continue
            }
            out.append((Array(parts[1].utf8), parts[0]))
        }
        if !problems.isEmpty { throw ConfigError(source: path, problems: problems) }
        if out.isEmpty { throw ConfigError(source: path, problems: ["no token in the file: nothing could read the protected routes"]) }
        entries.withLock { $0 = out }
    }

    /// The name of the token an `Authorization` header carries (`Bearer <token>`), or nil.
    public func name(authorization header: String?) -> String? {
        guard let header, header.count > 7, header.prefix(7).lowercased() == "bearer " else { return nil }
        let given = header.dropFirst(7).trimmingCharacters(in: .whitespaces)
        return entries.withLock { TokenFile.match(given, in: $0) }
    }
}
