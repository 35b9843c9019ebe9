import Foundation

/// A coding key for any string, used to list the keys a config file actually contains.
public struct AnyCodingKey: CodingKey, Hashable, Sendable {
    public var stringValue: String
    public var intValue: Int?
    public init(_ s: String) { stringValue = s }
    public init?(stringValue: String) { self.stringValue = stringValue }
    public init?(intValue: Int) {
        stringValue = String(intValue)
        self.intValue = intValue
    }
}

/// Problems in a configuration file or override, each naming the key and what to do.
public struct ConfigError: Error, CustomStringConvertible, Sendable, Equatable {
    public var source: String
    public var problems: [String]
    public init(source: String, problems: [String]) {
        self.source = source
        self.problems = problems
    }
    public var description: String {
        "configuration \(source) is invalid:\n" + problems.map { "  - \($0)" }.joined(separator: "\n")
    }
}

extension Decoder {
    /// Throws when the mapping at this level holds keys the config type does not know, so a
    /// typo ("hearbeat_interval") is an error instead of a silently ignored setting.
    public func rejectUnknownKeys(_ known: [String]) throws {
        let container = try container(keyedBy: AnyCodingKey.self)
        let unknown = container.allKeys.filter { !known.contains($0.stringValue) }.sorted { $0.stringValue < $1.stringValue }
        guard !unknown.isEmpty else { return }
        // Read through ConfigFile: each unknown key is a problem at its own line; decoding goes on.
        if let collector = ConfigFile.active {
            for key in unknown {
                collector.add(codingPath + [key], "unknown key; known here: \(known.sorted().joined(separator: ", "))")
            }
            return
        }
        let path = codingPath.map(\.stringValue).joined(separator: ".")
        let at = path.isEmpty ? "top level" : "'\(path)'"
        throw DecodingError.dataCorrupted(.init(
            codingPath: codingPath,
            debugDescription: "unknown key(s) \(unknown.map { "'\($0.stringValue)'" }.joined(separator: ", ")) at \(at); known keys: \(known.sorted().joined(separator: ", "))"))
    }
}

extension KeyedDecodingContainer {
    /// `decodeIfPresent` falling back to a default: every config key is optional in files.
    /// `decodeIfPresent` that, read through `ConfigFile`, records a value that does not decode
    /// and gives nil, so decoding goes on.
    public func tolerant<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
        do {
            return try decodeIfPresent(type, forKey: key)
        } catch let e as DecodingError {
            guard let collector = ConfigFile.active else { throw e }
            collector.problems.append(ConfigFile.problem(e))
            return nil
        }
    }

    /// Read through `ConfigFile`, a value that does not decode is recorded as a problem and the
    /// default stands in, so decoding goes on and every problem is reported at once.
    public func value<T: Decodable>(_ key: Key, default value: T) throws -> T {
        do {
            return try decodeIfPresent(T.self, forKey: key) ?? value
        } catch let e as DecodingError {
            guard let collector = ConfigFile.active else { throw e }
            collector.problems.append(ConfigFile.problem(e))
            return value
        }
    }

}

/// Renders a DecodingError as "key.path: what went wrong" for config diagnostics.
public func describeDecodingError(_ error: any Error) -> String {
    guard let e = error as? DecodingError else { return String(describing: error) }
    func path(_ p: [any CodingKey]) -> String {
        let s = p.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        return s.isEmpty ? "top level" : s
    }
    switch e {
    case .typeMismatch(let type, let ctx):
        return "\(path(ctx.codingPath)): expected \(type); \(ctx.debugDescription)"
    case .valueNotFound(let type, let ctx):
        return "\(path(ctx.codingPath)): missing \(type) value"
    case .keyNotFound(let key, let ctx):
        return "\(path(ctx.codingPath + [key])): required key missing"
    case .dataCorrupted(let ctx):
        return "\(path(ctx.codingPath)): \(ctx.debugDescription)"
    @unknown default:
        return String(describing: e)
    }
}

/// Where an HTTP listener binds: `host:port` (port 0 = any free port), or `off`.
public enum HTTPListen: Sendable, Equatable {
    case off
    case on(host: String, port: Int)

    public static func parse(_ text: String) -> Result<HTTPListen, ConfigValueError> {
        let t = text.trimmingCharacters(in: .whitespaces)
        if t.isEmpty || t.lowercased() == "off" { return .success(.off) }
        guard let colon = t.lastIndex(of: ":") else {
            return .failure(ConfigValueError("'\(text)' is not host:port (e.g. 127.0.0.1:7780; port 0 = any free port; off = none)"))
        }
        var host = String(t[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return .failure(ConfigValueError("'\(text)': the host is empty (use 127.0.0.1 or 0.0.0.0)")) }
        guard let port = Int(t[t.index(after: colon)...]), (0...65_535).contains(port) else {
            return .failure(ConfigValueError("'\(text)': the port must be 0…65535 (0 = any free port)"))
        }
        return .success(.on(host: host, port: port))
    }
}

extension HTTPListen {
    /// Whether the listener is reachable from this host only (127.0.0.0/8, ::1, localhost).
    public var isLoopback: Bool {
        guard case .on(let host, _) = self else { return true }
        let h = host.lowercased()
        return h == "localhost" || h == "::1" || h.hasPrefix("127.")
    }
}

/// Whether an HTTP API's reads need a bearer token (`http_read`).
public enum HTTPReadAccess: String, Codable, Sendable, CaseIterable {
    /// Anyone who reaches the listener reads.
    case open
    /// Reads need a token too (any right); a tenant's token reads its own work only.
    case token
    /// `token` when the listener is not loopback, `open` when it is.
    case auto

    /// `auto` decided for a listener.
    public func resolved(for listener: HTTPListen) -> HTTPReadAccess {
        self == .auto ? (listener.isLoopback ? .open : .token) : self
    }
}

/// A configuration value that breaks a rule, said so a person can fix it.
public struct ConfigValueError: Error, CustomStringConvertible, Sendable, Equatable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// How a daemon writes its log lines.
public enum LogFormat: String, Codable, Sendable, CaseIterable {
    case text, json
}


/// The files an HTTPS listener reads, as a config names them (`http_tls_cert`, `http_tls_key`,
/// `http_tls_client_ca`; controllers and agents alike), and what is wrong with them.
public struct HTTPTLSFiles: Sendable, Equatable {
    /// PEM certificate chain and its PEM private key: both or neither.
    public var cert: String
    public var key: String
    /// PEM CA certificates whose client certificates are accepted (mutual TLS); "" = none asked.
    public var clientCA: String

    public init(cert: String, key: String, clientCA: String) {
        self.cert = cert
        self.key = key
        self.clientCA = clientCA
    }

    public var enabled: Bool { !cert.isEmpty }

    /// Each problem names its key.
    public func problems() -> [String] {
        var out: [String] = []
        if cert.isEmpty != key.isEmpty {
            out.append(cert.isEmpty ? "http_tls_cert: required with http_tls_key (the certificate chain, PEM)"
                                    : "http_tls_key: required with http_tls_cert (the certificate's private key, PEM)")
        }
        if !clientCA.isEmpty, cert.isEmpty {
            out.append("http_tls_client_ca: needs http_tls_cert and http_tls_key (client certificates are asked for over HTTPS only)")
        }
        for (k, path) in [("http_tls_cert", cert), ("http_tls_key", key), ("http_tls_client_ca", clientCA)] where !path.isEmpty {
            if !FileManager.default.isReadableFile(atPath: path) { out.append("\(k): cannot read '\(path)'") }
        }
        return out
    }
}
