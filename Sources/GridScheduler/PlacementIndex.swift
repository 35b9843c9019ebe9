import GridCatalog
import GridCore

/// A kind of schedulable unit: every free unit of one class is interchangeable for placement.
/// A unit is a whole device, or a slice of a partitioned one (MIG): a partitioned device offers
/// its slices, each with its own memory and profile, and never itself.
public struct UnitClass: Hashable, Sendable {
    public var vendor: AcceleratorVendor
    /// The model string as the device reports it (devices of one SKU report the same string).
    public var model: String
    public var memoryMiB: Int
    public var grade: DeviceGrade?
    /// `.healthy` or `.degraded`; other states are not schedulable and have no class.
    public var health: HealthState
    /// The slice profile for a partition; nil = a whole device.
    public var partition: String? = nil
    /// Compute per unit in GCU, health-derated, to 0.1 (a slice: its share of the device).
    public var gcu: Double = 0
    /// The accounts a dedicated node runs jobs for (sorted); nil = any account.
    public var accounts: [String]? = nil

    public init(vendor: AcceleratorVendor, model: String, memoryMiB: Int, grade: DeviceGrade?, health: HealthState, partition: String? = nil,
                gcu: Double = 0) {
        self.partition = partition
        self.gcu = gcu
        self.vendor = vendor
        self.model = model
        self.memoryMiB = memoryMiB
        self.grade = grade
        self.health = health
    }

    /// Placement preference: least capable adequate grade first (circular utilization: keep the
    /// frontier parts for work that needs them), healthy before degraded within a grade, then
    /// least memory, then the model name so the order is total.
    static func prefer(_ a: UnitClass, _ b: UnitClass) -> Bool {
        let ga = a.grade ?? .c, gb = b.grade ?? .c
        if ga != gb { return ga > gb }
        if a.health != b.health { return a.health < b.health }
        if a.memoryMiB != b.memoryMiB { return a.memoryMiB < b.memoryMiB }
        if a.vendor != b.vendor { return a.vendor.rawValue < b.vendor.rawValue }
        if a.model != b.model { return a.model < b.model }
        // A tenant's own nodes before the shared ones of the same kind.
        if (a.accounts == nil) != (b.accounts == nil) { return a.accounts != nil }
        return (a.accounts ?? []).lexicographicallyPrecedes(b.accounts ?? [])
    }
}

/// What a region summary reports per (vendor, model, memory, grade): every device of ready
/// nodes, how many can take work, how many of those are degraded and how many are free.
public struct CapacityKey: Hashable, Sendable, Comparable {
    public var vendor: AcceleratorVendor
    public var model: String
    public var memoryMiB: Int
    public var grade: DeviceGrade?
    public var partition: String? = nil
    public static func < (a: CapacityKey, b: CapacityKey) -> Bool {
        (a.vendor.rawValue, a.model, a.memoryMiB, a.grade?.rawValue ?? "", a.partition ?? "")
            < (b.vendor.rawValue, b.model, b.memoryMiB, b.grade?.rawValue ?? "", b.partition ?? "")
    }
}

public struct CapacityCounts: Hashable, Sendable {
    public var total = 0
    /// Schedulable: healthy, or degraded when the policy allows it; never grade R.
    public var usable = 0
    public var degraded = 0
    public var free = 0
    public init() {}
}

/// Where a request was put, or why it waits.
public enum PlacementChoice: Equatable, Sendable {
    case placed(node: NodeID, deviceIDs: [String])
    /// Some ready node has enough matching devices, but not free now.
    case busy(String)
    /// No ready node has enough matching schedulable devices.
    case impossible(String)
}

/// The region's free-capacity index: every ready node's schedulable units, grouped by class
/// and bucketed by how many of that class a node has free, updated incrementally on every
/// allocation, release, health change and membership change.
///
/// Placement is feasibility → scoring of a bounded set of candidates → choice:
/// the classes a request can use come from a per-shape cache (classes are few: one per SKU,
/// memory size, grade and health); for each in preference order the tightest non-empty bucket
/// (the nodes with the fewest free units that still fit, so whole nodes stay free for large
/// jobs) yields at most `candidateLimit` nodes, scored by how little they leave fragmented,
/// then by node id. A request that needs units of several classes on one node (e.g. 8 devices
/// of which 2 are degraded) falls back to a scan of at most `scanLimit` nodes by total free
/// units. Everything is deterministic for a given sequence of operations.
///
/// Designed to grow: gang placement takes several `choose` results before committing them
/// with `allocate`; preemption releases victims with `release`; quotas filter classes per
/// tenant; partitions are units with their own class.
public struct PlacementIndex: Sendable {
    public struct Options: Sendable, Hashable {
        public var allowDegraded: Bool
        /// Nodes scored per request and class before choosing (Nomad limits candidates too).
        public var candidateLimit: Int
        /// Nodes examined when a request needs units of several classes on one node.
        public var scanLimit: Int
        public init(allowDegraded: Bool = true, candidateLimit: Int = 8, scanLimit: Int = 512) {
            self.allowDegraded = allowDegraded
            self.candidateLimit = max(1, candidateLimit)
            self.scanLimit = max(1, scanLimit)
        }
    }

    struct Unit: Sendable {
        var deviceID: String
        var index: Int
        /// -1: not schedulable (unhealthy, unknown, retired, or degraded when not allowed).
        var classID: Int32
        var capacityKey: CapacityKey
        var health: HealthState
        var busy: Bool
        /// The host NUMA node; -1 unknown (all unknown ones count as one node).
        var numa: Int32 = -1
        /// For a slice of a partitioned device: the device's id.
        var parent: String? = nil
        /// Indexes of the node's devices this one has a direct NVLink to.
        var peers: [Int] = []
    }

    struct ClassSlot: Sendable {
        var classID: Int32
        /// Schedulable units of this class on the node.
        var units: Int32
        var free: Int32
        /// Position in `buckets[classID][free]` while the node is schedulable and free > 0.
        var position: Int32
    }

    struct NodeEntry: Sendable {
        var id: NodeID
        var units: [Unit]
        var classes: [ClassSlot]
        var schedulable: Bool
        var freeTotal: Int32
        var totalPosition: Int32
        var anyPosition: Int32
    }

    /// An array of node slots with O(1) insert and remove; positions live in the node entries.
    struct Bucket: Sendable {
        var slots: [Int32] = []
    }

    public private(set) var options: Options
    var nodes: [NodeEntry?] = []
    var slotOf: [NodeID: Int32] = [:]
    var freeSlotList: [Int32] = []
    /// Schedulable units of every node the index holds, schedulable now or not.
    public private(set) var unitTotal = 0
    var classes: [UnitClass] = []
    var classIDs: [UnitClass: Int32] = [:]
    /// buckets[class][k]: schedulable nodes with exactly k free units of the class (k ≥ 1).
    var buckets: [[Bucket]] = []
    /// Nodes with k free schedulable units in all (k ≥ 1), for requests spanning classes.
    var totalBuckets: [Bucket] = []
    /// Every schedulable node, for requests that need no device.
    var anyBucket = Bucket()
    var anyCursor = 0
    /// nodesWithUnits[class][k]: how many schedulable nodes have k units of the class, free or
    /// not; says whether a request could ever fit.
    var nodesWithUnits: [[Int]] = []
    var shapeCache: [ShapeKey: [Int32]] = [:]
    /// "Could it ever fit" answers that need a scan of the nodes (several classes on one node,
    /// or units on one NUMA node or all NVLink peers); cleared whenever a node joins, leaves or
    /// changes schedulability.
    var mixedFit: [MixedFitKey: Bool] = [:]
    struct MixedFitKey: Hashable {
        var classes: [[Int32]]
        var count: Int
        /// nil: any units of the node; `.sameNUMA` or a peer fabric: grouped as asked.
        var grouping: InterconnectRequirement?
    }
    /// Nodes cordoned by an operator, and what each node's state asks for (schedulable or not).
    public private(set) var cordoned: Set<NodeID> = []
    var requested: [NodeID: Bool] = [:]
    var classRank: [Int32] = []
    public private(set) var capacity: [CapacityKey: CapacityCounts] = [:]
    public private(set) var healthCounts: [HealthState: Int] = [:]
    /// Capacity keys whose counts changed since `takeChangedCapacity()`, for summary deltas.
    var changedCapacity: Set<CapacityKey> = []

    struct ShapeKey: Hashable {
        var vendor: AcceleratorVendor?
        var model: String
        var minMemoryMiB: Int
        var minGrade: DeviceGrade?
        var maxGrade: DeviceGrade?
        var partition: String?
        var minGCU: Double
        var interconnect: InterconnectRequirement?
        /// Set only while some node is dedicated to accounts (shapes are shared otherwise).
        var account: String?
    }

    var models: [String: String] = [:]

    public init(options: Options = Options()) {
        self.options = options
    }

    /// One copy of each model string for every unit that names it.
    mutating func intern(_ model: String) -> String {
        if let m = models[model] { return m }
        models[model] = model
        return model
    }

    /// Nodes dedicated to some accounts (agent `run_as` without `*`): their units get classes
    /// of their own, which only those accounts' requests match (`setAccounts`).
    var accountsOf: [NodeID: [String]] = [:]
    /// `explain`'s texts by chosen classes and units left free.
    var explanations: [ExplainKey: String] = [:]
    public var dedicatedNodeCount: Int { accountsOf.count }

    /// Dedicates a node to `accounts` (empty: any account). Takes effect with the node's next
    /// `upsert`; returns whether it changed.
    @discardableResult
    public mutating func setAccounts(node id: NodeID, _ accounts: [String]) -> Bool {
        let new = accounts.isEmpty ? nil : Array(Set(accounts)).sorted()
        guard accountsOf[id] != new else { return false }
        accountsOf[id] = new
        shapeCache.removeAll(keepingCapacity: true)
        return true
    }

    /// Whether a node runs jobs of `account` (nil: a request that names none, so only shared nodes).
    func admits(_ id: NodeID, account: String?) -> Bool {
        guard let only = accountsOf[id] else { return true }
        return account.map { only.contains($0) } ?? false
    }

    public var nodeCount: Int { slotOf.count }
    public var schedulableNodeCount: Int { anyBucket.slots.count }

    // MARK: membership

    /// Adds a node or replaces its devices. `busy` names devices held by assignments; devices
    /// whose agent reports foreign processes on them are busy too.
    public mutating func upsert(node id: NodeID, devices: [DeviceInventory], busy: Set<String>, schedulable: Bool) {
        remove(node: id)
        let slot: Int32
        if let reused = freeSlotList.popLast() { slot = reused } else {
            slot = Int32(nodes.count)
            nodes.append(nil)
        }
        var units: [Unit] = []
        units.reserveCapacity(devices.count)
        var classSlots: [ClassSlot] = []
        for (d, parent) in DeviceInventory.schedulableUnitsWithParents(devices) {
            let profile = d.slice?.schedulingProfile
            let cid = classID(for: d, partition: profile, accounts: accountsOf[id])
            let key = CapacityKey(vendor: d.vendor, model: intern(d.model), memoryMiB: d.memoryTotalMiB ?? 0, grade: d.grade,
                                  partition: profile)
            // A device some other process computes on is held, whoever placed it.
            let isBusy = busy.contains(d.id) || (d.foreignProcesses ?? 0) > 0
            units.append(Unit(deviceID: d.id, index: d.index, classID: cid, capacityKey: key,
                              health: d.health.state, busy: isBusy, numa: Int32(clamping: d.numaNode ?? -1), parent: parent,
                              peers: parent == nil ? (d.nvlinkPeers ?? []) : []))
            if cid >= 0 {
                if let i = classSlots.firstIndex(where: { $0.classID == cid }) {
                    classSlots[i].units += 1
                    if !isBusy { classSlots[i].free += 1 }
                } else {
                    classSlots.append(ClassSlot(classID: cid, units: 1, free: isBusy ? 0 : 1, position: -1))
                }
            }
        }
        nodes[Int(slot)] = NodeEntry(id: id, units: units, classes: classSlots, schedulable: false,
                                     freeTotal: classSlots.reduce(0) { $0 + $1.free }, totalPosition: -1, anyPosition: -1)
        slotOf[id] = slot
        unitTotal += units.count
        requested[id] = schedulable
        if schedulable && !cordoned.contains(id) { apply(node: id, true) }
    }

    /// Takes the node out (its dedication stays, for when it comes back).
    public mutating func remove(node id: NodeID) {
        guard let slot = slotOf[id] else { return }
        apply(node: id, false)
        requested[id] = nil
        unitTotal -= nodes[Int(slot)]?.units.count ?? 0
        nodes[Int(slot)] = nil
        slotOf[id] = nil
        freeSlotList.append(slot)
    }

    /// A node that is lost, draining or unreachable keeps its units but offers none. A cordoned
    /// node offers none whatever this says (the setting is kept for when it is uncordoned).
    public mutating func setSchedulable(node id: NodeID, _ on: Bool) {
        guard slotOf[id] != nil else { return }
        requested[id] = on
        apply(node: id, on && !cordoned.contains(id))
    }

    /// An operator's cordon: the node takes no new work until uncordoned; what runs there runs on.
    public mutating func setCordoned(node id: NodeID, _ on: Bool) {
        if on { cordoned.insert(id) } else { cordoned.remove(id) }
        guard slotOf[id] != nil else { return }
        apply(node: id, (requested[id] ?? false) && !on)
    }

    mutating func apply(node id: NodeID, _ on: Bool) {
        guard let slot = slotOf[id], var n = nodes[Int(slot)], n.schedulable != on else { return }
        n.schedulable = on
        if !mixedFit.isEmpty { mixedFit.removeAll(keepingCapacity: true) }
        let sign = on ? 1 : -1
        for u in n.units {
            var c = capacity[u.capacityKey] ?? CapacityCounts()
            c.total += sign
            if u.classID >= 0 {
                c.usable += sign
                if u.health == .degraded { c.degraded += sign }
                if !u.busy { c.free += sign }
            }
            capacity[u.capacityKey] = c.total == 0 ? nil : c
            changedCapacity.insert(u.capacityKey)
            healthCounts[u.health, default: 0] += sign
        }
        if on {
            for i in n.classes.indices {
                let cs = n.classes[i]
                bump(&nodesWithUnits, cs.classID, Int(cs.units), +1)
                n.classes[i].position = cs.free > 0 ? insertClass(slot, cs.classID, Int(cs.free)) : -1
            }
            n.totalPosition = n.freeTotal > 0 ? insertTotal(slot, Int(n.freeTotal)) : -1
            n.anyPosition = Int32(anyBucket.slots.count)
            anyBucket.slots.append(slot)
            nodes[Int(slot)] = n
        } else {
            for i in n.classes.indices {
                let cs = n.classes[i]
                bump(&nodesWithUnits, cs.classID, Int(cs.units), -1)
                if cs.position >= 0 { removeClass(cs.position, cs.classID, Int(cs.free)) }
                n.classes[i].position = -1
            }
            if n.totalPosition >= 0 { removeTotal(n.totalPosition, Int(n.freeTotal)) }
            n.totalPosition = -1
            removeAny(n.anyPosition)
            n.anyPosition = -1
            nodes[Int(slot)] = n
        }
    }

    // MARK: allocation

    /// Marks devices busy. Unknown ids and devices already busy are ignored (idempotent).
    public mutating func allocate(node id: NodeID, deviceIDs: [String]) {
        setBusy(node: id, deviceIDs: deviceIDs, busy: true)
    }

    /// Marks devices free again (the assignment ended, was revoked or rejected).
    public mutating func release(node id: NodeID, deviceIDs: [String]) {
        setBusy(node: id, deviceIDs: deviceIDs, busy: false)
    }

    mutating func setBusy(node id: NodeID, deviceIDs: [String], busy: Bool) {
        guard let slot = slotOf[id], nodes[Int(slot)] != nil else { return }
        let s = Int(slot)
        // Take the node out of its buckets, change it, put it back: one place keeps positions
        // right. The entry is changed where it lies: a copy taken out and written back would
        // copy its unit and class arrays on every change.
        let wasSchedulable = nodes[s]!.schedulable
        if wasSchedulable { detachBuckets(slot) }
        for did in deviceIDs {
            guard let ui = nodes[s]!.units.firstIndex(where: { $0.deviceID == did }), nodes[s]!.units[ui].busy != busy else { continue }
            nodes[s]!.units[ui].busy = busy
            let classID = nodes[s]!.units[ui].classID
            guard classID >= 0 else { continue }
            if let ci = nodes[s]!.classes.firstIndex(where: { $0.classID == classID }) {
                nodes[s]!.classes[ci].free += busy ? -1 : 1
                nodes[s]!.freeTotal += busy ? -1 : 1
            }
            if wasSchedulable {
                let key = nodes[s]!.units[ui].capacityKey
                capacity[key]?.free += busy ? -1 : 1
                changedCapacity.insert(key)
            }
        }
        if wasSchedulable { attachBuckets(slot) }
    }

    mutating func detachBuckets(_ slot: Int32) {
        let s = Int(slot)
        guard nodes[s] != nil else { return }
        for i in 0..<nodes[s]!.classes.count where nodes[s]!.classes[i].position >= 0 {
            let c = nodes[s]!.classes[i]
            removeClass(c.position, c.classID, Int(c.free))
            nodes[s]!.classes[i].position = -1
        }
        let total = nodes[s]!.totalPosition
        if total >= 0 { removeTotal(total, Int(nodes[s]!.freeTotal)) }
        nodes[s]!.totalPosition = -1
    }

    mutating func attachBuckets(_ slot: Int32) {
        let s = Int(slot)
        guard nodes[s] != nil else { return }
        for i in 0..<nodes[s]!.classes.count where nodes[s]!.classes[i].free > 0 {
            let c = nodes[s]!.classes[i]
            let position = insertClass(slot, c.classID, Int(c.free))
            nodes[s]!.classes[i].position = position
        }
        let free = Int(nodes[s]!.freeTotal)
        let total = free > 0 ? insertTotal(slot, free) : -1
        nodes[s]!.totalPosition = total
    }

    // MARK: choosing

    /// Finds the best node and devices for a request without allocating them.
    public mutating func choose(_ want: AcceleratorRequest, account: String? = nil) -> PlacementChoice {
        choose(among: [want], account: account).choice
    }

    /// Finds the best node and devices for any of several ways to run one job (a model job at
    /// each precision it allows, most preferred first; every option asks for the same count),
    /// without allocating them. Classes are tried in placement preference across all options —
    /// least capable adequate grade first, so a lower grade at a lower precision beats a
    /// frontier part at a higher one — and a class several options can use goes to the first
    /// of them. Returns the option that placed the job (0 when it waits). `account`: the job's
    /// (`JobSpec.accountName`); nodes dedicated to other accounts are never chosen.
    ///
    /// `excluding`: nodes (by slot) set aside, as a gang's ranks already chosen are; they are
    /// never chosen, but still count for whether the request could ever fit (busy or
    /// impossible), so a caller that needs that judged without them asks again after making
    /// them unschedulable (`chooseGang` does, on its failure path only).
    public mutating func choose(among wants: [AcceleratorRequest], account: String? = nil) -> (option: Int, choice: PlacementChoice) {
        choose(among: wants, account: account, excluding: [])
    }

    mutating func choose(among wants: [AcceleratorRequest], account: String?, excluding: Set<Int32>) -> (option: Int, choice: PlacementChoice) {
        guard let first = wants.first else { return (0, .impossible("no way to run the job")) }
        if first.count <= 0 {
            guard !anyBucket.slots.isEmpty else { return (0, .impossible("no ready node")) }
            // Round robin over ready nodes, past those dedicated to other accounts.
            for _ in 0..<anyBucket.slots.count {
                anyCursor = anyCursor % anyBucket.slots.count
                let slot = anyBucket.slots[anyCursor]
                anyCursor += 1
                if excluding.contains(slot) { continue }
                let id = nodes[Int(slot)]!.id
                if accountsOf.isEmpty || admits(id, account: account) { return (0, .placed(node: id, deviceIDs: [])) }
            }
            return (0, .impossible("no ready node runs jobs of account '\(account ?? "default")'"))
        }
        let count = first.count
        let matchings = wants.map { matchingClasses($0, account: account) }
        if (first.interconnect == .sameNUMA || first.interconnect?.needsPeers == true) && count > 1 {
            return chooseConnected(wants, matchings, nvlink: first.interconnect?.needsPeers == true, excluding: excluding)
        }
        var merged: [(cid: Int32, option: Int)]
        if matchings.count == 1 {
            merged = matchings[0].map { ($0, 0) }
        } else {
            var optionOf: [Int32: Int] = [:]
            for (i, m) in matchings.enumerated() { for c in m where optionOf[c] == nil { optionOf[c] = i } }
            merged = optionOf.map { ($0.key, $0.value) }.sorted { classRank[Int($0.cid)] < classRank[Int($1.cid)] }
        }
        let words = RegionPlacement.describe(wants[wants.count - 1])
        if merged.isEmpty {
            return (0, .impossible("no ready node has \(count) schedulable device(s) matching \(words)"))
        }
        // One class suffices: tightest bucket of the most preferred class.
        for (cid, option) in merged {
            let row = buckets[Int(cid)]
            guard row.count > count else { continue }
            for k in count..<row.count where !row[k].slots.isEmpty {
                guard let slot = best(of: row[k].slots, excluding: excluding) else { continue }
                return (option, .placed(node: nodes[Int(slot)]!.id, deviceIDs: pick(slot, count, matchings[option])))
            }
        }
        // Several classes on one node.
        for (option, matching) in matchings.enumerated() where matching.count > 1 {
            var examined = 0
            var fits: [Int32] = []
            outer: for k in stride(from: count, to: totalBuckets.count, by: 1) {
                for slot in totalBuckets[k].slots where !excluding.contains(slot) {
                    examined += 1
                    if matchingFree(slot, matching) >= count {
                        fits.append(slot)
                        if fits.count >= options.candidateLimit { break outer }
                    }
                    if examined >= options.scanLimit { break outer }
                }
            }
            if !fits.isEmpty {
                let slot = fits.min { nodes[Int($0)]!.id < nodes[Int($1)]!.id }!
                return (option, .placed(node: nodes[Int(slot)]!.id, deviceIDs: pick(slot, count, matching)))
            }
        }
        let capable = matchings.contains { couldEverFit($0, count) }
        return (0, capable
            ? .busy("waiting for \(count) free device(s) matching \(words)")
            : .impossible("no ready node has \(count) schedulable device(s) matching \(words)"))
    }

    /// Whether some schedulable node has enough units of classes the request can use, free or
    /// not (the request could ever be placed as things stand). Cached by shape.
    public mutating func couldEverFit(_ want: AcceleratorRequest, account: String? = nil) -> Bool {
        guard want.count > 0 else { return !anyBucket.slots.isEmpty }
        // Two statements: a non-mutating call whose argument mutates `self` copies the whole
        // index first (found by perf: a copy of the index per waiting job).
        let matching = matchingClasses(want, account: account)
        if want.count > 1, let i = want.interconnect, i == .sameNUMA || i.needsPeers {
            return couldEverFitConnected([matching], want.count, nvlink: i.needsPeers)
        }
        return couldEverFit(matching, want.count)
    }

    /// Whether some schedulable node has `count` units of one of `matchings`' classes on one NUMA
    /// node (or, `nvlink`, all peers of each other), busy or not. A scan, remembered until
    /// membership changes.
    mutating func couldEverFitConnected(_ matchings: [[Int32]], _ count: Int, nvlink: Bool) -> Bool {
        let key = MixedFitKey(classes: matchings, count: count, grouping: nvlink ? .nvlink : .sameNUMA)
        if let known = mixedFit[key] { return known }
        var fits = false
        scan: for case let n? in nodes where n.schedulable {
            for matching in matchings {
                if nvlink {
                    if nvlinkGroup(n, matching, count, evenBusy: true) != nil { fits = true; break scan }
                    continue
                }
                var groups: [Int32: Int] = [:]
                for u in n.units where u.classID >= 0 && matching.contains(u.classID) { groups[u.numa, default: 0] += 1 }
                if groups.values.contains(where: { $0 >= count }) { fits = true; break scan }
            }
        }
        if mixedFit.count >= 4096 { mixedFit.removeAll(keepingCapacity: true) }
        mixedFit[key] = fits
        return fits
    }

    /// Whether some schedulable node has `count` units of `matching`'s classes: of one class
    /// (read off `nodesWithUnits`), or of several together on one node. The latter is a scan of
    /// the schedulable nodes, done only when the classes' largest holdings could add up to
    /// `count` and remembered until membership changes. (The bound alone said "busy" for 3
    /// grade-B-or-lower devices on nodes of 2 V100s and 2 A10Gs, and such a job reserved nodes
    /// it could never use: found by the property harness, seed 732720.)
    mutating func couldEverFit(_ matching: [Int32], _ count: Int) -> Bool {
        let oneClass = matching.contains { cid in
            let row = nodesWithUnits[Int(cid)]
            return row.count > count && row[count...].contains { $0 > 0 }
        }
        if oneClass { return true }
        guard matching.count > 1,
              matching.reduce(0, { acc, cid in acc + (nodesWithUnits[Int(cid)].lastIndex { $0 > 0 } ?? 0) }) >= count else { return false }
        let key = MixedFitKey(classes: [matching], count: count, grouping: nil)
        if let known = mixedFit[key] { return known }
        let fits = anyBucket.slots.contains { slot in
            nodes[Int(slot)]!.classes.reduce(0) { acc, c in matching.contains(c.classID) ? acc + Int(c.units) : acc } >= count
        }
        if mixedFit.count >= 4096 { mixedFit.removeAll(keepingCapacity: true) }
        mixedFit[key] = fits
        return fits
    }

    /// `interconnect: same_numa` (or `nvlink`): nodes with enough free units in all are scanned
    /// (at most `scanLimit`), and a node fits when one NUMA node of it has `count` free units a
    /// request can use (or `count` free units that are all NVLink peers of each other). Among at
    /// most `candidateLimit` fits: the least capable classes first, then the node with the
    /// fewest free units, then the id; the option is the first that fits there.
    mutating func chooseConnected(_ wants: [AcceleratorRequest], _ matchings: [[Int32]], nvlink: Bool, excluding: Set<Int32> = []) -> (option: Int, choice: PlacementChoice) {
        let count = wants[0].count
        var best: (key: [Int], slot: Int32, option: Int, ids: [String])?
        var fits = 0, examined = 0
        outer: for k in stride(from: count, to: totalBuckets.count, by: 1) {
            for slot in totalBuckets[k].slots where !excluding.contains(slot) {
                examined += 1
                let n = nodes[Int(slot)]!
                for (option, matching) in matchings.enumerated() {
                    guard let (rank, ids) = nvlink ? nvlinkGroup(n, matching, count) : numaGroup(n, matching, count) else { continue }
                    let key = [rank, Int(n.freeTotal), option]
                    if best == nil || key.lexicographicallyPrecedes(best!.key) || (key == best!.key && n.id < nodes[Int(best!.slot)]!.id) {
                        best = (key, slot, option, ids)
                    }
                    fits += 1
                    break
                }
                if fits >= options.candidateLimit || examined >= options.scanLimit { break outer }
            }
        }
        if let best { return (best.option, .placed(node: nodes[Int(best.slot)]!.id, deviceIDs: best.ids)) }
        let words = RegionPlacement.describe(wants[wants.count - 1])
        let fabric = wants[0].interconnect?.fabricName ?? "NVLink"
        if couldEverFitConnected(matchings, count, nvlink: nvlink) {
            return (0, .busy(nvlink ? "waiting for \(count) free \(fabric)-connected device(s) matching \(words)"
                                    : "waiting for \(count) free device(s) matching \(words)"))
        }
        if nvlink {
            return (0, .impossible("no ready node has \(count) schedulable device(s) matching \(words) that are all \(fabric) peers of each other"))
        }
        return (0, .impossible("no ready node has \(count) schedulable device(s) matching \(words)"))
    }

    /// On one node: `count` free units of the matching classes that are all NVLink peers of
    /// each other (each lists the other), the least capable first; nil when there are none.
    /// A small exhaustive search: a node has at most a few dozen units, and a unit without
    /// peers is never part of a group.
    func nvlinkGroup(_ n: NodeEntry, _ matching: [Int32], _ count: Int, evenBusy: Bool = false) -> (rank: Int, ids: [String])? {
        var rank: [Int32: Int] = [:]
        for (i, c) in matching.enumerated() { rank[c] = i }
        let units = n.units.filter { (evenBusy || !$0.busy) && $0.classID >= 0 && rank[$0.classID] != nil && !$0.peers.isEmpty }
            .sorted { a, b in
                let ra = rank[a.classID]!, rb = rank[b.classID]!
                return ra != rb ? ra < rb : a.index < b.index
            }
        guard units.count >= count else { return nil }
        func linked(_ a: Unit, _ b: Unit) -> Bool { a.peers.contains(b.index) && b.peers.contains(a.index) }
        var chosen: [Int] = []
        func extend(from start: Int) -> Bool {
            if chosen.count == count { return true }
            guard units.count - start >= count - chosen.count else { return false }
            for i in start..<units.count where chosen.allSatisfy({ linked(units[$0], units[i]) }) {
                chosen.append(i)
                if extend(from: i + 1) { return true }
                chosen.removeLast()
            }
            return false
        }
        guard extend(from: 0) else { return nil }
        return (chosen.map { rank[units[$0].classID]! }.max()!, chosen.map { units[$0].deviceID })
    }

    /// On one node: the NUMA node with `count` free units of the matching classes whose
    /// chosen units are the least capable (worst class rank among them, lower is preferred),
    /// with those units; nil when none has enough.
    func numaGroup(_ n: NodeEntry, _ matching: [Int32], _ count: Int) -> (rank: Int, ids: [String])? {
        var rank: [Int32: Int] = [:]
        for (i, c) in matching.enumerated() { rank[c] = i }
        var groups: [Int32: [Unit]] = [:]
        for u in n.units where !u.busy && u.classID >= 0 && rank[u.classID] != nil { groups[u.numa, default: []].append(u) }
        var best: (rank: Int, ids: [String])?
        for (_, units) in groups.sorted(by: { $0.key < $1.key }) where units.count >= count {
            let chosen = units.sorted { a, b in
                let ra = rank[a.classID]!, rb = rank[b.classID]!
                return ra != rb ? ra < rb : a.index < b.index
            }.prefix(count)
            let worst = chosen.map { rank[$0.classID]! }.max()!
            if best == nil || worst < best!.rank { best = (worst, chosen.map(\.deviceID)) }
        }
        return best
    }

    /// Chooses and allocates in one step.
    public mutating func place(_ want: AcceleratorRequest) -> PlacementChoice {
        place(among: [want]).choice
    }

    /// Chooses among options (see `choose(among:)`) and allocates in one step.
    public mutating func place(among wants: [AcceleratorRequest]) -> (option: Int, choice: PlacementChoice) {
        let r = choose(among: wants)
        if case .placed(let node, let devices) = r.choice, !devices.isEmpty { allocate(node: node, deviceIDs: devices) }
        return r
    }

    /// Among the first `candidateLimit` nodes of a bucket not in `excluding`: the one with the
    /// fewest free units in all (packs partly used nodes first), then the smallest id; nil when
    /// every node of the bucket is excluded.
    func best(of slots: [Int32], excluding: Set<Int32> = []) -> Int32? {
        var chosen: Int32 = -1
        var chosenFree: Int32 = 0
        var seen = 0
        for slot in slots where excluding.isEmpty || !excluding.contains(slot) {
            let free = nodes[Int(slot)]!.freeTotal
            if chosen < 0 || free < chosenFree || (free == chosenFree && nodes[Int(slot)]!.id < nodes[Int(chosen)]!.id) {
                chosen = slot
                chosenFree = free
            }
            seen += 1
            if seen >= options.candidateLimit { break }
        }
        return chosen < 0 ? nil : chosen
    }

    func matchingFree(_ slot: Int32, _ matching: [Int32]) -> Int {
        nodes[Int(slot)]!.classes.reduce(0) { $0 + (matching.contains($1.classID) ? Int($1.free) : 0) }
    }

    /// The free devices to take on a node: most preferred class first, then runtime index.
    func pick(_ slot: Int32, _ count: Int, _ matching: [Int32]) -> [String] {
        // A node has a few units and a request a few classes: linear scans, no dictionary.
        var free: [(rank: Int, index: Int, id: String)] = []
        nodes[Int(slot)]!.units.withUnsafeBufferPointer { units in
            for u in units where !u.busy && u.classID >= 0 {
                if let r = matching.firstIndex(of: u.classID) { free.append((r, Int(u.index), u.deviceID)) }
            }
        }
        free.sort { $0.rank != $1.rank ? $0.rank < $1.rank : $0.index < $1.index }
        return free.prefix(count).map(\.id)
    }

    /// The classes a request may use, most preferred first; cached per request shape.
    mutating func matchingClasses(_ want: AcceleratorRequest, account: String? = nil) -> [Int32] {
        let key = ShapeKey(vendor: want.vendor ?? want.interconnect?.fabricVendor, model: want.model ?? "", minMemoryMiB: want.minMemoryMiB ?? 0,
                           minGrade: want.minGrade, maxGrade: want.maxGrade, partition: want.partition?.lowercased(),
                           minGCU: want.perDeviceGCU, interconnect: want.interconnect,
                           account: accountsOf.isEmpty ? nil : account)
        if let cached = shapeCache[key] { return cached }
        let pattern = ModelPattern(key.model)
        let ids = classes.indices.filter { i in
            let c = classes[i]
            if let v = key.vendor, c.vendor != v { return false }
            if c.memoryMiB < key.minMemoryMiB { return false }
            if c.gcu + 1e-9 < key.minGCU { return false }
            if !want.admits(grade: c.grade) { return false }
            if !want.admits(partition: c.partition) { return false }
            if let only = c.accounts, !(key.account.map { only.contains($0) } ?? false) { return false }
            return pattern.matches(c.model)
        }.map { Int32($0) }.sorted { classRank[Int($0)] < classRank[Int($1)] }
        shapeCache[key] = ids
        return ids
    }

    func schedulableClass(_ d: DeviceInventory, partition: String? = nil, accounts: [String]? = nil) -> UnitClass? {
        switch d.health.state {
        case .healthy: break
        case .degraded: if !options.allowDegraded { return nil }
        case .unknown, .unhealthy: return nil
        }
        if d.grade == .r { return nil }
        let gcu = ((d.computeUnits ?? 0) * (d.slice?.computeFraction ?? 1) * 10).rounded() / 10
        var c = UnitClass(vendor: d.vendor, model: d.model, memoryMiB: d.memoryTotalMiB ?? 0, grade: d.grade, health: d.health.state,
                          partition: partition, gcu: gcu)
        c.accounts = accounts
        return c
    }

    mutating func classID(for d: DeviceInventory, partition: String? = nil, accounts: [String]? = nil) -> Int32 {
        guard let c = schedulableClass(d, partition: partition, accounts: accounts) else { return -1 }
        if let id = classIDs[c] { return id }
        let id = Int32(classes.count)
        classes.append(c)
        classIDs[c] = id
        buckets.append([])
        nodesWithUnits.append([])
        // New class: re-rank and forget cached shapes (rare: once per SKU/grade/health seen).
        let order = classes.indices.sorted { UnitClass.prefer(classes[$0], classes[$1]) }
        classRank = Array(repeating: 0, count: classes.count)
        for (rank, i) in order.enumerated() { classRank[i] = Int32(rank) }
        shapeCache.removeAll(keepingCapacity: true)
        return id
    }

    // MARK: summaries

    /// Capacity keys changed since the last call (for summary deltas), then forgets them.
    public mutating func takeChangedCapacity() -> Set<CapacityKey> {
        defer { changedCapacity.removeAll(keepingCapacity: true) }
        return changedCapacity
    }

    /// Free devices of a node (schedulable or not), for `gridctl nodes`.
    /// Which of `victims` (each the devices of one assignment on `node`, cheapest first) to stop
    /// so that `want` fits on the node: the first ones, in order, that free a matching device,
    /// until the node's free matching devices and theirs reach `want.count`. nil when even all
    /// of them would not do (or the node takes no work).
    public mutating func preemption(on node: NodeID, for want: AcceleratorRequest, account: String? = nil, victims: [[String]]) -> [Int]? {
        guard let slot = slotOf[node], let n = nodes[Int(slot)], n.schedulable, want.count > 0 else { return nil }
        let matching = Set(matchingClasses(want, account: account))
        var have = n.units.filter { !$0.busy && matching.contains($0.classID) }.count
        var chosen: [Int] = []
        for (k, devices) in victims.enumerated() where have < want.count {
            let set = Set(devices)
            let gain = n.units.filter { $0.busy && set.contains($0.deviceID) && matching.contains($0.classID) }.count
            if gain > 0 {
                chosen.append(k)
                have += gain
            }
        }
        return have >= want.count && !chosen.isEmpty ? chosen : nil
    }

    /// Why each node cannot take `want` now, counted by the first reason that applies, most
    /// nodes first: for "9,812 nodes: grade outside C…A; 160: memory below 40960 MiB; 28: busy".
    public mutating func diagnose(_ want: AcceleratorRequest, account: String? = nil) -> [(cause: String, nodes: Int)] {
        let matchingList = matchingClasses(want, account: account)
        // By class id: a flag per class instead of a set lookup per unit (every node is visited).
        var isMatching = [Bool](repeating: false, count: classes.count)
        for c in matchingList where c >= 0 && Int(c) < isMatching.count { isMatching[Int(c)] = true }
        let pattern = want.model.map(ModelPattern.init)
        // The common causes are counted without hashing a string per node.
        var free = 0, busy = 0, notReady = 0, dedicated = 0, cordonedCount = 0
        var counts: [String: Int] = [:]
        var keyFlags: [CapacityKey: UInt8] = [:]
        for case let n? in nodes {
            let cause: String
            if !cordoned.isEmpty && cordoned.contains(n.id) {
                cordonedCount += 1
                continue
            } else if !accountsOf.isEmpty && !admits(n.id, account: account) {
                dedicated += 1
                continue
            } else if !n.schedulable {
                notReady += 1
                continue
            }
            var fitCount = 0, freeCount = 0
            for u in n.units where u.classID >= 0 && isMatching[Int(u.classID)] {
                fitCount += 1
                if !u.busy { freeCount += 1 }
            }
            if fitCount >= want.count, want.interconnect?.needsPeers == true, want.count > 1, nvlinkGroup(n, matchingList, want.count, evenBusy: true) == nil {
                cause = "no \(want.count) devices that are \(want.interconnect?.fabricName ?? "") peers of each other"
            } else if fitCount >= want.count, want.interconnect == .sameNUMA, want.count > 1,
                      !Dictionary(grouping: n.units.filter { $0.classID >= 0 && isMatching[Int($0.classID)] }, by: \.numa).values.contains(where: { $0.count >= want.count }) {
                cause = "not \(want.count) matching devices on one NUMA node"
            } else if fitCount >= want.count {
                if freeCount >= want.count { free += 1 } else { busy += 1 }
                continue
            } else {
                // Kind (vendor, model), memory and grade depend on the device's capacity key
                // alone: judged once per key in this call, not per device (a model pattern
                // match is a string search).
                func judged(_ u: Unit) -> UInt8 {
                    if let f = keyFlags[u.capacityKey] { return f }
                    var f: UInt8 = 0
                    if (want.vendor == nil || u.capacityKey.vendor == want.vendor) && (pattern?.matches(u.capacityKey.model) ?? true) {
                        f |= 1
                        if u.capacityKey.memoryMiB >= (want.minMemoryMiB ?? 0) {
                            f |= 2
                            if want.admits(grade: u.capacityKey.grade) { f |= 4 }
                        }
                    }
                    keyFlags[u.capacityKey] = f
                    return f
                }
                let flagged = n.units.map { ($0, judged($0)) }
                let kind = flagged.filter { $0.1 & 1 != 0 }.map(\.0)
                let roomy = flagged.filter { $0.1 & 2 != 0 }.map(\.0)
                let graded = flagged.filter { $0.1 & 4 != 0 }.map(\.0)
                let need = want.perDeviceGCU
                let strong = need <= 0 ? graded : graded.filter { u in u.classID < 0 || classes[Int(u.classID)].gcu + 1e-9 >= need }
                if kind.isEmpty {
                    cause = "no \(RegionPlacement.describe(AcceleratorRequest(vendor: want.vendor, model: want.model))) device"
                } else if roomy.isEmpty {
                    cause = "memory below \(want.minMemoryMiB ?? 0) MiB"
                } else if graded.isEmpty {
                    cause = "grade outside \(want.minGrade?.rawValue ?? "D")…\(want.maxGrade?.rawValue ?? "A")"
                } else if strong.isEmpty {
                    cause = "compute below \(Int(need.rounded(.up))) GCU per device"
                } else if strong.count >= want.count {
                    cause = "matching devices unhealthy or retired"
                } else {
                    cause = "fewer than \(want.count) matching devices"
                }
            }
            counts[cause, default: 0] += 1
        }
        for (cause, k) in [("free (placeable now)", free), ("busy", busy), ("not ready (lost, draining or not heard since a restart)", notReady),
                           ("dedicated to other accounts", dedicated), ("cordoned", cordonedCount)] where k > 0 {
            counts[cause, default: 0] += k
        }
        return counts.map { ($0.key, $0.value) }.sorted { $0.1 != $1.1 ? $0.1 > $1.1 : $0.0 < $1.0 }
    }

    /// What devices of a node hold, for account quotas: how many, per grade, and their GCU.
    public func resourceUse(node id: NodeID, deviceIDs: [String]) -> ResourceUse {
        guard let slot = slotOf[id], let n = nodes[Int(slot)] else { return ResourceUse(devices: deviceIDs.count) }
        var use = ResourceUse()
        for u in n.units where deviceIDs.contains(u.deviceID) {
            use.devices += 1
            if let g = u.capacityKey.grade { use.byGrade[g, default: 0] += 1 }
            if u.classID >= 0 { use.gcu += classes[Int(u.classID)].gcu }
        }
        return use
    }

    /// Why these units were chosen, in words, for the job's message: their class and the
    /// order that put it first ("2 × NVIDIA A10G (grade C, healthy, 23028 MiB, 71 GCU); least
    /// capable grade that fits first, then the node with the fewest free units: 2 left free").
    public mutating func explain(node id: NodeID, deviceIDs: [String]) -> String {
        guard let slot = slotOf[id], !deviceIDs.isEmpty else { return "" }
        // The text depends only on the chosen units' classes and how many stay free: cached by
        // those (a placement per job would otherwise format the same few lines again).
        var chosen: [Int32] = []
        var left = 0
        for u in nodes[Int(slot)]!.units {
            if deviceIDs.contains(u.deviceID) { chosen.append(u.classID) } else if !u.busy && u.classID >= 0 { left += 1 }
        }
        // The chosen units are already marked busy when this is asked (after allocation);
        // counted the same either way.
        chosen.sort()
        let key = ExplainKey(classes: chosen, left: left)
        if let text = explanations[key] { return text }
        let text = explainText(slot, deviceIDs: deviceIDs, left: left)
        if explanations.count >= 4096 { explanations.removeAll() }
        explanations[key] = text
        return text
    }

    struct ExplainKey: Hashable {
        var classes: [Int32]
        var left: Int
    }

    func explainText(_ slot: Int32, deviceIDs: [String], left: Int) -> String {
        let n = nodes[Int(slot)]!
        var kinds: [String: Int] = [:]
        for u in n.units where deviceIDs.contains(u.deviceID) && u.classID >= 0 {
            let c = classes[Int(u.classID)]
            let gcu = c.gcu > 0 ? ", \(Int(c.gcu.rounded())) GCU" : ""
            let name = (c.partition.map { "\(c.model) [\($0)]" } ?? c.model)
                + " (grade \(c.grade?.rawValue ?? "none"), \(c.health.rawValue), \(c.memoryMiB) MiB\(gcu))"
            kinds[name, default: 0] += 1
        }
        let what = kinds.sorted { $0.key < $1.key }.map { "\($0.value) × \($0.key)" }.joined(separator: " + ")
        return "\(what); least capable grade that fits first, then healthy, then least memory, then the node with the fewest free units: \(left) left free"
    }

    /// Free units that can take work (schedulable: healthy, or degraded where allowed), as
    /// the region's capacity counts them.
    public func freeDevices(of id: NodeID) -> Int {
        guard let slot = slotOf[id], let n = nodes[Int(slot)] else { return 0 }
        return n.units.filter { !$0.busy && $0.classID >= 0 }.count
    }

    /// One schedulable unit of a node as the index holds it (for operators' views).
    public struct UnitView: Sendable, Hashable {
        public var deviceID: String
        public var key: CapacityKey
        public var health: HealthState
        public var busy: Bool
        public var schedulable: Bool
        public var numa: Int
        /// For a slice: the partitioned device's id; nil for a whole device.
        public var parent: String?
        /// Indexes of the node's devices it has a direct NVLink to.
        public var nvlinkPeers: [Int] = []

        /// The unit's resource name in `region`, on `node`.
        public func resource(region: RegionID, node: NodeID) -> ResourceName {
            ResourceName(region: region, node: node, device: parent ?? deviceID, partition: parent == nil ? nil : deviceID)
        }
    }

    /// A node's units in device order (empty for an unknown node).
    public func units(of id: NodeID) -> [UnitView] {
        guard let slot = slotOf[id], let n = nodes[Int(slot)] else { return [] }
        return n.units.map { UnitView(deviceID: $0.deviceID, key: $0.capacityKey, health: $0.health, busy: $0.busy,
                                      schedulable: $0.classID >= 0, numa: Int($0.numa), parent: $0.parent, nvlinkPeers: $0.peers) }
    }

    /// Whether a device is held, as the index knows it.
    public func isBusy(node id: NodeID, device: String) -> Bool {
        guard let slot = slotOf[id], let n = nodes[Int(slot)] else { return false }
        return n.units.first { $0.deviceID == device }?.busy ?? false
    }

    // MARK: buckets

    func bump(_ table: inout [[Int]], _ cid: Int32, _ k: Int, _ delta: Int) {
        while table[Int(cid)].count <= k { table[Int(cid)].append(0) }
        table[Int(cid)][k] += delta
    }

    mutating func insertClass(_ slot: Int32, _ cid: Int32, _ k: Int) -> Int32 {
        let c = Int(cid)
        while buckets[c].count <= k { buckets[c].append(Bucket()) }
        buckets[c][k].slots.append(slot)
        return Int32(buckets[c][k].slots.count - 1)
    }

    mutating func insertTotal(_ slot: Int32, _ k: Int) -> Int32 {
        while totalBuckets.count <= k { totalBuckets.append(Bucket()) }
        totalBuckets[k].slots.append(slot)
        return Int32(totalBuckets[k].slots.count - 1)
    }

    /// Swap-remove from a class bucket; the node moved into the hole gets its position fixed.
    mutating func removeClass(_ position: Int32, _ cid: Int32, _ k: Int) {
        let c = Int(cid), p = Int(position)
        let moved = buckets[c][k].slots.removeLast()
        guard p < buckets[c][k].slots.count else { return }
        buckets[c][k].slots[p] = moved
        if let i = nodes[Int(moved)]?.classes.firstIndex(where: { $0.classID == cid }) {
            nodes[Int(moved)]!.classes[i].position = position
        }
    }

    mutating func removeTotal(_ position: Int32, _ k: Int) {
        let p = Int(position)
        let moved = totalBuckets[k].slots.removeLast()
        guard p < totalBuckets[k].slots.count else { return }
        totalBuckets[k].slots[p] = moved
        nodes[Int(moved)]?.totalPosition = position
    }

    mutating func removeAny(_ position: Int32) {
        guard position >= 0 else { return }
        let p = Int(position)
        let last = anyBucket.slots.count - 1
        let moved = anyBucket.slots[last]
        anyBucket.slots[p] = moved
        anyBucket.slots.removeLast()
        if p != last { nodes[Int(moved)]?.anyPosition = position }
    }
}
