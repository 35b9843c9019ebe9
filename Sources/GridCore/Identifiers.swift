/// Identifiers are plain strings on the wire; these wrappers keep a node id from being
/// passed where a job id is expected.
public protocol GridIdentifier: RawRepresentable, Hashable, Comparable, Codable, Sendable,
    CustomStringConvertible, ExpressibleByStringLiteral where RawValue == String {
    init(_ raw: String)
}

extension GridIdentifier {
    public init(rawValue: String) { self.init(rawValue) }
    public init(stringLiteral value: String) { self.init(value) }
    public var description: String { rawValue }
    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
}

/// A logical compute node. Carried in payloads, never derived from a socket identity, so one
/// connection can carry many (simulated) nodes.
public struct NodeID: GridIdentifier {
    public let rawValue: String
    public init(_ raw: String) { rawValue = raw }
}

/// A region: one regional controller.
public struct RegionID: GridIdentifier {
    public let rawValue: String
    public init(_ raw: String) { rawValue = raw }
}

/// A job, assigned by the national scheduler (or given by the submitter for idempotent retries).
public struct JobID: GridIdentifier {
    public let rawValue: String
    public init(_ raw: String) { rawValue = raw }
}

/// One attempt to run a job on one node. A job that is re-placed gets a new assignment id.
public struct AssignmentID: GridIdentifier {
    public let rawValue: String
    public init(_ raw: String) { rawValue = raw }
}

/// Checks that an identifier is safe to log, store and pass on a command line.
public enum IdentifierRules {
    public static let maxLength = 128

    /// Returns a reason when `raw` is not acceptable as an id, nil when it is.
    public static func problem(with raw: String) -> String? {
        if raw.isEmpty { return "is empty" }
        if raw.utf8.count > maxLength { return "is longer than \(maxLength) bytes" }
        for scalar in raw.unicodeScalars {
            let ok = (scalar >= "a" && scalar <= "z") || (scalar >= "A" && scalar <= "Z")
                || (scalar >= "0" && scalar <= "9") || scalar == "-" || scalar == "_" || scalar == "."
                || scalar == ":"
            if !ok { return "contains '\(scalar)'; use letters, digits, '-', '_', '.', ':'" }
        }
        return nil
    }
}
