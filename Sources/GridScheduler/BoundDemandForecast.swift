/// What jobs bound to one or two regions (by jurisdiction or latency) are likely still to ask of
/// each region, learned from past periods' jobs rather than from the period being decided: the
/// part of issue 10's gap that an online policy cannot learn in time is the first large bound
/// job of a region (a flexible job took its room before any bound job had been seen there).
///
/// Each past period (a day of jobs, hours counted from the period's start) gives, for a region,
/// the largest bound job that is released after `now` and may run in `hour` (released by then,
/// deadline after it). `shortfall` is the mean over periods of the part of a flexible job's GPUs
/// that would leave too little room for that job: 0 when no past period had one, 1 when every
/// period had one at least as large as what would be left. Times the unplaced price it is the
/// expected loss of taking the room (Littlewood's rule with past periods as the distribution).
public struct BoundDemandForecast: Sendable, Equatable {
    /// One past job: its window in hours from its period's start, its size, the regions it may use.
    public struct PastJob: Sendable, Equatable, Codable {
        public var release: Int
        public var deadline: Int
        public var gpus: Int
        /// How long it runs (hours).
        public var hours: Int
        public var regions: [String]
        public init(release: Int, deadline: Int, gpus: Int, hours: Int = 1, regions: [String]) {
            self.release = release
            self.deadline = deadline
            self.gpus = gpus
            self.hours = hours
            self.regions = regions
        }
    }

    /// The longest period kept (a week): the table is periods × hours² entries.
    public static let maxHours = 168
    /// Number of past periods.
    public let periods: Int
    /// Hours per period (queries beyond it forecast nothing).
    public let hours: Int
    /// How a past period's need in a region-hour is counted.
    public enum Need: String, Sendable, CaseIterable {
        /// The largest bound job that may run then.
        case largest
        /// That, plus the others' GPUs spread over their windows (GPUs × hours / window hours,
        /// shared between their regions): many small bound jobs stack up.
        case largestPlusShare = "largest+share"
    }
    public var need: Need = .largest
    /// One region's [period][now][hour] tables (flattened).
    struct Table: Sendable, Equatable {
        /// The largest bound job's GPUs.
        var largest: [Int32]
        /// The GPUs of the other bound jobs spread over their windows.
        var spread: [Float]
    }
    private var tables: [String: Table]

    /// - Parameters:
    ///   - periods: each past period's jobs (all of them; the bound ones are picked here).
    ///   - hours: the length of a period (at most `maxHours`; later hours forecast nothing).
    ///   - boundRegions: a job allowed in at most this many regions is bound.
    public init(periods: [[PastJob]], hours: Int, boundRegions: Int = 2) {
        self.periods = periods.count
        self.hours = min(Self.maxHours, max(0, hours))
        var table: [String: [Int32]] = [:]
        var shares: [String: [Float]] = [:]
        var largestShare: [String: [Float]] = [:]
        let h = self.hours
        let stride = h * h
        for (p, jobs) in periods.enumerated() {
            for j in jobs where !j.regions.isEmpty && j.regions.count <= boundRegions && j.gpus > 0 {
                let lastHour = min(h, j.deadline)
                let firstHour = max(0, j.release)
                guard firstHour < lastHour else { continue }
                let window = Float(max(1, j.deadline) - max(0, j.release)) // its whole window, not only this period's part
                let share = Float(min(Int(Int32.max), j.gpus)) * min(1, Float(max(1, j.hours)) / window) / Float(j.regions.count)
                for r in j.regions {
                    if table[r] == nil {
                        table[r] = [Int32](repeating: 0, count: periods.count * stride)
                        shares[r] = [Float](repeating: 0, count: periods.count * stride)
                        largestShare[r] = [Float](repeating: 0, count: periods.count * stride)
                    }
                    let size = Int32(clamping: j.gpus)
                    // Known to the scheduler from its release on: it counts for decisions before.
                    for now in 0..<min(h, firstHour) {
                        let base = p * stride + now * h
                        for hour in firstHour..<lastHour {
                            let i = base + hour
                            shares[r]![i] += share
                            if table[r]![i] < size {
                                table[r]![i] = size
                                largestShare[r]![i] = share
                            }
                        }
                    }
                }
            }
        }
        var tables: [String: Table] = [:]
        for (r, big) in table {
            tables[r] = Table(largest: big, spread: zip(shares[r]!, largestShare[r]!).map { max(0, $0 - $1) })
        }
        self.tables = tables
    }

    /// One past period's need in a region-hour (see `Need`).
    @inline(__always)
    private func needed(_ t: [Int32], _ f: [Float], _ i: Int) -> Int {
        let big = Int(t[i])
        guard need == .largestPlusShare, big > 0 else { return big }
        return big + Int(min(f[i], Float(Int32.max)).rounded(.up))
    }

    /// The expected part (0...1) of `gpus` taken in `region` at `hour` that a bound job released
    /// after `now` would have needed, when `left` GPUs are free there before taking them.
    public func shortfall(region: String, now: Int, hour: Int, gpus: Int, left: Int) -> Double {
        guard periods > 0, gpus > 0, now >= 0, now < hours, hour >= 0, hour < hours,
              let table = tables[region] else { return 0 }
        let t = table.largest, f = table.spread
        // Sizes are kept as Int32; clamped the same, no sum below can overflow.
        let gpus = Int(Int32(clamping: gpus)), after = Int(Int32(clamping: left)) - gpus
        let stride = hours * hours
        var short = 0
        for p in 0..<periods {
            let need = needed(t, f, p * stride + now * hours + hour)
            if need > 0, need > after { short += min(gpus, need - after) }
        }
        return Double(short) / Double(gpus * periods)
    }

    /// The largest bound job of any past period that may still come to `region` in `hour`.
    public func largestExpected(region: String, now: Int, hour: Int) -> Int {
        guard periods > 0, now >= 0, now < hours, hour >= 0, hour < hours, let t = tables[region]?.largest else { return 0 }
        let stride = hours * hours
        return (0..<periods).map { Int(t[$0 * stride + now * hours + hour]) }.max() ?? 0
    }
}
