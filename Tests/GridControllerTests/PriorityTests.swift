import Foundation
import GridController
import GridCore
import GridProtocol
import GridScheduler
import PropertyBased
import Testing

/// Issue 9, priorities: a region's queue is ordered by priority, then arrival; no job is placed
/// ahead of a higher-priority job that fits.
@Suite struct PriorityTests {
    @Test func higherPriorityGoesFirstAndEqualsKeepTheirOrder() throws {
        var h = RegionHarness()
        _ = h.register("n1", devices: [device("g0", 0), device("g1", 1)])
        _ = h.forward("low", JobSpec(name: "low", command: "true", priority: -100))
        _ = h.forward("n-1", JobSpec(name: "n", command: "true"))
        _ = h.forward("high", JobSpec(name: "high", command: "true", priority: 100))
        _ = h.forward("n-2", JobSpec(name: "n", command: "true"))
        let placed = h.tick().assignments.map(\.jobID)
        #expect(placed == ["high", "n-1"])
        // Two one-device jobs of an hour (no run time given) wait for 2 healthy devices: 1 h.
        guard case .queryReply(let r) = h.send({ var q = Wire.Query(); q.kind = .regions; return .query(q) }()).bodies.last else {
            Issue.record("no reply"); return
        }
        #expect(r.regions.first?.expectedWaitS == 3600)
        #expect(h.instance.job("low")?.state == .queued && h.instance.job("n-2")?.state == .queued)
    }

    /// Random priorities and arrival order, one-device jobs, a random number of devices, a few
    /// rounds of completions: after every pass, no queued job has a higher priority than a job
    /// the pass placed (every one-device job fits any free device), and within a priority the
    /// earlier arrival went first.
    @Test func noJobIsPlacedAheadOfAHigherPriorityJobThatFits() async {
        await propertyCheck(count: 40, input: Gen.int(in: 0...1_000_000)) { seed in
            var rng = SplitMix(seed: UInt64(seed))
            var h = RegionHarness()
            let devices = 1 + rng.int(6)
            _ = h.register("n1", devices: (0..<devices).map { device("g\($0)", $0) })
            let n = 5 + rng.int(30)
            var arrival: [String: Int] = [:]
            var prio: [String: Int] = [:]
            for k in 0..<n {
                let id = "j\(k)"
                prio[id] = [-100, 0, 0, 100, 1000][rng.int(5)]
                arrival[id] = k
                _ = h.forward(id, JobSpec(name: id, command: "true", priority: prio[id]!))
            }
            var running: [Wire.Assignment] = []
            for round in 0..<8 {
                let placed = h.tick().assignments
                let queued = prio.keys.filter { h.instance.job(JobID($0))?.state == .queued }
                if let top = queued.map({ prio[$0]! }).max() {
                    for a in placed {
                        #expect(prio[a.jobID]! >= top, "seed \(seed) round \(round): \(a.jobID) (\(prio[a.jobID]!)) placed while a \(top) waits")
                        if prio[a.jobID]! == top {
                            let firstWaiting = queued.filter { prio[$0] == top }.map { arrival[$0]! }.min()!
                            #expect(arrival[a.jobID]! < firstWaiting, "seed \(seed): FIFO within priority \(top)")
                        }
                    }
                }
                for a in placed { _ = h.ack(a) }
                running += placed
                // Some finish, freeing their devices.
                var still: [Wire.Assignment] = []
                for a in running {
                    if rng.int(2) == 0 { _ = h.status(a, .succeeded, exit: 0) } else { still.append(a) }
                }
                running = still
                _ = h.heartbeat("n1", digestOf: running.map(\.assignmentID))
            }
        }
    }
}

/// Issue 9, preemption: a higher-priority job with no free devices stops the cheapest
/// lower-priority runs; they are queued again (`preempted`), never lost.
@Suite struct PreemptionTests {
    static func cancels(_ out: [ControllerDirective]) -> [Wire.Cancel] { out.cancels }

    @Test func theLowestPriorityRunIsStoppedQueuedAgainAndTheDevicesGoToTheHigherJob() throws {
        var h = RegionHarness()
        _ = h.register("n1", devices: [device("g0", 0), device("g1", 1)])
        _ = h.forward("mid", JobSpec(name: "mid", command: "true"))
        _ = h.forward("low", JobSpec(name: "low", command: "true", priority: -100))
        let first = h.tick().assignments
        #expect(Set(first.map(\.jobID)) == ["mid", "low"])
        for a in first { _ = h.ack(a); _ = h.status(a, .running) }
        _ = h.forward("high", JobSpec(name: "high", command: "true", priority: 100))
        let pass = h.tick()
        let low = try #require(first.first { $0.jobID == "low" })
        #expect(Self.cancels(pass).map(\.assignmentID) == [low.assignmentID], "the lowest priority is the victim")
        #expect(pass.assignments.isEmpty)
        #expect(Self.cancels(h.tick(advanceMs: 200)).isEmpty, "one preemption in flight per job")
        // The agent stops it (TERM) and reports it cancelled: queued again, not cancelled.
        _ = h.status(low, .cancelled, reason: .cancelled)
        let job = try #require(h.instance.job("low"))
        #expect(job.state == .queued && job.attempts.last?.endReason == .preempted)
        let next = h.tick()
        #expect(next.assignments.map(\.jobID) == ["high"])
        #expect(h.instance.job("low")?.state == .queued)
    }

    @Test func equalOrHigherPriorityAndRequeueNeverWorkIsNotPreempted() throws {
        var h = RegionHarness()
        _ = h.register("n1", devices: [device("g0", 0), device("g1", 1)])
        _ = h.forward("same", JobSpec(name: "same", command: "true", priority: 100))
        _ = h.forward("once", JobSpec(name: "once", command: "true", retry: RetryPolicy(requeueNever: true)))
        for a in h.tick().assignments { _ = h.ack(a); _ = h.status(a, .running) }
        _ = h.forward("high", JobSpec(name: "high", command: "true", priority: 100))
        #expect(Self.cancels(h.tick()).isEmpty)
        #expect(h.instance.job("high")?.state == .queued)
    }

    @Test func aPreemptedJobBeyondItsAttemptsIsStillQueuedNotLost() throws {
        var h = RegionHarness()
        _ = h.register("n1", devices: [device("g0", 0)])
        _ = h.forward("low", JobSpec(name: "low", command: "true", retry: RetryPolicy(maxAttempts: 1)))
        let a = try #require(h.tick().assignments.first)
        _ = h.ack(a)
        _ = h.status(a, .running)
        _ = h.forward("high", JobSpec(name: "high", command: "true", priority: 1))
        #expect(Self.cancels(h.tick()).count == 1)
        _ = h.status(a, .cancelled, reason: .cancelled)
        #expect(h.instance.job("low")?.state == .queued)
    }
}

/// Issue 9, node verbs: cordon, drain, uncordon.
@Suite struct NodeCommandTests {
    static func command(_ node: String, _ action: Wire.NodeCommand.Action, reason: String = "") -> Body {
        var c = Wire.NodeCommand()
        c.nodeID = node
        c.action = action
        c.reason = reason
        return .nodeCommand(c)
    }

    @Test func aCordonedNodeTakesNoNewWorkUntilUncordonedAndTheCordonSurvivesARestart() throws {
        var h = RegionHarness()
        _ = h.register("n1", devices: [device("g0", 0), device("g1", 1)])
        let out = h.send(Self.command("n1", .cordon, reason: "fan replacement"), from: h.national)
        #expect(out.mutations.contains { if case .nodeCordon("n1", let c?) = $0 { return c.reason == "fan replacement" && !c.drain } else { return false } })
        guard case .queryReply(let r) = out.bodies.last else { Issue.record("no reply"); return }
        #expect(r.nodes.first?.brief.cordon?.reason == "fan replacement")
        _ = h.forward("j", JobSpec(name: "j", command: "true"))
        #expect(h.tick().assignments.isEmpty)
        #expect(h.instance.job("j")?.state == .queued)
        #expect(h.instance.job("j")?.message.contains("1 node: cordoned") == true, "\(h.instance.job("j")?.message ?? "")")
        // A register (agent restart) does not lift it.
        _ = h.register("n1", devices: [device("g0", 0), device("g1", 1)])
        #expect(h.tick().assignments.isEmpty)
        // Nor does a restart of the region.
        var rec = RegionRecovery()
        var node = NodeRecord(id: "n1", region: "r1", hostname: "n1", state: .ready, devices: [device("g0", 0)], lastSeen: h.now.wall, registeredAt: h.now.wall)
        node.cordon = NodeCordon(reason: "x", drain: false, since: h.now.wall)
        rec.nodes = [node]
        var h2 = RegionHarness(recovered: rec)
        _ = h2.register("n1", devices: [device("g0", 0)])
        _ = h2.forward("k", JobSpec(name: "k", command: "true"))
        #expect(h2.tick().assignments.isEmpty)
        // Uncordoned, it takes the waiting job.
        _ = h.send(Self.command("n1", .uncordon), from: h.national)
        #expect(h.tick().assignments.map(\.jobID) == ["j"])
    }

    @Test func aDrainedNodeLetsItsRunningWorkFinish() throws {
        var h = RegionHarness()
        _ = h.register("n1", devices: [device("g0", 0)])
        _ = h.forward("j", JobSpec(name: "j", command: "true"))
        let a = try #require(h.tick().assignments.first)
        _ = h.ack(a)
        _ = h.status(a, .running)
        let out = h.send(Self.command("n1", .drain, reason: "kernel update"), from: h.national)
        #expect(out.cancels.isEmpty, "running work is not stopped")
        #expect(h.instance.job("j")?.state == .running)
        _ = h.status(a, .succeeded, exit: 0)
        _ = h.forward("k", JobSpec(name: "k", command: "true"))
        #expect(h.tick().assignments.isEmpty)
        let unknown = h.send(Self.command("nope", .cordon), from: h.national)
        guard case .errorReply(let e) = unknown.bodies.last else { Issue.record("no error"); return }
        #expect(e.code == "not_found")
    }
}

/// `placement.frontier: borrow` (issue 9, item 7): work a lower grade could run waits for the
/// lower grades under `reserve`, and borrows an idle frontier device under `borrow` — taken
/// back, whatever the borrower's priority, when work that needs grade A finds none free.
@Suite struct FrontierBorrowTests {
    static func gpu(_ id: String, _ index: Int, grade: DeviceGrade) -> DeviceInventory {
        DeviceInventory(id: id, index: index, vendor: .nvidia, model: grade == .a ? "NVIDIA H100 80GB HBM3" : "Tesla V100S-PCIE-32GB",
                        memoryTotalMiB: grade == .a ? 81920 : 32768, health: .healthy, grade: grade, computeUnits: grade == .a ? 989 : 130)
    }

    /// One grade-A and one grade-B node of one device each; a run holds the B device.
    static func region(_ policy: FrontierPolicy) throws -> RegionHarness {
        var h = RegionHarness { $0.frontier = policy }
        _ = h.register("a-node", devices: [gpu("h100", 0, grade: .a)])
        _ = h.register("b-node", devices: [gpu("v100", 0, grade: .b)])
        _ = h.forward("first", JobSpec(name: "first", command: "true"))
        let first = try #require(h.tick().assignments.first)
        #expect(first.nodeID == "b-node", "the least capable grade first")
        _ = h.ack(first)
        _ = h.status(first, .running)
        return h
    }

    @Test func underReserveLowerWorkWaitsForTheLowerGrades() throws {
        var h = try Self.region(.reserve)
        _ = h.forward("second", JobSpec(name: "second", command: "true", priority: 1000))
        #expect(h.tick(advanceMs: 10).assignments.isEmpty)
        #expect(h.instance.job("second")?.state == .queued)
    }

    @Test func underBorrowItTakesTheIdleFrontierDeviceAndGivesItBack() throws {
        var h = try Self.region(.borrow)
        _ = h.forward("second", JobSpec(name: "second", command: "true", priority: 1000))
        let borrowed = try #require(h.tick(advanceMs: 10).assignments.first)
        #expect(borrowed.jobID == "second" && borrowed.nodeID == "a-node")
        #expect(h.instance.job("second")?.message.contains("borrowing frontier devices") == true, "\(h.instance.job("second")?.message ?? "")")
        _ = h.ack(borrowed)
        _ = h.status(borrowed, .running)
        // Work that needs grade A, at a lower priority than the borrower: the borrower is stopped.
        var frontier = JobSpec(name: "frontier", command: "true", priority: 0)
        frontier.accelerators.minGrade = .a
        _ = h.forward("frontier", frontier)
        let pass = h.tick(advanceMs: 10)
        #expect(pass.cancels.map(\.assignmentID) == [borrowed.assignmentID], "only the borrowed run is stopped")
        #expect(h.instance.job("frontier")?.state == .queued)
        _ = h.status(borrowed, .cancelled, reason: .cancelled)
        let back = try #require(h.instance.job("second"))
        #expect(back.state == .queued && back.attempts.last?.endReason == .preempted, "\(back.state) \(back.attempts.map { $0.endReason?.rawValue ?? "-" })")
        #expect(back.attempts.last?.message.contains("it needs the frontier devices this run borrowed") == true, "\(back.attempts.last?.message ?? "")")
        let next = h.tick(advanceMs: 10).assignments
        #expect(next.map(\.jobID) == ["frontier"] && next.first?.nodeID == "a-node", "\(next.map { "\($0.jobID)@\($0.nodeID)" })")
    }

    @Test func aHigherPriorityLowerGradeJobDoesNotTakeBackFrontierDevices() throws {
        var h = try Self.region(.borrow)
        _ = h.forward("second", JobSpec(name: "second", command: "true", priority: 0))
        let borrowed = try #require(h.tick(advanceMs: 10).assignments.first)
        _ = h.ack(borrowed)
        _ = h.status(borrowed, .running)
        // Work that does not need grade A takes nothing back (it waits for the lower grades).
        _ = h.forward("third", JobSpec(name: "third", command: "true", priority: -10))
        #expect(h.tick(advanceMs: 10).cancels.isEmpty, "a lower-priority job that does not need grade A stops nothing")
    }
}
