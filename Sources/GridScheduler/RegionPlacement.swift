import Foundation
import GridCatalog
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

/// Whether work that a lower grade could run may use frontier (grade A) devices.
public enum FrontierPolicy: String, Sendable, Codable, Hashable, CaseIterable {
    /// Never while the region has lower-grade devices that could ever run it: it waits for
    /// them, and grade A stays free for work that needs it (circular utilisation).
    case reserve
    /// When the lower grades are busy, it may take grade A (still the least capable free first).
    case share
    /// As `reserve`, but when the lower grades are busy it may borrow idle grade-A devices; a
    /// run on borrowed frontier devices is preempted (whatever its priority) when work that
    /// needs grade A finds none free, and queued again.
    case borrow
}

public struct PlacementPolicy: Sendable, Codable, Hashable {
    /// Whether devices reported `degraded` may take work (they are still correct, only slower).
    public var allowDegraded: Bool
    public var frontier: FrontierPolicy
    public init(allowDegraded: Bool = true, frontier: FrontierPolicy = .reserve) {
        self.allowDegraded = allowDegraded
        self.frontier = frontier
    }

    enum CodingKeys: String, CodingKey, CaseIterable { case allowDegraded = "allow_degraded", frontier }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.allCases.map(\.rawValue))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        allowDegraded = try c.value(.allowDegraded, default: true)
        frontier = try c.value(.frontier, default: .reserve)
    }
}

/// The placer's decision for one tick: which jobs go where, and why the rest wait.
public struct PlacementPlan: Sendable, Equatable {
    public struct Placement: Sendable, Equatable {
        public var job: JobID
        public var node: NodeID
        public var deviceIDs: [String]
        public init(job: JobID, node: NodeID, deviceIDs: [String]) {
            self.job = job
            self.node = node
            self.deviceIDs = deviceIDs
        }
    }
    public var placements: [Placement]
    /// Jobs left queued, with the reason in words.
    public var waiting: [JobID: String]
}

/// Regional placement: `(snapshot, requests, policy) -> plan`. Pure and deterministic.
///
/// Requests are taken in order (FIFO) and placed through a `PlacementIndex` built from the
/// snapshot: least capable adequate grade first (circular utilization: keep frontier parts for
/// work that needs them), healthy before degraded, least memory beyond the request, and the
/// node with the fewest free devices that still fits. The region controller keeps one index
/// alive and updates it incrementally; this entry point builds one per call for tests and tools.
public enum RegionPlacement {
    public static func plan(snapshot: RegionSnapshot, requests: [PlacementRequest], policy: PlacementPolicy) -> PlacementPlan {
        var index = PlacementIndex(options: .init(allowDegraded: policy.allowDegraded))
        for n in snapshot.nodes.sorted(by: { $0.id < $1.id }) {
            index.upsert(node: n.id, devices: n.devices, busy: n.busyDeviceIDs, schedulable: true)
        }
        return plan(index: &index, requests: requests)
    }

    /// Places requests in order on a live index, allocating what it places.
    public static func plan(index: inout PlacementIndex, requests: [PlacementRequest]) -> PlacementPlan {
        var placements: [PlacementPlan.Placement] = []
        var waiting: [JobID: String] = [:]
        for request in requests {
            switch index.place(request.accelerators) {
            case .placed(let node, let devices):
                placements.append(.init(job: request.job, node: node, deviceIDs: devices))
            case .busy(let why), .impossible(let why):
                waiting[request.job] = why
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
        if let m = want.model, !ModelPattern(m).matches(d.model) { return false }
        if let mem = want.minMemoryMiB, (d.memoryTotalMiB ?? 0) < mem { return false }
        // A partitioned device is offered as its slices only (see PlacementIndex.units).
        if !d.partitions.isEmpty || want.partition != nil { return false }
        return want.admits(grade: d.grade)
    }

    public static func describe(_ want: AcceleratorRequest) -> String {
        var parts: [String] = []
        if let v = want.vendor { parts.append("vendor=\(v.rawValue)") }
        if let m = want.model { parts.append("model~\(m)") }
        if let mem = want.minMemoryMiB { parts.append("memory>=\(mem)MiB") }
        if want.perDeviceGCU > 0 { parts.append("gcu>=\(Int(want.perDeviceGCU.rounded(.up)))") }
        if let i = want.interconnect, i != .any { parts.append("interconnect=\(i.rawValue)") }
        return parts.isEmpty ? "any" : parts.joined(separator: ",")
    }
}
