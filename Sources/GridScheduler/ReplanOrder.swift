/// The order in which held and waiting jobs are decided again at the top of the hour (joint
/// re-planning: every reservation given back, then each job decided against what the ones
/// before it took). A greedy pass is only as good as its order, and no one order wins: largest
/// first lets the big jobs have the cheap hours; least slack first keeps the jobs that cannot
/// wait (often bound to one region) from losing their only window. `best` plans both ways and
/// keeps the plan that scores lower (its chosen options' scores plus the unplaced price of
/// every job left with no slot); the national scheduler and `grid-bench national` both do this.
public enum ReplanOrder: String, Sendable, Codable, CaseIterable {
    /// Largest GPU-hours first.
    case size
    /// Least slack (latest start − now) first, then the largest.
    case slack
    /// Both, and the better plan.
    case best

    /// What ordering needs to know about a job.
    public struct Item: Sendable, Equatable {
        public var id: String
        public var gpuHours: Int
        /// Hours it can still wait: latest start − now (negative once late).
        public var slack: Int
        public init(id: String, gpuHours: Int, slack: Int) {
            self.id = id
            self.gpuHours = gpuHours
            self.slack = slack
        }
    }

    /// The orders to plan in (one, or both for `best`), each a permutation of `items`' ids;
    /// ties broken by id, so the same input always gives the same plan.
    public func candidates(_ items: [Item]) -> [[String]] {
        switch self {
        case .size: return [Self.bySize(items)]
        case .slack: return [Self.bySlack(items)]
        case .best:
            let a = Self.bySize(items), b = Self.bySlack(items)
            return a == b ? [a] : [a, b]
        }
    }

    static func bySize(_ items: [Item]) -> [String] {
        items.sorted { ($0.gpuHours, $1.id) > ($1.gpuHours, $0.id) }.map(\.id)
    }

    static func bySlack(_ items: [Item]) -> [String] {
        items.sorted { ($0.slack, $1.gpuHours, $0.id) < ($1.slack, $0.gpuHours, $1.id) }.map(\.id)
    }

    /// The index of the plan to keep: the lowest score, the first on a tie (within 1e-9).
    public static func pick(_ scores: [Double]) -> Int {
        var best = 0
        for (i, s) in scores.enumerated() where s < scores[best] - 1e-9 { best = i }
        return best
    }
}
