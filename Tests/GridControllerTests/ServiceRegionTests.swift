import Foundation
import GridController
import GridCore
import GridProtocol
import Testing

/// The region's part in services (SERVICES.md): assignments carry ports and probes, readiness
/// reports build the gateway's rotation, each change goes upward once, and a replica being
/// stopped is drained from the rotation before its agent is told.
@Suite struct ServiceRegionTests {
    static let replica = ReplicaOf(service: "tiny", version: "v1", health: .health, readiness: .readiness, drainMs: 2000)

    static func spec() -> JobSpec {
        var s = JobSpec(name: "tiny", command: "python3", accelerators: AcceleratorRequest(count: 1))
        s.ports = 1
        s.replica = replica
        return s
    }

    /// A running update of `a` with readiness and endpoint, under its own update id.
    static func running(_ a: Wire.Assignment, ready: Bool, change: Int) -> Wire.StatusUpdate {
        var u = Wire.StatusUpdate()
        u.jobID = a.jobID
        u.assignmentID = a.assignmentID
        u.epoch = a.epoch
        u.nodeID = a.nodeID
        u.state = "running"
        u.ready = ready
        u.endpoint = "10.0.0.7:20001"
        u.updateID = change == 0 ? "\(a.assignmentID):running" : "\(a.assignmentID):running:\(change)"
        return u
    }

    static func routes(_ out: [ControllerDirective]) -> [(String, [ServiceRoute])] {
        out.compactMap { if case .routes(let s, let r) = $0 { return (s, r) } else { return nil } }
    }

    @Test func readinessBuildsTheRotationAndEveryChangeGoesUpward() throws {
        var h = RegionHarness()
        _ = h.register("n1", devices: [device("g0", 0)])
        _ = h.forward("tiny.r1", Self.spec())
        let a = try #require(h.tick().assignments.first)
        #expect(a.ports == 1 && a.hasReadiness && a.readiness.path == "/readyz" && a.hasHealth && a.health.failureThreshold == 3)
        _ = h.ack(a)

        var all: [ControllerDirective] = []
        var out = h.send(.statusUpdate(Self.running(a, ready: false, change: 0))) + h.tick()
        all += out
        #expect(Self.routes(out).isEmpty, "running but not ready: not in rotation")
        out = h.send(.statusUpdate(Self.running(a, ready: true, change: 1))) + h.tick()
        all += out
        let r = try #require(Self.routes(out).first)
        #expect(r.0 == "tiny" && r.1 == [ServiceRoute(job: "tiny.r1", endpoint: "10.0.0.7:20001", version: "v1")])
        #expect(h.instance.job("tiny.r1")?.ready == true && h.instance.job("tiny.r1")?.endpoint == "10.0.0.7:20001")
        out = h.send(.statusUpdate(Self.running(a, ready: false, change: 2))) + h.tick()
        all += out
        #expect(Self.routes(out).first?.1 == [], "out of rotation when readiness fails")
        all += h.send(.statusUpdate(Self.running(a, ready: true, change: 3))) + h.tick(advanceMs: 10)

        // Each readiness change is its own upward report (a repeat of one id would be taken
        // for a duplicate), in order.
        var seen: Set<String> = []
        let upward = all.statusUpdates.filter { $0.jobID == "tiny.r1" && $0.state == "running" && seen.insert($0.updateID).inserted }
        #expect(upward.map(\.ready) == [false, true, false, true], "\(upward.map(\.updateID))")
        #expect(upward.allSatisfy { $0.endpoint == "10.0.0.7:20001" })
    }

    @Test func aReplicaIsDrainedFromTheRotationBeforeItsAgentIsToldToStop() throws {
        var h = RegionHarness()
        _ = h.register("n1", devices: [device("g0", 0)])
        _ = h.forward("tiny.r1", Self.spec())
        let a = try #require(h.tick().assignments.first)
        _ = h.ack(a)
        _ = h.send(.statusUpdate(Self.running(a, ready: true, change: 1)))
        #expect(Self.routes(h.tick()).first?.1.count == 1)

        var c = Wire.Cancel()
        c.jobID = "tiny.r1"
        var out = h.send(.cancel(c), from: h.national) + h.tick()
        #expect(out.cancels.isEmpty, "not stopped yet: draining")
        #expect(Self.routes(out).first?.1 == [], "out of the rotation at once")
        out = h.send(.cancel(c), from: h.national) + h.tick(advanceMs: 1500)
        #expect(out.cancels.isEmpty, "a resent cancel changes nothing while it drains")
        out = h.tick(advanceMs: 600)
        #expect(out.cancels.map(\.assignmentID) == [a.assignmentID], "stopped once the drain time is over")
        let done = h.status(a, .cancelled, reason: .cancelled)
        #expect(done.statusAcks.first?.applied == true)
        #expect(h.instance.job("tiny.r1")?.state == .cancelled)
    }

    @Test func aReplicaNotInRotationIsStoppedAtOnce() throws {
        var h = RegionHarness()
        _ = h.register("n1", devices: [device("g0", 0)])
        _ = h.forward("tiny.r1", Self.spec())
        let a = try #require(h.tick().assignments.first)
        _ = h.ack(a)
        _ = h.send(.statusUpdate(Self.running(a, ready: false, change: 0)))
        var c = Wire.Cancel()
        c.jobID = "tiny.r1"
        #expect(h.send(.cancel(c), from: h.national).cancels.count == 1, "nothing to drain")
    }
}
