import Foundation
import GridCore
import Synchronization

/// A token file (the controllers' `http_token_file` and the agent's): `<name> <token> …` per
/// line, `#` comments and blank lines skipped, fields split on spaces and tabs. Each token is at
/// least 16 characters and on one line only; `readLine` reads the rest of a line's format.
/// Tokens are looked up in constant time per entry. Reloadable: a file with a problem leaves the
/// tokens in force, and the error names the file and every bad line.
public final class TokenList<Value: Sendable>: Sendable {
    /// A line's fields (the name and the token first) → its token and what it stands for; or why not.
    public typealias LineReader = @Sendable (_ fields: [String]) -> Result<(token: String, value: Value), LineProblem>

    public struct LineProblem: Error {
        public var message: String
        public init(_ message: String) { self.message = message }
    }

    private let entries = Mutex<[(token: [UInt8], value: Value)]>([])
    private let readLine: LineReader
    private let emptyProblem: String?
    public let path: String

    /// `path` "" = no tokens. `emptyProblem`: a file without a token is refused with it (nil: allowed).
    public init(path: String, emptyProblem: String? = nil, readLine: @escaping LineReader) throws {
        self.path = path
        self.readLine = readLine
        self.emptyProblem = emptyProblem
        try reload()
    }

    public var configured: Bool { !path.isEmpty }
    public var count: Int { entries.withLock { $0.count } }

    public func reload() throws {
        guard !path.isEmpty else { return }
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw ConfigError(source: path, problems: ["cannot read the token file: \(error.localizedDescription)"])
        }
        var out: [(token: [UInt8], value: Value)] = []
        var problems: [String] = []
        var seen: [String: Int] = [:]
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            let number = i + 1
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            // Every format is `<name> <token> …`: the token's own checks first, so a token on a
            // line refused for its other fields still counts as taken.
            if fields.count >= 2 {
                let (name, token) = (fields[0], fields[1])
                guard token.utf8.count >= 16 else {
                    problems.append("line \(number): the token of '\(name)' is shorter than 16 characters; use e.g. `openssl rand -hex 32`")
                    continue
                }
                if let first = seen[token] {
                    problems.append("line \(number): the token of '\(name)' is also on line \(first); give each its own")
                    continue
                }
                seen[token] = number
            }
            switch readLine(fields) {
            case .failure(let p): problems.append("line \(number): \(p.message)")
            case .success(let e): out.append((Array(e.token.utf8), e.value))
            }
        }
        if !problems.isEmpty { throw ConfigError(source: path, problems: problems) }
        if out.isEmpty, let emptyProblem { throw ConfigError(source: path, problems: [emptyProblem]) }
        entries.withLock { $0 = out }
    }

    /// What `token` stands for, comparing every byte of every entry; nil for one not in the file.
    public func value(for token: String) -> Value? {
        let given = Array(token.utf8)
        return entries.withLock { list in
            var found: Value?
            for e in list {
                var diff = UInt8(e.token.count == given.count ? 0 : 1)
                for i in 0..<e.token.count { diff |= e.token[i] ^ (i < given.count ? given[i] : 0) }
                if diff == 0 { found = e.value }
            }
            return found
        }
    }
}

/// Bearer tokens that may read a listener's protected routes (the agent's `http_token_file`):
///
///     <name>  <token>
///
/// Each stands for its name (for logs).
public typealias ReadTokens = TokenList<String>

extension TokenList where Value == String {
    /// `path` "" = no tokens: the protected routes are open (as without this file).
    public convenience init(path: String) throws {
        try self.init(path: path, emptyProblem: "no token in the file: nothing could read the protected routes") { fields in
            guard fields.count == 2 else { return .failure(.init("expected '<name> <token>', got \(fields.count) field(s)")) }
            return .success((fields[1], fields[0]))
        }
    }

    /// The name of the token an `Authorization` header carries (`Bearer <token>`), or nil.
    public func name(authorization header: String?) -> String? {
        guard let header, header.count > 7, header.prefix(7).lowercased() == "bearer " else { return nil }
        return value(for: header.dropFirst(7).trimmingCharacters(in: .whitespaces))
    }
}
