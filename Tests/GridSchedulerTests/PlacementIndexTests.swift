import GridCatalog
import GridCore
import PropertyBased
import Testing

@testable import GridScheduler

/// The seeded generator a failing property names the seed of, to replay it.
typealias SeededRandom = SplitMix64

/// A random fleet in the shapes a region sees: whole nodes of one SKU, some devices degraded,
/// unhealthy, unknown or retired, mixed vendors and memory sizes.
struct RandomFleet {
    static let skus: [(AcceleratorVendor, String, Int, DeviceGrade)] = [
        (.nvidia, "NVIDIA A100-SXM4-80GB", 81920, .a), (.nvidia, "NVIDIA A100-SXM4-40GB", 40960, .b),
        (.nvidia, "NVIDIA A10", 23028, .c), (.nvidia, "Tesla V100S-PCIE-32GB", 32768, .c),
        (.amd, "AMD Instinct MI100", 32752, .b), (.huawei, "Ascend910B2C", 65536, .b),
        (.habana, "HL-225", 98304, .b), (.nvidia, "Tesla T4", 15360, .d),
    ]
    var nodes: [(NodeID, [DeviceInventory])] = []

    init(nodes count: Int, rng: inout SeededRandom) {
        for n in 0..<count {
            let sku = Self.skus[Int.random(in: 0..<Self.skus.count, using: &rng)]
            let size = [1, 2, 4, 8, 8][Int.random(in: 0..<5, using: &rng)]
            let devices = (0..<size).map { i -> DeviceInventory in
                let roll = Int.random(in: 0..<20, using: &rng)
                let health: HealthState = roll == 0 ? .unhealthy : roll == 1 ? .unknown : roll < 5 ? .degraded : .healthy
                return DeviceInventory(id: "n\(n)-d\(i)", index: i, vendor: sku.0, model: sku.1, memoryTotalMiB: sku.2,
                                       health: DeviceHealth(state: health), grade: roll == 19 ? .r : sku.3)
            }
            nodes.append((NodeID(String(format: "n%05d", n)), devices))
        }
    }

    static func request(_ rng: inout SeededRandom) -> AcceleratorRequest {
        let count = [0, 1, 1, 1, 2, 4, 8][Int.random(in: 0..<7, using: &rng)]
        let vendor: AcceleratorVendor? = [nil, nil, .nvidia, .amd, .huawei][Int.random(in: 0..<5, using: &rng)]
        let model: String? = [nil, nil, nil, "A100", "A10", "910B", "V100"][Int.random(in: 0..<7, using: &rng)]
        let mem: Int? = [nil, nil, 16384, 40000, 80000][Int.random(in: 0..<5, using: &rng)]
        let minGrade: DeviceGrade? = [nil, nil, nil, .a, .b, .c][Int.random(in: 0..<6, using: &rng)]
        let maxGrade: DeviceGrade? = [nil, nil, nil, .b, .c][Int.random(in: 0..<5, using: &rng)]
        return AcceleratorRequest(count: count, vendor: vendor, model: model, minMemoryMiB: mem,
                                  minGrade: minGrade.flatMap { lo in maxGrade.map { $0 <= lo } ?? true ? lo : nil }, maxGrade: maxGrade)
    }
}

@Suite struct PlacementIndexTests {
    func gpu(_ id: String, _ index: Int, model: String = "NVIDIA A100-SXM4-80GB", grade: DeviceGrade = .a,
             health: HealthState = .healthy, vendor: AcceleratorVendor = .nvidia, mem: Int = 81920) -> DeviceInventory {
        DeviceInventory(id: id, index: index, vendor: vendor, model: model, memoryTotalMiB: mem,
                        health: DeviceHealth(state: health), grade: grade)
    }

    @Test func healthyDevicesArePreferredToDegradedOnesOfTheSameGrade() {
        // The issue's case: two power-throttled V100S on one node, six healthy V100S elsewhere.
        var index = PlacementIndex()
        index.upsert(node: "throttled", devices: (0..<2).map { gpu("t\($0)", $0, model: "Tesla V100S-PCIE-32GB", grade: .c, health: .degraded) },
                     busy: [], schedulable: true)
        index.upsert(node: "fine", devices: (0..<6).map { gpu("f\($0)", $0, model: "Tesla V100S-PCIE-32GB", grade: .c) },
                     busy: [], schedulable: true)
        #expect(index.place(AcceleratorRequest(count: 2, vendor: .nvidia)) == .placed(node: "fine", deviceIDs: ["f0", "f1"]))
    }

    @Test(arguments: [
        ("A10", "NVIDIA A100-SXM4-40GB", false), ("A100", "NVIDIA A100-SXM4-40GB", true), ("A10", "NVIDIA A10", true),
        ("a100-sxm4", "NVIDIA A100-SXM4-80GB", true), ("910B", "Ascend910B2C", true), ("V100", "Tesla V100S-PCIE-32GB", true),
        ("MI2", "AMD Instinct MI250X", false), ("MI250", "AMD Instinct MI250X", true), ("T4", "Tesla T4", true),
        ("H100", "NVIDIA H100 80GB HBM3", true), ("H10", "NVIDIA H100 80GB HBM3", false), ("", "anything", true),
    ])
    func modelRequestsMatchWholeModelNumbers(request: String, model: String, expected: Bool) {
        #expect(ModelPattern(request).matches(model) == expected)
    }

    @Test func gradeBoundsKeepFrontierPartsForWorkThatNeedsThem() {
        var index = PlacementIndex()
        index.upsert(node: "mixed", devices: [gpu("a0", 0, grade: .a), gpu("c0", 1, model: "NVIDIA A10", grade: .c, mem: 23028),
                                              gpu("d0", 2, model: "Tesla T4", grade: .d, mem: 15360)], busy: [], schedulable: true)
        guard case .placed(_, let plain) = index.place(AcceleratorRequest(count: 1)) else { Issue.record("not placed"); return }
        #expect(plain == ["d0"], "the least capable part first")
        guard case .placed(_, let atLeastB) = index.place(AcceleratorRequest(count: 1, minGrade: .b)) else { Issue.record("not placed"); return }
        #expect(atLeastB == ["a0"])
        guard case .placed(_, let notFrontier) = index.place(AcceleratorRequest(count: 1, maxGrade: .b)) else { Issue.record("not placed"); return }
        #expect(notFrontier == ["c0"])
        guard case .impossible = index.place(AcceleratorRequest(count: 3, minGrade: .c)) else { Issue.record("the node has only two C-or-better parts"); return }
        #expect(AcceleratorRequest(minGrade: .c).admits(grade: nil) == false, "ungraded does not meet a minimum")
        #expect(AcceleratorRequest(maxGrade: .b).admits(grade: nil))
        #expect(JobSpec(name: "x", command: "y", accelerators: AcceleratorRequest(minGrade: .b, maxGrade: .c)).problems().contains { $0.contains("max_grade") })
    }

    /// Three grade-B-or-lower devices: two nodes hold two each (V100s, A10s), none three, so the
    /// request is impossible, not busy (a busy job reserves nodes and preempts for itself). A
    /// node that holds three across both classes makes it placeable.
    @Test func aRequestNoSingleNodeCanHoldAcrossClassesIsImpossible() {
        var index = PlacementIndex()
        index.upsert(node: "v100", devices: [gpu("v0", 0, model: "Tesla V100S-PCIE-32GB", grade: .b, mem: 32768),
                                             gpu("v1", 1, model: "Tesla V100S-PCIE-32GB", grade: .b, mem: 32768)], busy: [], schedulable: true)
        index.upsert(node: "a10", devices: [gpu("c0", 0, model: "NVIDIA A10", grade: .c, mem: 23028),
                                            gpu("c1", 1, model: "NVIDIA A10", grade: .c, mem: 23028)], busy: [], schedulable: true)
        let three = AcceleratorRequest(count: 3, maxGrade: .b)
        let alone = index.choose(three)
        #expect(alone == .impossible("no ready node has 3 schedulable device(s) matching \(RegionPlacement.describe(three))"), "\(alone)")
        let never = index.couldEverFit(three)
        #expect(!never)
        index.upsert(node: "mixed", devices: [gpu("m0", 0, model: "Tesla V100S-PCIE-32GB", grade: .b, mem: 32768),
                                              gpu("m1", 1, model: "NVIDIA A10", grade: .c, mem: 23028),
                                              gpu("m2", 2, model: "NVIDIA A10", grade: .c, mem: 23028)], busy: ["m2"], schedulable: true)
        let ever = index.couldEverFit(three)
        #expect(ever, "the mixed node holds three")
        let oneBusy = index.choose(three)
        guard case .busy = oneBusy else { Issue.record("one of the mixed node's three is busy: \(oneBusy)"); return }
        index.release(node: "mixed", deviceIDs: ["m2"])
        guard case .placed("mixed", let ids) = index.choose(three) else { Issue.record("the mixed node is free"); return }
        #expect(Set(ids) == ["m0", "m1", "m2"])
        // The node leaves: impossible again (the remembered answer is dropped).
        index.remove(node: "mixed")
        let neverAgain = index.couldEverFit(three)
        #expect(!neverAgain)
    }

    @Test func diagnosisCountsNodesByTheFirstReasonThatApplies() {
        var index = PlacementIndex()
        index.upsert(node: "a100", devices: [gpu("a0", 0), gpu("a1", 1)], busy: ["a0", "a1"], schedulable: true)
        index.upsert(node: "small", devices: [gpu("s0", 0, mem: 16384)], busy: [], schedulable: true)
        index.upsert(node: "edge", devices: [gpu("e0", 0, grade: .d)], busy: [], schedulable: true)
        index.upsert(node: "amd", devices: [gpu("m0", 0, vendor: .amd)], busy: [], schedulable: true)
        index.upsert(node: "gone", devices: [gpu("g0", 0)], busy: [], schedulable: false)
        index.upsert(node: "shut", devices: [gpu("c0", 0)], busy: [], schedulable: true)
        index.setCordoned(node: "shut", true)
        let d = index.diagnose(AcceleratorRequest(count: 1, vendor: .nvidia, minMemoryMiB: 40960, minGrade: .b))
        let byCause = Dictionary(uniqueKeysWithValues: d.map { ($0.cause, $0.nodes) })
        #expect(byCause["busy"] == 1)
        #expect(byCause["memory below 40960 MiB"] == 1)
        #expect(byCause["grade outside B…A"] == 1)
        #expect(byCause["no vendor=nvidia device"] == 1)
        #expect(byCause["cordoned"] == 1)
        #expect(byCause["not ready (lost, draining or not heard since a restart)"] == 1)
        #expect(d.reduce(0) { $0 + $1.nodes } == 6)
    }

    @Test func aPartitionedGPUOffersItsSlicesAndNeverItself() {
        var index = PlacementIndex()
        var mig = gpu("a100", 0)
        mig.partitions = [DevicePartition(id: "a100/gi1ci0", profile: "3g.40gb", memoryTotalMiB: 40192),
                          DevicePartition(id: "a100/gi2ci0", profile: "1g.10gb", memoryTotalMiB: 9984)]
        index.upsert(node: "n1", devices: [mig, gpu("v100", 1, model: "Tesla V100S-PCIE-32GB", grade: .c, mem: 32768)], busy: [], schedulable: true)
        guard case .placed(_, let whole) = index.place(AcceleratorRequest(count: 1)) else { Issue.record("not placed"); return }
        #expect(whole == ["v100"], "a whole-device job takes the whole device")
        guard case .impossible = index.place(AcceleratorRequest(count: 1, model: "A100")) else { Issue.record("a whole A100 was offered"); return }
        guard case .placed(_, let slice) = index.place(AcceleratorRequest(count: 1, partition: "1G.10GB")) else { Issue.record("no slice"); return }
        #expect(slice == ["a100/gi2ci0"])
        guard case .placed(_, let any) = index.place(AcceleratorRequest(count: 1, minMemoryMiB: 20000, partition: "any")) else { Issue.record("no slice"); return }
        #expect(any == ["a100/gi1ci0"])
        #expect(index.capacity.keys.filter { $0.partition != nil }.map(\.partition) .sorted { ($0 ?? "") < ($1 ?? "") } == ["1g.10gb", "3g.40gb"])
        #expect(!index.capacity.keys.contains { $0.partition == nil && $0.model.contains("A100") }, "the parent is not capacity")
    }

    @Test func modelA10DoesNotTakeAnA100() {
        var index = PlacementIndex()
        index.upsert(node: "a100", devices: [gpu("x", 0, model: "NVIDIA A100-SXM4-40GB")], busy: [], schedulable: true)
        #expect(index.place(AcceleratorRequest(count: 1, model: "A10")) ==
            .impossible("no ready node has 1 schedulable device(s) matching model~A10"))
        index.upsert(node: "a10", devices: [gpu("y", 0, model: "NVIDIA A10", grade: .c, mem: 23028)], busy: [], schedulable: true)
        #expect(index.place(AcceleratorRequest(count: 1, model: "A10")) == .placed(node: "a10", deviceIDs: ["y"]))
    }

    @Test func tightestFittingNodeKeepsWholeNodesFree() {
        var index = PlacementIndex()
        index.upsert(node: "full", devices: (0..<8).map { gpu("f\($0)", $0) }, busy: [], schedulable: true)
        index.upsert(node: "half", devices: (0..<8).map { gpu("h\($0)", $0) }, busy: ["h0", "h1", "h2", "h3", "h4", "h5"], schedulable: true)
        #expect(index.place(AcceleratorRequest(count: 2)) == .placed(node: "half", deviceIDs: ["h6", "h7"]))
        #expect(index.place(AcceleratorRequest(count: 8)) == .placed(node: "full", deviceIDs: (0..<8).map { "f\($0)" }))
        #expect(index.place(AcceleratorRequest(count: 1)) == .busy("waiting for 1 free device(s) matching any"))
    }

    @Test func releaseAndLossUpdateTheIndex() {
        var index = PlacementIndex()
        index.upsert(node: "n", devices: [gpu("a", 0), gpu("b", 1)], busy: [], schedulable: true)
        #expect(index.place(AcceleratorRequest(count: 2)) == .placed(node: "n", deviceIDs: ["a", "b"]))
        #expect(index.capacity.values.first?.free == 0)
        index.release(node: "n", deviceIDs: ["a"])
        #expect(index.capacity.values.first?.free == 1)
        index.setSchedulable(node: "n", false)
        #expect(index.capacity.isEmpty)
        #expect(index.place(AcceleratorRequest(count: 1)) == .impossible("no ready node has 1 schedulable device(s) matching any"))
        index.setSchedulable(node: "n", true)
        #expect(index.place(AcceleratorRequest(count: 1)) == .placed(node: "n", deviceIDs: ["a"]))
    }

    @Test func requestSpanningClassesOnOneNodeIsPlaced() {
        var index = PlacementIndex()
        index.upsert(node: "n", devices: (0..<8).map { gpu("d\($0)", $0, health: $0 < 2 ? .degraded : .healthy) }, busy: [], schedulable: true)
        guard case .placed(_, let devices) = index.place(AcceleratorRequest(count: 8)) else {
            Issue.record("8 devices of one node (6 healthy, 2 degraded) must fit an 8-device request")
            return
        }
        // Healthy ones first in the list, degraded last.
        #expect(devices == ["d2", "d3", "d4", "d5", "d6", "d7", "d0", "d1"])
    }

    /// The invariants a scheduler must never break, over random fleets and request streams:
    /// no device is given twice, every placement meets its constraints on schedulable devices,
    /// a request said to be impossible has no node that could ever hold it (and one said to be
    /// busy has such a node), and the index's capacity counts equal a recount from scratch
    /// after any mix of placements and releases.
    @Test func invariantsHoldOverRandomFleetsAndRequests() async {
        await propertyCheck(count: 60, input: Gen.int(in: 0...1_000_000)) { seed in
            var rng = SeededRandom(seed: UInt64(seed))
            let fleet = RandomFleet(nodes: Int.random(in: 1...60, using: &rng), rng: &rng)
            var index = PlacementIndex(options: .init(allowDegraded: Bool.random(using: &rng), candidateLimit: 4, scanLimit: 10_000))
            for (id, devices) in fleet.nodes { index.upsert(node: id, devices: devices, busy: [], schedulable: true) }
            let byNode = Dictionary(uniqueKeysWithValues: fleet.nodes.map { ($0.0, $0.1) })
            var held: [String: (NodeID, [String])] = [:]
            var busy: Set<String> = []
            for step in 0..<200 {
                if !held.isEmpty && Int.random(in: 0..<3, using: &rng) == 0 {
                    let key = held.keys.sorted()[Int.random(in: 0..<held.count, using: &rng)]
                    let (node, devices) = held.removeValue(forKey: key)!
                    index.release(node: node, deviceIDs: devices)
                    busy.subtract(devices)
                    continue
                }
                let want = RandomFleet.request(&rng)
                let couldEver = fleet.nodes.contains { _, devices in
                    devices.filter { RegionPlacement.eligibleDevice($0, for: want, policy: PlacementPolicy(allowDegraded: index.options.allowDegraded)) }.count >= want.count
                }
                switch index.place(want) {
                case .placed(let node, let devices):
                    #expect(devices.count == max(0, want.count))
                    for id in devices {
                        #expect(!busy.contains(id), "device \(id) given twice (seed \(seed))")
                        let d = byNode[node]!.first { $0.id == id }!
                        #expect(RegionPlacement.eligibleDevice(d, for: want, policy: PlacementPolicy(allowDegraded: index.options.allowDegraded)),
                                "device \(id) does not meet \(want) (seed \(seed))")
                    }
                    busy.formUnion(devices)
                    held["s\(step)"] = (node, devices)
                case .impossible:
                    #expect(!couldEver, "\(want) called impossible but a node could hold it (seed \(seed))")
                case .busy:
                    // Busy only when some node could hold it once its devices are free (a bound
                    // summed over nodes said busy for work no node could ever hold).
                    #expect(couldEver, "\(want) called busy but no node could ever hold it (seed \(seed))")
                }
            }
            // Recount capacity from scratch and compare.
            var recount: [CapacityKey: CapacityCounts] = [:]
            for (_, devices) in fleet.nodes {
                for d in devices {
                    let key = CapacityKey(vendor: d.vendor, model: d.model, memoryMiB: d.memoryTotalMiB ?? 0, grade: d.grade)
                    var c = recount[key] ?? CapacityCounts()
                    c.total += 1
                    if index.schedulableClass(d) != nil {
                        c.usable += 1
                        if d.health.state == .degraded { c.degraded += 1 }
                        if !busy.contains(d.id) { c.free += 1 }
                    }
                    recount[key] = c
                }
            }
            #expect(index.capacity == recount, "capacity drifted from a recount (seed \(seed))")
        }
    }

    @Test func sameOperationsSamePlan() {
        func run() -> [PlacementChoice] {
            var rng = SeededRandom(seed: 42)
            let fleet = RandomFleet(nodes: 200, rng: &rng)
            var index = PlacementIndex()
            for (id, devices) in fleet.nodes { index.upsert(node: id, devices: devices, busy: [], schedulable: true) }
            return (0..<300).map { _ in index.place(RandomFleet.request(&rng)) }
        }
        #expect(run() == run())
    }
}
