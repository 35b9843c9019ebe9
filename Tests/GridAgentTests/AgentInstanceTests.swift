import Foundation
import GridAgent
import GridCore
import GridProtocol
import Testing

struct AgentHarness {
    var instance: AgentInstance
    var now: Int64 = 10_000

    init() {
        let settings = AgentInstance.Settings(node: "n1", hostname: "host-1", jobsDirectory: "/data/jobs", baseEnvironment: ["PATH": "/usr/bin"])
        instance = AgentInstance(settings: settings, devices: [
            DeviceInventory(id: "g0", index: 0, vendor: .nvidia, model: "A100", memoryTotalMiB: 81920),
            DeviceInventory(id: "g1", index: 1, vendor: .nvidia, model: "A100", memoryTotalMiB: 81920),
        ])
    }

    mutating func receive(_ body: Body) -> [AgentDirective] {
        instance.receive(Message(sender: "r1", sequence: 1, body: body), now: now)
    }

    mutating func tick(_ ms: Int64 = 0) -> [AgentDirective] {
        now += ms
        return instance.onTick(now: now)
    }

    mutating func registered() {
        _ = tick()
        var ack = Wire.RegisterAck()
        ack.nodeID = "n1"
        ack.regionID = "r1"
        ack.heartbeatIntervalMs = 1000
        _ = receive(.registerAck(ack))
    }

    static func assignment(_ id: String = "j-1.1", devices: [String] = ["g1"], timeout: UInt32 = 0) -> Wire.Assignment {
        var a = Wire.Assignment()
        a.assignmentID = id
        a.epoch = 1
        a.jobID = String(id.split(separator: ".")[0])
        a.nodeID = "n1"
        a.command = "/bin/true"
        a.deviceIds = devices
        a.timeoutSeconds = timeout
        return a
    }
}

extension Array where Element == AgentDirective {
    var sent: [Body] { compactMap { if case .send(let b) = $0 { return b } else { return nil } } }
    var heartbeats: [Wire.Heartbeat] { sent.compactMap { if case .heartbeat(let h) = $0 { return h } else { return nil } } }
    var statuses: [Wire.StatusUpdate] { sent.compactMap { if case .statusUpdate(let u) = $0 { return u } else { return nil } } }
    var acks: [Wire.AssignmentAck] { sent.compactMap { if case .assignmentAck(let a) = $0 { return a } else { return nil } } }
    var starts: [(AssignmentID, [String: String])] {
        compactMap { if case .start(let id, _, _, let env, _, _, _) = $0 { return (id, env) } else { return nil } }
    }
    var signals: [(AssignmentID, Int32)] { compactMap { if case .signal(let id, let s) = $0 { return (id, s) } else { return nil } } }
}

@Suite struct AgentInstanceTests {
    @Test func registersThenHeartbeatsOnItsInterval() {
        var h = AgentHarness()
        let first = h.tick()
        guard case .register(let r) = first.sent.first else { Issue.record("no Register"); return }
        #expect(r.nodeID == "n1" && r.devices.count == 2 && r.hostname == "host-1")
        #expect(h.tick(500).sent.isEmpty, "no second register before a second has passed")
        h.registered()
        #expect(h.tick(1000).heartbeats.count == 1)
        #expect(h.tick(300).heartbeats.isEmpty)
        #expect(h.tick(700).heartbeats.count == 1)
    }

    @Test func unansweredRegistersBackOff() {
        var h = AgentHarness()
        #expect(h.tick().sent.count == 1)
        #expect(h.tick(1000).sent.count == 1, "the second try after a second")
        #expect(h.tick(1900).sent.isEmpty, "then twice as long, plus a per-node offset")
        #expect(h.tick(1100).sent.count == 1)
        for _ in 0..<20 { _ = h.tick(31_000) }
        #expect(h.tick(29_000).sent.isEmpty, "never more often than every 30 s once backed off")
    }

    @Test func assignmentIsAcknowledgedStartedOnceAndReportedUntilAcknowledged() throws {
        var h = AgentHarness()
        h.registered()
        let out = h.receive(.assignment(AgentHarness.assignment()))
        #expect(out.acks.map(\.accepted) == [true])
        let (id, env) = try #require(out.starts.first)
        #expect(id == "j-1.1")
        #expect(env["CUDA_VISIBLE_DEVICES"] == "1" && env["GRID_JOB_ID"] == "j-1" && env["GRID_ASSIGNMENT_ID"] == "j-1.1" && env["GRID_EPOCH"] == "1")
        #expect(env["PATH"] == "/usr/bin")
        // A resend of the same assignment is acknowledged again and never started twice.
        let again = h.receive(.assignment(AgentHarness.assignment()))
        #expect(again.acks.count == 1 && again.starts.isEmpty)

        let started = h.instance.onProcessStarted("j-1.1", pid: 4242, now: h.now)
        #expect(started.statuses.map(\.state) == ["running"])
        let ended = h.instance.onProcessExited("j-1.1", .exited(0), tail: "done\n", now: h.now)
        let update = try #require(ended.statuses.first)
        #expect(update.state == "succeeded" && update.exitCode == 0 && update.hasExitCode_p && update.outputTail == "done\n")
        // Not acknowledged yet: both statuses are resent after the retry interval, once the
        // region has answered a heartbeat sent after them (it read past them: they were lost).
        #expect(h.tick(1000).statuses.isEmpty, "the region has not read that far yet")
        var beat = Wire.HeartbeatAck()
        beat.nodeID = "n1"
        beat.known = true
        beat.echoSentMs = h.now
        _ = h.receive(.heartbeatAck(beat))
        #expect(Set(h.tick().statuses.map(\.state)) == ["running", "succeeded"])
        var ack = Wire.StatusAck()
        ack.updateID = update.updateID
        ack.applied = true
        _ = h.receive(.statusAck(ack))
        beat.echoSentMs = h.now + 500
        _ = h.tick(500)
        _ = h.receive(.heartbeatAck(beat))
        #expect(h.tick(500).statuses.map(\.state) == ["running"])
        // A finished assignment sent again is acknowledged, not run again.
        #expect(h.receive(.assignment(AgentHarness.assignment())).starts.isEmpty)
    }

    /// A region behind on its inputs still answers, in order, what was sent before: a status
    /// sent after the latest heartbeat it answered is waiting there, not lost, and is not
    /// resent. Once it answers a heartbeat sent after the status (it read past it), the status
    /// goes again.
    @Test func aStatusIsNotResentWhileTheRegionWorksThroughWhatWasSentBeforeIt() throws {
        var h = AgentHarness()
        h.registered()
        func beatAnswered(sentAt: Int64) {
            var ack = Wire.HeartbeatAck()
            ack.nodeID = "n1"
            ack.known = true
            ack.echoSentMs = sentAt
            _ = h.receive(.heartbeatAck(ack))
        }
        _ = h.receive(.assignment(AgentHarness.assignment()))
        let beforeStatus = h.now
        _ = h.tick(10)
        let started = h.instance.onProcessStarted("j-1.1", pid: 4242, now: h.now)
        #expect(started.statuses.map(\.state) == ["running"])
        // Answers to what was sent before the status keep coming: no resend.
        for _ in 0..<4 {
            #expect(h.tick(400).statuses.isEmpty)
            beatAnswered(sentAt: beforeStatus)
            #expect(h.tick(400).statuses.isEmpty, "still ahead of the region's reading")
        }
        // Nor while it answers nothing at all (stalled or down: the status waits in its queue
        // or the connection's, and a resend would only queue behind it).
        #expect(h.tick(5000).statuses.isEmpty)
        // It answers a heartbeat sent after the status: the status was lost on the way.
        beatAnswered(sentAt: h.now - 100)
        #expect(h.tick(0).statuses.map(\.state) == ["running"])
        // Not again until the retry interval has passed and it has read past the resend too.
        beatAnswered(sentAt: h.now)
        #expect(h.tick(500).statuses.isEmpty)
        beatAnswered(sentAt: h.now)
        #expect(h.tick(600).statuses.map(\.state) == ["running"])
    }

    @Test func aProcessThatCannotStartIsReportedFailed() {
        var h = AgentHarness()
        h.registered()
        _ = h.receive(.assignment(AgentHarness.assignment()))
        let out = h.instance.onProcessFailed("j-1.1", reason: "cannot start '/bin/true': ENOENT", now: h.now)
        #expect(out.statuses.map(\.state) == ["failed"] && out.statuses.first?.message.contains("ENOENT") == true)
        #expect(h.instance.runningAssignments.isEmpty)
        #expect(h.receive(.assignment(AgentHarness.assignment())).starts.isEmpty, "not tried again")
    }

    @Test func busyOrForeignDevicesAreRefused() {
        var h = AgentHarness()
        h.registered()
        _ = h.receive(.assignment(AgentHarness.assignment("j-1.1", devices: ["g1"])))
        let busy = h.receive(.assignment(AgentHarness.assignment("j-2.1", devices: ["g1"])))
        #expect(busy.acks.first?.accepted == false && busy.acks.first?.reason.contains("busy") == true)
        let missing = h.receive(.assignment(AgentHarness.assignment("j-3.1", devices: ["zz"])))
        #expect(missing.acks.first?.accepted == false && missing.starts.isEmpty)
    }

    @Test func timeLimitSendsTermThenKill() {
        var h = AgentHarness()
        h.registered()
        _ = h.receive(.assignment(AgentHarness.assignment(timeout: 2)))
        _ = h.instance.onProcessStarted("j-1.1", pid: 1, now: h.now)
        #expect(h.tick(1000).signals.isEmpty)
        #expect(h.tick(1100).signals.map(\.1) == [SIGTERM])
        #expect(h.tick(6000).signals.map(\.1) == [SIGKILL], "killed after the grace period")
        let end = h.instance.onProcessExited("j-1.1", .signaled(9), tail: "", now: h.now)
        #expect(end.statuses.first?.state == "failed" && end.statuses.first?.message.contains("timed out") == true)
    }

    @Test func cancelStopsTheJobAndReportsCancelled() {
        var h = AgentHarness()
        h.registered()
        _ = h.receive(.assignment(AgentHarness.assignment()))
        _ = h.instance.onProcessStarted("j-1.1", pid: 1, now: h.now)
        var c = Wire.Cancel()
        c.assignmentID = "j-1.1"
        #expect(h.receive(.cancel(c)).signals.map(\.1) == [SIGTERM])
        #expect(h.instance.onProcessExited("j-1.1", .signaled(15), tail: "", now: h.now).statuses.first?.state == "cancelled")
    }

    @Test func heartbeatCarriesADigestAndTheListOnlyWhenNeeded() {
        var h = AgentHarness()
        h.registered()
        _ = h.receive(.assignment(AgentHarness.assignment()))
        let first = h.tick(1000).heartbeats[0]
        #expect(first.assignmentCount == 1 && first.assignmentDigest == AssignmentDigest.of(["j-1.1"]))
        #expect(first.runningAssignments == ["j-1.1"], "the list goes out when it changed")
        #expect(h.tick(1000).heartbeats[0].runningAssignments.isEmpty, "unchanged: the digest is enough")
        var ack = Wire.HeartbeatAck()
        ack.nodeID = "n1"
        ack.known = true
        ack.sendAssignments = true
        _ = h.receive(.heartbeatAck(ack))
        #expect(h.tick(1000).heartbeats[0].runningAssignments == ["j-1.1"], "the region asked for it")
    }

    @Test func unknownToTheRegionRegistersAgainWithHeldAssignments() {
        var h = AgentHarness()
        h.registered()
        _ = h.receive(.assignment(AgentHarness.assignment()))
        var ack = Wire.HeartbeatAck()
        ack.nodeID = "n1"
        ack.known = false
        let out = h.receive(.heartbeatAck(ack))
        guard case .register(let r) = out.sent.first else { Issue.record("no Register"); return }
        #expect(r.heldAssignments == ["j-1.1"])
    }

    @Test func healthChangeIsReportedAtOnce() {
        var h = AgentHarness()
        h.registered()
        _ = h.tick(1000)
        var devices = [DeviceInventory(id: "g0", index: 0, vendor: .nvidia, model: "A100", memoryTotalMiB: 81920)]
        devices[0].health = DeviceHealth(state: .unhealthy, reasons: [HealthReason(.xid, "Xid 79")])
        let out = h.instance.onInventory(InventoryReport(devices: devices), now: h.now + 10)
        #expect(out.heartbeats.first?.devices.first?.healthState == "unhealthy")
    }
}
