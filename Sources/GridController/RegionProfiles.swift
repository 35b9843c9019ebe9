import Foundation
import GridCore
import GridScheduler

/// The national scheduler's model of its regions (issue 10), from controller-config: where each
/// region is (jurisdictions), what its power costs and emits hour by hour, its PUE, embodied
/// carbon per GPU-hour, and the network to the other regions. Decoded from YAML, validated with
/// errors that name the region and the key, and turned into `RegionChoice.Region`s.
public struct RegionProfile: Sendable, Equatable, Codable {
    /// An hourly curve: 24 values, or a flat value with an optional time-of-use shape.
    public struct Curve: Sendable, Equatable, Codable {
        public var hourly: [Double]
        /// "flat", "tou" or "hourly", for the explanation.
        public var kind: String

        struct TOU: Decodable {
            var flat: Double
            var peak_ratio: Double?
            var valley_ratio: Double?
            var peak_hours: String?
            var valley_hours: String?
        }

        public init(hourly: [Double], kind: String) {
            self.hourly = hourly
            self.kind = kind
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.singleValueContainer()
            try c.encode(hourly)
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let v = try? c.decode(Double.self) {
                self.init(hourly: Array(repeating: v, count: 24), kind: "flat")
            } else if let list = try? c.decode([Double].self) {
                self.init(hourly: list, kind: "hourly")
            } else {
                let t = try c.decode(TOU.self)
                let peak = try Self.hours(t.peak_hours ?? "", path: decoder.codingPath)
                let valley = try Self.hours(t.valley_hours ?? "", path: decoder.codingPath)
                self.init(hourly: (0..<24).map { h in
                    t.flat * (peak.contains(h) ? t.peak_ratio ?? 1 : valley.contains(h) ? t.valley_ratio ?? 1 : 1)
                }, kind: "tou")
            }
        }

        /// "16-22;1-6" → the hours 16…21 and 1…5 (end exclusive, 0…24).
        static func hours(_ text: String, path: [any CodingKey]) throws -> Set<Int> {
            var out: Set<Int> = []
            for part in text.split(separator: ";") where !part.trimmingCharacters(in: .whitespaces).isEmpty {
                let ends = part.split(separator: "-").map { Int($0.trimmingCharacters(in: .whitespaces)) }
                guard ends.count == 2, let a = ends[0], let b = ends[1], 0 <= a, a < b, b <= 24 else {
                    throw DecodingError.dataCorrupted(.init(codingPath: path,
                        debugDescription: "'\(part)' is not an hour range like 16-22 (0…24, start before end)"))
                }
                out.formUnion(a..<b)
            }
            return out
        }
    }

    public var id: String
    public var jurisdictions: [String]
    public var pue: Double
    public var pricePerKWh: Curve
    public var carbonGPerKWh: Curve
    public var embodiedGPerGPUHour: Double
    /// Round-trip time to the other regions, ms.
    public var rttMs: [String: Double]
    /// Where the figures come from (free text, for operators).
    public var source: String
    /// The curves are in local time at this offset from UTC (China: 8).
    public var utcOffsetHours: Int

    enum CodingKeys: String, CodingKey, CaseIterable {
        case id, jurisdictions, pue, source
        case pricePerKWh = "price_per_kwh"
        case carbonGPerKWh = "carbon_g_per_kwh"
        case embodiedGPerGPUHour = "embodied_g_per_gpu_hour"
        case rttMs = "rtt_ms"
        case utcOffsetHours = "utc_offset_hours"
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.allCases.map(\.rawValue))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(String.self, forKey: .id)
        jurisdictions = try c.decode([String].self, forKey: .jurisdictions)
        pue = try c.decode(Double.self, forKey: .pue)
        pricePerKWh = try c.decode(Curve.self, forKey: .pricePerKWh)
        carbonGPerKWh = try c.decode(Curve.self, forKey: .carbonGPerKWh)
        embodiedGPerGPUHour = try c.value(.embodiedGPerGPUHour, default: 0)
        rttMs = try c.value(.rttMs, default: [:])
        source = try c.value(.source, default: "")
        utcOffsetHours = try c.value(.utcOffsetHours, default: 0)
    }

    public var decisionRegion: RegionChoice.Region {
        RegionChoice.Region(id: id, jurisdictions: jurisdictions, pue: pue, pricePerKWh: pricePerKWh.hourly,
                            carbonGPerKWh: carbonGPerKWh.hourly, embodiedGPerGPUHour: embodiedGPerGPUHour,
                            utcOffsetHours: utcOffsetHours)
    }

    /// Every problem with a list of profiles, each naming the region and the key.
    public static func problems(_ profiles: [RegionProfile]) -> [String] {
        var out: [String] = []
        let ids = Set(profiles.map(\.id))
        var seen: Set<String> = []
        for (i, p) in profiles.enumerated() {
            let at = "regions[\(i)] (\(p.id))"
            if let problem = IdentifierRules.problem(with: p.id) { out.append("\(at).id: \(problem)") }
            if !seen.insert(p.id).inserted { out.append("\(at).id: '\(p.id)' appears twice") }
            if p.jurisdictions.isEmpty { out.append("\(at).jurisdictions: at least one (e.g. CN-GZ)") }
            if !(1.0...3.0).contains(p.pue) { out.append("\(at).pue: 1.0…3.0, got \(p.pue)") }
            for (key, curve, range) in [("price_per_kwh", p.pricePerKWh, 0.0...100.0), ("carbon_g_per_kwh", p.carbonGPerKWh, 0.0...2000.0)] {
                if curve.hourly.count != 24 { out.append("\(at).\(key): 24 hourly values, got \(curve.hourly.count)") }
                if let bad = curve.hourly.first(where: { !range.contains($0) || !$0.isFinite }) {
                    out.append("\(at).\(key): every value in \(range.lowerBound)…\(range.upperBound), got \(bad)")
                }
            }
            if !(-12...14).contains(p.utcOffsetHours) { out.append("\(at).utc_offset_hours: -12…14, got \(p.utcOffsetHours)") }
            if !(0.0...1000.0).contains(p.embodiedGPerGPUHour) { out.append("\(at).embodied_g_per_gpu_hour: 0…1000, got \(p.embodiedGPerGPUHour)") }
            for (other, ms) in p.rttMs.sorted(by: { $0.key < $1.key }) {
                if !ids.contains(other) { out.append("\(at).rtt_ms.\(other): not a region in this file") }
                if !(0.0...1000.0).contains(ms) { out.append("\(at).rtt_ms.\(other): 0…1000 ms, got \(ms)") }
            }
        }
        return out
    }
}

/// What turns the physical terms of a decision into money.
public struct DecisionPrices: Sendable, Equatable, Codable {
    public var currency: String = "CNY"
    public var carbonPerTonne: Double = 80
    public var transferPerGB: Double = 0.14
    public var waitPerGPUHour: Double = 2
    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case currency
        case carbonPerTonne = "carbon_per_tonne"
        case transferPerGB = "transfer_per_gb"
        case waitPerGPUHour = "wait_per_gpu_hour"
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.allCases.map(\.rawValue))
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = DecisionPrices()
        currency = try c.value(.currency, default: d.currency)
        carbonPerTonne = try c.value(.carbonPerTonne, default: d.carbonPerTonne)
        transferPerGB = try c.value(.transferPerGB, default: d.transferPerGB)
        waitPerGPUHour = try c.value(.waitPerGPUHour, default: d.waitPerGPUHour)
    }

    public var decision: RegionChoice.Prices {
        RegionChoice.Prices(carbonPerTonne: carbonPerTonne, transferPerGB: transferPerGB, waitPerGPUHour: waitPerGPUHour)
    }

    public func problems() -> [String] {
        var out: [String] = []
        if !(0.0...100_000.0).contains(carbonPerTonne) { out.append("prices.carbon_per_tonne: 0…100000, got \(carbonPerTonne)") }
        if !(0.0...1000.0).contains(transferPerGB) { out.append("prices.transfer_per_gb: 0…1000, got \(transferPerGB)") }
        if !(0.0...100_000.0).contains(waitPerGPUHour) { out.append("prices.wait_per_gpu_hour: 0…100000, got \(waitPerGPUHour)") }
        return out
    }
}
