import Foundation

/// What the national scheduler optimises for a job once its hard constraints hold (issue 10).
public enum RoutingObjective: Codable, Sendable, Hashable, CustomStringConvertible {
    /// Money: energy + carbon price + transfer + waiting.
    case cost
    /// Carbon first: the carbon term weighs 100x.
    case carbon
    /// Round-trip time from the job's origin first, then cost.
    case latency
    /// Cost with the carbon term weighed 3x.
    case balanced
    /// Explicit weights on the four cost terms.
    case weights(energy: Double, carbon: Double, transfer: Double, wait: Double)

    public static let names = ["cost", "carbon", "latency", "balanced"]

    public init?(name: String) {
        switch name {
        case "cost": self = .cost
        case "carbon": self = .carbon
        case "latency": self = .latency
        case "balanced": self = .balanced
        default: return nil
        }
    }

    public var description: String {
        switch self {
        case .cost: return "cost"
        case .carbon: return "carbon"
        case .latency: return "latency"
        case .balanced: return "balanced"
        case .weights(let e, let c, let t, let w): return "weights(energy \(e), carbon \(c), transfer \(t), wait \(w))"
        }
    }
}

/// What a job tells the national scheduler beyond the devices it needs: where its data and users
/// are, where its data may go, how soon it must finish, and what to optimise. Everything is
/// optional; the defaults route as before (any jurisdiction, no deadline, cost).
public struct RoutingRequest: Codable, Sendable, Hashable {
    /// The region that holds the job's data and users: transfer is charged when the job runs
    /// elsewhere, and the latency SLO is measured from here.
    public var origin: RegionID?
    /// Data moved to the region that runs the job, GB.
    public var dataGB: Double
    /// Jurisdictions the job's data may be processed in (data residency); empty = any.
    public var jurisdictions: [String]
    /// Most round-trip time from `origin` to the region that runs the job, ms.
    public var latencySLOMs: Double?
    public var objective: RoutingObjective
    /// When the job must have finished; with `runSeconds` it lets the national scheduler hold
    /// the job for a cheaper or cleaner hour.
    public var deadline: Date?
    /// Expected run time (default: the timeout, else one hour).
    public var runSeconds: Int?
    /// Power per device, kW (default: the national scheduler's `default_kw_per_device`).
    public var kwPerDevice: Double?

    public init(origin: RegionID? = nil, dataGB: Double = 0, jurisdictions: [String] = [], latencySLOMs: Double? = nil,
                objective: RoutingObjective = .cost, deadline: Date? = nil, runSeconds: Int? = nil, kwPerDevice: Double? = nil) {
        self.origin = origin
        self.dataGB = dataGB
        self.jurisdictions = jurisdictions
        self.latencySLOMs = latencySLOMs
        self.objective = objective
        self.deadline = deadline
        self.runSeconds = runSeconds
        self.kwPerDevice = kwPerDevice
    }

    public static let maxRunSeconds = 90 * 86_400

    /// Every problem, each naming the key and the allowed range.
    public func problems() -> [String] {
        var out: [String] = []
        if !dataGB.isFinite || !(0...1e9).contains(dataGB) { out.append("data_gb: 0…1e9, got \(dataGB)") }
        if let l = latencySLOMs, !l.isFinite || !(0...10_000).contains(l) { out.append("latency_slo_ms: 0…10000, got \(l)") }
        if let r = runSeconds, !(1...Self.maxRunSeconds).contains(r) { out.append("run_seconds: 1…\(Self.maxRunSeconds), got \(r)") }
        if let k = kwPerDevice, !k.isFinite || !(0...10).contains(k) { out.append("kw_per_device: 0…10, got \(k)") }
        for j in jurisdictions where j.isEmpty || j.count > 64 { out.append("jurisdictions: '\(j)' must be 1…64 characters") }
        if let o = origin, let p = IdentifierRules.problem(with: o.rawValue) { out.append("origin: \(p)") }
        if latencySLOMs != nil && origin == nil { out.append("latency_slo_ms: needs origin (the region the latency is measured from)") }
        if case .weights(let e, let c, let t, let w) = objective {
            for (k, v) in [("energy", e), ("carbon", c), ("transfer", t), ("wait", w)] where !v.isFinite || !(0...1e6).contains(v) {
                out.append("objective.\(k): 0…1e6, got \(v)")
            }
        }
        if let d = deadline, !d.timeIntervalSince1970.isFinite || d.timeIntervalSince1970 < 0 || d.timeIntervalSince1970 > 4e9 {
            out.append("deadline: a time between 1970 and 2096")
        }
        return out
    }
}

/// Why a job went where it went: every region the national scheduler weighed, feasible or not
/// and why, with each cost term, as `gridctl explain JOB` prints it.
public struct RouteExplanation: Codable, Sendable, Hashable {
    public struct Candidate: Codable, Sendable, Hashable {
        public var region: RegionID
        /// nil = feasible.
        public var reason: String?
        public var start: Date?
        public var energy: Double = 0
        public var carbon: Double = 0
        public var transfer: Double = 0
        public var wait: Double = 0
        public var total: Double = 0
        /// What the objective minimised (weighted total plus scarcity).
        public var score: Double = 0
        public var kWh: Double = 0
        public var operationalG: Double = 0
        public var embodiedG: Double = 0
        public var rttMs: Double = 0
        public init(region: RegionID, reason: String? = nil) {
            self.region = region
            self.reason = reason
        }
    }

    public var decidedAt: Date
    public var objective: String
    public var currency: String
    /// The region chosen; nil while no region can take the job.
    public var region: RegionID?
    /// The chosen start; later than `decidedAt` when the job is held for a cheaper or cleaner hour.
    public var start: Date?
    /// One line on the outcome (held until, deadline dropped, refused by ...).
    public var note: String
    /// Regions that refused the job (capacity moved); not chosen again for it.
    public var refusedBy: [RegionID]
    public var candidates: [Candidate]

    public init(decidedAt: Date, objective: String, currency: String, region: RegionID?, start: Date?, note: String,
                refusedBy: [RegionID] = [], candidates: [Candidate]) {
        self.decidedAt = decidedAt
        self.objective = objective
        self.currency = currency
        self.region = region
        self.start = start
        self.note = note
        self.refusedBy = refusedBy
        self.candidates = candidates
    }
}
