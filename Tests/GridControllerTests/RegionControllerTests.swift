import Foundation
import GridController
import GridCore
import GridProtocol
import GridStore
import GridTransport
import Logging
import Testing

/// Drives a controller with frames and a fake clock, and reads what it would send.
final class ControllerHarness {
    let codec = EnvelopeCodec()
    var now = Date(unixMilliseconds: 1_750_000_000_000)
    var seq: UInt64 = 0
    let region: RegionController
    let storePath: String
    let agentPeer = Peer.downstream(identity: Array("agent-conn".utf8))

    init(configure: (inout ControllerConfig) -> Void = { _ in }) throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("grid-ctl-\(UUID().uuidString.prefix(8))")
        var cfg = ControllerConfig()
        cfg.id = "r1"
        cfg.dataDir = dir.path
        cfg.heartbeatIntervalMs = 1000
        cfg.nodeLostAfterMs = 5000
        configure(&cfg)
        storePath = cfg.databasePath
        region = try RegionController(config: cfg, store: try GridStore(path: storePath), logger: Logger(label: "test"), now: now)
    }

    func send(_ body: Body, from peer: Peer? = nil) -> [Message] {
        seq += 1
        let frame = codec.encode(Message(sender: "test", sequence: seq, body: body))
        return decode(region.handle(.frame(from: peer ?? agentPeer, payload: frame, delimited: false), now: now))
    }

    func tick(advance: Double = 0) -> [Message] {
        now = now.addingTimeInterval(advance)
        return decode(region.handle(.tick, now: now))
    }

    func decode(_ outs: [LoopOutput]) -> [Message] { outs.compactMap { try? codec.decode($0.payload) } }

    func register(_ node: String, devices: [DeviceInventory], held: [String] = []) -> [Message] {
        var r = Wire.Register()
        r.nodeID = node
        r.hostname = node
        r.devices = devices.map(Wire.Device.init)
        r.heldAssignments = held
        return send(.register(r))
    }

    func forward(_ job: String, _ spec: JobSpec) -> [Message] {
        var f = Wire.JobForward()
        f.jobID = job
        f.spec = Wire.JobSpec(spec)
        return send(.jobForward(f), from: .upstream)
    }

    func status(_ a: Wire.Assignment, _ state: JobState, exit: Int32? = nil, updateID: String? = nil) -> [Message] {
        var u = Wire.StatusUpdate()
        u.jobID = a.jobID
        u.assignmentID = a.assignmentID
        u.epoch = a.epoch
        u.nodeID = a.nodeID
        u.state = state.rawValue
        if let exit { u.exitCode = exit; u.hasExitCode_p = true }
        u.updateID = updateID ?? "\(a.assignmentID):\(state.rawValue)"
        return send(.statusUpdate(u))
    }

    func job(_ id: String) throws -> JobRecord? {
        try GridStore(path: storePath).read("t") { try $0.job(JobID(id)) }
    }
}

extension Array where Element == Message {
    var assignments: [Wire.Assignment] { compactMap { if case .assignment(let a) = $0.body { return a } else { return nil } } }
    var statusAcks: [Wire.StatusAck] { compactMap { if case .statusAck(let a) = $0.body { return a } else { return nil } } }
    var statusUpdates: [Wire.StatusUpdate] { compactMap { if case .statusUpdate(let a) = $0.body { return a } else { return nil } } }
    var cancels: [Wire.Cancel] { compactMap { if case .cancel(let a) = $0.body { return a } else { return nil } } }
}

func device(_ id: String, _ index: Int, vendor: AcceleratorVendor = .nvidia, model: String = "Tesla T4", memGiB: Int = 16) -> DeviceInventory {
    DeviceInventory(id: id, index: index, vendor: vendor, model: model, memoryTotalMiB: memGiB * 1024, health: .healthy, grade: .c)
}

@Suite struct RegionControllerTests {
    @Test func forwardedJobIsPlacedAssignedAndReportedUpward() throws {
        let h = try ControllerHarness()
        let reg = h.register("n1", devices: [device("g0", 0), device("g1", 1)])
        guard case .registerAck(let ack) = reg.first?.body else { Issue.record("no RegisterAck"); return }
        #expect(ack.regionID == "r1" && ack.heartbeatIntervalMs == 1000)

        let fwd = h.forward("j-1", JobSpec(name: "t", command: "true", accelerators: AcceleratorRequest(count: 2)))
        guard case .jobForwardAck(let fa) = fwd.first?.body else { Issue.record("no JobForwardAck"); return }
        #expect(fa.accepted)

        let out = h.tick()
        let a = try #require(out.assignments.first)
        #expect(a.jobID == "j-1" && a.nodeID == "n1" && a.epoch == 1)
        #expect(Set(a.deviceIds) == ["g0", "g1"])
        #expect(try h.job("j-1")?.state == .assigned)

        _ = h.send(.assignmentAck({ var k = Wire.AssignmentAck(); k.assignmentID = a.assignmentID; k.epoch = a.epoch; k.nodeID = "n1"; k.accepted = true; return k }()))
        #expect(h.status(a, .running).statusAcks.first?.applied == true)
        #expect(h.status(a, .succeeded, exit: 0).statusAcks.first?.applied == true)
        let job = try #require(try h.job("j-1"))
        #expect(job.state == .succeeded && job.exitCode == 0)

        // Upward reports leave through the outbox until the national scheduler acknowledges.
        let upward = h.tick(advance: 2).statusUpdates
        #expect(upward.contains { $0.jobID == "j-1" && $0.state == "succeeded" && $0.regionID == "r1" })
        for u in upward {
            var ack = Wire.StatusAck()
            ack.updateID = u.updateID
            ack.applied = true
            _ = h.send(.statusAck(ack), from: .upstream)
        }
        #expect(h.tick(advance: 2).statusUpdates.isEmpty)
    }

    @Test func unacknowledgedAssignmentIsResentWithSameIDAndEpoch() throws {
        let h = try ControllerHarness()
        _ = h.register("n1", devices: [device("g0", 0)])
        _ = h.forward("j-1", JobSpec(name: "t", command: "true"))
        let first = try #require(h.tick().assignments.first)
        #expect(h.tick(advance: 0.2).assignments.isEmpty, "not before the retry interval")
        let again = try #require(h.tick(advance: 1.5).assignments.first)
        #expect(again.assignmentID == first.assignmentID && again.epoch == first.epoch)
    }

    @Test func duplicateStatusIsAnsweredFromStorage() throws {
        let h = try ControllerHarness()
        _ = h.register("n1", devices: [device("g0", 0)])
        _ = h.forward("j-1", JobSpec(name: "t", command: "true"))
        let a = try #require(h.tick().assignments.first)
        #expect(h.status(a, .succeeded, exit: 0).statusAcks.first?.applied == true)
        let dup = try #require(h.status(a, .succeeded, exit: 0).statusAcks.first)
        #expect(dup.applied && dup.reason.contains("duplicate"))
    }

    @Test func lostNodeRequeuesWorkAndStaleReportsAreRefused() throws {
        let h = try ControllerHarness()
        _ = h.register("n1", devices: [device("g0", 0)])
        _ = h.forward("j-1", JobSpec(name: "t", command: "true"))
        let a1 = try #require(h.tick().assignments.first)
        _ = h.status(a1, .running)
        let afterLoss = h.tick(advance: 6)  // n1 silent past node_lost_after_ms
        let requeued = try #require(try h.job("j-1"))
        #expect(requeued.state == .queued)
        #expect(afterLoss.statusUpdates.contains { $0.state == "queued" && $0.message.contains("n1 lost") },
                "the national scheduler hears why the job went back to the queue")

        // A second node takes the job with a higher epoch.
        _ = h.register("n2", devices: [device("h0", 0)])
        let a2 = try #require(h.tick(advance: 1).assignments.first)
        #expect(a2.nodeID == "n2" && a2.epoch == a1.epoch + 1)

        // The lost node comes back and reports its old result: refused as stale.
        let stale = try #require(h.status(a1, .succeeded, exit: 0).statusAcks.first)
        #expect(!stale.applied && stale.reason.contains("stale"))
        #expect(try h.job("j-1")?.node == "n2")
    }

    @Test func heartbeatFromUnknownNodeAsksForRegistration() throws {
        let h = try ControllerHarness()
        var hb = Wire.Heartbeat()
        hb.nodeID = "ghost"
        guard case .heartbeatAck(let ack) = h.send(.heartbeat(hb)).first?.body else { Issue.record("no ack"); return }
        #expect(!ack.known)
    }

    @Test func oneConnectionCarriesManyNodes() throws {
        let h = try ControllerHarness()
        _ = h.register("sim-1", devices: [device("a", 0)])
        _ = h.register("sim-2", devices: [device("b", 0, vendor: .amd, model: "MI100", memGiB: 32)])
        _ = h.forward("j-nv", JobSpec(name: "nv", command: "true", accelerators: AcceleratorRequest(count: 1, vendor: .nvidia)))
        _ = h.forward("j-amd", JobSpec(name: "amd", command: "true", accelerators: AcceleratorRequest(count: 1, vendor: .amd)))
        let out = h.tick()
        #expect(Dictionary(uniqueKeysWithValues: out.assignments.map { ($0.jobID, $0.nodeID) }) == ["j-nv": "sim-1", "j-amd": "sim-2"])
    }

    @Test func restartedAgentWithoutTheProcessGetsTheJobRequeued() throws {
        let h = try ControllerHarness()
        _ = h.register("n1", devices: [device("g0", 0)])
        _ = h.forward("j-1", JobSpec(name: "t", command: "true"))
        let a = try #require(h.tick().assignments.first)
        _ = h.send(.assignmentAck({ var k = Wire.AssignmentAck(); k.assignmentID = a.assignmentID; k.epoch = a.epoch; k.nodeID = "n1"; k.accepted = true; return k }()))
        _ = h.register("n1", devices: [device("g0", 0)], held: [])
        let again = try #require(h.tick(advance: 1).assignments.first)
        #expect(again.epoch == a.epoch + 1)
    }

    @Test func garbageFramesAreCountedNotFatal() throws {
        let h = try ControllerHarness()
        _ = h.region.handle(.frame(from: h.agentPeer, payload: [0xde, 0xad, 0xbe, 0xef], delimited: false), now: h.now)
        _ = h.region.handle(.frame(from: h.agentPeer, payload: [], delimited: false), now: h.now)
        _ = h.region.handle(.badShape(from: h.agentPeer, frames: 5), now: h.now)
        #expect(h.region.rejectedFrames.values.reduce(0, +) == 3)
        #expect(h.region.rejectedFrames["bad_shape"] == 1)
        // Still serving.
        #expect(h.register("n1", devices: []).count == 1)
    }

    @Test func jobsSurviveARestartOfTheRegion() throws {
        let h = try ControllerHarness()
        _ = h.forward("j-1", JobSpec(name: "t", command: "true"))
        let reopened = try RegionController(config: { var c = ControllerConfig(); c.id = "r1"; c.dataDir = URL(fileURLWithPath: h.storePath).deletingLastPathComponent().path; return c }(),
                                            store: try GridStore(path: h.storePath), logger: Logger(label: "t"), now: h.now)
        #expect(try h.job("j-1")?.state == .queued)
        // The reopened controller finds the stored job and places it once a node appears.
        var r = Wire.Register()
        r.nodeID = "n1"
        r.devices = [Wire.Device(device("g0", 0))]
        _ = reopened.handle(.frame(from: h.agentPeer, payload: h.codec.encode(Message(sender: "t", sequence: 1, body: .register(r))), delimited: false), now: h.now)
        let placed = h.decode(reopened.handle(.tick, now: h.now)).assignments
        #expect(placed.map(\.jobID) == ["j-1"])
    }
}
