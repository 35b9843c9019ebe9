/// The order in which held and waiting jobs are decided again at the top of the hour (joint
/// re-planning: every reservation given back, then each job decided against what the ones
/// before it took). A greedy pass is only as good as its order, and no one order wins: largest
/// first lets the big jobs have the cheap hours; least slack first keeps the jobs that cannot
/// wait from losing their only window; bound first keeps a job that may run in one or two
/// regions from losing its gaps there to jobs that could have gone elsewhere (among equally
/// bound jobs it is least slack first). `best` plans largest first and, when that leaves a job
/// with no slot, bound first as well, and keeps the plan that scores lower (its chosen options' scores plus the unplaced price of
/// every job left with no slot); the national scheduler and `grid-bench national` both do this.
public enum ReplanOrder: String, Sendable, Codable, CaseIterable {
    /// Largest GPU-hours first.
    case size
    /// Least slack (latest start − now) first, then the largest.
    case slack
    /// Fewest allowed regions first, then least slack, then the largest.
    case bound
    /// Largest first; when that leaves a job with no slot, bound first too; the better plan.
    /// (Least slack first as the second order places about as much and a third pass costs a
    /// third of the decision rate: BENCHMARKS.md, issue 10.)
    case best

    /// What ordering needs to know about a job.
    public struct Item: Sendable, Equatable {
        public var id: String
        public var gpuHours: Int
        /// Hours it can still wait: latest start − now (negative once late).
        public var slack: Int
        /// How many regions it may run in (jurisdiction and latency); `Int.max` when not known.
        public var regions: Int
        public init(id: String, gpuHours: Int, slack: Int, regions: Int = .max) {
            self.id = id
            self.gpuHours = gpuHours
            self.slack = slack
            self.regions = regions
        }
    }

    /// The orders to plan in (one, or for `best` largest first and then bound first when the
    /// two differ), each a permutation of `items`' ids; ties broken by id, so the same input always
    /// gives the same plan.
    public func candidates(_ items: [Item]) -> [[String]] {
        switch self {
        case .size: return [Self.bySize(items)]
        case .slack: return [Self.bySlack(items)]
        case .bound: return [Self.byBound(items)]
        case .best:
            let a = Self.bySize(items), b = Self.byBound(items)
            return a == b ? [a] : [a, b]
        }
    }

    static func bySize(_ items: [Item]) -> [String] {
        items.sorted { ($0.gpuHours, $1.id) > ($1.gpuHours, $0.id) }.map(\.id)
    }

    static func bySlack(_ items: [Item]) -> [String] {
        items.sorted { ($0.slack, $1.gpuHours, $0.id) < ($1.slack, $0.gpuHours, $1.id) }.map(\.id)
    }

    static func byBound(_ items: [Item]) -> [String] {
        items.sorted { ($0.regions, $0.slack, $1.gpuHours, $0.id) < ($1.regions, $1.slack, $0.gpuHours, $1.id) }.map(\.id)
    }

    /// The index of the plan to keep: the lowest score, the first on a tie (within 1e-9).
    public static func pick(_ scores: [Double]) -> Int {
        var best = 0
        for (i, s) in scores.enumerated() where s < scores[best] - 1e-9 { best = i }
        return best
    }
}
