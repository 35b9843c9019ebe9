import Foundation
import GridController
import GridCore
import GridProtocol
import GridScheduler
import Testing

/// Region loss (PROTOCOL.md, "Region loss"): a region that confirms starts sends a job to a
/// node only once the national scheduler acknowledged its `assigned` report; the national
/// scheduler moves a silent region's waiting jobs, and the region drops what was moved.
@Suite struct RegionLossTests {
    static func statusAck(_ id: String, applied: Bool, reason: String = "") -> Body {
        var a = Wire.StatusAck()
        a.updateID = id
        a.applied = applied
        a.reason = reason
        return .statusAck(a)
    }

    @Test func aConfirmingRegionStartsAJobOnlyAfterTheNationalSchedulerRecordedIt() throws {
        var h = RegionHarness { $0.confirmStarts = true }
        _ = h.register("n1", devices: [device("g0", 0)])
        _ = h.forward("j-1", JobSpec(name: "t", command: "true"))
        let placed = h.tick()
        #expect(placed.assignments.isEmpty, "not sent before the confirmation")
        #expect(h.instance.job("j-1")?.state == .assigned)
        let up = try #require(h.tick(advanceMs: 10).statusUpdates.first { $0.state == "assigned" })
        #expect(h.tick(advanceMs: 3000).assignments.isEmpty, "no resend either while unconfirmed")
        _ = h.heartbeat("n1")
        _ = h.send(Self.statusAck(up.updateID, applied: true), from: h.national)
        let sent = h.tick()
        #expect(sent.assignments.map(\.jobID) == ["j-1"])
        #expect(h.tick(advanceMs: 1100).assignments.count == 1, "resent as usual once confirmed")
    }

    /// While the shell leaves inputs unread (a flood from the nodes), resends wait — their ack
    /// may be among the unread frames — but first sends do not: the `assigned` status goes up
    /// and a confirmed assignment goes to its node in the same turn. (They used to wait for a
    /// turn without backlog, so under load jobs reached the agents in waves.)
    @Test func firstSendsGoOutUnderBacklogAndResendsWait() throws {
        var h = RegionHarness { $0.confirmStarts = true }
        _ = h.register("n1", devices: [device("g0", 0)])
        _ = h.forward("j-1", JobSpec(name: "t", command: "true"))
        #expect(h.tick(backlog: true).assignments.isEmpty, "placed; not sent before the confirmation")
        let up = try #require(h.tick(advanceMs: 10, backlog: true).statusUpdates.first { $0.state == "assigned" },
                              "the first upward send is not held back")
        #expect(h.stall(1100, backlog: true).statusUpdates.isEmpty, "its resend waits while inputs are unread")
        #expect(h.stall(1100).statusUpdates.map(\.updateID) == [up.updateID], "and goes once they are read")
        _ = h.heartbeat("n1")
        _ = h.send(Self.statusAck(up.updateID, applied: true), from: h.national)
        #expect(h.tick(backlog: true).assignments.map(\.jobID) == ["j-1"], "a confirmed assignment goes out under backlog")
        // Its resend is due after the retry interval, but waits while inputs are unread.
        #expect(h.stall(1100, backlog: true).assignments.isEmpty, "no resend while inputs are unread")
        #expect(h.stall(1100).assignments.map(\.jobID) == ["j-1"], "resent once the inputs are read")
    }

    /// Once the national scheduler says it reads STATUS_BATCH, the status updates one turn sends
    /// up go in one frame (each keeps its id and outbox row); one STATUS_BATCH_ACK ends their
    /// resends. Before it says so, each goes alone.
    @Test func statusUpdatesOfATurnGoUpInOneBatchOnceTheNationalSchedulerReadsThem() throws {
        var h = RegionHarness { $0.confirmStarts = true }
        _ = h.register("n1", devices: (0..<4).map { device("g\($0)", $0) })
        for i in 0..<3 { _ = h.forward("j-\(i)", JobSpec(name: "t", command: "true", accelerators: AcceleratorRequest(count: 1))) }
        _ = h.tick()
        let singles = h.tick(advanceMs: 10)
        #expect(singles.statusUpdates.count == 3 && singles.statusBatches.isEmpty, "an older national scheduler gets them one by one")
        var summaryAck = Wire.RegionSummaryAck()
        summaryAck.regionID = "r1"
        summaryAck.acceptsStatusBatch = true
        _ = h.send(.regionSummaryAck(summaryAck), from: h.national)
        // The resends of the three are due together: one frame.
        let resent = h.tick(advanceMs: 1100)
        #expect(resent.statusUpdates.isEmpty)
        let batch = try #require(resent.statusBatches.first)
        #expect(resent.statusBatches.count == 1)
        #expect(Set(batch.updates.map(\.jobID)) == ["j-0", "j-1", "j-2"] && batch.updates.allSatisfy { $0.state == "assigned" })
        #expect(resent.mutations.isEmpty, "no new outbox rows: the same updates, framed together")
        var acks = Wire.StatusBatchAck()
        acks.acks = batch.updates.map { u in
            var a = Wire.StatusAck()
            a.updateID = u.updateID
            a.applied = true
            return a
        }
        _ = h.heartbeat("n1")
        let answered = h.send(.statusBatchAck(acks), from: h.national)
        #expect(answered.mutations.filter { if case .outboxDone = $0 { return true } else { return false } }.count == 3)
        #expect(Set(h.tick().assignments.map(\.jobID)) == ["j-0", "j-1", "j-2"], "each start confirmed by its acknowledgement in the batch")
        #expect(h.tick(advanceMs: 5000).statusBatches.isEmpty && h.tick().statusUpdates.filter { $0.state == "assigned" }.isEmpty,
                "nothing resent once acknowledged")
    }

    /// Batches stay within their bounds: many updates make several frames, a lone one goes as a
    /// plain STATUS_UPDATE, and the turn's other directives keep their order ahead of them.
    @Test func batchesAreBoundedAndALoneUpdateGoesAlone() {
        func up(_ i: Int, tail: Int = 0) -> ControllerDirective {
            var u = Wire.StatusUpdate()
            u.jobID = "j-\(i)"
            u.updateID = "r1:j-\(i)"
            u.outputTail = String(repeating: "x", count: tail)
            return .send(.statusUpdate(u), to: .upstream)
        }
        let log = ControllerDirective.log(LogEvent(.info, "x"))
        let many = RegionInstance.batchingUpward([up(0), log] + (1..<600).map { up($0) })
        let frames = many.compactMap { d -> [String]? in
            if case .send(.statusBatch(let b), .upstream, _, _) = d { return b.updates.map(\.jobID) } else { return nil }
        }
        #expect(frames.map(\.count) == [256, 256, 88])
        #expect(frames.flatMap { $0 } == (0..<600).map { "j-\($0)" }, "every update once, in order")
        if case .log = many.first {} else { Issue.record("the other directives come first") }
        let big = RegionInstance.batchingUpward((0..<3).map { up($0, tail: 400_000) })
        #expect(big.count == 2, "about 1 MiB a frame: two, then the third alone")
        if case .send(.statusUpdate(let u), .upstream, _, _) = big[1] { #expect(u.jobID == "j-2") } else { Issue.record("a frame of one is a STATUS_UPDATE") }
        let lone = RegionInstance.batchingUpward([log, up(7)])
        #expect(lone.count == 2)
        if case .send(.statusUpdate(let u), .upstream, _, _) = lone[1] { #expect(u.jobID == "j-7") } else { Issue.record("a lone update goes as STATUS_UPDATE") }
    }

    @Test func aMovedJobIsDroppedUnstartedAndItsDevicesFreed() throws {
        var h = RegionHarness { $0.confirmStarts = true }
        _ = h.register("n1", devices: [device("g0", 0)])
        _ = h.forward("j-1", JobSpec(name: "t", command: "true"))
        _ = h.forward("j-2", JobSpec(name: "t", command: "true"))
        _ = h.tick()
        let up = try #require(h.tick(advanceMs: 10).statusUpdates.first { $0.jobID == "j-1" && $0.state == "assigned" })
        let out = h.send(Self.statusAck(up.updateID, applied: false, reason: "moved: job j-1 is held by region r2"), from: h.national)
        #expect(out.persistedAssignments.map(\.state) == [.revoked])
        #expect(h.instance.job("j-1")?.state == .cancelled && h.instance.job("j-1")?.message.contains("moved") == true)
        // j-1 was never sent; its device goes to j-2 (which again waits for confirmation).
        let next = h.tick()
        #expect(next.assignments.isEmpty)
        #expect(h.instance.job("j-2")?.state == .assigned)
        #expect(h.tick(advanceMs: 10).statusUpdates.allSatisfy { $0.jobID != "j-1" }, "nothing more about j-1 goes up")
    }

    @Test func aRegionThatDoesNotConfirmStartsAtOnce() throws {
        var h = RegionHarness()
        _ = h.register("n1", devices: [device("g0", 0)])
        _ = h.forward("j-1", JobSpec(name: "t", command: "true"))
        #expect(h.tick().assignments.map(\.jobID) == ["j-1"])
    }

    static func summary(_ h: inout NationalHarness, _ region: String, free: Int, confirms: Bool = true, sequence: UInt64 = 1) {
        var s = Wire.RegionSummary(RegionSummary(
            region: RegionID(region), nodesReady: 1, nodesLost: 0, queuedJobs: 0, runningJobs: 0,
            capacity: [CapacityEntry(vendor: .nvidia, model: "A100", memoryTotalMiB: 81920, total: 4, free: free, healthy: 4, grade: .a)],
            nodes: [], nodesTruncated: false, generatedAt: h.now.wall))
        s.sequence = sequence
        s.full = true
        s.confirmsStarts = confirms
        _ = h.send(.regionSummary(s), from: NationalHarness.regionOrigin(region))
    }

    @Test(arguments: [false, true])
    func aSilentRegionsWaitingJobsGoElsewhereAndItsLateReportIsRefused(profiles: Bool) throws {
        var s = profiles ? NationalDecisionTests.settings() : NationalInstance.Settings()
        s.regionLostAfterMs = 10_000
        var h = NationalHarness()
        h.instance = NationalInstance(settings: s, recovered: NationalRecovery(), now: h.now)
        let a = profiles ? "west" : "east", b = profiles ? "east" : "west"
        Self.summary(&h, a, free: 4)
        Self.summary(&h, b, free: 0)
        var sub = Wire.Submit()
        sub.jobID = "j"
        sub.spec = Wire.JobSpec(JobSpec(name: "j", command: "true", accelerators: AcceleratorRequest(count: 1)))
        _ = h.send(.submit(sub), from: h.client)
        #expect(h.instance.job("j")?.region == RegionID(a))
        var ack = Wire.JobForwardAck()
        ack.jobID = "j"
        ack.accepted = true
        _ = h.tick()
        _ = h.send(.jobForwardAck(ack), from: NationalHarness.regionOrigin(a))
        #expect(h.instance.job("j")?.state == .queued)
        // a falls silent; b keeps reporting, now with room.
        var forwards: [Wire.JobForward] = []
        for _ in 0..<12 {
            Self.summary(&h, b, free: 4)
            forwards += NationalDecisionTests.forwards(h.tick(advanceMs: 1000))
        }
        #expect(h.instance.job("j")?.region == RegionID(b), "\(h.instance.job("j")?.message ?? "")")
        #expect(Set(forwards.map(\.jobID)) == ["j"])
        #expect(h.instance.job("j")?.route?.refusedBy == [RegionID(a)])
        // a comes back and reports having placed it: refused as moved.
        var u = Wire.StatusUpdate()
        u.jobID = "j"
        u.regionID = a
        u.state = "assigned"
        u.epoch = 1
        u.updateID = "\(a):j:1:assigned"
        let late = h.send(.statusUpdate(u), from: NationalHarness.regionOrigin(a))
        #expect(late.statusAcks.first?.applied == false && late.statusAcks.first?.reason.hasPrefix("moved") == true)
        #expect(h.instance.job("j")?.region == RegionID(b) && h.instance.job("j")?.state == .forwarded)
    }

    @Test func aRegionThatDoesNotConfirmStartsKeepsItsJobsWhenSilent() throws {
        var s = NationalInstance.Settings()
        s.regionLostAfterMs = 10_000
        var h = NationalHarness()
        h.instance = NationalInstance(settings: s, recovered: NationalRecovery(), now: h.now)
        Self.summary(&h, "east", free: 4, confirms: false)
        Self.summary(&h, "west", free: 0)
        var sub = Wire.Submit()
        sub.jobID = "j"
        sub.spec = Wire.JobSpec(JobSpec(name: "j", command: "true", accelerators: AcceleratorRequest(count: 1)))
        _ = h.send(.submit(sub), from: h.client)
        for _ in 0..<15 {
            Self.summary(&h, "west", free: 4)
            _ = h.tick(advanceMs: 1000)
        }
        #expect(h.instance.job("j")?.region == "east", "it may have started there: wait for it")
    }

    @Test func whenEveryRegionIsSilentNothingMovesAndAJobWithNowhereElseToGoStays() throws {
        var s = NationalDecisionTests.settings()
        s.regionLostAfterMs = 10_000
        var h = NationalHarness()
        h.instance = NationalInstance(settings: s, recovered: NationalRecovery(), now: h.now)
        Self.summary(&h, "west", free: 4)
        Self.summary(&h, "east", free: 4)
        for (id, jurisdictions) in [("any", [String]()), ("sh-only", ["CN-SH"])] {
            var sub = Wire.Submit()
            sub.jobID = id
            sub.spec = Wire.JobSpec(JobSpec(name: id, command: "true", accelerators: AcceleratorRequest(count: 1),
                                            routing: RoutingRequest(origin: "east", jurisdictions: jurisdictions)))
            _ = h.send(.submit(sub), from: h.client)
        }
        #expect(h.instance.job("sh-only")?.region == "east")
        let anyRegion = try #require(h.instance.job("any")?.region)
        // Everyone silent (this scheduler's network, most likely): nothing moves.
        var logs: [String] = []
        for _ in 0..<15 { logs += h.tick(advanceMs: 1000).compactMap { if case .log(let e) = $0 { return e.message } else { return nil } } }
        #expect(h.instance.job("any")?.region == anyRegion && h.instance.job("sh-only")?.region == "east")
        #expect(logs.contains { $0.contains("every region is silent") })
        // Only east silent: "any" may leave if it was there; "sh-only" has nowhere else and stays.
        for _ in 0..<12 {
            Self.summary(&h, "west", free: 4)
            _ = h.tick(advanceMs: 1000)
        }
        #expect(h.instance.job("sh-only")?.region == "east" && h.instance.job("sh-only")?.route?.refusedBy == [])
        #expect(h.instance.job("any")?.region == "west")
    }
}

/// `gridctl cancel` through the national scheduler and the region.
@Suite struct CancelTests {
    static func cancel(_ id: String) -> Body {
        var c = Wire.Cancel()
        c.jobID = id
        return .cancel(c)
    }

    @Test func aHeldJobIsCancelledAtOnceAndGivesBackItsReservation() throws {
        var h = NationalDecisionTests.harness(NationalDecisionTests.settings(cheapHour: 18))
        _ = h.summary("west", free: 8, total: 8)
        let deadline = h.now.wall.addingTimeInterval(10 * 3600)
        let r = RoutingRequest(objective: NationalDecisionTests.waitFree, deadline: deadline, runSeconds: 3600)
        _ = h.send(.submit(NationalDecisionTests.job("a", routing: r)), from: h.client)
        let start = try #require(h.instance.job("a")?.route?.start)
        let out = h.send(Self.cancel("a"), from: h.client)
        guard case .queryReply(let reply) = out.bodies.last else { Issue.record("no reply"); return }
        #expect(reply.jobs.first?.state == "cancelled" && h.instance.job("a")?.state == .cancelled)
        #expect(out.persistedJobs.map(\.state) == [.cancelled])
        // Its hour is free again: the next such job takes it.
        _ = h.send(.submit(NationalDecisionTests.job("b", routing: r)), from: h.client)
        #expect(h.instance.job("b")?.route?.start == start)
        // Nothing is released for the cancelled one when its hour comes.
        let ms = Int64(start.timeIntervalSince(h.now.wall) * 1000)
        _ = h.tick(advanceMs: ms - 1000)
        _ = h.summary("west", free: 8, total: 8, sequence: 1)
        let forwards = NationalDecisionTests.forwards(h.tick(advanceMs: 1001) + h.tick())
        #expect(forwards.map(\.jobID) == ["b"])
    }

    @Test func aJobInARegionGetsACancelSentUntilItEnds() throws {
        var h = NationalHarness()
        _ = h.summary("east", free: 4, total: 4)
        var s = Wire.Submit()
        s.jobID = "j"
        s.spec = Wire.JobSpec(JobSpec(name: "t", command: "true", accelerators: AcceleratorRequest(count: 1)))
        _ = h.send(.submit(s), from: h.client)
        _ = h.tick()
        let out = h.send(Self.cancel("j"), from: h.client)
        #expect(out.mutations.contains { if case .outbox(let i) = $0 { return i.key == "cancel:j" } else { return false } })
        func cancels(_ o: [ControllerDirective]) -> Int { o.bodies.filter { if case .cancel = $0 { return true } else { return false } }.count }
        #expect(cancels(h.tick()) == 1)
        #expect(cancels(h.tick(advanceMs: 1100)) == 1, "resent until the job ends")
        var u = Wire.StatusUpdate()
        u.jobID = "j"
        u.regionID = "east"
        u.state = "cancelled"
        u.epoch = 1
        u.updateID = "east:j:1:cancelled"
        let done = h.send(.statusUpdate(u), from: NationalHarness.regionOrigin("east"))
        #expect(done.mutations.contains { if case .outboxDone(let k) = $0 { return k == "cancel:j" } else { return false } })
        #expect(cancels(h.tick(advanceMs: 60_000)) == 0)
        #expect(h.instance.job("j")?.state == .cancelled)
        let unknown = h.send(Self.cancel("nope"), from: h.client)
        guard case .errorReply(let e) = unknown.bodies.last else { Issue.record("no error"); return }
        #expect(e.code == "not_found")
    }

    @Test func aRegionCancelsAnUnconfirmedPlacementWithoutSendingIt() throws {
        var h = RegionHarness { $0.confirmStarts = true }
        _ = h.register("n1", devices: [device("g0", 0)])
        _ = h.forward("j-1", JobSpec(name: "t", command: "true"))
        _ = h.tick()
        let out = h.send(Self.cancel("j-1"), from: h.national)
        #expect(out.persistedAssignments.map(\.state) == [.revoked])
        #expect(h.instance.job("j-1")?.state == .cancelled)
        #expect(h.tick(advanceMs: 10).statusUpdates.contains { $0.jobID == "j-1" && $0.state == "cancelled" })
        #expect(h.tick(advanceMs: 3000).assignments.isEmpty)
    }
}

/// Issue 11: any legal value on the wire (a uint64 can be 2^64−1) is handled, never a crash.
@Suite struct HostileValueTests {
    @Test(arguments: [UInt64.max, UInt64(Int64.max) + 1, 0])
    func anEpochAtTheEdgeOfUInt64DoesNotCrashTheNationalScheduler(epoch: UInt64) {
        var h = NationalHarness()
        _ = h.summary("east", free: 4, total: 4)
        var s = Wire.Submit()
        s.jobID = "j"
        s.spec = Wire.JobSpec(JobSpec(name: "t", command: "true", accelerators: AcceleratorRequest(count: 1)))
        _ = h.send(.submit(s), from: h.client)
        var u = Wire.StatusUpdate()
        u.jobID = "j"
        u.regionID = "east"
        u.state = "running"
        u.epoch = epoch
        u.updateID = "east:j:\(epoch):running"
        let out = h.send(.statusUpdate(u), from: NationalHarness.regionOrigin("east"))
        #expect(out.statusAcks.count == 1)
        #expect(h.instance.job("j") != nil)
    }

    @Test func aGeneratedJobIDNeverAnswersForAnOldJobAfterAClockStepBack() throws {
        // An earlier run, same millisecond prefix (the clock stepped back), left job <prefix>-1.
        var first = NationalHarness()
        _ = first.summary("east", free: 4, total: 4)
        var s = Wire.Submit()
        s.spec = Wire.JobSpec(JobSpec(name: "old", command: "true", accelerators: AcceleratorRequest(count: 1)))
        _ = first.send(.submit(s), from: first.client)
        let old = try #require(first.instance.job(JobID(first.instance.jobIDs.first ?? "")))
        var recovered = NationalRecovery()
        recovered.jobs = [old]
        var h = NationalHarness(recovered: recovered)
        _ = h.summary("east", free: 4, total: 4)
        s.spec = Wire.JobSpec(JobSpec(name: "new", command: "true", accelerators: AcceleratorRequest(count: 1)))
        let out = h.send(.submit(s), from: h.client)
        guard case .submitReply(let r) = out.bodies.last else { Issue.record("no reply"); return }
        #expect(r.accepted && r.jobID != old.id.rawValue)
        #expect(h.instance.job(JobID(r.jobID))?.spec.name == "new" && h.instance.job(old.id)?.spec.name == "old")
    }
}
