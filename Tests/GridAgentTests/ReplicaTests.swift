import Foundation
import GridAgent
import GridCore
import GridProtocol
import Testing

/// The agent's part in services (SERVICES.md): ports from its range, the endpoint in running
/// reports, readiness changes reported one by one, and a replica failing health stopped.
@Suite struct ReplicaTests {
    static func replica(_ id: String, devices: [String] = ["g1"], ports: UInt32 = 1, health: Bool = true, readiness: Bool = true) -> Wire.Assignment {
        var a = AgentHarness.assignment(id, devices: devices)
        a.ports = ports
        if health { a.health = Wire.ProbeSpec(ProbeSpec(path: "/healthz", intervalSeconds: 1, timeoutSeconds: 0.5, failureThreshold: 2, initialDelaySeconds: 2)) }
        if readiness { a.readiness = Wire.ProbeSpec(ProbeSpec(path: "/readyz", intervalSeconds: 0.5, timeoutSeconds: 0.25, failureThreshold: 2)) }
        return a
    }

    static func probes(_ out: [AgentDirective]) -> [(AssignmentID, ProbeKind, String)] {
        out.compactMap { if case .probe(let id, let kind, let url, _) = $0 { return (id, kind, url) } else { return nil } }
    }

    func harness(ports: ClosedRange<Int>) -> AgentHarness {
        var h = AgentHarness()
        var s = h.instance.settings
        s.portRange = ports
        s.advertiseHost = "10.0.0.7"
        h.instance = AgentInstance(settings: s, devices: h.instance.currentDevices)
        h.registered()
        return h
    }

    @Test func portsComeFromTheRangeAreDistinctAndRunOutWithAClearRefusal() throws {
        var h = harness(ports: 30000...30002)
        let first = h.receive(.assignment(Self.replica("a.1", devices: ["g0"], ports: 2)))
        let env = try #require(first.starts.first?.1)
        #expect(env["GRID_PORT"] == "30000" && env["GRID_PORT_1"] == "30001" && env["GRID_HOST"] == "10.0.0.7")
        let second = h.receive(.assignment(Self.replica("b.1", devices: ["g1"])))
        #expect(second.starts.first?.1["GRID_PORT"] == "30002")
        let third = h.receive(.assignment(Self.replica("c.1", devices: [])))
        #expect(third.acks.first?.accepted == false && third.acks.first?.reason.contains("30000-30002") == true)
        // A port comes free when its run ends, and the search goes on round the range.
        _ = h.instance.onProcessStarted("b.1", pid: 10, now: h.now)
        _ = h.instance.onProcessExited("b.1", .exited(0), tail: "", now: h.now)
        #expect(h.receive(.assignment(Self.replica("d.1", devices: []))).starts.first?.1["GRID_PORT"] == "30002")
    }

    @Test func readinessChangesAreReportedOneByOneWithTheEndpoint() throws {
        var h = harness(ports: 30000...30009)
        _ = h.receive(.assignment(Self.replica("a.1")))
        let started = h.instance.onProcessStarted("a.1", pid: 10, now: h.now)
        let running = try #require(started.statuses.first)
        #expect(running.state == "running" && running.endpoint == "10.0.0.7:30000" && !running.ready, "not ready before its probe passes")

        let probes = Self.probes(h.tick(10))
        #expect(probes.map(\.1) == [.readiness], "health waits for its initial delay")
        #expect(probes.first?.2 == "http://10.0.0.7:30000/readyz")
        #expect(Self.probes(h.tick(100)).isEmpty, "one probe of a kind in flight")
        let ready = h.instance.onProbeResult("a.1", .readiness, ok: true, detail: "HTTP 200", now: h.now)
        #expect(ready.statuses.map(\.ready) == [true] && ready.statuses.first?.updateID != running.updateID)
        // One failure below the threshold changes nothing; the second takes it out of rotation.
        _ = h.tick(500)
        #expect(h.instance.onProbeResult("a.1", .readiness, ok: false, detail: "HTTP 503", now: h.now).statuses.isEmpty)
        _ = h.tick(500)
        let out = h.instance.onProbeResult("a.1", .readiness, ok: false, detail: "HTTP 503", now: h.now)
        #expect(out.statuses.map(\.ready) == [false])
        #expect(Set([ready, out].flatMap(\.statuses).map(\.updateID) + [running.updateID]).count == 3, "each change under its own id")
    }

    @Test func aReplicaFailingHealthIsStoppedAndEndsUnhealthy() throws {
        var h = harness(ports: 30000...30009)
        _ = h.receive(.assignment(Self.replica("a.1", readiness: false)))
        let started = h.instance.onProcessStarted("a.1", pid: 10, now: h.now)
        #expect(started.statuses.first?.ready == true, "no readiness probe: ready once started")
        #expect(Self.probes(h.tick(1000)).isEmpty, "inside the initial delay")
        let first = Self.probes(h.tick(1100))
        #expect(first.map(\.1) == [.health])
        #expect(h.instance.onProbeResult("a.1", .health, ok: false, detail: "connection refused", now: h.now).signals.isEmpty)
        _ = h.tick(1000)
        let stop = h.instance.onProbeResult("a.1", .health, ok: false, detail: "HTTP 500", now: h.now)
        #expect(stop.signals.map(\.1) == [SIGTERM])
        let ended = h.instance.onProcessExited("a.1", .signaled(15), tail: "", now: h.now)
        let u = try #require(ended.statuses.first)
        #expect(u.state == "failed" && u.endReason == .unhealthy && u.message.contains("health probe /healthz failed 2"), "\(u.message)")
    }
}
