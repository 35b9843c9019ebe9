import Foundation
import GridController
import GridCore
import GridProtocol
import GridScheduler
import GridStore
import Testing

/// Issue 9, item 4, in the region: quotas hold, borrowing is reclaimed, fair share orders
/// each priority, and what accounts hold survives a restart.
@Suite struct AccountPlacementTests {
    static func job(_ account: String, priority: Int = 0) -> JobSpec {
        JobSpec(name: account, command: "true", priority: priority, account: account)
    }

    static func harness(_ quotas: [String: AccountQuota], fairShare: Bool = true) -> RegionHarness {
        RegionHarness { s in s.accounts = AccountPolicy(quotas: quotas, fairShare: fairShare) }
    }

    @Test func anAccountAtItsQuotaWaitsWithTheFiguresAndOthersGoAhead() throws {
        var h = Self.harness(["ml": AccountQuota(devices: 1)])
        _ = h.register("n1", devices: [device("g0", 0), device("g1", 1), device("g2", 2)])
        _ = h.forward("ml-1", Self.job("ml"))
        _ = h.forward("ml-2", Self.job("ml"))
        _ = h.forward("web-1", Self.job("web"))
        let placed = h.tick().assignments.map(\.jobID)
        #expect(placed == ["ml-1", "web-1"])
        let waiting = try #require(h.instance.job("ml-2"))
        #expect(waiting.state == .queued && waiting.message == "quota: account ml: 1 + 1 devices > quota 1", "\(waiting.message)")
        #expect(h.instance.ledger.inUse["ml"]?.devices == 1 && h.instance.ledger.inUse["web"]?.devices == 1)
    }

    /// A gang bigger than its account could ever hold (quota 2, no cohort; 3 ranks) waits for a
    /// quota change with the figures, and reserves no node: other work still runs on the free
    /// devices. (Property harness seed 732720: such a gang held reservations on every node.)
    @Test(arguments: [nil, "research"] as [String?])
    func workPastWhatTheQuotaCouldEverAllowReservesNothing(cohort: String?) throws {
        var quotas = ["batch": AccountQuota(devices: 2, cohort: cohort)]
        if let cohort { quotas["ml"] = AccountQuota(devices: 0, cohort: cohort) }
        var h = Self.harness(quotas)
        for n in 0..<3 { _ = h.register("n\(n)", devices: [device("n\(n)-g0", 0), device("n\(n)-g1", 1)]) }
        // One device runs endless work, so the gang cannot start now (and would reserve).
        _ = h.forward("busy", Self.job("web"))
        let busy = try #require(h.tick().assignments.first)
        _ = h.ack(busy)
        _ = h.status(busy, .running)
        var gang = Self.job("batch", priority: 1000)
        gang.nodes = 3
        gang.accelerators.count = 1
        _ = h.forward("gang", gang)
        _ = h.forward("web-1", Self.job("web"))
        let placed = h.tick(advanceMs: 10).assignments.map(\.jobID)
        #expect(placed == ["web-1"], "\(placed)")
        let waiting = try #require(h.instance.job("gang"))
        let why = cohort == nil ? "quota: account batch: the job needs 3 devices > quota 2 (no cohort to borrow from); waits until the quota is raised"
            : "quota: account batch: the job needs 3 devices > quota 2 and cohort research's 2 in all; waits until the quota is raised"
        #expect(waiting.state == .queued && waiting.message == why, "\(waiting.message)")
        #expect(h.tick(advanceMs: 10).cancels.isEmpty, "nothing is preempted for it")
        // Within the cohort's total, the same gang borrows and runs.
        if cohort != nil {
            var h2 = Self.harness(["batch": AccountQuota(devices: 2, cohort: "research"), "ml": AccountQuota(devices: 1, cohort: "research")])
            for n in 0..<3 { _ = h2.register("n\(n)", devices: [device("n\(n)-g0", 0)]) }
            _ = h2.forward("gang", gang)
            #expect(h2.tick().assignments.count == 3)
        }
    }

    @Test func theQuotaComesBackWhenTheRunEnds() throws {
        var h = Self.harness(["ml": AccountQuota(devices: 1)])
        _ = h.register("n1", devices: [device("g0", 0), device("g1", 1)])
        _ = h.forward("ml-1", Self.job("ml"))
        _ = h.forward("ml-2", Self.job("ml"))
        let first = try #require(h.tick().assignments.first)
        #expect(first.jobID == "ml-1")
        _ = h.ack(first)
        _ = h.status(first, .succeeded, exit: 0)
        #expect(h.instance.ledger.inUse["ml"] == nil)
        #expect(h.tick().assignments.map(\.jobID) == ["ml-2"])
    }

    @Test func aGradeQuotaSendsTheJobToAnotherGrade() throws {
        var h = Self.harness(["ml": AccountQuota(devicesByGrade: [.a: 0])])
        let frontier = DeviceInventory(id: "h100", index: 0, vendor: .nvidia, model: "NVIDIA H100", memoryTotalMiB: 81920,
                                       health: .healthy, grade: .a, computeUnits: 989)
        let older = DeviceInventory(id: "v100", index: 0, vendor: .nvidia, model: "Tesla V100", memoryTotalMiB: 32768,
                                    health: .healthy, grade: .b, computeUnits: 125)
        _ = h.register("fast", devices: [frontier])
        _ = h.register("slow", devices: [older])
        var spec = Self.job("ml")
        spec.accelerators.minGrade = .b
        _ = h.forward("ml-1", spec)
        _ = h.forward("ml-2", spec)
        let placed = h.tick().assignments
        #expect(placed.map(\.nodeID) == ["slow"], "no grade-A quota: only the V100")
        let waiting = try #require(h.instance.job("ml-2"))
        #expect(waiting.state == .queued)
    }

    @Test func borrowedRunsAreReclaimedWhenTheLenderNeedsItsQuota() throws {
        var h = Self.harness(["ml": AccountQuota(devices: 1, cohort: "research"),
                              "vision": AccountQuota(devices: 1, cohort: "research")])
        _ = h.register("n1", devices: [device("g0", 0), device("g1", 1)])
        _ = h.forward("ml-1", Self.job("ml", priority: 100))
        _ = h.forward("ml-2", Self.job("ml", priority: 100))
        let runs = h.tick().assignments
        #expect(runs.map(\.jobID) == ["ml-1", "ml-2"], "ml borrows vision's idle device")
        #expect(h.instance.job("ml-2")?.message.contains("borrowing from cohort research") == true)
        for a in runs { _ = h.ack(a); _ = h.status(a, .running) }
        // vision, within its own quota, takes its device back even from higher-priority work.
        _ = h.forward("vision-1", Self.job("vision"))
        let pass = h.tick()
        let borrowed = try #require(runs.first { $0.jobID == "ml-2" })
        #expect(pass.cancels.map(\.assignmentID) == [borrowed.assignmentID], "only the borrowed run is stopped")
        _ = h.status(borrowed, .cancelled, reason: .cancelled)
        let back = try #require(h.instance.job("ml-2"))
        #expect(back.state == .queued && back.attempts.last?.endReason == .preempted && back.message.contains("reclaims"), "\(back.message)")
        #expect(h.tick().assignments.map(\.jobID) == ["vision-1"])
        // ml-2 now waits: ml is at its quota and the cohort has nothing left to lend.
        let waiting = try #require(h.instance.job("ml-2"))
        #expect(waiting.state == .queued && waiting.message.hasPrefix("quota: account ml"), "\(waiting.message)")
        #expect(h.tick(advanceMs: 2000).assignments.filter { $0.jobID == "ml-2" }.isEmpty)
    }

    @Test func fairShareLetsTheAccountThatUsedLessGoFirst() throws {
        var h = Self.harness([:])
        _ = h.register("n1", devices: [device("g0", 0)])
        _ = h.forward("heavy-run", Self.job("heavy"))
        let run = try #require(h.tick().assignments.first)
        _ = h.ack(run)
        _ = h.status(run, .running)
        // heavy holds the device for a while; then both accounts queue work.
        _ = h.heartbeat("n1", digestOf: [run.assignmentID])
        _ = h.forward("heavy-2", Self.job("heavy"))
        _ = h.forward("light-1", Self.job("light"))
        for _ in 0..<14 { _ = h.tick(advanceMs: 900); _ = h.heartbeat("n1", digestOf: [run.assignmentID]) }
        _ = h.status(run, .succeeded, exit: 0)
        let next = h.tick(advanceMs: 100).assignments.map(\.jobID)
        #expect(next == ["light-1"], "light used nothing: its job goes before heavy's older one")
        #expect((h.instance.ledger.usage["heavy"]?.deviceSeconds ?? 0) > 1)
        // Without fair share, arrival order.
        var fifo = Self.harness([:], fairShare: false)
        _ = fifo.register("n1", devices: [device("g0", 0)])
        _ = fifo.forward("heavy-run", Self.job("heavy"))
        let r2 = try #require(fifo.tick().assignments.first)
        _ = fifo.ack(r2)
        _ = fifo.status(r2, .running)
        _ = fifo.forward("heavy-2", Self.job("heavy"))
        _ = fifo.forward("light-1", Self.job("light"))
        for _ in 0..<6 { _ = fifo.tick(advanceMs: 900); _ = fifo.heartbeat("n1", digestOf: [r2.assignmentID]) }
        _ = fifo.status(r2, .succeeded, exit: 0)
        #expect(fifo.tick(advanceMs: 100).assignments.map(\.jobID) == ["heavy-2"])
    }

    @Test func whatAccountsHoldIsRebuiltAfterARestart() throws {
        var h = Self.harness(["ml": AccountQuota(devices: 1)])
        _ = h.register("n1", devices: [device("g0", 0), device("g1", 1)])
        _ = h.forward("ml-1", Self.job("ml"))
        let a = try #require(h.tick().assignments.first)
        _ = h.ack(a)
        var recovered = RegionRecovery()
        recovered.jobs = [try #require(h.instance.job("ml-1"))]
        recovered.assignments = [AssignmentRecord(id: AssignmentID(a.assignmentID), job: "ml-1", node: "n1", epoch: Int(a.epoch),
                                                  deviceIDs: a.deviceIds, state: .accepted, createdAt: h.now.wall)]
        recovered.nodes = [NodeRecord(id: "n1", region: "r1", hostname: "n1", state: .ready,
                                      devices: [device("g0", 0), device("g1", 1)], lastSeen: h.now.wall, registeredAt: h.now.wall)]
        var h2 = RegionHarness({ s in s.accounts = AccountPolicy(quotas: ["ml": AccountQuota(devices: 1)]) }, recovered: recovered)
        #expect(h2.instance.ledger.inUse["ml"]?.devices == 1)
        _ = h2.register("n1", devices: [device("g0", 0), device("g1", 1)], held: [a.assignmentID])
        _ = h2.forward("ml-2", Self.job("ml"))
        #expect(h2.tick().assignments.isEmpty, "the quota is still taken by the run from before the restart")
    }
}
