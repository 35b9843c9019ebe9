import Foundation
import GridCore

/// What the regional placer sees: ready nodes with their devices and which are taken.
public struct RegionSnapshot: Sendable {
    public struct Node: Sendable {
        public var id: NodeID
        public var devices: [DeviceInventory]
        public var busyDeviceIDs: Set<String>
        public init(id: NodeID, devices: [DeviceInventory], busyDeviceIDs: Set<String> = []) {
            self.id = id
            self.devices = devices
            self.busyDeviceIDs = busyDeviceIDs
        }
    }
    public var nodes: [Node]
    public init(nodes: [Node]) { self.nodes = nodes }
}

public struct PlacementRequest: Sendable, Hashable {
    public var job: JobID
    public var accelerators: AcceleratorRequest
    public init(job: JobID, accelerators: AcceleratorRequest) {
        self.job = job
        self.accelerators = accelerators
    }
}

public struct PlacementPolicy: Sendable, Codable, Hashable {
    /// Whether devices reported `degraded` may take work (they are still correct, only slower).
    public var allowDegraded: Bool
    public init(allowDegraded: Bool = true) { self.allowDegraded = allowDegraded }

    enum CodingKeys: String, CodingKey, CaseIterable { case allowDegraded = "allow_degraded" }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.allCases.map(\.rawValue))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        allowDegraded = try c.value(.allowDegraded, default: true)
    }
}

/// The placer's decision for one tick: which jobs go where, and why the rest wait.
public struct PlacementPlan: Sendable, Equatable {
    public struct Placement: Sendable, Equatable {
        public var job: JobID
        public var node: NodeID
        public var deviceIDs: [String]
    }
    public var placements: [Placement]
    /// Jobs left queued, with the reason in words.
    public var waiting: [JobID: String]
}

/// Regional placement: `(snapshot, requests, policy) -> plan`. Pure and deterministic.
///
/// Requests are taken in order (FIFO). Each goes to the node whose eligible free devices fit
/// it best: lowest adequate grade first (circular utilization: keep frontier parts for work
/// that needs them), then least memory beyond the request, then node id.
public enum RegionPlacement {
    public static func plan(snapshot: RegionSnapshot, requests: [PlacementRequest], policy: PlacementPolicy) -> PlacementPlan {
        var busy: [NodeID: Set<String>] = [:]
        for n in snapshot.nodes { busy[n.id] = n.busyDeviceIDs }
        var placements: [PlacementPlan.Placement] = []
        var waiting: [JobID: String] = [:]

        for request in requests {
            let want = request.accelerators
            var best: (score: Score, node: NodeID, devices: [DeviceInventory])?
            var anyCapable = false
            for node in snapshot.nodes {
                let eligible = node.devices.filter { eligibleDevice($0, for: want, policy: policy) }
                if eligible.count >= want.count { anyCapable = true }
                let free = eligible.filter { !(busy[node.id]?.contains($0.id) ?? false) }
                guard free.count >= want.count else { continue }
                let chosen = Array(free.sorted(by: deviceOrder).prefix(want.count))
                let score = Score(devices: chosen, request: want, node: node.id)
                if best == nil || score < best!.score { best = (score, node.id, chosen) }
            }
            if let best {
                placements.append(.init(job: request.job, node: best.node, deviceIDs: best.devices.map(\.id)))
                busy[best.node, default: []].formUnion(best.devices.map(\.id))
            } else {
                waiting[request.job] = anyCapable
                    ? "waiting for \(want.count) free device(s) matching \(describe(want))"
                    : "no ready node has \(want.count) healthy device(s) matching \(describe(want))"
            }
        }
        return PlacementPlan(placements: placements, waiting: waiting)
    }

    /// Whether a device satisfies every constraint of the request and is healthy enough.
    public static func eligibleDevice(_ d: DeviceInventory, for want: AcceleratorRequest, policy: PlacementPolicy) -> Bool {
        switch d.health.state {
        case .healthy: break
        case .degraded: if !policy.allowDegraded { return false }
        case .unknown, .unhealthy: return false
        }
        if d.grade == .r { return false }
        if let v = want.vendor, d.vendor != v { return false }
        if let m = want.model, !m.isEmpty, d.model.range(of: m, options: .caseInsensitive) == nil { return false }
        if let mem = want.minMemoryMiB, (d.memoryTotalMiB ?? 0) < mem { return false }
        return true
    }

    public static func describe(_ want: AcceleratorRequest) -> String {
        var parts: [String] = []
        if let v = want.vendor { parts.append("vendor=\(v.rawValue)") }
        if let m = want.model { parts.append("model~\(m)") }
        if let mem = want.minMemoryMiB { parts.append("memory>=\(mem)MiB") }
        return parts.isEmpty ? "any" : parts.joined(separator: ",")
    }

    /// Within a node, lowest-capability devices first, then by index, so the same request on
    /// the same state always takes the same devices.
    static func deviceOrder(_ a: DeviceInventory, _ b: DeviceInventory) -> Bool {
        let ga = a.grade ?? .c, gb = b.grade ?? .c
        if ga != gb { return ga > gb }
        if (a.memoryTotalMiB ?? 0) != (b.memoryTotalMiB ?? 0) { return (a.memoryTotalMiB ?? 0) < (b.memoryTotalMiB ?? 0) }
        return a.index < b.index
    }

    struct Score: Comparable {
        /// Best (most capable) grade among chosen devices, as a rank: higher = less capable = preferred.
        var gradeRank: Int
        var surplusMemoryMiB: Int
        var node: NodeID

        init(devices: [DeviceInventory], request: AcceleratorRequest, node: NodeID) {
            let grades = devices.map { $0.grade ?? .c }
            gradeRank = DeviceGrade.allCases.firstIndex(of: grades.min() ?? .c) ?? 2
            let floor = request.minMemoryMiB ?? 0
            surplusMemoryMiB = devices.reduce(0) { $0 + max(0, ($1.memoryTotalMiB ?? 0) - floor) }
            self.node = node
        }

        static func < (a: Score, b: Score) -> Bool {
            if a.gradeRank != b.gradeRank { return a.gradeRank > b.gradeRank }
            if a.surplusMemoryMiB != b.surplusMemoryMiB { return a.surplusMemoryMiB < b.surplusMemoryMiB }
            return a.node < b.node
        }
    }
}
