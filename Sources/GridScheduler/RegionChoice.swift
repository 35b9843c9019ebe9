import Foundation
import GridCore

extension RoutingObjective {
    /// Weights on (energy, carbon, transfer, wait). Carbon is ~1 % of the money at 80 CNY/t,
    /// so `carbon` weighs it 100x and `balanced` 3x.
    var w: (energy: Double, carbon: Double, transfer: Double, wait: Double) {
        switch self {
        case .cost, .latency: return (1, 1, 1, 1)
        case .carbon: return (1, 100, 1, 1)
        case .balanced: return (1, 3, 1, 1)
        case .weights(let e, let c, let t, let w): return (e, c, t, w)
        }
    }
}

/// The national decision of issue 10, pure: `(regions, capacity, job, now, policy) -> decision`.
/// Hard constraints first (jurisdiction, latency SLO from the job's origin, capacity over the
/// whole run, the job's window), then the cheapest (region, start hour) by the job's objective,
/// with every candidate's terms kept for `gridctl explain`. Hours are whole scenario hours;
/// a region's hourly curves are indexed modulo their length (24 = a daily tariff).
public enum RegionChoice {
    /// What a region is, for the decision: where it is (jurisdictions), what its power costs
    /// and emits hour by hour, and what its devices cost in embodied carbon.
    public struct Region: Sendable, Codable, Equatable {
        public var id: String
        public var jurisdictions: [String]
        public var pue: Double
        /// Price per kWh by hour (currency of the scenario).
        public var pricePerKWh: [Double]
        /// Grid carbon intensity by hour, gCO2/kWh.
        public var carbonGPerKWh: [Double]
        /// Embodied carbon per GPU-hour, gCO2.
        public var embodiedGPerGPUHour: Double
        /// Local time of the curves: hour h (UTC hours since the epoch, or scenario hours) reads
        /// the curves at h + offset.
        public var utcOffsetHours: Int
        public init(id: String, jurisdictions: [String], pue: Double, pricePerKWh: [Double], carbonGPerKWh: [Double],
                    embodiedGPerGPUHour: Double, utcOffsetHours: Int = 0) {
            self.utcOffsetHours = utcOffsetHours
            self.id = id
            self.jurisdictions = jurisdictions
            self.pue = pue
            self.pricePerKWh = pricePerKWh
            self.carbonGPerKWh = carbonGPerKWh
            self.embodiedGPerGPUHour = embodiedGPerGPUHour
        }
        public func price(_ hour: Int) -> Double { Self.at(pricePerKWh, hour + utcOffsetHours) }
        public func carbon(_ hour: Int) -> Double { Self.at(carbonGPerKWh, hour + utcOffsetHours) }
        /// A curve's value in `hour`, the curve repeating (24 values = a daily curve).
        static func at(_ curve: [Double], _ hour: Int) -> Double {
            curve.isEmpty ? 0 : curve[((hour % curve.count) + curve.count) % curve.count]
        }
    }

    /// What the job optimises once the hard constraints hold (see `RoutingObjective`).
    public typealias Objective = RoutingObjective

    /// Prices that turn the physical terms into money.
    public struct Prices: Sendable, Codable, Equatable {
        public var carbonPerTonne: Double
        public var transferPerGB: Double
        public var waitPerGPUHour: Double
        public init(carbonPerTonne: Double, transferPerGB: Double, waitPerGPUHour: Double) {
            self.carbonPerTonne = carbonPerTonne
            self.transferPerGB = transferPerGB
            self.waitPerGPUHour = waitPerGPUHour
        }
    }

    /// One job as the decision sees it.
    public struct Job: Sendable, Codable, Equatable {
        public var id: String
        public var gpus: Int
        public var hours: Int
        public var kwPerGPU: Double
        /// Earliest start hour.
        public var release: Int
        /// Latest end hour (exclusive); nil = no deadline: start as soon as any region can.
        public var deadline: Int?
        /// The region holding the job's data and users (for transfer and RTT).
        public var origin: String
        public var dataGB: Double
        /// Empty = any jurisdiction.
        public var allowedJurisdictions: [String]
        public var latencySLOms: Double?
        public var objective: Objective
        public init(id: String, gpus: Int, hours: Int, kwPerGPU: Double, release: Int, deadline: Int?, origin: String,
                    dataGB: Double, allowedJurisdictions: [String], latencySLOms: Double?, objective: Objective = .cost) {
            self.id = id
            self.gpus = gpus
            self.hours = hours
            self.kwPerGPU = kwPerGPU
            self.release = release
            self.deadline = deadline
            self.origin = origin
            self.dataGB = dataGB
            self.allowedJurisdictions = allowedJurisdictions
            self.latencySLOms = latencySLOms
            self.objective = objective
        }
    }

    /// Why a region cannot take the job.
    public enum Infeasible: Sendable, Equatable, CustomStringConvertible {
        case jurisdiction(allowed: [String], region: [String])
        case noRTT(from: String)
        case latency(rttMs: Double, sloMs: Double)
        case capacity(gpus: Int)
        case window

        public var description: String {
            switch self {
            case .jurisdiction(let allowed, let region): return "jurisdiction \(region.joined(separator: "|")) not in \(allowed.joined(separator: ", "))"
            case .noRTT(let from): return "no RTT known from \(from)"
            case .latency(let rtt, let slo): return "RTT \(rtt) ms over the SLO of \(slo) ms"
            case .capacity(let gpus): return "never \(gpus) GPUs free for the whole run within the window"
            case .window: return "the window is shorter than the run"
            }
        }

        /// Whether waiting could change it (capacity frees up); the others never change.
        public var permanent: Bool {
            switch self {
            case .capacity, .window: return false
            case .jurisdiction, .noRTT, .latency: return true
            }
        }
    }

    /// The cost terms of one (region, start), in money, plus the physical quantities behind them.
    public struct Terms: Sendable, Equatable {
        public var energy: Double = 0
        public var carbon: Double = 0
        public var transfer: Double = 0
        public var wait: Double = 0
        public var kWh: Double = 0
        public var operationalG: Double = 0
        public var embodiedG: Double = 0
        public var rttMs: Double = 0
        /// The scarcity price of the GPU-hours taken (not money spent: what using scarce
        /// capacity costs the jobs that could run only there). Part of the score, not the total.
        public var scarcity: Double = 0
        public var total: Double { energy + carbon + transfer + wait }
        public init() {}

        /// Adds another run's money and physical terms (for totals over many decisions).
        public static func += (a: inout Terms, b: Terms) {
            a.energy += b.energy
            a.carbon += b.carbon
            a.transfer += b.transfer
            a.wait += b.wait
            a.kWh += b.kWh
            a.operationalG += b.operationalG
            a.embodiedG += b.embodiedG
        }
    }

    public struct Candidate: Sendable, Equatable {
        public var region: String
        public var infeasible: Infeasible?
        public var start: Int?
        public var terms: Terms?
        /// What the objective minimises (the weighted total).
        public var score: Double?
    }

    public struct Decision: Sendable, Equatable {
        public var job: String
        /// Region and start hour; nil = not now (see `candidates` for why).
        public var region: String?
        public var start: Int?
        /// True when no region can ever take the job (refuse at submit).
        public var impossible: Bool
        public var candidates: [Candidate]
    }

    /// Free GPUs of `region` in `hour` (what is left after earlier decisions).
    public typealias Capacity = (_ region: String, _ hour: Int) -> Int
    /// Price of one GPU-hour of `region` in `hour` for its scarcity (0 = plenty).
    public typealias Scarcity = (_ region: String, _ hour: Int) -> Double

    /// The cost of running `job` in `region` from `start`.
    public static func terms(_ job: Job, in region: Region, start: Int, prices: Prices, rttMs: Double) -> Terms {
        var t = Terms()
        for h in start..<(start + job.hours) {
            let kWh = Double(job.gpus) * job.kwPerGPU * region.pue
            t.kWh += kWh
            t.energy += kWh * region.price(h)
            t.operationalG += kWh * region.carbon(h)
        }
        t.embodiedG = Double(job.gpus * job.hours) * region.embodiedGPerGPUHour
        t.carbon = (t.operationalG + t.embodiedG) / 1_000_000 * prices.carbonPerTonne
        t.transfer = region.id == job.origin ? 0 : job.dataGB * prices.transferPerGB
        t.wait = Double(max(0, start - job.release) * job.gpus) * prices.waitPerGPUHour
        t.rttMs = rttMs
        return t
    }

    /// The decision for one job at hour `now`. `horizon`: the last hour capacity is known for
    /// (a job without a deadline must fit before it).
    /// `shift: false` considers only the earliest start that fits in each region (what the
    /// baselines do); time shifting is for jobs with a deadline.
    public static func decide(_ job: Job, regions: [Region], rtt: (String, String) -> Double?, capacity: Capacity,
                              now: Int, horizon: Int, prices: Prices, shift: Bool = true,
                              scarcity: Scarcity = { _, _ in 0 }) -> Decision {
        let earliest = max(now, job.release)
        let latestStart = (job.deadline.map { $0 } ?? horizon) - job.hours
        var candidates: [Candidate] = []
        var best: (score: Double, rtt: Double, region: String, start: Int)?
        let w = job.objective.w
        for region in regions.sorted(by: { $0.id < $1.id }) {
            var c = Candidate(region: region.id)
            defer { candidates.append(c) }
            if !job.allowedJurisdictions.isEmpty && !region.jurisdictions.contains(where: job.allowedJurisdictions.contains) {
                c.infeasible = .jurisdiction(allowed: job.allowedJurisdictions, region: region.jurisdictions)
                continue
            }
            let rttMs: Double
            if region.id == job.origin { rttMs = 0 } else if let r = rtt(job.origin, region.id) { rttMs = r } else {
                if job.latencySLOms != nil {
                    c.infeasible = .noRTT(from: job.origin)
                    continue
                }
                rttMs = 0
            }
            if let slo = job.latencySLOms, rttMs > slo {
                c.infeasible = .latency(rttMs: rttMs, sloMs: slo)
                continue
            }
            guard earliest <= latestStart else {
                c.infeasible = .window
                continue
            }
            // Capacity over the whole run; without a deadline only the earliest fitting start
            // (no time shifting), with one every start in the window.
            var bestHere: (score: Double, start: Int, terms: Terms)?
            var start = earliest
            // Each hour's capacity and scarcity price would be asked once per start that covers
            // it: kept here (Int.min / NaN = not asked yet) for spans short enough to hold.
            let (window, o1) = latestStart.subtractingReportingOverflow(earliest)
            let (span, o2) = window.addingReportingOverflow(job.hours)
            let memo = !o1 && !o2 && span > 0 && span <= 4096
            var price = memo ? [Double](repeating: .nan, count: span) : []
            var room = memo ? [Int](repeating: .min, count: span) : []
            while start <= latestStart {
                var fits = true
                for h in start..<(start + job.hours) {
                    let roomThen: Int
                    if memo {
                        if room[h - earliest] == .min { room[h - earliest] = capacity(region.id, h) }
                        roomThen = room[h - earliest]
                    } else {
                        roomThen = capacity(region.id, h)
                    }
                    if roomThen < job.gpus {
                        fits = false
                        start = h  // no start before h + 1 can fit either
                        break
                    }
                }
                if fits {
                    var t = terms(job, in: region, start: start, prices: prices, rttMs: rttMs)
                    for h in start..<(start + job.hours) {
                        if memo {
                            if price[h - earliest].isNaN { price[h - earliest] = scarcity(region.id, h) }
                            t.scarcity += Double(job.gpus) * price[h - earliest]
                        } else {
                            t.scarcity += Double(job.gpus) * scarcity(region.id, h)
                        }
                    }
                    let score = w.energy * t.energy + w.carbon * t.carbon + w.transfer * t.transfer + w.wait * t.wait + t.scarcity
                    if bestHere == nil || score < bestHere!.score - 1e-9 { bestHere = (score, start, t) }
                    if job.deadline == nil || !shift { break }
                }
                start += 1
            }
            guard let b = bestHere else {
                c.infeasible = .capacity(gpus: job.gpus)
                continue
            }
            c.start = b.start
            c.terms = b.terms
            c.score = b.score
            let better: Bool
            if let cur = best {
                if job.objective == .latency {
                    better = rttMs < cur.rtt - 1e-9 || (abs(rttMs - cur.rtt) <= 1e-9 && b.score < cur.score - 1e-9)
                } else {
                    better = b.score < cur.score - 1e-9
                }
            } else {
                better = true
            }
            if better { best = (b.score, rttMs, region.id, b.start) }
        }
        let impossible = best == nil && candidates.allSatisfy { $0.infeasible?.permanent == true }
        return Decision(job: job.id, region: best?.region, start: best?.start, impossible: impossible, candidates: candidates)
    }
}
