import Foundation
import GridCatalog
import GridCore

/// How the national scheduler ranks regions. Price, carbon and transfer-cost terms come later;
/// the decision already records its terms so operators can see why a job went where it went.
public struct RoutingPolicy: Sendable, Codable, Hashable {
    /// Regions whose last summary is older than this are not chosen.
    public var staleAfterSeconds: Double
    /// Whether a job may go to a region that has the right devices but none free right now.
    public var allowQueueing: Bool
    /// With region profiles: power per device when the job does not say, kW.
    public var defaultKWPerDevice: Double
    /// With region profiles: hours ahead a job without a deadline must fit in.
    public var horizonHours: Int
    /// With region profiles: whether a job with a deadline may be held for a cheaper or
    /// cleaner hour.
    public var timeShifting: Bool
    /// A region that confirms starts and has been silent this long loses its forwarded and
    /// queued jobs to other regions (0 = never).
    public var regionLostAfterSeconds: Double
    /// With region profiles: congestion price per GPU-hour of a full region-hour (square curve;
    /// see `ScarcityPricing`). Default 0.
    public var scarcityPrice: Double = 0
    /// With region profiles: price per GPU-hour for a job that could run in many regions to use
    /// the capacity kept for jobs bound to one or two. Default 5.
    public var protectPrice: Double = 5
    /// With region profiles: every hour, held jobs give back their reservations and are decided
    /// again together (`joint`, default), or each is decided again only at its hour (`keep`).
    public var replan: String = "joint"
    public var replanJointly: Bool { replan == "joint" }
    /// With `replan: joint`: the order of the pass, `size`, `slack` or `best` (default; see
    /// `ReplanOrder`).
    public var replanOrder: String = ReplanOrder.best.rawValue
    public var replanOrderKind: ReplanOrder { ReplanOrder(rawValue: replanOrder) ?? .best }
    /// With region profiles: days of past submissions (UTC days, hours of the day) the
    /// bound-demand forecast is built from (`BoundDemandForecast`), once a day; 0 = off (the
    /// protection learned online instead). Needs `history_retention_hours` to cover them.
    public var forecastDays: Int = 0
    /// The part of the forecast's expected loss a flexible job pays (see `ScarcityPricing`).
    public var forecastWeight: Double = 0.5
    public init(staleAfterSeconds: Double = 30, allowQueueing: Bool = true, defaultKWPerDevice: Double = 0.4,
                horizonHours: Int = 48, timeShifting: Bool = true, regionLostAfterSeconds: Double = 60) {
        self.regionLostAfterSeconds = regionLostAfterSeconds
        self.staleAfterSeconds = staleAfterSeconds
        self.allowQueueing = allowQueueing
        self.defaultKWPerDevice = defaultKWPerDevice
        self.horizonHours = horizonHours
        self.timeShifting = timeShifting
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case staleAfterSeconds = "stale_after_seconds"
        case allowQueueing = "allow_queueing"
        case defaultKWPerDevice = "default_kw_per_device"
        case horizonHours = "horizon_hours"
        case timeShifting = "time_shifting"
        case regionLostAfterSeconds = "region_lost_after_seconds"
        case scarcityPrice = "scarcity_price"
        case protectPrice = "protect_price"
        case replan
        case replanOrder = "replan_order"
        case forecastDays = "forecast_days"
        case forecastWeight = "forecast_weight"
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.allCases.map(\.rawValue))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = RoutingPolicy()
        staleAfterSeconds = try c.value(.staleAfterSeconds, default: d.staleAfterSeconds)
        allowQueueing = try c.value(.allowQueueing, default: d.allowQueueing)
        defaultKWPerDevice = try c.value(.defaultKWPerDevice, default: d.defaultKWPerDevice)
        horizonHours = try c.value(.horizonHours, default: d.horizonHours)
        timeShifting = try c.value(.timeShifting, default: d.timeShifting)
        regionLostAfterSeconds = try c.value(.regionLostAfterSeconds, default: d.regionLostAfterSeconds)
        scarcityPrice = try c.value(.scarcityPrice, default: d.scarcityPrice)
        protectPrice = try c.value(.protectPrice, default: d.protectPrice)
        replan = try c.value(.replan, default: d.replan)
        replanOrder = try c.value(.replanOrder, default: d.replanOrder)
        forecastDays = try c.value(.forecastDays, default: d.forecastDays)
        forecastWeight = try c.value(.forecastWeight, default: d.forecastWeight)
    }

    /// Every problem, each naming its key and range.
    public func problems() -> [String] {
        var out: [String] = []
        if !(staleAfterSeconds > 0 && staleAfterSeconds <= 86_400) { out.append("routing.stale_after_seconds: 0…86400, got \(staleAfterSeconds)") }
        if !(defaultKWPerDevice >= 0 && defaultKWPerDevice <= 10) { out.append("routing.default_kw_per_device: 0…10, got \(defaultKWPerDevice)") }
        if !(regionLostAfterSeconds == 0 || (1...86_400).contains(regionLostAfterSeconds)) {
            out.append("routing.region_lost_after_seconds: 0 (never) or 1…86400, got \(regionLostAfterSeconds)")
        }
        for (k, v) in [("scarcity_price", scarcityPrice), ("protect_price", protectPrice)] where !(v >= 0 && v <= 100_000) {
            out.append("routing.\(k): 0…100000, got \(v)")
        }
        if !["joint", "keep"].contains(replan) { out.append("routing.replan: '\(replan)' is not one of joint, keep") }
        if !(0...60).contains(forecastDays) { out.append("routing.forecast_days: 0 (off) or 1…60, got \(forecastDays)") }
        if !(forecastWeight >= 0 && forecastWeight <= 10) { out.append("routing.forecast_weight: 0…10, got \(forecastWeight)") }
        if ReplanOrder(rawValue: replanOrder) == nil {
            out.append("routing.replan_order: '\(replanOrder)' is not one of \(ReplanOrder.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if !(1...24 * 14).contains(horizonHours) { out.append("routing.horizon_hours: 1…336, got \(horizonHours)") }
        return out
    }
}

public struct RegionCandidate: Sendable {
    public var summary: RegionSummary
    public var ageSeconds: Double
    /// Devices of jobs already forwarded there that its last summary does not show yet: not
    /// free, so a burst is not all sent to the region that looked emptiest a moment ago.
    public var inflight: Int
    public init(summary: RegionSummary, ageSeconds: Double, inflight: Int = 0) {
        self.summary = summary
        self.ageSeconds = ageSeconds
        self.inflight = inflight
    }
}

public struct RoutingDecision: Sendable, Equatable {
    /// nil: no region can take the job now.
    public var region: RegionID?
    /// One line per candidate, saying why it was chosen or passed over.
    public var terms: [String]
}

/// National routing: `(candidates, request, policy) -> decision`. Pure and deterministic.
/// Prefers regions with free matching capacity, then the most free matching devices, then
/// the shortest queue, then region id.
public enum NationalRouting {
    public static func choose(candidates: [RegionCandidate], spec: JobSpec, policy: RoutingPolicy) -> RoutingDecision {
        var want = spec.accelerators
        // A gang needs its devices on `nodes` nodes: counted here in all (the region places the ranks).
        want.count = spec.totalDevices
        let wants = ModelFit.requests(for: spec)
        var terms: [String] = []
        var ranked: [(free: Int, total: Int, queued: Int, region: RegionID)] = []
        for c in candidates.sorted(by: { $0.summary.region < $1.summary.region }) {
            let r = c.summary.region
            if !spec.allowedRegions.isEmpty && !spec.allowedRegions.contains(r) {
                terms.append("\(r): not in allowed regions")
                continue
            }
            if c.ageSeconds > policy.staleAfterSeconds {
                terms.append("\(r): last summary \(Int(c.ageSeconds))s old (> \(Int(policy.staleAfterSeconds))s)")
                continue
            }
            let matching = c.summary.capacity.filter { e in wants.contains { matches(e, $0) } }
            let free = max(0, matching.reduce(0) { $0 + min($1.free, $1.healthy) } - c.inflight)
            let total = matching.reduce(0) { $0 + $1.healthy }
            if let why = c.summary.tooFewReadyNodes(for: spec) {
                terms.append("\(r): \(why)")
                continue
            }
            if want.count == 0 {
                // No devices to count: ready nodes are all it needs.
            } else if total < want.count {
                terms.append("\(r): \(total) healthy matching device(s) < \(want.count) wanted")
                continue
            } else if free < want.count && !policy.allowQueueing {
                terms.append("\(r): \(free) free matching device(s) < \(want.count) and queueing disabled")
                continue
            }
            terms.append("\(r): free=\(free) healthy=\(total) queued=\(c.summary.queuedJobs)")
            ranked.append((free, total, c.summary.queuedJobs, r))
        }
        let best = ranked.min { a, b in
            let aFits = a.free >= want.count, bFits = b.free >= want.count
            if aFits != bFits { return aFits }
            if a.free != b.free { return a.free > b.free }
            if a.queued != b.queued { return a.queued < b.queued }
            return a.region < b.region
        }
        if let best { terms.append("chose \(best.region)") }
        return RoutingDecision(region: best?.region, terms: terms)
    }

    public static func matches(_ c: CapacityEntry, _ want: AcceleratorRequest) -> Bool {
        if let v = want.vendor, c.vendor != v { return false }
        if let m = want.model, !ModelPattern(m).matches(c.model) { return false }
        if let mem = want.minMemoryMiB, c.memoryTotalMiB < mem { return false }
        return want.admits(grade: c.grade) && want.admits(partition: c.partition)
    }
}

extension RegionSummary {
    /// Why the region cannot hold `spec` for want of ready nodes, or nil: a gang needs
    /// `spec.nodes` ready nodes; a job without devices needs one. The same test for both
    /// national routing paths (`NationalRouting` and the cost-based decision).
    public func tooFewReadyNodes(for spec: JobSpec) -> String? {
        if spec.nodes > 1 { return nodesReady < spec.nodes ? "\(nodesReady) ready node(s) < \(spec.nodes) (gang)" : nil }
        return spec.totalDevices == 0 && nodesReady == 0 ? "no ready nodes" : nil
    }
}
