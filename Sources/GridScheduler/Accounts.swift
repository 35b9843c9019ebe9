import Foundation
import GridCore

/// One account's limits in a region. Every limit is on what the account holds at once (its
/// running and assigned work); nil = no limit in that dimension.
public struct AccountQuota: Codable, Sendable, Hashable {
    /// Fair-share weight (Slurm's shares): an account with twice the shares may use twice as
    /// much before its jobs fall behind others of the same priority. Default 1.
    public var shares: Double = 1
    /// Most devices (or slices) at once.
    public var devices: Int?
    /// Most devices at once per grade, e.g. {A: 4}: frontier parts rationed apart.
    public var devicesByGrade: [DeviceGrade: Int] = [:]
    /// Most compute at once, GCU (health-derated, as the devices report it).
    public var gcu: Double?
    /// Accounts of one cohort lend each other what they leave unused (Kueue's cohorts): an
    /// account may go past its own limits while the cohort as a whole stays within the sum of
    /// its members' limits. Borrowed use is reclaimed (preempted) when a lender needs it.
    public var cohort: String?
    /// Whether this account may borrow from its cohort. Default true.
    public var borrow: Bool = true

    public init(shares: Double = 1, devices: Int? = nil, devicesByGrade: [DeviceGrade: Int] = [:], gcu: Double? = nil,
                cohort: String? = nil, borrow: Bool = true) {
        self.shares = shares
        self.devices = devices
        self.devicesByGrade = devicesByGrade
        self.gcu = gcu
        self.cohort = cohort
        self.borrow = borrow
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case shares, devices, gcu, cohort, borrow
        case devicesByGrade = "devices_by_grade"
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.allCases.map(\.rawValue))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        shares = try c.value(.shares, default: 1.0)
        devices = try c.tolerant(Int.self, forKey: .devices)
        gcu = try c.tolerant(Double.self, forKey: .gcu)
        cohort = try c.tolerant(String.self, forKey: .cohort)
        borrow = try c.value(.borrow, default: true)
        let raw = try c.tolerant([String: Int].self, forKey: .devicesByGrade) ?? [:]
        for (k, v) in raw {
            guard let g = DeviceGrade(rawValue: k.uppercased()), g != .r else {
                throw DecodingError.dataCorruptedError(forKey: .devicesByGrade, in: c,
                                                       debugDescription: "'\(k)' is not a grade (A, B, C or D)")
            }
            devicesByGrade[g] = v
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(shares, forKey: .shares)
        try c.encodeIfPresent(devices, forKey: .devices)
        try c.encodeIfPresent(gcu, forKey: .gcu)
        try c.encodeIfPresent(cohort, forKey: .cohort)
        try c.encode(borrow, forKey: .borrow)
        try c.encode(Dictionary(uniqueKeysWithValues: devicesByGrade.map { ($0.key.rawValue, $0.value) }), forKey: .devicesByGrade)
    }

    var hasLimits: Bool { devices != nil || gcu != nil || !devicesByGrade.isEmpty }
}

/// A region's accounts: quotas, cohorts and fair share (the `accounts` key of a region's
/// configuration; controller-config/README.md).
public struct AccountPolicy: Codable, Sendable, Hashable {
    public var quotas: [String: AccountQuota] = [:]
    /// What an account not in `quotas` gets. Default: no limits, 1 share.
    public var defaultQuota = AccountQuota()
    /// Order each priority's queue by fair share (least recent use per share first) instead of
    /// arrival. Default true.
    public var fairShare = true
    /// Recent use counts half after this many hours (Slurm's PriorityDecayHalfLife; its
    /// default, 7 days). Default 168.
    public var usageHalfLifeHours: Double = 168

    public init(quotas: [String: AccountQuota] = [:], defaultQuota: AccountQuota = AccountQuota(), fairShare: Bool = true,
                usageHalfLifeHours: Double = 168) {
        self.quotas = quotas
        self.defaultQuota = defaultQuota
        self.fairShare = fairShare
        self.usageHalfLifeHours = usageHalfLifeHours
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case quotas
        case defaultQuota = "default"
        case fairShare = "fair_share"
        case usageHalfLifeHours = "usage_half_life_hours"
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.allCases.map(\.rawValue))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        quotas = try c.value(.quotas, default: [:])
        defaultQuota = try c.value(.defaultQuota, default: AccountQuota())
        fairShare = try c.value(.fairShare, default: true)
        usageHalfLifeHours = try c.value(.usageHalfLifeHours, default: 168.0)
    }

    public func quota(for account: String) -> AccountQuota { quotas[account] ?? defaultQuota }

    /// Whether any account has a limit (when none has, placement skips quota checks).
    public var hasLimits: Bool { defaultQuota.hasLimits || quotas.values.contains { $0.hasLimits } }

    public func problems() -> [String] {
        var out: [String] = []
        if !(usageHalfLifeHours > 0 && usageHalfLifeHours <= 24 * 365 * 10) {
            out.append("accounts.usage_half_life_hours: > 0 and at most 87600, got \(usageHalfLifeHours)")
        }
        for (name, q) in quotas.sorted(by: { $0.key < $1.key }) + [("default", defaultQuota)] {
            let key = name == "default" && quotas[name] == nil ? "accounts.default" : "accounts.quotas.\(name)"
            if name != "default", let p = IdentifierRules.problem(with: name) { out.append("\(key): account name \(p)") }
            if !(q.shares.isFinite && q.shares > 0 && q.shares <= 1e6) { out.append("\(key).shares: > 0 and at most 1e6, got \(q.shares)") }
            if let d = q.devices, !(0...10_000_000).contains(d) { out.append("\(key).devices: 0…10000000, got \(d)") }
            for (g, d) in q.devicesByGrade where !(0...10_000_000).contains(d) {
                out.append("\(key).devices_by_grade.\(g.rawValue): 0…10000000, got \(d)")
            }
            if let g = q.gcu, !(g.isFinite && g >= 0 && g <= 1e12) { out.append("\(key).gcu: 0…1e12, got \(g)") }
            if let c = q.cohort, let p = IdentifierRules.problem(with: c) { out.append("\(key).cohort: \(p)") }
        }
        return out
    }
}

/// What some work holds: devices in all, devices per grade, and compute.
public struct ResourceUse: Sendable, Hashable {
    public var devices = 0
    public var byGrade: [DeviceGrade: Int] = [:]
    public var gcu = 0.0
    public init(devices: Int = 0, byGrade: [DeviceGrade: Int] = [:], gcu: Double = 0) {
        self.devices = devices
        self.byGrade = byGrade
        self.gcu = gcu
    }

    public static func + (a: ResourceUse, b: ResourceUse) -> ResourceUse {
        var r = a
        r.devices += b.devices
        r.gcu += b.gcu
        for (g, n) in b.byGrade { r.byGrade[g, default: 0] += n }
        return r
    }

    public static func - (a: ResourceUse, b: ResourceUse) -> ResourceUse {
        var r = a
        r.devices -= b.devices
        r.gcu -= b.gcu
        for (g, n) in b.byGrade {
            r.byGrade[g, default: 0] -= n
            if r.byGrade[g] == 0 { r.byGrade[g] = nil }
        }
        if abs(r.gcu) < 1e-9 { r.gcu = 0 }
        return r
    }
}

/// Whether an account may take more.
public enum Admission: Equatable, Sendable {
    /// Within its own limits.
    case within
    /// Past its own limits on its cohort's unused quota: reclaimable.
    case borrowing
    /// Not now, and why ("account ml: 8 + 2 devices > quota 8; cohort research has 0 unused").
    case refused(String)
}

/// The region's account book, pure: what each account holds now, what it has used (decayed
/// for fair share), and the admission rule for quotas and borrowing. The region charges an
/// account when it places work and refunds it when the work lets go of its devices.
public struct AccountLedger: Sendable {
    public private(set) var policy: AccountPolicy
    public private(set) var inUse: [String: ResourceUse] = [:]
    public private(set) var usage: [String: AccountUsage] = [:]
    /// Members of each cohort.
    var cohorts: [String: [String]] = [:]

    public init(policy: AccountPolicy, usage: [AccountUsage] = []) {
        self.policy = policy
        for u in usage { self.usage[u.account] = u }
        for (name, q) in policy.quotas { if let c = q.cohort { cohorts[c, default: []].append(name) } }
    }

    /// Limits in one dimension: devices, one grade's devices, or GCU.
    enum Dimension: Hashable, CustomStringConvertible {
        case devices, grade(DeviceGrade), gcu
        func limit(_ q: AccountQuota) -> Double? {
            switch self {
            case .devices: return q.devices.map(Double.init)
            case .grade(let g): return q.devicesByGrade[g].map(Double.init)
            case .gcu: return q.gcu
            }
        }
        func amount(_ u: ResourceUse) -> Double {
            switch self {
            case .devices: return Double(u.devices)
            case .grade(let g): return Double(u.byGrade[g] ?? 0)
            case .gcu: return u.gcu
            }
        }
        var description: String {
            switch self {
            case .devices: return "devices"
            case .grade(let g): return "grade-\(g.rawValue) devices"
            case .gcu: return "GCU"
            }
        }
    }

    /// Whether `account` may take `add` more: within its limits, borrowing from its cohort, or
    /// refused with the dimension, the figures and the cohort's room.
    public func admit(_ account: String, _ add: ResourceUse) -> Admission {
        let q = policy.quota(for: account)
        guard q.hasLimits else { return .within }
        let held = inUse[account] ?? ResourceUse()
        var borrowing = false
        for d in Self.dimensions(q) {
            guard let limit = d.limit(q) else { continue }
            let want = d.amount(add)
            guard want > 0, d.amount(held) + want > limit + 1e-9 else { continue }
            let figures = "\(fmt(d.amount(held))) + \(fmt(want)) \(d) > quota \(fmt(limit))"
            guard let cohort = q.cohort, q.borrow else { return .refused("account \(account): \(figures)") }
            // The cohort's room in this dimension: its members' limits less what they hold.
            let (cap, used) = cohortRoom(cohort, d)
            if used + want > cap + 1e-9 {
                return .refused("account \(account): \(figures); cohort \(cohort) has \(fmt(max(0, cap - used))) unused")
            }
            borrowing = true
        }
        return borrowing ? .borrowing : .within
    }

    /// Why `account` could never be admitted `add`, even holding nothing and with its whole
    /// cohort idle (nil when it could be): such work waits for a quota change, not for devices,
    /// so it reserves nothing and preempts nothing.
    public func neverAdmits(_ account: String, _ add: ResourceUse) -> String? {
        let q = policy.quota(for: account)
        guard q.hasLimits else { return nil }
        for d in Self.dimensions(q) {
            guard let limit = d.limit(q) else { continue }
            let want = d.amount(add)
            guard want > limit + 1e-9 else { continue }
            let figures = "account \(account): the job needs \(fmt(want)) \(d) > quota \(fmt(limit))"
            guard let cohort = q.cohort, q.borrow else { return figures + " (no cohort to borrow from)" }
            let cap = cohortRoom(cohort, d).cap
            if want > cap + 1e-9 { return figures + " and cohort \(cohort)'s \(fmt(cap)) in all" }
        }
        return nil
    }

    /// The dimensions a quota can limit: devices, GCU, and each grade it names.
    static func dimensions(_ q: AccountQuota) -> [Dimension] {
        [.devices, .gcu] + q.devicesByGrade.keys.sorted().map { .grade($0) }
    }

    /// A cohort's members' limits in a dimension added up, and what they hold in it.
    func cohortRoom(_ cohort: String, _ d: Dimension) -> (cap: Double, used: Double) {
        var cap = 0.0, used = 0.0
        for m in cohorts[cohort] ?? [] {
            guard let l = d.limit(policy.quota(for: m)) else { continue }
            cap += l
            used += d.amount(inUse[m] ?? ResourceUse())
        }
        return (cap, used)
    }

    /// Grades the account can take no more devices of (at its limit, nothing to borrow), for
    /// narrowing a request before placement.
    public func exhaustedGrades(_ account: String) -> Set<DeviceGrade> {
        let q = policy.quota(for: account)
        guard !q.devicesByGrade.isEmpty else { return [] }
        var out: Set<DeviceGrade> = []
        for g in q.devicesByGrade.keys {
            if case .refused = admit(account, ResourceUse(devices: 0, byGrade: [g: 1], gcu: 0)) { out.insert(g) }
        }
        return out
    }

    /// Whether `a` and `b` share a cohort (they may reclaim from each other).
    public func sameCohort(_ a: String, _ b: String) -> Bool {
        guard let c = policy.quota(for: a).cohort else { return false }
        return policy.quota(for: b).cohort == c
    }

    /// Adds `use` to what the account holds from `now` on (what it held until now is counted first).
    public mutating func charge(_ account: String, _ use: ResourceUse, at now: Date) {
        accrue(account, at: now)
        inUse[account] = (inUse[account] ?? ResourceUse()) + use
    }

    public mutating func refund(_ account: String, _ use: ResourceUse, at now: Date) {
        accrue(account, at: now)
        let left = (inUse[account] ?? ResourceUse()) - use
        inUse[account] = left.devices <= 0 && left.byGrade.isEmpty && left.gcu <= 0 ? nil : left
    }

    /// Counts what the account held since its usage was last brought up to date: the all-time
    /// totals grow by held × time; the decayed totals are first halved for each half-life
    /// (`usage_half_life_hours`) that passed. Exact for work of any length: every change of
    /// what an account holds first closes the interval before it.
    mutating func accrue(_ name: String, at now: Date) {
        guard var u = usage[name] else {
            usage[name] = AccountUsage(account: name, updatedAt: now)
            return
        }
        let seconds = now.timeIntervalSince(u.updatedAt)
        guard seconds > 0 else { return }
        let held = inUse[name] ?? ResourceUse()
        let factor = pow(0.5, seconds / (policy.usageHalfLifeHours * 3600))
        u.deviceSeconds += Double(held.devices) * seconds
        u.gcuSeconds += held.gcu * seconds
        u.decayedDeviceSeconds = u.decayedDeviceSeconds * factor + Double(held.devices) * seconds
        u.decayedGCUSeconds = u.decayedGCUSeconds * factor + held.gcu * seconds
        u.updatedAt = now
        usage[name] = u
    }

    /// Brings every account's usage up to `now`; returns the ones that used anything (to store).
    @discardableResult
    public mutating func accrue(at now: Date) -> [AccountUsage] {
        for name in usage.keys { accrue(name, at: now) }
        return usage.values.filter { $0.deviceSeconds > 0 || inUse[$0.account] != nil }.sorted { $0.account < $1.account }
    }

    /// Slurm's classic fair-share factor, 2^(−usage share ÷ shares share): 1 for an account
    /// that has used nothing, 0.5 for one that used exactly its share, towards 0 beyond.
    /// Usage is the decayed GCU-seconds (device-seconds where no device reports compute).
    public func fairShareFactors() -> [String: Double] {
        let names = Set(usage.keys).union(inUse.keys).union(policy.quotas.keys)
        guard !names.isEmpty else { return [:] }
        let useGCU = usage.values.contains { $0.decayedGCUSeconds > 0 }
        func used(_ n: String) -> Double { useGCU ? usage[n]?.decayedGCUSeconds ?? 0 : usage[n]?.decayedDeviceSeconds ?? 0 }
        let totalUse = names.reduce(0.0) { $0 + used($1) }
        let totalShares = names.reduce(0.0) { $0 + policy.quota(for: $1).shares }
        var out: [String: Double] = [:]
        for n in names {
            guard totalUse > 0 else { out[n] = 1; continue }
            let shareOfUse = used(n) / totalUse
            let shareOfShares = policy.quota(for: n).shares / totalShares
            out[n] = pow(2, -shareOfUse / shareOfShares)
        }
        return out
    }

    func fmt(_ v: Double) -> String {
        v == v.rounded() ? String(Int(v)) : String(format: "%.1f", v)
    }
}
