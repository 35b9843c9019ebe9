import Foundation
import GridCLI
import GridCore
import GridProtocol
import Testing

/// Issue 10's faults with the real executables: a region that refuses a job (draining) and a
/// region that falls silent (SIGSTOP) with a job queued in it. Every job appends "JOB NODE
/// start|end" to a record file, so the tests see every run that happened.
extension EndToEnd {
@Suite(.serialized) struct NationalFaultTests {
    static let regionConfig = """
        role: region
        heartbeat_interval_ms: 200
        node_lost_after_ms: 3000
        lease_margin_ms: 500
        retry_interval_ms: 300
        summary_interval_ms: 300
        """

    final class Setup {
        let c: Cluster
        let record: URL
        init(_ name: String = #function, drainRegionA: Bool = false) throws {
            c = try Cluster(name)
            record = c.dir.appendingPathComponent("runs.txt")
            _ = FileManager.default.createFile(atPath: record.path, contents: nil)
            let national = c.dir.appendingPathComponent("national.yaml")
            try "role: national\nretry_interval_ms: 300\nrouting: {region_lost_after_seconds: 3}\n".write(to: national, atomically: true, encoding: .utf8)
            let region = c.dir.appendingPathComponent("region.yaml")
            try NationalFaultTests.regionConfig.write(to: region, atomically: true, encoding: .utf8)
            let drained = c.dir.appendingPathComponent("region-drain.yaml")
            try (NationalFaultTests.regionConfig + "\ndrain: true\n").write(to: drained, atomically: true, encoding: .utf8)
            try c.startNational(extra: ["--config", national.path])
            try c.startRegion("ra", extra: ["--config", (drainRegionA ? drained : region).path])
            try c.startRegion("rb", extra: ["--config", region.path])
        }

        func regions() throws -> [String: RegionSummary] {
            Dictionary(uniqueKeysWithValues: try c.client().query(.regions).regions.map { ($0.regionID, $0.summary) })
        }

        func job(_ id: String) throws -> JobRecord? { try c.client().query(.job, job: id).jobs.first?.record() }

        func spec(_ name: String, seconds: Double, retry: RetryPolicy = RetryPolicy()) -> JobSpec {
            let script = """
                echo "$GRID_JOB_ID $GRID_NODE_ID start" >> "\(record.path)"
                sleep \(seconds)
                echo "$GRID_JOB_ID $GRID_NODE_ID end" >> "\(record.path)"
                """
            return JobSpec(name: name, command: "/bin/sh", args: ["-c", script], accelerators: AcceleratorRequest(count: 1), retry: retry)
        }

        func submit(_ id: String, _ spec: JobSpec) throws {
            let reply = try c.client().submitBatch([(spec, 1, JobID(id))], timeout: 5)
            #expect(reply.results.first?.accepted == true, "\(reply)")
        }

        func runs() -> [String] {
            ((try? String(contentsOf: record, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        }
    }

    @Test func aJobARegionRefusesRunsInTheNextRegion() throws {
        let s = try Setup(drainRegionA: true)
        // ra has eight devices, rb one: ra is the first choice, and it refuses (draining).
        try s.c.startAgent("a1", region: "ra", simulate: ["nvidia-smi-q-x_tesla-v100s-8gpu_v11.xml"])
        try s.c.startAgent("b1", region: "rb", simulate: ["nvidia-smi-q-x_tesla-t4_v11.xml"])
        _ = try s.c.eventually(30, "both regions with nodes") { try s.regions().values.filter { $0.nodesReady == 1 }.count == 2 ? true : nil }
        try s.submit("j", s.spec("j", seconds: 0.2))
        let done = try s.c.eventually(30, "j to end") { () -> JobRecord? in
            guard let j = try s.job("j"), j.state.isTerminal else { return nil }
            return j
        }
        #expect(done.state == .succeeded && done.region == "rb" && done.node == "b1")
        #expect(done.route?.refusedBy == ["ra"])
        #expect(s.runs() == ["j b1 start", "j b1 end"])
    }

    @Test func aSilentRegionsQueuedJobRunsElsewhereOnceAndTheRegionDropsItWhenBack() throws {
        let s = try Setup()
        try s.c.startAgent("a1", region: "ra", simulate: ["nvidia-smi-q-x_tesla-t4_v11.xml"])
        try s.c.startAgent("b1", region: "rb", simulate: ["nvidia-smi-q-x_tesla-t4_v11.xml"])
        _ = try s.c.eventually(30, "both regions with nodes") { try s.regions().values.filter { $0.nodesReady == 1 }.count == 2 ? true : nil }
        // j1 holds ra's device (it may outlive ra's silence: on_lease_loss keep), j2 holds rb's.
        try s.submit("j1", s.spec("j1", seconds: 10, retry: RetryPolicy(keepOnLeaseLoss: true)))
        _ = try s.c.eventually(30, "j1 running in ra and ra full") { () -> Bool? in
            try s.job("j1")?.state == .running && s.regions()["ra"]?.capacity.first?.free == 0 ? true : nil
        }
        try s.submit("j2", s.spec("j2", seconds: 5))
        _ = try s.c.eventually(30, "j2 running in rb and rb full") { () -> Bool? in
            try s.job("j2")?.region == "rb" && s.job("j2")?.state == .running && s.regions()["rb"]?.capacity.first?.free == 0 ? true : nil
        }
        // Both full: j3 waits in ra (the first by id).
        try s.submit("j3", s.spec("j3", seconds: 0.2))
        _ = try s.c.eventually(30, "j3 queued in ra") { try s.job("j3")?.state == .queued && s.job("j3")?.region == "ra" ? true : nil }
        let ra = try #require(s.c.daemon("ra")).process.processIdentifier
        kill(ra, SIGSTOP)
        defer { kill(ra, SIGCONT) }
        let moved = try s.c.eventually(20, "j3 moved to rb") { () -> JobRecord? in
            guard let j = try s.job("j3"), j.region == "rb" else { return nil }
            return j
        }
        #expect(moved.route?.refusedBy == ["ra"] && moved.route?.note.contains("silent") == true)
        kill(ra, SIGCONT)
        let j3 = try s.c.eventually(30, "j3 to end") { () -> JobRecord? in
            guard let j = try s.job("j3"), j.state.isTerminal else { return nil }
            return j
        }
        #expect(j3.state == .succeeded && j3.node == "b1")
        _ = try s.c.eventually(30, "j1 to end") { try s.job("j1")?.state.isTerminal == true ? true : nil }
        // ra, back, reaches j3 once j1 frees its device; its report is refused as moved and it drops j3 unstarted.
        let inRA = try s.c.eventually(20, "ra to drop j3") { () -> JobRecord? in
            let client = try GridClient(endpoint: try #require(s.c.regionEndpoints["ra"]))
            guard let j = try client.query(.job, job: "j3").jobs.first?.record(), j.state == .cancelled else { return nil }
            return j
        }
        #expect(inRA.message.contains("moved"))
        Thread.sleep(forTimeInterval: 1)
        let runs = s.runs()
        #expect(runs.filter { $0.hasPrefix("j3 ") } == ["j3 b1 start", "j3 b1 end"], "j3 ran once, in rb: \(runs)")
        #expect(runs.filter { $0.hasPrefix("j1 ") } == ["j1 a1 start", "j1 a1 end"], "\(runs)")
        #expect(try s.job("j1")?.state == .succeeded)
    }

    @Test func cancellingARunningJobStopsItsProcessAndAWaitingOneAtOnce() throws {
        let s = try Setup()
        try s.c.startAgent("a1", region: "ra", simulate: ["nvidia-smi-q-x_tesla-t4_v11.xml"])
        try s.c.startAgent("b1", region: "rb", simulate: ["nvidia-smi-q-x_tesla-t4_v11.xml"])
        _ = try s.c.eventually(30, "both regions with nodes") { try s.regions().values.filter { $0.nodesReady == 1 }.count == 2 ? true : nil }
        let marker = "grid-cancel-\(UUID().uuidString.prefix(8))"
        let script = """
            echo "$GRID_JOB_ID start" >> "\(s.record.path)"
            trap 'echo "$GRID_JOB_ID stop" >> "\(s.record.path)"; exit 143' TERM
            i=0; while [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done  # \(marker)
            echo "$GRID_JOB_ID end" >> "\(s.record.path)"
            """
        let long = JobSpec(name: "long", command: "/bin/sh", args: ["-c", script], accelerators: AcceleratorRequest(count: 1))
        // One per region (the national view of free devices trails by a summary), then one that waits.
        try s.submit("run1", long)
        _ = try s.c.eventually(30, "run1 running, its region full") { () -> Bool? in
            guard let j = try s.job("run1"), j.state == .running, let r = j.region else { return nil }
            return try s.regions()[r.rawValue]?.capacity.first?.free == 0 ? true : nil
        }
        try s.submit("run2", long)
        _ = try s.c.eventually(30, "run2 running, both full") { () -> Bool? in
            try s.job("run2")?.state == .running && s.regions().values.allSatisfy { $0.capacity.first?.free == 0 } ? true : nil
        }
        try s.submit("waits", long)
        let client = try s.c.client()
        let waiting = try client.cancel("waits")
        #expect(try s.c.eventually(10, "waits cancelled") { try s.job("waits")?.state == .cancelled ? true : nil })
        _ = waiting
        let asked = try client.cancel("run1")
        #expect(!asked.state.isTerminal && asked.message.contains("cancel requested"))
        let ended = try s.c.eventually(30, "run1 to end") { () -> JobRecord? in
            guard let j = try s.job("run1"), j.state.isTerminal else { return nil }
            return j
        }
        #expect(ended.state == .cancelled)
        #expect(try s.job("run2")?.state == .running, "the other job runs on")
        Thread.sleep(forTimeInterval: 0.5)
        let runs = s.runs()
        #expect(runs.filter { $0.hasPrefix("run1 ") } == ["run1 start", "run1 stop"], "\(runs)")
        #expect(!runs.contains { $0.hasPrefix("waits ") }, "never started")
        // No process of run1 is left; run2's still runs.
        let ps = Process()
        ps.executableURL = URL(fileURLWithPath: "/usr/bin/pgrep")
        ps.arguments = ["-f", marker]
        let pipe = Pipe()
        ps.standardOutput = pipe
        try ps.run()
        let drain = PipeDrain(pipe)
        try ps.finish(within: 30)
        let pids = try drain.text().split(separator: "\n")
        let jobsOf = pids.compactMap { pid -> String? in
            guard let env = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return nil }
            return env.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }.first { $0.hasPrefix("GRID_JOB_ID=") }
        }
        #expect(!jobsOf.contains("GRID_JOB_ID=run1") && jobsOf.contains("GRID_JOB_ID=run2"), "\(jobsOf)")
        _ = try client.cancel("run2")
        _ = try s.c.eventually(30, "run2 to end") { try s.job("run2")?.state == .cancelled ? true : nil }
    }

    @Test func aHigherPriorityJobPreemptsALowerOneWhichRunsAgainAfterwards() throws {
        let s = try Setup()
        try s.c.startAgent("a1", region: "ra", simulate: ["nvidia-smi-q-x_tesla-t4_v11.xml"])
        _ = try s.c.eventually(30, "a node in ra") { try s.regions()["ra"]?.nodesReady == 1 ? true : nil }
        func spec(_ name: String, seconds: Double, priority: Int) -> JobSpec {
            let steps = Int(seconds * 10)
            let script = """
                echo "$GRID_JOB_ID start" >> "\(s.record.path)"
                trap 'echo "$GRID_JOB_ID stop" >> "\(s.record.path)"; exit 143' TERM
                i=0; while [ $i -lt \(steps) ]; do sleep 0.1; i=$((i+1)); done
                echo "$GRID_JOB_ID end" >> "\(s.record.path)"
                """
            return JobSpec(name: name, command: "/bin/sh", args: ["-c", script], accelerators: AcceleratorRequest(count: 1), priority: priority)
        }
        try s.submit("low", spec("low", seconds: 3, priority: -100))
        _ = try s.c.eventually(30, "low running") { try s.job("low")?.state == .running ? true : nil }
        Thread.sleep(forTimeInterval: 0.3)
        try s.submit("high", spec("high", seconds: 0.5, priority: 100))
        let high = try s.c.eventually(30, "high to end") { () -> JobRecord? in
            guard let j = try s.job("high"), j.state.isTerminal else { return nil }
            return j
        }
        #expect(high.state == .succeeded)
        let low = try s.c.eventually(30, "low to end") { () -> JobRecord? in
            guard let j = try s.job("low"), j.state.isTerminal else { return nil }
            return j
        }
        #expect(low.state == .succeeded)
        #expect(low.attempts.map(\.endReason) == [.preempted, .exited], "\(low.attempts)")
        #expect(s.runs() == ["low start", "low stop", "high start", "high end", "low start", "low end"], "\(s.runs())")
    }

    @Test func aCordonedNodeGetsNoWorkAndTheJobGoesWhereThereIsRoom() throws {
        let s = try Setup()
        try s.c.startAgent("a1", region: "ra", simulate: ["nvidia-smi-q-x_tesla-v100s-8gpu_v11.xml"])
        try s.c.startAgent("b1", region: "rb", simulate: ["nvidia-smi-q-x_tesla-t4_v11.xml"])
        _ = try s.c.eventually(30, "both regions with nodes") { try s.regions().values.filter { $0.nodesReady == 1 }.count == 2 ? true : nil }
        let client = try s.c.client()
        #expect(throws: ClientError.self) { try client.nodeCommand(.cordon, node: "a1", region: nil, reason: "x") }  // two regions: name one
        let b = try client.nodeCommand(.cordon, node: "a1", region: "ra", reason: "fan replacement")
        #expect(b.cordon?.reason == "fan replacement")
        _ = try s.c.eventually(10, "ra reports no capacity") { try s.regions()["ra"]?.capacity.reduce(0) { $0 + $1.free } == 0 ? true : nil }
        try s.submit("j", s.spec("j", seconds: 0.1))
        let done = try s.c.eventually(30, "j to end") { () -> JobRecord? in
            guard let j = try s.job("j"), j.state.isTerminal else { return nil }
            return j
        }
        #expect(done.state == .succeeded && done.node == "b1", "not on the cordoned node")
        let listed = try client.allNodes(region: "ra").map(\.brief)
        #expect(listed.first { $0.node == "a1" }?.cordon?.reason == "fan replacement")
        _ = try client.nodeCommand(.uncordon, node: "a1", region: "ra", reason: "")
        _ = try s.c.eventually(10, "ra offers its devices again") { try (s.regions()["ra"]?.capacity.reduce(0) { $0 + $1.free } ?? 0) > 0 ? true : nil }
    }
}
}
