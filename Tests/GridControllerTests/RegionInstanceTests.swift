import Foundation
import GridController
import GridCore
import GridProtocol
import GridStore
import GridTransport
import Testing

/// Drives a `RegionInstance` with messages and an injected clock and records what it decides,
/// as postgres-nio's pool state machine tests assert on actions.
struct RegionHarness {
    var instance: RegionInstance
    var now = Moment(monotonicMs: 1_000_000, wall: Date(timeIntervalSince1970: 1_750_000_000))
    let agent = Origin(peer: .downstream(identity: Array("agent-conn".utf8)))
    let national = Origin(peer: .upstream)
    var seq: UInt64 = 0

    init(_ configure: (inout RegionInstance.Settings) -> Void = { _ in }, recovered: RegionRecovery = RegionRecovery()) {
        var s = RegionInstance.Settings(region: "r1")
        s.heartbeatIntervalMs = 1000
        s.nodeLostAfterMs = 5000
        configure(&s)
        instance = RegionInstance(settings: s, recovered: recovered, now: now)
    }

    mutating func send(_ body: Body, from origin: Origin? = nil) -> [ControllerDirective] {
        seq += 1
        return instance.receive(Message(sender: "t", sequence: seq, body: body), origin: origin ?? agent, now: now)
    }

    /// Advances time as a running loop does: a turn every 50 ms at most, collecting what each
    /// turn decided. (A single jump longer than that is a stall of the controller: `stall`.)
    mutating func tick(advanceMs: Int64 = 0, backlog: Bool = false) -> [ControllerDirective] {
        var out: [ControllerDirective] = []
        var left = advanceMs
        while left > 50 {
            now = now.adding(ms: 50)
            left -= 50
            out += instance.onTick(now: now, backlog: false)
        }
        now = now.adding(ms: left)
        return out + instance.onTick(now: now, backlog: backlog)
    }

    /// The controller's own thread is stopped for `ms`, then gets one turn.
    mutating func stall(_ ms: Int64, backlog: Bool = false) -> [ControllerDirective] {
        now = now.adding(ms: ms)
        return instance.onTick(now: now, backlog: backlog)
    }

    mutating func register(_ node: String, devices: [DeviceInventory], held: [String] = []) -> [ControllerDirective] {
        var r = Wire.Register()
        r.nodeID = node
        r.hostname = node
        r.devices = devices.map(Wire.Device.init)
        r.heldAssignments = held
        return send(.register(r))
    }

    mutating func heartbeat(_ node: String, devices: [DeviceInventory] = [], running: [String]? = nil, digestOf held: [String] = []) -> [ControllerDirective] {
        var h = Wire.Heartbeat()
        h.nodeID = node
        h.devices = devices.map(Wire.Device.init)
        if let running { h.runningAssignments = running }
        h.assignmentDigest = AssignmentDigest.of(held)
        h.assignmentCount = UInt32(held.count)
        return send(.heartbeat(h))
    }

    mutating func forward(_ job: String, _ spec: JobSpec) -> [ControllerDirective] {
        var f = Wire.JobForward()
        f.jobID = job
        f.spec = Wire.JobSpec(spec)
        return send(.jobForward(f), from: national)
    }

    mutating func ack(_ a: Wire.Assignment, accepted: Bool = true) -> [ControllerDirective] {
        var k = Wire.AssignmentAck()
        k.assignmentID = a.assignmentID
        k.epoch = a.epoch
        k.nodeID = a.nodeID
        k.accepted = accepted
        return send(.assignmentAck(k))
    }

    mutating func status(_ a: Wire.Assignment, _ state: JobState, exit: Int32? = nil, reason: EndReason? = nil) -> [ControllerDirective] {
        var u = Wire.StatusUpdate()
        u.endReason = Wire.EndReason(reason)
        u.jobID = a.jobID
        u.assignmentID = a.assignmentID
        u.epoch = a.epoch
        u.nodeID = a.nodeID
        u.state = state.rawValue
        if let exit { u.exitCode = exit; u.hasExitCode_p = true }
        u.updateID = "\(a.assignmentID):\(state.rawValue)"
        return send(.statusUpdate(u))
    }
}

extension Array where Element == ControllerDirective {
    var bodies: [Body] { compactMap(\.sentBody) }
    var mutations: [StoreMutation] { compactMap(\.mutation) }
    var assignments: [Wire.Assignment] { bodies.compactMap { if case .assignment(let a) = $0 { return a } else { return nil } } }
    var statusAcks: [Wire.StatusAck] { bodies.compactMap { if case .statusAck(let a) = $0 { return a } else { return nil } } }
    var statusUpdates: [Wire.StatusUpdate] { bodies.compactMap { if case .statusUpdate(let a) = $0 { return a } else { return nil } } }
    var statusBatches: [Wire.StatusBatch] { bodies.compactMap { if case .statusBatch(let a) = $0 { return a } else { return nil } } }
    var cancels: [Wire.Cancel] { bodies.compactMap { if case .cancel(let a) = $0 { return a } else { return nil } } }
    var heartbeatAcks: [Wire.HeartbeatAck] { bodies.compactMap { if case .heartbeatAck(let a) = $0 { return a } else { return nil } } }
    var summaries: [Wire.RegionSummary] { bodies.compactMap { if case .regionSummary(let a) = $0 { return a } else { return nil } } }
    var persistedJobs: [JobRecord] { mutations.compactMap { if case .job(let j) = $0 { return j } else { return nil } } }
    var persistedAssignments: [AssignmentRecord] { mutations.compactMap { if case .assignment(let a, _) = $0 { return a } else { return nil } } }
    var persistedNodes: [NodeRecord] { mutations.compactMap { if case .node(let n) = $0 { return n } else { return nil } } }
    var lostNodes: [NodeID] { mutations.compactMap { if case .nodeState(let id, .lost) = $0 { return id } else { return nil } } }
}

func device(_ id: String, _ index: Int, vendor: AcceleratorVendor = .nvidia, model: String = "Tesla T4", memGiB: Int = 16,
            health: HealthState = .healthy, temperature: Double? = nil) -> DeviceInventory {
    DeviceInventory(id: id, index: index, vendor: vendor, model: model, memoryTotalMiB: memGiB * 1024, temperatureC: temperature,
                    health: DeviceHealth(state: health), grade: .c)
}

@Suite struct RegionInstanceTests {
    @Test func forwardedJobIsPlacedAssignedAndReportedUpward() throws {
        var h = RegionHarness()
        let reg = h.register("n1", devices: [device("g0", 0), device("g1", 1)])
        guard case .registerAck(let ack) = reg.bodies.first else { Issue.record("no RegisterAck"); return }
        #expect(ack.regionID == "r1" && ack.heartbeatIntervalMs == 1000)
        #expect(reg.persistedNodes.map(\.id) == ["n1"], "membership is written")

        let fwd = h.forward("j-1", JobSpec(name: "t", command: "true", accelerators: AcceleratorRequest(count: 2)))
        guard case .jobForwardAck(let fa) = fwd.bodies.first else { Issue.record("no JobForwardAck"); return }
        #expect(fa.accepted)
        #expect(fwd.persistedJobs.map(\.state) == [.queued], "the job is persisted in the same batch as its ack")

        let placed = h.tick()
        let a = try #require(placed.assignments.first)
        #expect(a.jobID == "j-1" && a.nodeID == "n1" && a.epoch == 1 && Set(a.deviceIds) == ["g0", "g1"])
        #expect(placed.persistedAssignments.map(\.state) == [.pending])
        #expect(placed.persistedJobs.map(\.state) == [.assigned])
        #expect(h.instance.job("j-1")?.state == .assigned)

        #expect(h.ack(a).persistedAssignments.map(\.state) == [.accepted])
        #expect(h.status(a, .running).statusAcks.first?.applied == true)
        let done = h.status(a, .succeeded, exit: 0)
        #expect(done.statusAcks.first?.applied == true)
        #expect(done.persistedAssignments.map(\.state) == [.done])
        #expect(h.instance.job("j-1")?.state == .succeeded && h.instance.job("j-1")?.exitCode == 0)
        #expect(h.instance.activeAssignmentCount == 0)

        // Upward reports leave through the outbox until the national scheduler acknowledges.
        let upward = h.tick(advanceMs: 10).statusUpdates
        #expect(upward.contains { $0.jobID == "j-1" && $0.state == "succeeded" && $0.regionID == "r1" })
        for u in h.instance.pendingUpwardIDs {
            var ack = Wire.StatusAck()
            ack.updateID = u
            ack.applied = true
            #expect(h.send(.statusAck(ack), from: h.national).mutations.count == 1)
        }
        #expect(h.tick(advanceMs: 60_000).statusUpdates.isEmpty)
        #expect(h.instance.outboxCount == 0)
    }

    @Test func unacknowledgedAssignmentIsResentWithSameIDAndEpochAndBackoff() throws {
        var h = RegionHarness()
        _ = h.register("n1", devices: [device("g0", 0)])
        _ = h.forward("j-1", JobSpec(name: "t", command: "true"))
        let first = try #require(h.tick().assignments.first)
        #expect(h.tick(advanceMs: 200).assignments.isEmpty, "not before the retry interval")
        let again = try #require(h.tick(advanceMs: 900).assignments.first)
        #expect(again.assignmentID == first.assignmentID && again.epoch == first.epoch)
        #expect(h.tick(advanceMs: 1100).assignments.isEmpty, "the second resend waits twice as long")
        #expect(h.tick(advanceMs: 1000).assignments.count == 1)
        _ = h.ack(again)
        #expect(h.tick(advanceMs: 10_000).assignments.isEmpty, "an acknowledged assignment is not resent")
    }

    @Test func duplicateStatusIsAnsweredWithoutAnotherWrite() throws {
        var h = RegionHarness()
        _ = h.register("n1", devices: [device("g0", 0)])
        _ = h.forward("j-1", JobSpec(name: "t", command: "true"))
        let a = try #require(h.tick().assignments.first)
        #expect(h.status(a, .succeeded, exit: 0).statusAcks.first?.applied == true)
        let dup = h.status(a, .succeeded, exit: 0)
        #expect(dup.statusAcks.first?.applied == true && dup.statusAcks.first?.reason.contains("duplicate") == true)
        #expect(dup.mutations.isEmpty)
    }

    @Test func lostNodeRequeuesWorkOnlyAfterLeasePlusMarginAndStaleReportsAreRefused() throws {
        var h = RegionHarness()
        _ = h.register("n1", devices: [device("g0", 0)])
        _ = h.forward("j-1", JobSpec(name: "t", command: "true"))
        let a1 = try #require(h.tick().assignments.first)
        _ = h.ack(a1)
        _ = h.status(a1, .running)
        #expect(h.tick(advanceMs: 4000).lostNodes.isEmpty, "not lost before node_lost_after_ms")
        let afterLoss = h.tick(advanceMs: 1100)
        #expect(afterLoss.lostNodes == ["n1"])
        #expect(afterLoss.persistedAssignments.isEmpty, "the lease (5 s) + margin (2 s) has not run out: the old run may still be alive")
        #expect(h.instance.job("j-1")?.state == .running)
        let expired = h.tick(advanceMs: 2000)
        #expect(expired.persistedAssignments.map(\.state) == [.revoked])
        #expect(h.instance.job("j-1")?.state == .queued)
        #expect(expired.persistedJobs.contains { $0.state == .queued && $0.message.contains("n1 lost") && $0.message.contains("attempt 2 of 3") })
        let up = try #require(expired.statusUpdates.last)
        #expect(up.state == "queued" && up.attempts.count == 1 && up.attempts[0].endReason == .nodeLost)

        _ = h.register("n2", devices: [device("h0", 0)])
        #expect(h.tick(advanceMs: 4000).assignments.isEmpty, "the retry waits out its backoff (5 s)")
        let a2 = try #require(h.tick(advanceMs: 1100).assignments.first)
        #expect(a2.nodeID == "n2" && a2.epoch == a1.epoch + 1 && a2.attempt == 2)

        let stale = try #require(h.status(a1, .succeeded, exit: 0).statusAcks.first)
        #expect(!stale.applied && stale.reason.contains("stale"))
        #expect(h.instance.job("j-1")?.node == "n2")
        // The old node comes back still running the revoked assignment: it is told to stop.
        let back = h.heartbeat("n1", running: [a1.assignmentID], digestOf: [a1.assignmentID])
        #expect(back.cancels.map(\.assignmentID) == [a1.assignmentID])
    }

    @Test func aNodeBackWithinTheLeaseKeepsItsWork() throws {
        var h = RegionHarness()
        _ = h.register("n1", devices: [device("g0", 0)])
        _ = h.forward("j-1", JobSpec(name: "t", command: "true"))
        let a = try #require(h.tick().assignments.first)
        _ = h.ack(a)
        _ = h.status(a, .running)
        #expect(h.tick(advanceMs: 5100).lostNodes == ["n1"])
        _ = h.heartbeat("n1", digestOf: [a.assignmentID])
        #expect(h.tick(advanceMs: 5000).persistedAssignments.isEmpty, "back before lease + margin: nothing is taken away")
        #expect(h.instance.job("j-1")?.state == .running)
    }

    @Test func acksCarryTheLeaseAndEchoTheAgentsClock() throws {
        var h = RegionHarness { $0.leaseMs = 8000; $0.leaseMarginMs = 1500 }
        var r = Wire.Register()
        r.nodeID = "n1"
        r.sentMs = 777
        let reg = h.send(.register(r))
        let ack = try #require(reg.bodies.compactMap { if case .registerAck(let a) = $0 { return a } else { return nil } }.first)
        #expect(ack.leaseMs == 8000 && ack.leaseMarginMs == 1500 && ack.echoSentMs == 777)
        var hb = Wire.Heartbeat()
        hb.nodeID = "n1"
        hb.sentMs = 12_345
        let hack = try #require(h.send(.heartbeat(hb)).heartbeatAcks.first)
        #expect(hack.echoSentMs == 12_345 && hack.leaseMs == 8000 && hack.leaseMarginMs == 1500)
    }

    @Test func requeueNeverEndsTheJobLostInsteadOfRunningItAgain() throws {
        var h = RegionHarness()
        _ = h.register("n1", devices: [device("g0", 0)])
        _ = h.forward("j-1", JobSpec(name: "t", command: "true", retry: RetryPolicy(requeueNever: true)))
        let a = try #require(h.tick().assignments.first)
        _ = h.ack(a)
        let out = h.tick(advanceMs: 7100)
        #expect(out.persistedJobs.last?.state == .lost)
        #expect(h.instance.job("j-1")?.message.contains("requeue: never") == true)
        #expect(out.statusUpdates.last?.state == "lost")
        _ = h.register("n2", devices: [device("h0", 0)])
        #expect(h.tick(advanceMs: 60_000).assignments.isEmpty, "never placed again")
    }

    @Test func attemptsAreCappedByMaxAttempts() throws {
        var h = RegionHarness()
        _ = h.forward("j-1", JobSpec(name: "t", command: "true", retry: RetryPolicy(maxAttempts: 2, backoffSeconds: 0)))
        var epochs: [UInt64] = []
        for round in 0..<2 {
            _ = h.register("n\(round)", devices: [device("g\(round)", 0)])
            let a = try #require(h.tick(advanceMs: 10).assignments.first, "round \(round)")
            epochs.append(a.epoch)
            _ = h.ack(a)
            _ = h.status(a, .running)
            // The agent stopped the run because its lease lapsed: a fault, not the job's outcome.
            _ = h.status(a, .failed, exit: 143, reason: .fenced)
        }
        let job = try #require(h.instance.job("j-1"))
        #expect(job.state == .lost && job.message.contains("gave up after 2 of 2 attempts"))
        #expect(job.attempts.map(\.endReason) == [.fenced, .fenced])
        #expect(job.attempts.map(\.number) == [1, 2])
        #expect(epochs == [1, 2])
    }

    @Test func aStoppingAgentsNodeTakesNoNewWorkUntilItRegistersAgain() throws {
        var h = RegionHarness()
        _ = h.register("n1", devices: [device("g0", 0)])
        _ = h.forward("j-1", JobSpec(name: "t", command: "true", retry: RetryPolicy(backoffSeconds: 0)))
        let a = try #require(h.tick().assignments.first)
        _ = h.ack(a)
        var hb = Wire.Heartbeat()
        hb.nodeID = "n1"
        hb.draining = true
        let draining = h.send(.heartbeat(hb))
        #expect(draining.mutations.contains { if case .nodeState("n1", .draining) = $0 { return true } else { return false } })
        _ = h.status(a, .failed, exit: 143, reason: .agentStopped)
        #expect(h.instance.job("j-1")?.state == .queued)
        #expect(h.tick(advanceMs: 100).assignments.isEmpty, "not placed on the node that is stopping")
        _ = h.register("n1", devices: [device("g0", 0)])
        #expect(h.tick(advanceMs: 10).assignments.first?.epoch == 2, "placed again once the agent is back")
        // A late report of the old agent's stop (resent from its journal) does not drain it again.
        _ = h.status(a, .failed, exit: 143, reason: .agentStopped)
        #expect(h.instance.nodeState("n1") == .ready)
    }

    @Test func aRegionRestartedWhileANodeWasLostStillRequeuesItsWork() throws {
        var h = RegionHarness()
        _ = h.register("n1", devices: [device("g0", 0)])
        _ = h.forward("j-1", JobSpec(name: "t", command: "true", retry: RetryPolicy(backoffSeconds: 0)))
        let a = try #require(h.tick().assignments.first)
        _ = h.ack(a)
        #expect(h.tick(advanceMs: 5100).lostNodes == ["n1"])
        // Restart from what the log holds: the node lost, the assignment accepted.
        var rec = RegionRecovery()
        rec.nodes = [NodeRecord(id: "n1", region: "r1", hostname: "n1", state: .lost, devices: [device("g0", 0)],
                                lastSeen: h.now.wall, registeredAt: h.now.wall)]
        rec.jobs = [try #require(h.instance.job("j-1"))]
        rec.assignments = [AssignmentRecord(id: AssignmentID(a.assignmentID), job: "j-1", node: "n1", epoch: 1, deviceIDs: ["g0"],
                                            state: .accepted, createdAt: h.now.wall)]
        var r = RegionHarness(recovered: rec)
        #expect(r.tick(advanceMs: 6000).persistedAssignments.isEmpty, "a full lease + margin from the restart first")
        #expect(r.tick(advanceMs: 1100).persistedAssignments.map(\.state) == [.revoked])
        #expect(r.instance.job("j-1")?.state == .queued)
    }

    @Test func aDrainingNodeThatFallsSilentIsStillLost() throws {
        var h = RegionHarness()
        _ = h.register("n1", devices: [device("g0", 0)])
        var hb = Wire.Heartbeat()
        hb.nodeID = "n1"
        hb.draining = true
        _ = h.send(.heartbeat(hb))
        #expect(h.instance.nodeState("n1") == .draining)
        #expect(h.tick(advanceMs: 5100).lostNodes.contains("n1"))
    }

    @Test func aRejectionIsNotAnAttemptAndIsRetriedAtOnce() throws {
        var h = RegionHarness()
        _ = h.register("n1", devices: [device("g0", 0)])
        _ = h.register("n2", devices: [device("h0", 0)])
        _ = h.forward("j-1", JobSpec(name: "t", command: "true", retry: RetryPolicy(maxAttempts: 1, requeueNever: true)))
        let a = try #require(h.tick().assignments.first)
        _ = h.ack(a, accepted: false)
        let b = try #require(h.tick(advanceMs: 10).assignments.first, "placed again without backoff")
        #expect(b.epoch == a.epoch + 1 && b.attempt == 1)
        _ = h.ack(b)
        _ = h.status(b, .succeeded, exit: 0)
        let job = try #require(h.instance.job("j-1"))
        #expect(job.state == .succeeded && job.attempts.map(\.endReason) == [.rejected, .exited])
        #expect(job.attempts.last?.startedAt == nil, "no running report was sent")
    }

    @Test func heartbeatsWriteNothingUnlessCapabilityOrHealthChanges() {
        var h = RegionHarness()
        _ = h.register("n1", devices: [device("g0", 0, temperature: 40)])
        #expect(h.heartbeat("n1").mutations.isEmpty)
        #expect(h.heartbeat("n1", devices: [device("g0", 0, temperature: 71)]).mutations.isEmpty,
                "a temperature change is telemetry: no write, no re-plan")
        let sick = h.heartbeat("n1", devices: [device("g0", 0, health: .unhealthy)])
        #expect(sick.persistedNodes.first?.devices.first?.health.state == .unhealthy)
        _ = h.forward("j-1", JobSpec(name: "t", command: "true", accelerators: AcceleratorRequest(count: 1)))
        #expect(h.tick().assignments.isEmpty, "an unhealthy device takes no work")
    }

    @Test func rejectedAssignmentIsRequeuedAndPlacedElsewhere() throws {
        var h = RegionHarness()
        _ = h.register("n1", devices: [device("g0", 0)])
        _ = h.forward("j-1", JobSpec(name: "t", command: "true"))
        let a = try #require(h.tick().assignments.first)
        let out = h.ack(a, accepted: false)
        #expect(out.persistedAssignments.map(\.state).contains(.rejected))
        #expect(h.instance.job("j-1")?.state == .queued)
        _ = h.register("n2", devices: [device("h0", 0)])
        let next = try #require(h.tick(advanceMs: 10).assignments.first)
        #expect(next.epoch == a.epoch + 1)
    }

    @Test func aNodeThatKeepsRefusingIsRetriedWithBackoffNotInAHotLoop() throws {
        var h = RegionHarness()
        _ = h.register("n1", devices: [device("g0", 0)])
        _ = h.forward("j-1", JobSpec(name: "t", command: "true"))
        var offers = 0
        var last = try #require(h.tick().assignments.first)
        offers += 1
        // The node refuses every offer; over 10 s it gets a handful, not one per turn.
        for _ in 0..<200 {
            _ = h.ack(last, accepted: false)
            let next = h.tick(advanceMs: 50).assignments
            if let a = next.first { last = a; offers += 1 }
            _ = h.heartbeat("n1")
        }
        #expect(offers >= 3 && offers <= 6, "\(offers) offers in 10 s")
        #expect(h.instance.job("j-1")?.state != .lost, "refusals never use up attempts")
    }

    @Test func cancelOfAQueuedJobEndsItAndOfARunningOneTellsTheNode() throws {
        var h = RegionHarness()
        _ = h.forward("j-q", JobSpec(name: "t", command: "true"))
        var c = Wire.Cancel()
        c.jobID = "j-q"
        let queued = h.send(.cancel(c), from: h.national)
        #expect(queued.persistedJobs.map(\.state) == [.cancelled])
        #expect(h.instance.queuedJobCount == 0)
        _ = h.register("n1", devices: [device("g0", 0)])
        _ = h.forward("j-r", JobSpec(name: "t", command: "true"))
        let a = try #require(h.tick().assignments.first)
        _ = h.ack(a)
        c.jobID = "j-r"
        #expect(h.send(.cancel(c), from: h.national).cancels.map(\.assignmentID) == [a.assignmentID])
        // Until the node reports the end, the cancel is repeated when it shows the assignment.
        #expect(h.heartbeat("n1", running: [a.assignmentID], digestOf: [a.assignmentID]).cancels.count == 1)
        #expect(h.status(a, .cancelled).statusAcks.first?.applied == true)
        #expect(h.instance.job("j-r")?.state == .cancelled)
    }

    @Test func heartbeatFromUnknownNodeAsksForRegistration() {
        var h = RegionHarness()
        #expect(h.heartbeat("ghost").heartbeatAcks.first?.known == false)
    }

    @Test func digestMismatchAsksForTheList() throws {
        var h = RegionHarness()
        _ = h.register("n1", devices: [device("g0", 0)])
        _ = h.forward("j-1", JobSpec(name: "t", command: "true"))
        let a = try #require(h.tick().assignments.first)
        _ = h.ack(a)
        #expect(h.heartbeat("n1", digestOf: [a.assignmentID]).heartbeatAcks.first?.sendAssignments == false)
        #expect(h.heartbeat("n1", digestOf: ["x.1"]).heartbeatAcks.first?.sendAssignments == true)
    }

    /// The region keeps each node's digest up to date as assignments come and go (XOR of each
    /// id's hash, added and taken out one at a time): after placements, an end and a restart
    /// of the region, an agent that reports exactly what it holds is never asked for its list.
    @Test func theDigestFollowsAssignmentsAddedAndRemovedAndARestart() throws {
        var h = RegionHarness()
        var stored: [StoreMutation] = []
        stored += h.register("n1", devices: (0..<4).map { device("g\($0)", $0) }).mutations
        for i in 1...3 { stored += h.forward("j-\(i)", JobSpec(name: "t", command: "true")).mutations }
        let turn = h.tick()
        stored += turn.mutations
        let sent = turn.assignments
        #expect(sent.count == 3)
        for a in sent { stored += h.ack(a).mutations }
        var held = sent.map(\.assignmentID)
        #expect(h.heartbeat("n1", digestOf: held.reversed()).heartbeatAcks.first?.sendAssignments == false)
        #expect(h.heartbeat("n1", digestOf: Array(held.dropLast())).heartbeatAcks.first?.sendAssignments == true)
        stored += h.status(sent[1], .running).mutations
        let done = h.status(sent[1], .succeeded, exit: 0)
        #expect(done.statusAcks.first?.applied == true)
        stored += done.mutations
        held.remove(at: 1)
        #expect(h.heartbeat("n1", digestOf: held).heartbeatAcks.first?.sendAssignments == false)
        stored += h.forward("j-4", JobSpec(name: "t", command: "true")).mutations
        let again = h.tick()
        stored += again.mutations
        let fourth = try #require(again.assignments.first)
        held.append(fourth.assignmentID)
        #expect(h.heartbeat("n1", digestOf: held).heartbeatAcks.first?.sendAssignments == false)
        // Rebuilt from a real store of what it wrote: the digest is worked out again at once.
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("digest-\(UUID().uuidString).sqlite").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let store = try GridStore(path: path)
        try store.commit(stored)
        let recovered = try RegionRecovery.load(from: store, region: "r1", retention: 3600, now: h.now.wall)
        #expect(recovered.assignments.count == 3)
        var after = RegionHarness(recovered: recovered)
        #expect(after.heartbeat("n1", digestOf: held).heartbeatAcks.first?.sendAssignments == false)
        #expect(after.heartbeat("n1", digestOf: held + ["x.1"]).heartbeatAcks.first?.sendAssignments == true)
    }

    @Test func theDigestIsOrderFreeAndChangesWithTheSet() {
        let ids = (0..<50).map { "j-\($0).\($0 % 3 + 1)" }
        #expect(AssignmentDigest.of(ids) == AssignmentDigest.of(ids.reversed()))
        #expect(AssignmentDigest.of([String]()) == 0)
        var d: UInt64 = 0
        for id in ids { d ^= AssignmentDigest.of(id: id) }
        #expect(d == AssignmentDigest.of(ids))
        for i in ids.indices { #expect(AssignmentDigest.of(ids.filter { $0 != ids[i] }) != AssignmentDigest.of(ids)) }
        #expect(AssignmentDigest.of(["j-1.1"]) != AssignmentDigest.of(["j-1.2"]))
    }

    @Test func oneConnectionCarriesManyNodes() {
        var h = RegionHarness()
        _ = h.register("sim-1", devices: [device("a", 0)])
        _ = h.register("sim-2", devices: [device("b", 0, vendor: .amd, model: "MI100", memGiB: 32)])
        _ = h.forward("j-nv", JobSpec(name: "nv", command: "true", accelerators: AcceleratorRequest(count: 1, vendor: .nvidia)))
        _ = h.forward("j-amd", JobSpec(name: "amd", command: "true", accelerators: AcceleratorRequest(count: 1, vendor: .amd)))
        let out = h.tick()
        #expect(Dictionary(uniqueKeysWithValues: out.assignments.map { ($0.jobID, $0.nodeID) }) == ["j-nv": "sim-1", "j-amd": "sim-2"])
    }

    @Test func restartedAgentWithoutTheProcessGetsTheJobRequeued() throws {
        var h = RegionHarness()
        _ = h.register("n1", devices: [device("g0", 0)])
        _ = h.forward("j-1", JobSpec(name: "t", command: "true"))
        let a = try #require(h.tick().assignments.first)
        _ = h.ack(a)
        let again = h.register("n1", devices: [device("g0", 0)], held: [])
        #expect(again.persistedAssignments.map(\.state) == [.revoked])
        #expect(h.instance.job("j-1")?.attempts.last?.endReason == .nodeRestarted)
        let next = try #require(h.tick(advanceMs: 5010).assignments.first, "after the retry backoff")
        #expect(next.epoch == a.epoch + 1)
    }

    @Test func aRestartedAgentHoldingAFinishedRunsReportKeepsIt() throws {
        var h = RegionHarness()
        _ = h.register("n1", devices: [device("g0", 0)])
        _ = h.forward("j-1", JobSpec(name: "t", command: "true"))
        let a = try #require(h.tick().assignments.first)
        _ = h.ack(a)
        // The job ended while the agent was down; the agent's register lists it until its final
        // status is acknowledged, so the region does not run it again.
        #expect(h.register("n1", devices: [device("g0", 0)], held: [a.assignmentID]).persistedAssignments.isEmpty)
        _ = h.status(a, .succeeded, exit: 0)
        #expect(h.instance.job("j-1")?.state == .succeeded)
        #expect(h.tick(advanceMs: 20_000).assignments.isEmpty)
    }

    @Test func placementIsBoundedPerTurnSoHeartbeatsAreServed() {
        var h = RegionHarness { $0.placementBudget = 10 }
        _ = h.register("n1", devices: (0..<64).map { device("g\($0)", $0) })
        for i in 0..<25 { _ = h.forward("j-\(i)", JobSpec(name: "t", command: "true")) }
        #expect(h.tick().assignments.count == 10)
        #expect(h.tick(advanceMs: 1).assignments.count == 10)
        #expect(h.tick(advanceMs: 1).assignments.count == 5)
        #expect(h.instance.queuedJobCount == 0)
    }

    @Test func aStalledControllerDoesNotDeclareLiveNodesLost() {
        var h = RegionHarness()
        _ = h.register("n1", devices: [device("g0", 0)])
        _ = h.tick(advanceMs: 100)
        // The controller's own thread stalls for 12 s (longer than node_lost_after_ms) while
        // the node keeps sending; its heartbeats are still unread when the turn comes.
        let stalled = h.stall(12_000, backlog: true)
        #expect(stalled.lostNodes.isEmpty, "deadlines are not judged while inputs are unread")
        #expect(h.instance.localHealth > 0)
        // The next turn reads the node's heartbeat first, then judges deadlines.
        _ = h.heartbeat("n1")
        #expect(h.tick(advanceMs: 10).lostNodes.isEmpty)
        #expect(h.instance.nodeState("n1") == .ready)
    }

    @Test func stallTimeDoesNotCountAsANodesSilence() {
        var h = RegionHarness()
        _ = h.register("n1", devices: [device("g0", 0)])
        _ = h.tick(advanceMs: 100)
        _ = h.stall(6000)  // a stall of 6 s with no backlog reported
        #expect(h.instance.nodeState("n1") == .ready, "time the controller was not listening is not the node's silence")
        // A node that is really gone is still found, after the stretched limit of listening.
        for _ in 0..<20 { _ = h.tick(advanceMs: 200) }
        #expect(h.instance.nodeState("n1") == .ready)
        for _ in 0..<60 { _ = h.tick(advanceMs: 200) }
        #expect(h.instance.nodeState("n1") == .lost)
    }

    @Test func summariesAreAggregatesWithDeltas() throws {
        var h = RegionHarness { $0.fullSummaryEvery = 100 }
        _ = h.register("n1", devices: [device("g0", 0), device("g1", 1)])
        _ = h.register("n2", devices: [device("m0", 0, vendor: .amd, model: "MI100", memGiB: 32)])
        let first = try #require(h.tick().summaries.first)
        #expect(first.full && first.nodes.isEmpty && first.nodesTotal == 2)
        #expect(first.capacity.map(\.total).sorted() == [1, 2])
        _ = h.forward("j-1", JobSpec(name: "t", command: "true", accelerators: AcceleratorRequest(count: 1, vendor: .amd)))
        let delta = try #require(h.tick(advanceMs: 1000).summaries.first)
        #expect(!delta.full && delta.baseSequence == first.sequence)
        #expect(delta.capacity.map(\.model) == ["MI100"] && delta.capacity.first?.free == 0, "only the class that changed")
        var ack = Wire.RegionSummaryAck()
        ack.wantFull = true
        _ = h.send(.regionSummaryAck(ack), from: h.national)
        #expect(h.tick(advanceMs: 1000).summaries.first?.full == true)
    }

    @Test func nodesQueryPagesAndNeverTruncatesSilently() {
        var h = RegionHarness()
        for i in 0..<25 { _ = h.register(String(format: "n%02d", i), devices: [device("g", 0)]) }
        var q = Wire.Query()
        q.kind = .nodes
        q.limit = 10
        q.offset = 20
        q.correlation = 7
        guard case .queryReply(let r) = h.send(.query(q)).bodies.first else { Issue.record("no reply"); return }
        #expect(r.nodes.map(\.nodeID) == ["n20", "n21", "n22", "n23", "n24"])
        #expect(r.total == 25 && r.nextOffset == 0 && r.correlation == 7)
    }

    @Test func recoveryRebuildsQueuesAssignmentsAndTheIndex() throws {
        var h = RegionHarness()
        _ = h.register("n1", devices: [device("g0", 0), device("g1", 1)])
        _ = h.forward("j-1", JobSpec(name: "t", command: "true"))
        _ = h.forward("j-2", JobSpec(name: "t", command: "true", accelerators: AcceleratorRequest(count: 2)))
        let out = h.tick()
        let a = try #require(out.assignments.first)
        var recovered = RegionRecovery()
        recovered.nodes = [NodeRecord(id: "n1", region: "r1", hostname: "n1", state: .ready,
                                      devices: [device("g0", 0), device("g1", 1)], lastSeen: h.now.wall, registeredAt: h.now.wall)]
        recovered.jobs = [h.instance.job("j-1")!, h.instance.job("j-2")!]
        recovered.assignments = out.persistedAssignments
        var r = RegionHarness(recovered: recovered)
        #expect(r.instance.queuedJobCount == 1 && r.instance.activeAssignmentCount == 1)
        // Until n1 speaks again nothing is placed on it; then j-2 still waits for the device j-1 holds.
        #expect(r.tick().assignments.filter { $0.jobID == "j-2" }.isEmpty)
        _ = r.heartbeat("n1", digestOf: [a.assignmentID])
        #expect(r.tick(advanceMs: 10).assignments.filter { $0.jobID == "j-2" }.isEmpty)
        #expect(r.instance.job("j-2")?.message.contains("waiting") == true)
    }
}
