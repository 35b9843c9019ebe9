import Foundation
@testable import GridAgent
import GridCore
import GridProtocol
import Testing

extension Array where Element == AgentDirective {
    var journalled: [JournalRecord] { compactMap { if case .journal(let r) = $0 { return r } else { return nil } } }
    var leases: [Int64] { compactMap { if case .lease(let t, _) = $0 { return t } else { return nil } } }
    var watches: [AssignmentID] { compactMap { if case .watch(let id, _) = $0 { return id } else { return nil } } }
    var exits: Int { filter { if case .exit = $0 { return true } else { return false } }.count }
    func index(where match: (AgentDirective) -> Bool) -> Int? { firstIndex(where: match) }
}

extension AgentHarness {
    /// Acknowledges a heartbeat sent at `sentAt` with this lease.
    mutating func heartbeatAck(sentAt: Int64, lease: UInt32 = 5000, margin: UInt32 = 1000) -> [AgentDirective] {
        var a = Wire.HeartbeatAck()
        a.nodeID = "n1"
        a.known = true
        a.echoSentMs = sentAt
        a.leaseMs = lease
        a.leaseMarginMs = margin
        return receive(.heartbeatAck(a))
    }

    mutating func running(_ id: String = "j-1.1", keep: Bool = false) -> [AgentDirective] {
        var m = AgentHarness.assignment(id)
        m.keepOnLeaseLoss = keep
        var out = instance.onAssignment(m, now: now)
        out += instance.onProcessStarted(AssignmentID(id), pid: 4242, startTicks: 99, now: now)
        return out
    }
}

@Suite struct AgentJournalTests {
    static func update(_ aid: String, _ state: String) -> Wire.StatusUpdate {
        var u = Wire.StatusUpdate()
        u.assignmentID = aid
        u.jobID = String(aid.split(separator: ".")[0])
        u.state = state
        u.updateID = "\(aid):\(state)"
        return u
    }

    static let records: [JournalRecord] = [
        .accepted(AgentHarness.assignment("a-1.1", devices: ["g0"])),
        JournalRecord(kind: .started, assignment: "a-1.1", pid: 100, startTicks: 5000),
        .status(update("a-1.1", "running")),
        .accepted(AgentHarness.assignment("a-2.1", devices: ["g1"])),
        JournalRecord(kind: .started, assignment: "a-2.1", pid: 200, startTicks: 6000),
        .status(update("a-2.1", "running")),
        JournalRecord(kind: .acked, updateID: "a-2.1:running"),
        JournalRecord(kind: .ended, assignment: "a-2.1", state: .succeeded),
        .status(update("a-2.1", "succeeded")),
        .accepted(AgentHarness.assignment("a-3.1", devices: [])),
        JournalRecord(kind: .stopping, assignment: "a-3.1", reason: .fenced),
        // A resent assignment that already ended is not taken up again.
        .accepted(AgentHarness.assignment("a-2.1", devices: ["g1"])),
    ]

    @Test func replayRebuildsRunsUnacknowledgedStatusesAndFinishedRuns() {
        let s = JournalState.replay(Self.records, unreadable: 1)
        #expect(s.jobs.map(\.assignment.assignmentID) == ["a-1.1", "a-3.1"])
        #expect(s.jobs[0].pid == 100 && s.jobs[0].startTicks == 5000 && s.jobs[0].stopReason == nil)
        #expect(s.jobs[1].pid == nil && s.jobs[1].stopReason == .fenced)
        #expect(s.pending.map(\.updateID) == ["a-1.1:running", "a-2.1:succeeded"])
        #expect(s.finished.map(\.0) == ["a-2.1"] && s.finished.map(\.1) == [.succeeded])
        #expect(s.unreadable == 1)
        #expect(JournalState.replay(s.records) == JournalState.replay(Self.records), "compaction keeps the state")
    }

    @Test func aJournalFileSurvivesReopenCompactionAndATornLastLine() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("journal-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("agent.journal").path
        let j = try AgentJournal(path: path)
        #expect(try j.load() == JournalState())
        for r in Self.records { j.append(r) }
        #expect(j.hasUnsynced)
        try j.sync()
        #expect(!j.hasUnsynced)
        // A crash in the middle of a write leaves half a line.
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try h.seekToEnd()
        try h.write(contentsOf: Data("{\"kind\":\"acc".utf8))
        try h.close()
        let loaded = try AgentJournal(path: path).load()
        #expect(loaded.unreadable == 1)
        #expect(loaded.jobs.map(\.assignment.assignmentID) == ["a-1.1", "a-3.1"])
        let again = try AgentJournal(path: path)
        try again.rewrite(loaded)
        again.append(JournalRecord(kind: .acked, updateID: "a-2.1:succeeded"))
        try again.sync()
        let compacted = try AgentJournal(path: path).load()
        #expect(compacted.unreadable == 0, "the rewrite dropped the torn line")
        #expect(compacted.pending.map(\.updateID) == ["a-1.1:running"])
        #expect(compacted.jobs == loaded.jobs)
    }
}

@Suite struct AgentRecoveryTests {
    @Test func anAssignmentIsJournalledBeforeItsAckLeavesAndBeforeItStarts() throws {
        var h = AgentHarness()
        h.registered()
        let out = h.instance.onAssignment(AgentHarness.assignment(), now: h.now)
        let journal = try #require(out.index { if case .journal(let r) = $0 { return r.kind == .accepted } else { return false } })
        let ack = try #require(out.index { if case .send(.assignmentAck) = $0 { return true } else { return false } })
        let start = try #require(out.index { if case .start = $0 { return true } else { return false } })
        #expect(journal < ack && ack < start)
        let started = h.instance.onProcessStarted("j-1.1", pid: 77, startTicks: 1234, now: h.now)
        let rec = try #require(started.journalled.first { $0.kind == .started })
        #expect(rec.pid == 77 && rec.startTicks == 1234)
        #expect(started.journalled.contains { $0.kind == .status }, "the running status is journalled until acknowledged")
        var ack2 = Wire.StatusAck()
        ack2.updateID = "j-1.1:running"
        ack2.applied = true
        #expect(h.receive(.statusAck(ack2)).journalled.map(\.kind) == [.acked])
    }

    @Test func recoveryReattachesTheLivingReportsTheEndedAndStartsTheNeverStarted() throws {
        var h = AgentHarness()
        var state = JournalState()
        state.jobs = [
            .init(assignment: AgentHarness.assignment("alive.1", devices: ["g0"]), pid: 10, startTicks: 1),
            .init(assignment: AgentHarness.assignment("done.1", devices: ["g1"]), pid: 11, startTicks: 2),
            .init(assignment: AgentHarness.assignment("new.1", devices: []), pid: nil, startTicks: nil),
            .init(assignment: AgentHarness.assignment("gone.1", devices: []), pid: 12, startTicks: 3),
        ]
        let out = h.instance.recover(state, found: [
            "alive.1": .alive(pid: 10, startTicks: 1),
            "done.1": .ended(ProcessOutcome(end: .exited(0))),
            "new.1": .neverStarted,
            "gone.1": .ended(ProcessOutcome(end: nil)),
        ], leaseUntilMs: h.now + 3000, now: h.now)
        #expect(out.watches == ["alive.1"])
        #expect(out.starts.isEmpty, "nothing is started before the region renews the lease")
        let never = try #require(out.statuses.first { $0.assignmentID == "new.1" })
        #expect(never.endReason == .agentStopped, "accepted but never started: handed back to the region's retry policy")
        let done = try #require(out.statuses.first { $0.assignmentID == "done.1" })
        #expect(done.state == "succeeded" && done.exitCode == 0 && done.message.contains("while the agent was down"))
        let gone = try #require(out.statuses.first { $0.assignmentID == "gone.1" })
        #expect(gone.state == "failed" && gone.endReason == .endedWhileAgentDown && !gone.hasExitCode_p)
        #expect(Set(out.journalled.filter { $0.kind == .ended }.compactMap(\.assignment)) == ["done.1", "gone.1", "new.1"])
        // The register lists what runs and what ended unacknowledged, so nothing runs twice.
        let reg = try #require(h.tick().sent.compactMap { if case .register(let r) = $0 { return r } else { return nil } }.first)
        #expect(Set(reg.heldAssignments) == ["alive.1", "new.1", "done.1", "gone.1"])
        // A resend of a run that ended is acknowledged, not run.
        let resend = h.instance.onAssignment(AgentHarness.assignment("done.1", devices: ["g1"]), now: h.now)
        #expect(resend.starts.isEmpty && resend.acks.first?.accepted == true)
    }

    @Test func unacknowledgedStatusesFromTheJournalAreResent() {
        var h = AgentHarness()
        var state = JournalState()
        state.pending = [AgentJournalTests.update("x.1", "succeeded")]
        _ = h.instance.recover(state, found: [:], leaseUntilMs: nil, now: h.now)
        #expect(h.tick().statuses.map(\.updateID) == ["x.1:succeeded"])
        #expect(h.tick(500).statuses.isEmpty)
        #expect(h.tick(600).statuses.isEmpty, "not before the region has answered something sent after it")
        // The region answers the register sent since: it read past the status, so that was
        // lost; resent until acknowledged.
        var ack = Wire.RegisterAck()
        ack.nodeID = "n1"
        ack.regionID = "r1"
        ack.echoSentMs = h.now
        _ = h.receive(.registerAck(ack))
        #expect(h.tick().statuses.map(\.updateID) == ["x.1:succeeded"], "resent until acknowledged")
    }
}

@Suite struct AgentLeaseTests {
    @Test func theLeaseRunsFromTheEchoedSendTimeNotFromTheAnswer() {
        var h = AgentHarness()
        h.registered()
        let sent = h.now
        h.now += 3000  // a slow answer
        let out = h.heartbeatAck(sentAt: sent)
        #expect(out.leases == [sent + 5000 - 1000])
        #expect(h.heartbeatAck(sentAt: sent - 100).leases.isEmpty, "an older echo never moves the lease back")
        #expect(h.heartbeatAck(sentAt: h.now + 1).leases.isEmpty, "an echo from the future is ignored")
    }

    @Test func aLapsedLeaseStopsJobsWithTermThenKillAndReportsThemFenced() throws {
        var h = AgentHarness()
        h.registered()
        _ = h.running()
        _ = h.heartbeatAck(sentAt: h.now)          // deadline = now + 4000; TERM from now + 2000
        #expect(h.tick(1900).signals.isEmpty)
        let term = h.tick(200)
        #expect(term.signals.map(\.1) == [SIGTERM])
        #expect(term.journalled.contains { $0.kind == .stopping && $0.reason == .fenced })
        #expect(h.tick(1000).signals.isEmpty)
        #expect(h.tick(1000).signals.map(\.1) == [SIGKILL], "killed at the deadline")
        let end = h.instance.onProcessExited("j-1.1", .signaled(9), tail: "", now: h.now)
        let u = try #require(end.statuses.first)
        #expect(u.state == "failed" && u.endReason == .fenced && u.message.contains("lease"))
    }

    @Test func renewedLeasesKeepJobsRunning() {
        var h = AgentHarness()
        h.registered()
        _ = h.running()
        for _ in 0..<20 {
            #expect(h.tick(1000).signals.isEmpty)
            let beat = h.now
            h.now += 300  // the answer takes a while
            _ = h.heartbeatAck(sentAt: beat)
        }
    }

    @Test func keepJobsAreNotFenced() {
        var h = AgentHarness()
        h.registered()
        _ = h.running(keep: true)
        _ = h.heartbeatAck(sentAt: h.now)
        #expect(h.tick(10_000).signals.isEmpty)
    }

    @Test func theShimIsToldTheLeaseAndAStartCarriesKeep() throws {
        var h = AgentHarness()
        h.registered()
        let out = h.running(keep: true)
        let keep = out.compactMap { if case .start(_, _, _, _, _, let k, _) = $0 { return k } else { return nil } }
        #expect(keep == [true])
        #expect(h.heartbeatAck(sentAt: h.now).leases.count == 1)
    }

    @Test func aGracefulStopStopsReportsWaitsForAcksThenExits() throws {
        var h = AgentHarness()
        h.registered()
        _ = h.running()
        let stop = h.instance.onShutdown(now: h.now)
        #expect(stop.signals.map(\.1) == [SIGTERM] && stop.exits == 0)
        let beat = try #require(stop.heartbeats.first, "the region hears at once that this node is draining")
        #expect(beat.draining)
        let firstSend = try #require(stop.firstIndex { if case .send = $0 { return true } else { return false } })
        let firstSignal = try #require(stop.firstIndex { if case .signal = $0 { return true } else { return false } })
        #expect(firstSend < firstSignal)
        #expect(h.instance.onAssignment(AgentHarness.assignment("j-2.1", devices: ["g0"]), now: h.now).acks.first?.accepted == false,
                "no new work while stopping")
        let ended = h.instance.onProcessExited("j-1.1", .signaled(15), tail: "", now: h.now)
        let u = try #require(ended.statuses.first)
        #expect(u.endReason == .agentStopped && ended.exits == 0, "waits for the region to acknowledge")
        var ack = Wire.StatusAck()
        ack.updateID = "j-1.1:running"
        _ = h.receive(.statusAck(ack))
        ack.updateID = u.updateID
        #expect(h.receive(.statusAck(ack)).exits == 1)
    }

    @Test func aGracefulStopWithoutTheRegionExitsAfterItsDeadline() {
        var h = AgentHarness()
        h.registered()
        _ = h.running()
        _ = h.instance.onShutdown(now: h.now)
        _ = h.instance.onProcessExited("j-1.1", .signaled(15), tail: "", now: h.now)
        #expect(h.tick(1000).exits == 0)
        #expect(h.tick(10_000).exits == 1, "kill grace (5 s) + report wait (5 s)")
    }
}

@Suite struct ForeignProcessTests {
    static func report(_ procs: [DeviceProcess]?) -> InventoryReport {
        var g0 = DeviceInventory(id: "g0", index: 0, vendor: .nvidia, model: "A100", memoryTotalMiB: 81920)
        g0.processes = procs
        var g1 = DeviceInventory(id: "g1", index: 1, vendor: .nvidia, model: "A100", memoryTotalMiB: 81920)
        g1.processes = []
        return InventoryReport(devices: [g0, g1])
    }

    @Test func aComputeProcessTheAgentDoesNotRunMakesTheDeviceBusy() throws {
        var h = AgentHarness()
        h.registered()
        let out = h.instance.onInventory(Self.report([DeviceProcess(pid: 5762, name: "python")]), now: h.now)
        #expect(out.contains { if case .log(.warning, let m) = $0 { return m.contains("python (pid 5762)") } else { return false } })
        let beat = try #require(out.heartbeats.first, "a device taken by someone else is reported at once")
        #expect(beat.devices.first { $0.id == "g0" }?.foreignProcesses == 1, "reported busy to the region")
        var a = AgentHarness.assignment("j-1.1", devices: ["g0"])
        a.nodeID = "n1"
        let ack = try #require(h.instance.onAssignment(a, now: h.now).acks.first)
        #expect(!ack.accepted && ack.reason.contains("held by a process this agent does not run"))
        // Gone on the next probe: free again.
        _ = h.instance.onInventory(Self.report([]), now: h.now)
        #expect(h.instance.onAssignment(a, now: h.now).acks.first?.accepted == true)
    }

    @Test(arguments: [
        ([DeviceProcess(pid: 675, name: "/usr/lib/xorg/Xorg", kind: .graphics)], Set<Int32>()),
        ([DeviceProcess(pid: 77, name: "train.py")], Set<Int32>([77])),
    ])
    func graphicsAndOwnProcessesDoNotCount(_ procs: [DeviceProcess], _ owned: Set<Int32>) throws {
        var h = AgentHarness()
        h.registered()
        _ = h.instance.onInventory(Self.report(procs), ownedPIDs: owned, now: h.now)
        let beat = try #require(h.tick(1000).heartbeats.first)
        #expect(beat.devices.first { $0.id == "g0" }?.foreignProcesses == 0)
    }

    @Test func aDeviceOneOfOurRunsHoldsIsNeverForeign() throws {
        var h = AgentHarness()
        h.registered()
        _ = h.running("j-1.1")  // holds g1
        var r = Self.report([])
        r.devices[1].processes = [DeviceProcess(pid: 999_999, name: "python")]  // a host pid we cannot see
        _ = h.instance.onInventory(r, now: h.now)
        let beat = try #require(h.tick(1000).heartbeats.first)
        #expect(beat.devices.first { $0.id == "g1" }?.foreignProcesses == 0)
    }
}

@Suite struct SimulatedProcessTests {
    @Test func aCapturedProcessCountsOnlyWhenItRunsHereUnderThatName() throws {
        let me = getpid()
        let comm = try String(contentsOfFile: "/proc/\(me)/comm", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(ProbeInventorySource.runsHere(pid: Int(me), name: "/usr/bin/" + comm))
        #expect(!ProbeInventorySource.runsHere(pid: Int(me), name: "python"))
        #expect(!ProbeInventorySource.runsHere(pid: 0, name: comm))
    }
}

@Suite struct JobCgroupTests {
    static func scratch() throws -> URL {
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("cg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
        return d
    }

    @Test func autoAdoptsTheAgentsOwnDelegatedCgroup() throws {
        let root = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: root) }
        FileManager.default.createFile(atPath: root.path + "/cgroup.controllers", contents: Data("cpu memory pids\n".utf8))
        try FileManager.default.createDirectory(atPath: root.path + "/system.slice/grid-agent.service", withIntermediateDirectories: true)
        let d = JobCgroups.decide(setting: "auto", procSelfCgroup: "0::/system.slice/grid-agent.service\n", mountRoot: root.path, pid: 4242)
        #expect(d.parent == root.path + "/system.slice/grid-agent.service")
        let moved = try String(contentsOfFile: root.path + "/system.slice/grid-agent.service/agent/cgroup.procs", encoding: .utf8)
        #expect(moved == "4242\n", "the agent moved itself into a leaf, so job cgroups can be its siblings")
        // After a restart the agent may already sit in the leaf.
        let again = JobCgroups.decide(setting: "auto", procSelfCgroup: "0::/system.slice/grid-agent.service/agent\n", mountRoot: root.path)
        #expect(again.parent == d.parent)
        #expect(JobCgroups.path(parent: d.parent!, assignment: "j-1.2") == d.parent! + "/job-j-1.2")
    }

    @Test func withoutCgroupV2OrWithoutDelegationItIsProcessGroups() throws {
        let root = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: root) }
        #expect(JobCgroups.decide(setting: "auto", procSelfCgroup: "0::/x\n", mountRoot: root.path).parent == nil, "no cgroup.controllers: v1")
        FileManager.default.createFile(atPath: root.path + "/cgroup.controllers", contents: Data())
        #expect(JobCgroups.decide(setting: "auto", procSelfCgroup: "4:memory:/x\n", mountRoot: root.path).parent == nil)
        #expect(JobCgroups.decide(setting: "auto", procSelfCgroup: "0::/missing\n", mountRoot: root.path).parent == nil)
        #expect(JobCgroups.decide(setting: "off", procSelfCgroup: "0::/\n", mountRoot: root.path).parent == nil)
    }
}
