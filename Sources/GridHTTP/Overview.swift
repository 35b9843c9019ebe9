import Foundation
import GridController
import GridCore
import GridHTTPServer
import Synchronization

/// `GET /api/v1/overview` and the dashboard's `overview` events: a controller at a glance.
/// Keys are snake_case; times are Unix milliseconds.
struct Overview: Encodable, Equatable {
    struct DeviceRow: Encodable, Equatable {
        var vendor: String
        var grade: String
        var health: String
        var total: Int
        var free: Int
    }
    struct CapacityRow: Encodable, Equatable {
        var vendor: String
        var model: String
        var grade: String
        var partition: String
        var memoryMib: Int
        var total: Int
        var free: Int
        var healthy: Int
        var degraded: Int
    }
    struct Region: Encodable, Equatable {
        var id: String
        var state: String
        var secondsSinceSummary: Double?
        var nodesReady: Int
        var nodesLost: Int
        var queuedJobs: Int
        var runningJobs: Int
        var devicesTotal: Int
        var devicesFree: Int
        var devicesHealthy: Int
        var expectedWaitSeconds: Int
        var pricePerKwh: Double?
        var carbonGPerKwh: Double?
        var pue: Double?
        var jurisdictions: [String]
        var capacity: [CapacityRow]
    }

    var role: String
    var id: String
    var observedAt: Int64
    var ready: Bool
    var notReady: String
    var nodes: [String: Int]
    var cordonedNodes: Int
    var devices: [DeviceRow]
    var jobs: [String: Int]
    var queueDepth: Int
    var outboxDepth: Int
    var regions: [Region]

    init(_ o: ControllerObservation) {
        role = o.role.rawValue
        id = o.id
        observedAt = Int64(o.observedAt.timeIntervalSince1970 * 1000)
        ready = o.ready
        notReady = o.notReady
        nodes = Dictionary(uniqueKeysWithValues: NodeState.allCases.map { ($0.rawValue, o.nodesByState[$0] ?? 0) })
        cordonedNodes = o.cordonedNodes
        devices = o.devices.sorted { $0.key < $1.key }.map {
            DeviceRow(vendor: $0.key.vendor, grade: $0.key.grade, health: $0.key.health.rawValue, total: $0.value.total, free: $0.value.free)
        }
        jobs = Dictionary(uniqueKeysWithValues: JobState.allCases.map { ($0.rawValue, o.jobsByState[$0] ?? 0) })
        queueDepth = o.queueDepth
        outboxDepth = o.outboxDepth
        regions = o.regions.map { r in
            Region(id: r.id, state: r.state.rawValue, secondsSinceSummary: r.secondsSinceSummary.map { ($0 * 10).rounded() / 10 },
                   nodesReady: r.nodesReady, nodesLost: r.nodesLost, queuedJobs: r.queuedJobs, runningJobs: r.runningJobs,
                   devicesTotal: r.devicesTotal, devicesFree: r.devicesFree, devicesHealthy: r.devicesHealthy,
                   expectedWaitSeconds: r.expectedWaitSeconds, pricePerKwh: r.pricePerKWh, carbonGPerKwh: r.carbonGPerKWh, pue: r.pue,
                   jurisdictions: r.jurisdictions,
                   capacity: r.capacity.map { c in
                       CapacityRow(vendor: c.vendor.rawValue, model: c.model, grade: c.grade?.rawValue ?? "", partition: c.partition ?? "",
                                   memoryMib: c.memoryTotalMiB, total: c.total, free: c.free, healthy: c.healthy, degraded: c.degraded)
                   })
        }
    }
}

/// Bearer tokens of the HTTP API, from `http_token_file`: one token per line,
///
///     <name>  <token>  [read|submit|operate|admin]  [tenant=<account>]
///
/// `#` comments. A token acts as an operator key of that name, right and tenant would over
/// ZeroMQ (the same rules, `AccessList.check`); without a right it may `operate` (the file's
/// first format). Reloadable (SIGHUP).
public typealias TokenStore = TokenList<Principal>

extension TokenList where Value == Principal {
    /// `path` "" = no tokens: the API only reads, and only when reads are open.
    public convenience init(path: String) throws {
        try self.init(path: path) { fields in
            var parts = fields
            var tenant: String?
            if parts.count >= 3, let last = parts.last, last.hasPrefix("tenant=") {
                tenant = String(last.dropFirst("tenant=".count))
                parts.removeLast()
            }
            guard parts.count == 2 || parts.count == 3 else {
                return .failure(.init("expected 'name token [read|submit|operate|admin] [tenant=<account>]', got \(parts.count) field(s)"))
            }
            let right = parts.count == 3 ? parts[2] : OperatorRight.operate.rawValue
            guard OperatorRight(rawValue: right) != nil else {
                return .failure(.init("right '\(right)' is not one of \(OperatorRight.allCases.map(\.rawValue).joined(separator: "|"))"))
            }
            // The name and tenant rules of an operator key (AccessList).
            switch AccessList.principal(role: "operator", name: parts[0], right: right, tenant: tenant) {
            case .success(let p): return .success((parts[1], p))
            case .failure(let e): return .failure(.init(e.message))
            }
        }
    }

    /// Whom the token speaks for (an operator of the token's name), compared in constant time
    /// per entry; nil for a token not in the file.
    public func principal(for token: String) -> Principal? { value(for: token) }
}
