/// One name for every computing resource in the network, the same in the protocol, `gridctl`,
/// the HTTP API and the logs (PROTOCOL.md, "Resource names"):
///
///     cg://                                   the network (its national scheduler)
///     cg://<region>                           a region: one regional controller
///     cg://<region>/<node>                    a node (a host running grid-agent)
///     cg://<region>/<node>/<device>           an accelerator
///     cg://<region>/<node>/<device>/<part>    a partition of one (a MIG instance, a tile)
///
/// Each segment is an identifier as the protocol defines it (1–128 bytes of
/// `A-Z a-z 0-9 - _ . :`), so a name never needs escaping and splits on `/` unambiguously.
/// A device segment is the id the agent reports: the vendor's UUID, else the board serial
/// (`sn:<serial>`), else the PCI bus id — stable across reboots and agent restarts. A
/// partition segment is the partition's own id with the device prefix removed (`gi1ci0`,
/// `tile0`, or a `MIG-…` UUID).
public struct ResourceName: Hashable, Sendable, Comparable, CustomStringConvertible, Codable {
    public static let scheme = "cg://"

    public enum Level: String, Sendable, CaseIterable {
        case network, region, node, device, partition
    }

    public let region: RegionID?
    public let node: NodeID?
    public let device: String?
    public let partition: String?

    /// The network itself: `cg://`.
    public static let network = ResourceName(uncheckedRegion: nil, node: nil, device: nil, partition: nil)

    init(uncheckedRegion region: RegionID?, node: NodeID?, device: String?, partition: String?) {
        self.region = region
        self.node = node
        self.device = device
        self.partition = partition
    }

    public init(region: RegionID) {
        self.init(uncheckedRegion: region, node: nil, device: nil, partition: nil)
    }

    public init(region: RegionID, node: NodeID) {
        self.init(uncheckedRegion: region, node: node, device: nil, partition: nil)
    }

    /// A device or a partition of one. `unit` is a schedulable unit id as the region keeps
    /// it: a device id, or a partition id that may start with `<device>/`.
    public init(region: RegionID, node: NodeID, device: String, partition: String? = nil) {
        self.init(uncheckedRegion: region, node: node, device: device, partition: partition.map { Self.partitionSegment($0, of: device) })
    }

    /// A partition's segment: its id without the `<device>/` prefix when it has one
    /// (`GPU-…/gi1ci0` → `gi1ci0`), else the id itself (`MIG-…`).
    public static func partitionSegment(_ partitionID: String, of device: String) -> String {
        partitionID.hasPrefix(device + "/") ? String(partitionID.dropFirst(device.count + 1)) : partitionID
    }

    public var level: Level {
        if partition != nil { return .partition }
        if device != nil { return .device }
        if node != nil { return .node }
        if region != nil { return .region }
        return .network
    }

    /// The name one level up (the network's parent is the network).
    public var parent: ResourceName {
        switch level {
        case .network, .region: return .network
        case .node: return ResourceName(uncheckedRegion: region, node: nil, device: nil, partition: nil)
        case .device: return ResourceName(uncheckedRegion: region, node: node, device: nil, partition: nil)
        case .partition: return ResourceName(uncheckedRegion: region, node: node, device: device, partition: nil)
        }
    }

    /// True when `other` is this resource or lies under it.
    public func contains(_ other: ResourceName) -> Bool {
        var n = other
        while true {
            if n == self { return true }
            if n.level == .network { return false }
            n = n.parent
        }
    }

    public var description: String {
        var s = Self.scheme
        guard let region else { return s }
        s += region.rawValue
        for segment in [node?.rawValue, device, partition] {
            guard let segment else { break }
            s += "/" + segment
        }
        return s
    }

    public static func < (a: ResourceName, b: ResourceName) -> Bool { a.description < b.description }

    /// Parses `cg://…`. Errors name the segment that is wrong and what is allowed.
    public init(parsing text: String) throws(ResourceNameError) {
        guard text.hasPrefix(Self.scheme) else {
            throw ResourceNameError(text: text, problem: "does not start with '\(Self.scheme)'")
        }
        if text.utf8.count > Self.maxLength {
            throw ResourceNameError(text: text, problem: "is longer than \(Self.maxLength) bytes")
        }
        var rest = Substring(text.dropFirst(Self.scheme.count))
        if rest.hasSuffix("/") { rest = rest.dropLast() }  // a trailing slash names the same thing
        if rest.isEmpty {
            self = .network
            return
        }
        let segments = rest.split(separator: "/", omittingEmptySubsequences: false)
        let levels: [Level] = [.region, .node, .device, .partition]
        if segments.count > levels.count {
            throw ResourceNameError(text: text, problem: "has \(segments.count) segments; at most 4 (region/node/device/partition)")
        }
        for (i, segment) in segments.enumerated() {
            if let p = IdentifierRules.problem(with: String(segment)) {
                throw ResourceNameError(text: text, problem: "\(levels[i].rawValue) '\(segment)' \(p)")
            }
        }
        func at(_ i: Int) -> String? { i < segments.count ? String(segments[i]) : nil }
        self.init(uncheckedRegion: at(0).map(RegionID.init), node: at(1).map(NodeID.init), device: at(2), partition: at(3))
    }

    /// `cg://` plus four maximal segments and their slashes.
    public static let maxLength = scheme.utf8.count + 4 * IdentifierRules.maxLength + 3

    /// Parses `cg://…`, or takes a bare id as a name of `level` (how gridctl reads
    /// `gridctl node n1`); nil region means "any region".
    public static func nodeReference(_ text: String) throws(ResourceNameError) -> (region: RegionID?, node: NodeID, unit: String?) {
        if text.hasPrefix(scheme) {
            let name = try ResourceName(parsing: text)
            guard let node = name.node else {
                throw ResourceNameError(text: text, problem: "names a \(name.level.rawValue), not a node or a device of one")
            }
            var unit = name.device
            if let d = name.device, let p = name.partition { unit = d + "/" + p }
            return (name.region, node, unit)
        }
        if let p = IdentifierRules.problem(with: text) {
            throw ResourceNameError(text: text, problem: "is neither a node id (\(p)) nor a name cg://REGION/NODE[/DEVICE[/PARTITION]]")
        }
        return (nil, NodeID(text), nil)
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        do { self = try ResourceName(parsing: text) } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: error.description))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

public struct ResourceNameError: Error, Sendable, Equatable, CustomStringConvertible {
    public let text: String
    public let problem: String
    public var description: String {
        let shown = text.utf8.count > 80 ? String(text.prefix(80)) + "…" : text
        return "resource name '\(shown)' \(problem)"
    }
}
