import Foundation
import GridCore
import Synchronization

/// Bearer tokens that may read a listener's protected routes, from a file of one token per line:
///
///     <name>  <token>
///
/// `#` comments; a token is at least 16 characters (`openssl rand -hex 32`) and on one line
/// only. Names are for logs. Compared in constant time per entry. Reloadable: a file with a
/// problem leaves the tokens in force and the error names the file and line.
public final class ReadTokens: Sendable {
    private let entries = Mutex<[(name: String, token: [UInt8])]>([])
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
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw ConfigError(source: path, problems: ["cannot read the token file: \(error.localizedDescription)"])
        }
        var out: [(String, [UInt8])] = []
        var problems: [String] = []
        var seen: [String: Int] = [:]
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            let parts = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            guard parts.count == 2 else {
                problems.append("line \(i + 1): expected '<name> <token>', got \(parts.count) field(s)")
                continue
            }
            guard parts[1].utf8.count >= 16 else {
                problems.append("line \(i + 1): the token of '\(parts[0])' is shorter than 16 characters; use e.g. `openssl rand -hex 32`")
                continue
            }
            if let first = seen[parts[1]] {
                problems.append("line \(i + 1): the token of '\(parts[0])' is also on line \(first); give each its own")
                continue
            }
            seen[parts[1]] = i + 1
            out.append((parts[0], Array(parts[1].utf8)))
        }
        if !problems.isEmpty { throw ConfigError(source: path, problems: problems) }
        if out.isEmpty { throw ConfigError(source: path, problems: ["no token in the file: nothing could read the protected routes"]) }
        entries.withLock { $0 = out }
    }

    /// The name of the token an `Authorization` header carries (`Bearer <token>`), or nil.
    public func name(authorization header: String?) -> String? {
        guard let header, header.count > 7, header.prefix(7).lowercased() == "bearer " else { return nil }
        let given = Array(header.dropFirst(7).trimmingCharacters(in: .whitespaces).utf8)
        return entries.withLock { list in
            var found: String?
            for e in list {
                var diff = UInt8(e.token.count == given.count ? 0 : 1)
                for i in 0..<e.token.count { diff |= e.token[i] ^ (i < given.count ? given[i] : 0) }
                if diff == 0 { found = e.name }
            }
            return found
        }
    }
}
