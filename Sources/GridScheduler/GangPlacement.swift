import GridCore

/// Where a gang (`JobSpec.nodes` > 1) was put, or why it waits.
public enum GangChoice: Equatable, Sendable {
    /// One node and its devices per rank, rank 0 first; the nodes are distinct.
    case placed([GangSlot])
    /// Enough nodes could hold a rank, but not that many at once now.
    case busy(String)
    /// Fewer ready nodes than ranks could ever hold one.
    case impossible(String)
}

public struct GangSlot: Equatable, Sendable {
    public var node: NodeID
    public var deviceIDs: [String]
    public init(node: NodeID, deviceIDs: [String]) {
        self.node = node
        self.deviceIDs = deviceIDs
    }
}

extension PlacementIndex {
    /// Finds `ranks` distinct nodes that can each take one rank of a gang, all or nothing,
    /// without allocating anything: rank 0 is chosen as any job is (`choose(among:)`, which
    /// picks the option, e.g. a model job's precision); every further rank uses that option
    /// and is chosen the same way with the nodes already taken set aside. The index is left
    /// exactly as it was.
    ///
    /// Cost: `ranks` calls of `choose` that skip the nodes already taken (a set lookup per
    /// candidate). Only when the gang does not fit are the taken nodes made unschedulable for
    /// one more `choose` (and restored), so that "busy" and "impossible" are judged without them.
    public mutating func chooseGang(among wants: [AcceleratorRequest], ranks: Int, account: String? = nil)
        -> (option: Int, choice: GangChoice)
    {
        guard ranks > 1 else {
            let (option, c) = choose(among: wants, account: account)
            switch c {
            case .placed(let node, let ids): return (option, .placed([GangSlot(node: node, deviceIDs: ids)]))
            case .busy(let why): return (0, .busy(why))
            case .impossible(let why): return (0, .impossible(why))
            }
        }
        var taken: [GangSlot] = []
        var excluded: Set<Int32> = []
        var option = 0
        var options = wants
        while taken.count < ranks {
            var (o, c) = choose(among: options, account: account, excluding: excluded)
            if case .placed(let node, let ids) = c {
                if taken.isEmpty {
                    option = o
                    options = [wants[o]]
                }
                taken.append(GangSlot(node: node, deviceIDs: ids))
                excluded.insert(slotOf[node]!)
                continue
            }
            if !taken.isEmpty {
                // Judge busy or impossible without the nodes taken: set them aside for one more
                // look, then put them back.
                for slot in taken { apply(node: slot.node, false) }
                (o, c) = choose(among: options, account: account)
                for slot in taken.reversed() { apply(node: slot.node, (requested[slot.node] ?? false) && !cordoned.contains(slot.node)) }
            }
            switch c {
            case .placed, .busy:
                let words = RegionPlacement.describe(options[0])
                return (0, .busy("waiting for \(ranks) nodes at once with \(options[0].count) free device(s) each matching \(words) (gang); \(taken.count) have them free now"))
            case .impossible(let why):
                if taken.isEmpty { return (0, .impossible("gang of \(ranks) nodes: \(why)")) }
                let words = options[0].count > 0 ? "\(options[0].count) schedulable device(s) matching \(RegionPlacement.describe(options[0]))" : "room for a rank"
                return (0, .impossible("gang of \(ranks) nodes: only \(taken.count) ready node(s) have \(words)"))
            }
        }
        return (option, .placed(taken))
    }

    /// Whether `node` has `want.count` free units `want` can use now (a schedulable node only).
    public mutating func fitsNow(node: NodeID, for want: AcceleratorRequest, account: String? = nil) -> Bool {
        guard let slot = slotOf[node], let n = nodes[Int(slot)], n.schedulable else { return false }
        guard want.count > 0 else { return true }
        let matching = Set(matchingClasses(want, account: account))
        return n.units.lazy.filter { !$0.busy && matching.contains($0.classID) }.count >= want.count
    }
}
