import Foundation
import GridCLI
import GridCore
import GridFleet
import GridProtocol
import Testing

/// Small versions of the scale benchmarks (BENCHMARKS.md), run against the real controller
/// executables with a simulated fleet. They check behaviour — nothing lost, nothing run twice,
/// no live node declared lost — never speed.
extension EndToEnd {
@Suite(.serialized) struct FleetSmokeTests {
    func fleetOptions(_ endpoint: String, nodes: Int) -> FleetOptions {
        var o = FleetOptions(endpoint: endpoint, nodes: nodes)
        o.connections = 4
        o.inventories = FleetInventories.load(directory: Cluster.fixtures.path, healthyOnly: true)
        return o
    }

    /// A region config with a short lost-node timeout, written next to the cluster's files.
    func regionConfig(_ c: Cluster, lostAfterMs: Int) throws -> String {
        let url = c.dir.appendingPathComponent("region-extra.yaml")
        try "node_lost_after_ms: \(lostAfterMs)\nheartbeat_interval_ms: 1000\nsummary_interval_ms: 500\n".write(to: url, atomically: true, encoding: .utf8)
        return url.path
    }

    func waitForCapacity(_ c: Cluster, nodes: Int) throws {
        let client = try c.client()
        _ = try c.eventually(60, "the national scheduler to see \(nodes) nodes") { () -> Bool? in
            (try client.query(.regions).regions.reduce(0) { $0 + Int($1.nodesReady) }) >= nodes ? true : nil
        }
    }

    @Test func aBurstOn2000NodesCompletesOnceAndLosesNoLiveNode() async throws {
        let c = try Cluster()
        defer { c.stopAll() }
        try c.startNational()
        try c.startRegion("r1")
        let run = try FleetRunner(fleetOptions(try #require(c.regionEndpoints["r1"]), nodes: 2000))
        defer { run.stop() }
        #expect(await run.wait(seconds: 60) { $0.registered >= 2000 }, "registered \(run.fleet.snapshot.registered)")
        try waitForCapacity(c, nodes: 2000)
        let reply = try c.client().submitBatch([(JobSpec(name: "burst", command: "true", accelerators: AcceleratorRequest(count: 1)), 200, JobID("burst"))])
        #expect(reply.results.count == 200 && reply.results.allSatisfy(\.accepted))
        #expect(await run.wait(seconds: 60) { $0.completions >= 200 }, "completed \(run.fleet.snapshot.completions)")
        let s = run.fleet.snapshot
        #expect(s.completions == 200, "each job completes exactly once")
        #expect(s.unknownAcks == 0 && s.liveNodesRevoked == 0, "no live node declared lost")
        #expect(s.heartbeatAcks > 0 && s.heartbeatAcks >= s.heartbeatsSent / 2)
        let client = try c.client()
        _ = try c.eventually(30, "the national record to show 200 succeeded") { () -> Bool? in
            try client.jobs().filter { $0.state == .succeeded }.count == 200 ? true : nil
        }
        // gridctl nodes pages through the region: every node, none cut off.
        #expect(try client.allNodes(pageSize: 700).count == 2000)
    }

    @Test func silentNodesAreLostAndTheirJobsRequeuedWhileABurstIsPlaced() async throws {
        let c = try Cluster()
        defer { c.stopAll() }
        try c.startNational()
        let config = try regionConfig(c, lostAfterMs: 3000)
        try c.startRegion("r1", extra: ["--config", config])
        var options = fleetOptions(try #require(c.regionEndpoints["r1"]), nodes: 500)
        options.jobDurationMs = 600_000
        let run = try FleetRunner(options)
        defer { run.stop() }
        #expect(await run.wait(seconds: 60) { $0.registered >= 500 })
        try waitForCapacity(c, nodes: 500)
        let spec = JobSpec(name: "held", command: "true", accelerators: AcceleratorRequest(count: 1))
        _ = try c.client().submitBatch([(spec, 500, JobID("held"))])
        #expect(await run.wait(seconds: 60) { $0.assignments >= 500 })
        run.fleet.silenceNodesHoldingWork(10)
        _ = try c.client().submitBatch([(spec, 100, JobID("burst"))])
        // Placement packs jobs onto few nodes, so the 10 silent ones hold several each.
        #expect(await run.wait(seconds: 30) { $0.requeueLatencies.count >= 10 }, "requeued \(run.fleet.snapshot.requeueLatencies.count)")
        try await Task.sleep(for: .seconds(2))
        let s = run.fleet.snapshot
        #expect(s.liveNodesRevoked == 0 && s.unknownAcks == 0, "no live node declared lost")
        #expect(s.concurrentRuns == 0, "no job ran on two live nodes")
        // Silence started up to one heartbeat after the node's last beat: never requeued before
        // node_lost_after_ms minus one heartbeat interval.
        #expect(s.requeueLatencies.allSatisfy { $0 >= 2_000_000_000 }, "not requeued before node_lost_after_ms")
    }

    @Test func killNineOfALoadedRegionLosesNoJobAndHearsEveryNodeAgain() async throws {
        let c = try Cluster()
        defer { c.stopAll() }
        try c.startNational()
        try c.startRegion("r1")
        let endpoint = try #require(c.regionEndpoints["r1"])
        var options = fleetOptions(endpoint, nodes: 300)
        options.jobDurationMs = 600_000
        let run = try FleetRunner(options)
        defer { run.stop() }
        #expect(await run.wait(seconds: 60) { $0.registered >= 300 })
        try waitForCapacity(c, nodes: 300)
        _ = try c.client().submitBatch([(JobSpec(name: "r", command: "true", accelerators: AcceleratorRequest(count: 1)), 3000, JobID("r"))])
        let region = try GridClient(endpoint: endpoint)
        func total() throws -> UInt64 {
            var q = Wire.Query()
            q.kind = .jobs
            q.limit = 1
            guard case .queryReply(let r) = try region.request(.query(q)) else { return 0 }
            return r.total
        }
        _ = try c.eventually(60, "the region to hold 3000 jobs") { try total() == 3000 ? true : nil }
        try await Task.sleep(for: .milliseconds(1500))
        let before = run.fleet.snapshot
        c.stop("r1", signal: SIGKILL, within: 5)
        run.fleet.markRestart()
        try c.start("r1-again", "grid-controller", ["--role", "region", "--id", "r1", "--bind", endpoint,
                                                    "--national", c.nationalEndpoint, "--data-dir", c.dir.appendingPathComponent("r1").path])
        #expect(await run.wait(seconds: 60) { $0.nodesHeardSinceMark >= 300 }, "heard \(run.fleet.snapshot.nodesHeardSinceMark) of 300 again")
        let region2 = try GridClient(endpoint: endpoint)
        var q = Wire.Query()
        q.kind = .jobs
        q.limit = 1
        guard case .queryReply(let r) = try region2.request(.query(q)) else { Issue.record("no answer"); return }
        #expect(r.total == 3000, "no acknowledged job lost")
        #expect(run.fleet.snapshot.unknownAcks == 0, "the restarted region knows every node from its log")
        try await Task.sleep(for: .seconds(2))
        let after = run.fleet.snapshot
        #expect(after.assignments - before.assignments == after.repeatedAssignments - before.repeatedAssignments,
                "after the restart only resends of known assignments arrive, no new runs of placed jobs")
        #expect(after.concurrentRuns == 0)
    }

    @Test func reconnectStormsSlowAcksAndDeviceFailuresLoseNothing() async throws {
        let c = try Cluster()
        defer { c.stopAll() }
        try c.startNational()
        try c.startRegion("r1")
        var options = fleetOptions(try #require(c.regionEndpoints["r1"]), nodes: 300)
        options.jobDurationMs = 1500
        options.ackDelayMs = 1500  // acks later than the region's first resend
        let run = try FleetRunner(options)
        defer { run.stop() }
        #expect(await run.wait(seconds: 60) { $0.registered >= 300 })
        try waitForCapacity(c, nodes: 300)
        let client = try c.client()
        let healthyBefore = try client.query(.regions).regions.reduce(0) { $0 + $1.capacity.reduce(0) { $0 + Int($1.healthy) } }
        run.fleet.failDevice(on: Array(0..<10))
        _ = try client.submitBatch([(JobSpec(name: "s", command: "true", accelerators: AcceleratorRequest(count: 1)), 300, JobID("storm"))])
        try await Task.sleep(for: .milliseconds(500))
        run.fleet.reconnectStorm()
        #expect(await run.wait(seconds: 60) { $0.completions >= 300 }, "completed \(run.fleet.snapshot.completions)")
        let s = run.fleet.snapshot
        #expect(s.completions == 300, "every job ran once")
        #expect(s.concurrentRuns == 0 && s.liveNodesRevoked == 0)
        #expect(s.repeatedAssignments > 0, "slow acks make the region resend; the nodes acknowledge again and run nothing twice")
        _ = try c.eventually(30, "the national record to show 300 succeeded") { () -> Bool? in
            try client.jobs().filter { $0.state == .succeeded }.count == 300 ? true : nil
        }
        // The first device of each of the ten nodes failed; a partitioned (MIG) one takes all
        // its slices with it.
        let templates = options.inventories
        let lost = (0..<10).reduce(0) { $0 + max(1, templates[$1 % templates.count][0].partitions.count) }
        _ = try c.eventually(10, "the failed devices to leave the healthy capacity") { () -> Bool? in
            let healthy = try client.query(.regions).regions.reduce(0) { $0 + $1.capacity.reduce(0) { $0 + Int($1.healthy) } }
            return healthy == healthyBefore - lost ? true : nil
        }
    }

    @Test func latenciesAreRecordedFromSubmitToAgent() async throws {
        let c = try Cluster()
        defer { c.stopAll() }
        try c.startNational()
        try c.startRegion("r1")
        var options = fleetOptions(try #require(c.regionEndpoints["r1"]), nodes: 50)
        options.jobDurationMs = 200
        let run = try FleetRunner(options)
        defer { run.stop() }
        #expect(await run.wait(seconds: 30) { $0.registered >= 50 })
        try waitForCapacity(c, nodes: 50)
        let client = try c.client()
        for _ in 0..<20 {
            var spec = JobSpec(name: "lat", command: "true", accelerators: AcceleratorRequest(count: 1))
            spec.env["SUBMIT_NS"] = String(DispatchTime.now().uptimeNanoseconds)
            #expect(try client.submit(spec).accepted)
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(await run.wait(seconds: 20) { $0.latencies.count >= 20 && $0.completions >= 20 })
        #expect(run.fleet.snapshot.latencies.allSatisfy { $0 > 0 && $0 < 10_000_000_000 })
    }
}
}

extension EndToEnd.FleetSmokeTests {
    @Test func jobListsAreNeverCutOff() async throws {
        let c = try Cluster()
        defer { c.stopAll() }
        try c.startNational()
        // No region: 2,500 jobs stay pending at the national scheduler, more than one page.
        let client = try c.client()
        let reply = try client.submitBatch([(JobSpec(name: "p", command: "true"), 2500, JobID("page"))])
        #expect(reply.results.count == 2500)
        let jobs = try client.jobs(pageSize: 1000)
        #expect(jobs.count == 2500 && Set(jobs.map(\.id)).count == 2500)
    }
}
