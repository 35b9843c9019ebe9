import Foundation
import GridCore
import GridProtocol
import GridScheduler
import GridTransport

/// What a controller is like now, for `/metrics`, `/readyz` and the dashboard. Worked out on the
/// loop thread when someone asks (a scrape, a dashboard refresh), never on the hot path: counts
/// over nodes and jobs cost O(n) per ask, nothing per heartbeat.
public struct ControllerObservation: Sendable {
    public var role: ControllerRole
    public var id: String
    public var observedAt: Date
    /// Ready to serve: a region has heard from its national scheduler lately; the national
    /// scheduler is ready once its state is recovered (always, when it answers). `notReady` says why not.
    public var ready: Bool
    public var notReady: String = ""
    public var nodesByState: [NodeState: Int] = [:]
    public var cordonedNodes = 0
    /// Schedulable units (devices or MIG slices) by vendor, grade and health.
    public var devices: [DeviceGroup: DeviceCounts] = [:]
    public var jobsByState: [JobState: Int] = [:]
    /// Jobs waiting for devices (region) or for a region (national).
    public var queueDepth = 0
    /// Messages waiting for an acknowledgement: status updates upward (region), forwards and
    /// cancels downward (national).
    public var outboxDepth = 0
    /// National: every region it knows, with its profile's price and carbon this hour.
    public var regions: [RegionObservation] = []
    /// Running counts since start (monotonic): heartbeats, placements, decisions, …
    public var counters: [ObservedCounter: Int] = [:]
    /// From the shell: messages received by type, rejected frames by reason, commits.
    public var receivedByType: [String: Int] = [:]
    public var rejectedFrames: [String: Int] = [:]
    public var commits = 0
    public var failedCommits = 0
    /// HTTP asks waiting for their answer (a relayed query in flight).
    public var pendingCalls = 0
    /// Socket loop: frames in and out, frames dropped because a peer was gone or slow.
    public var socket = SocketLoopStats()
    /// Seconds the loop was stalled (region: turn gaps beyond the threshold).
    public var stalledSeconds = 0.0
    /// National: the decision terms of every job forwarded, summed.
    public var decisionCost = DecisionCost()

    public init(role: ControllerRole, id: String, observedAt: Date, ready: Bool) {
        self.role = role
        self.id = id
        self.observedAt = observedAt
        self.ready = ready
    }
}

extension ControllerObservation {
    /// One capacity class's units: `usable` are healthy or degraded (of them `degraded`), the
    /// rest of `total` unhealthy; free units are counted with the healthy group.
    mutating func addDevices(vendor: String, grade: String, total: Int, usable: Int, degraded: Int, free: Int) {
        for (health, count) in [(HealthState.healthy, usable - degraded), (.degraded, degraded), (.unhealthy, total - usable)] where count > 0 {
            devices[DeviceGroup(vendor: vendor, grade: grade, health: health), default: DeviceCounts()].total += count
        }
        if free > 0 {
            devices[DeviceGroup(vendor: vendor, grade: grade, health: .healthy), default: DeviceCounts()].free += free
        }
    }
}

public struct DeviceGroup: Hashable, Sendable, Comparable {
    public var vendor: String
    public var grade: String
    public var health: HealthState
    public init(vendor: String, grade: String, health: HealthState) {
        self.vendor = vendor
        self.grade = grade
        self.health = health
    }
    public static func < (a: DeviceGroup, b: DeviceGroup) -> Bool {
        (a.vendor, a.grade, a.health.rawValue) < (b.vendor, b.grade, b.health.rawValue)
    }
}

public struct DeviceCounts: Sendable, Equatable {
    public var total = 0
    public var free = 0
    public init(total: Int = 0, free: Int = 0) {
        self.total = total
        self.free = free
    }
}

/// Named running counts an instance keeps (plain integers; exported as Prometheus counters).
public enum ObservedCounter: String, Sendable, CaseIterable {
    case heartbeats, placements, nodesLost = "nodes_lost", stalls, staleUpdates = "stale_updates"
    case submissions, decisions, forwards, movedFromSilent = "jobs_moved_from_silent_regions"
}

/// One region as the national scheduler sees it.
public struct RegionObservation: Sendable, Equatable {
    public var id: String
    /// live: summaries arrive; stale: silent past the region lease; never: configured, never heard.
    public var state: RegionLiveness
    public var secondsSinceSummary: Double?
    public var nodesReady = 0
    public var nodesLost = 0
    public var nodesTotal = 0
    public var queuedJobs = 0
    public var runningJobs = 0
    public var devicesTotal = 0
    public var devicesFree = 0
    public var devicesHealthy = 0
    public var expectedWaitSeconds = 0
    /// From the region's profile, this hour (nil without a profile).
    public var pricePerKWh: Double?
    public var carbonGPerKWh: Double?
    public var pue: Double?
    public var jurisdictions: [String] = []
    public var capacity: [CapacityEntry] = []
    public init(id: String, state: RegionLiveness) {
        self.id = id
        self.state = state
    }
}

/// What the national scheduler's decisions have cost, summed over the jobs it forwarded.
public struct DecisionCost: Sendable, Equatable {
    public var energy = 0.0
    public var carbon = 0.0
    public var transfer = 0.0
    public var wait = 0.0
    public var kWh = 0.0
    public var co2Grams = 0.0
    public init() {}
}

public enum RegionLiveness: String, Sendable, Equatable {
    case live, stale, never
}

extension RegionInstance {
    public func observe(now: Moment) -> ControllerObservation {
        var o = ControllerObservation(role: .region, id: region.rawValue, observedAt: now.wall, ready: true)
        if let heard = nationalHeardMs {
            let silent = now.monotonicMs - heard
            if silent > max(3 * settings.summaryIntervalMs, 5000) {
                o.ready = false
                o.notReady = "no word from the national scheduler for \(silent / 1000) s"
            }
        } else {
            o.ready = false
            o.notReady = "the national scheduler has not answered yet"
        }
        for n in nodes.values {
            o.nodesByState[n.record.state, default: 0] += 1
            if n.record.cordon != nil { o.cordonedNodes += 1 }
        }
        for (key, c) in index.capacity {
            // Usable units are healthy or degraded; the rest are unhealthy (or unknown).
            o.addDevices(vendor: key.vendor.rawValue, grade: key.grade?.rawValue ?? "", total: c.total, usable: c.usable,
                         degraded: c.degraded, free: c.free)
        }
        for j in jobs.values { o.jobsByState[j.state, default: 0] += 1 }
        o.queueDepth = queue.count
        o.outboxDepth = outbox.count
        o.counters = [.heartbeats: counters.heartbeats, .placements: counters.placements, .nodesLost: counters.nodesLost,
                      .stalls: counters.stalls, .staleUpdates: counters.staleUpdates]
        o.stalledSeconds = Double(stalledMs) / 1000
        return o
    }
}

extension NationalInstance {
    public func observe(now: Moment) -> ControllerObservation {
        var o = ControllerObservation(role: .national, id: settings.name, observedAt: now.wall, ready: true)
        if regions.values.allSatisfy({ $0.route == nil }) {
            o.ready = false
            o.notReady = regions.isEmpty ? "no region has reported yet" : "no region is connected"
        }
        let hour = Int(floor(now.wall.timeIntervalSince1970 / 3600))
        let profiles = Dictionary(settings.profiles.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        var ids = Set(regions.keys.map(\.rawValue))
        ids.formUnion(profiles.keys)
        for id in ids.sorted() {
            var r: RegionObservation
            if let view = regions[RegionID(id)] {
                let silentMs = now.monotonicMs - view.lastSeenMs
                r = RegionObservation(id: id, state: silentMs > staleAfterMs ? .stale : .live)
                r.secondsSinceSummary = Double(silentMs) / 1000
                let s = view.summary
                r.nodesReady = s.nodesReady
                r.nodesLost = s.nodesLost
                r.nodesTotal = s.nodesReady + s.nodesLost
                r.queuedJobs = s.queuedJobs
                r.runningJobs = s.runningJobs
                r.expectedWaitSeconds = s.expectedWaitSeconds
                r.capacity = view.capacity.values.sorted { ($0.vendor.rawValue, $0.model, $0.grade?.rawValue ?? "") < ($1.vendor.rawValue, $1.model, $1.grade?.rawValue ?? "") }
                for c in r.capacity {
                    r.devicesTotal += c.total
                    r.devicesFree += c.free
                    r.devicesHealthy += c.healthy
                    o.addDevices(vendor: c.vendor.rawValue, grade: c.grade?.rawValue ?? "", total: c.total, usable: c.healthy,
                                 degraded: c.degraded, free: c.free)
                }
                o.nodesByState[.ready, default: 0] += s.nodesReady
                o.nodesByState[.lost, default: 0] += s.nodesLost
            } else {
                r = RegionObservation(id: id, state: .never)
            }
            if let p = profiles[id] {
                r.pricePerKWh = p.price(hour)
                r.carbonGPerKWh = p.carbon(hour)
                r.pue = p.pue
                r.jurisdictions = p.jurisdictions
            }
            o.regions.append(r)
        }
        for j in jobs.values { o.jobsByState[j.state, default: 0] += 1 }
        o.queueDepth = unrouted.count + held.count
        o.outboxDepth = forwards.count + cancelling.count
        o.decisionCost = counters.cost
        o.counters = [.submissions: counters.submissions, .decisions: counters.decisions, .forwards: counters.forwards,
                      .movedFromSilent: counters.movedFromSilent]
        return o
    }
}
