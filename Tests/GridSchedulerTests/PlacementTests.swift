import Foundation
import GridCore
import GridScheduler
import Testing

/// Builds snapshots and records every plan, as Nomad's scheduler harness does, so a test reads
/// as "given this cluster and these requests, the plan is ...".
struct PlacementHarness {
    var nodes: [RegionSnapshot.Node] = []
    var plans: [PlacementPlan] = []

    mutating func node(_ id: String, _ devices: [DeviceInventory], busy: Set<String> = []) {
        nodes.append(.init(id: NodeID(id), devices: devices, busyDeviceIDs: busy))
    }

    mutating func plan(_ requests: [(String, AcceleratorRequest)], policy: PlacementPolicy = .init()) -> PlacementPlan {
        let p = RegionPlacement.plan(snapshot: RegionSnapshot(nodes: nodes),
                                     requests: requests.map { PlacementRequest(job: JobID($0.0), accelerators: $0.1) },
                                     policy: policy)
        plans.append(p)
        return p
    }
}

func gpu(_ id: String, _ index: Int, vendor: AcceleratorVendor = .nvidia, model: String = "NVIDIA A100-SXM4-80GB",
         memGiB: Int = 80, grade: DeviceGrade? = .a, health: HealthState = .healthy) -> DeviceInventory {
    DeviceInventory(id: id, index: index, vendor: vendor, model: model, memoryTotalMiB: memGiB * 1024,
                    health: DeviceHealth(state: health, reasons: health == .healthy ? [] : [HealthReason(.other, "test")]),
                    grade: grade)
}

@Suite struct RegionPlacementTests {
    @Test func placesOnLowestAdequateGrade() {
        var h = PlacementHarness()
        h.node("big", [gpu("a0", 0, grade: .a)])
        h.node("small", [gpu("t0", 0, model: "Tesla T4", memGiB: 16, grade: .c)])
        let p = h.plan([("j1", AcceleratorRequest(count: 1, vendor: .nvidia, minMemoryMiB: 8 * 1024))])
        #expect(p.placements.map(\.node) == ["small"], "an inference-sized job must not take the frontier part")
    }

    @Test func bigRequestGoesWhereItFits() {
        var h = PlacementHarness()
        h.node("big", [gpu("a0", 0)])
        h.node("small", [gpu("t0", 0, model: "Tesla T4", memGiB: 16, grade: .c)])
        let p = h.plan([("j1", AcceleratorRequest(count: 1, minMemoryMiB: 40 * 1024))])
        #expect(p.placements.first?.node == "big")
        #expect(p.placements.first?.deviceIDs == ["a0"])
    }

    @Test func busyAndUnhealthyDevicesAreSkipped() {
        var h = PlacementHarness()
        h.node("n1", [gpu("d0", 0), gpu("d1", 1, health: .unhealthy), gpu("d2", 2, health: .unknown), gpu("d3", 3)], busy: ["d0"])
        let p = h.plan([("j1", AcceleratorRequest(count: 1)), ("j2", AcceleratorRequest(count: 1))])
        #expect(p.placements.map(\.deviceIDs) == [["d3"]])
        #expect(p.waiting["j2"]?.contains("waiting") == true)
    }

    @Test func degradedDevicesFollowPolicy() {
        var h = PlacementHarness()
        h.node("n1", [gpu("d0", 0, health: .degraded)])
        #expect(h.plan([("j1", AcceleratorRequest(count: 1))]).placements.count == 1)
        #expect(h.plan([("j1", AcceleratorRequest(count: 1))], policy: PlacementPolicy(allowDegraded: false)).placements.isEmpty)
    }

    @Test func retiredDevicesNeverTakeWork() {
        var h = PlacementHarness()
        h.node("n1", [gpu("d0", 0, grade: .r)])
        let p = h.plan([("j1", AcceleratorRequest(count: 1))])
        #expect(p.placements.isEmpty)
        #expect(p.waiting["j1"]?.contains("no ready node") == true)
    }

    @Test func multiDeviceRequestsStayOnOneNode() {
        var h = PlacementHarness()
        h.node("n1", [gpu("a", 0), gpu("b", 1)])
        h.node("n2", [gpu("c", 0), gpu("d", 1), gpu("e", 2)])
        let p = h.plan([("j1", AcceleratorRequest(count: 3))])
        #expect(p.placements.first?.node == "n2")
        #expect(p.placements.first?.deviceIDs.count == 3)
    }

    @Test func vendorAndModelFiltersApply() {
        var h = PlacementHarness()
        h.node("nv", [gpu("g", 0)])
        h.node("amd", [gpu("m", 0, vendor: .amd, model: "AMD Instinct MI100", memGiB: 32, grade: .b)])
        #expect(h.plan([("j", AcceleratorRequest(count: 1, vendor: .amd))]).placements.first?.node == "amd")
        #expect(h.plan([("j", AcceleratorRequest(count: 1, model: "a100"))]).placements.first?.node == "nv")
        #expect(h.plan([("j", AcceleratorRequest(count: 1, vendor: .habana))]).placements.isEmpty)
    }

    @Test func fifoAndNoDoubleBooking() {
        var h = PlacementHarness()
        h.node("n1", [gpu("d0", 0), gpu("d1", 1)])
        let p = h.plan([("j1", AcceleratorRequest(count: 1)), ("j2", AcceleratorRequest(count: 1)), ("j3", AcceleratorRequest(count: 1))])
        #expect(p.placements.map(\.job) == ["j1", "j2"])
        #expect(Set(p.placements.flatMap(\.deviceIDs)) == ["d0", "d1"])
        #expect(p.waiting.keys.sorted() == ["j3"])
    }

    @Test func samInputSamePlan() {
        var h = PlacementHarness()
        for n in 0..<20 { h.node("n\(n)", (0..<4).map { gpu("n\(n)d\($0)", $0, grade: [.a, .b, .c][n % 3]) }) }
        let reqs = (0..<30).map { ("j\($0)", AcceleratorRequest(count: 1 + $0 % 3)) }
        #expect(h.plan(reqs) == h.plan(reqs))
    }
}

@Suite struct NationalRoutingTests {
    let now = Date(timeIntervalSince1970: 1_750_000_000)

    func region(_ id: String, free: Int, healthy: Int, vendor: AcceleratorVendor = .nvidia, model: String = "A100", queued: Int = 0) -> RegionSummary {
        RegionSummary(region: RegionID(id), nodesReady: 1, nodesLost: 0, queuedJobs: queued, runningJobs: 0,
                      capacity: [CapacityEntry(vendor: vendor, model: model, memoryTotalMiB: 81920, total: healthy, free: free, healthy: healthy)],
                      nodes: [], nodesTruncated: false, generatedAt: now)
    }

    @Test func prefersRegionsWithFreeMatchingDevices() {
        let d = NationalRouting.choose(
            candidates: [.init(summary: region("a", free: 0, healthy: 4), ageSeconds: 1), .init(summary: region("b", free: 2, healthy: 2), ageSeconds: 1)],
            spec: JobSpec(name: "x", command: "y", accelerators: AcceleratorRequest(count: 1)), policy: RoutingPolicy())
        #expect(d.region == "b")
        #expect(d.terms.contains("chose b"))
    }

    @Test func respectsAllowedRegions() {
        let d = NationalRouting.choose(
            candidates: [.init(summary: region("a", free: 4, healthy: 4), ageSeconds: 1), .init(summary: region("b", free: 0, healthy: 2), ageSeconds: 1)],
            spec: JobSpec(name: "x", command: "y", accelerators: AcceleratorRequest(count: 1), allowedRegions: ["b"]), policy: RoutingPolicy())
        #expect(d.region == "b")
        #expect(d.terms.contains { $0.contains("a: not in allowed regions") })
    }

    @Test func staleRegionsAreNotChosen() {
        let d = NationalRouting.choose(candidates: [.init(summary: region("a", free: 4, healthy: 4), ageSeconds: 120)],
                                       spec: JobSpec(name: "x", command: "y"), policy: RoutingPolicy(staleAfterSeconds: 30))
        #expect(d.region == nil)
        #expect(d.terms.first?.contains("old") == true)
    }

    @Test func noRegionWithTheVendorMeansNoChoice() {
        let d = NationalRouting.choose(candidates: [.init(summary: region("a", free: 4, healthy: 4), ageSeconds: 1)],
                                       spec: JobSpec(name: "x", command: "y", accelerators: AcceleratorRequest(count: 1, vendor: .huawei)),
                                       policy: RoutingPolicy())
        #expect(d.region == nil)
    }

    @Test func queueingCanBeDisabled() {
        let c = [RegionCandidate(summary: region("a", free: 0, healthy: 4), ageSeconds: 1)]
        let spec = JobSpec(name: "x", command: "y", accelerators: AcceleratorRequest(count: 1))
        #expect(NationalRouting.choose(candidates: c, spec: spec, policy: RoutingPolicy(allowQueueing: true)).region == "a")
        #expect(NationalRouting.choose(candidates: c, spec: spec, policy: RoutingPolicy(allowQueueing: false)).region == nil)
    }

    @Test func devicesAlreadyForwardedAreNotFree() {
        let spec = JobSpec(name: "x", command: "y", accelerators: AcceleratorRequest(count: 1))
        func choose(inflightA: Int) -> RegionID? {
            NationalRouting.choose(candidates: [.init(summary: region("a", free: 2, healthy: 2), ageSeconds: 1, inflight: inflightA),
                                                .init(summary: region("b", free: 1, healthy: 1), ageSeconds: 1)],
                                   spec: spec, policy: RoutingPolicy()).region
        }
        #expect(choose(inflightA: 0) == "a")
        #expect(choose(inflightA: 1) == "a", "one free left there; ties go by name")
        #expect(choose(inflightA: 2) == "b", "a's two devices are taken by jobs its summary does not show yet")
    }
}
