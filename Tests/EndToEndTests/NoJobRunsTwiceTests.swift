import Foundation
import GridCLI
import GridCore
import GridProtocol
import Testing

/// Issue "No job runs twice", with the real executables on loopback. Every job appends
/// "JOB ASSIGNMENT start|end|stop NANOS" to a record file outside the agent's directories, so
/// the tests see every run that happened, not what the controllers believe.
extension EndToEnd {
@Suite(.serialized) struct NoJobRunsTwiceTests {
    /// Short timings: heartbeats every 200 ms, lost after 2 s, lease 2 s, margin 0.5 s (a
    /// restarting agent must be back within lease − margin − fence grace = 1 s).
    static func regionConfig(leaseMs: Int) -> String {
        """
        role: region
        heartbeat_interval_ms: 200
        node_lost_after_ms: \(leaseMs)
        lease_ms: \(leaseMs)
        lease_margin_ms: 500
        retry_interval_ms: 300
        summary_interval_ms: 300
        """
    }
    static let agentConfig = """
        kill_grace_s: 1
        fence_grace_ms: 500
        """

    struct Run: Equatable {
        var job: String
        var assignment: String
        var start: UInt64
        var end: UInt64?
        var ended: String?
    }

    final class Setup {
        let c: Cluster
        let record: URL
        let agentConfig: URL
        init(_ name: String = #function, leaseMs: Int = 2000) throws {
            c = try Cluster(name)
            record = c.dir.appendingPathComponent("runs.txt")
            _ = FileManager.default.createFile(atPath: record.path, contents: nil)
            try NoJobRunsTwiceTests.regionConfig(leaseMs: leaseMs).write(to: c.dir.appendingPathComponent("region.yaml"), atomically: true, encoding: .utf8)
            agentConfig = c.dir.appendingPathComponent("agent.yaml")
            try NoJobRunsTwiceTests.agentConfig.write(to: agentConfig, atomically: true, encoding: .utf8)
            try c.startNational()
            try c.startRegion("r1", extra: ["--config", c.dir.appendingPathComponent("region.yaml").path])
        }

        func startAgent(_ node: String, as name: String? = nil) throws {
            try c.start(name ?? node, "grid-agent", [
                "run", "--config", agentConfig.path, "--node-id", node, "--region", try #require(c.regionEndpoints["r1"]),
                "--data-dir", c.dir.appendingPathComponent(node).path,
                "--simulate", Cluster.fixtures.appendingPathComponent("nvidia-smi-q-x_tesla-t4_v11.xml").path,
            ])
        }

        func waitForNodes(_ n: Int) throws {
            let client = try c.client()
            _ = try c.eventually(30, "\(n) ready node(s)") { () -> Bool? in
                try client.query(.regions).regions.first?.nodesReady == Int32(n) ? true : nil
            }
        }

        /// A job that records its start, works in short sleeps (so a TERM is acted on at once),
        /// records "stop" when terminated and "end" when done.
        func spec(_ name: String, seconds: Double, exit code: Int = 0, retry: RetryPolicy = RetryPolicy(backoffSeconds: 0)) -> JobSpec {
            let steps = max(1, Int(seconds / 0.1))
            let script = """
                rec() { echo "$GRID_JOB_ID $GRID_ASSIGNMENT_ID $1 $(date +%s%N)" >> "\(record.path)"; }
                trap 'rec stop; exit 143' TERM
                rec start
                i=0; while [ $i -lt \(steps) ]; do sleep 0.1; i=$((i+1)); done
                rec end
                exit \(code)
                """
            return JobSpec(name: name, command: "/bin/sh", args: ["-c", script], accelerators: AcceleratorRequest(count: 1), retry: retry)
        }

        func runs() -> [Run] {
            let text = (try? String(contentsOf: record, encoding: .utf8)) ?? ""
            var out: [Run] = []
            for line in text.split(separator: "\n") {
                let f = line.split(separator: " ").map(String.init)
                guard f.count == 4, let t = UInt64(f[3]) else { continue }
                if f[2] == "start" {
                    out.append(Run(job: f[0], assignment: f[1], start: t))
                } else if let i = out.lastIndex(where: { $0.assignment == f[1] && $0.end == nil }) {
                    out[i].end = t
                    out[i].ended = f[2]
                }
            }
            return out
        }

        func job(_ id: String) throws -> JobRecord? { try c.client().jobs().first { $0.id.rawValue == id } }
    }

    /// Processes still running with a GRID_ASSIGNMENT_ID of one of `assignments` (or of any job
    /// of this test when nil), found through /proc: jobs, their children, their shims.
    static func survivors(jobIDs: Set<String>) -> [Int32] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        var out: [Int32] = []
        for n in names {
            guard let pid = Int32(n), let env = FileManager.default.contents(atPath: "/proc/\(pid)/environ"),
                  let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), !stat.contains(") Z") else { continue }
            for v in env.split(separator: 0) where v.starts(with: Array("GRID_JOB_ID=".utf8)) {
                if jobIDs.contains(String(decoding: v.dropFirst(12), as: UTF8.self)) { out.append(pid) }
            }
        }
        return out
    }

    static func assignmentRunning(_ assignment: String) -> Bool {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return false }
        let needle = Array("GRID_ASSIGNMENT_ID=\(assignment)".utf8)
        for n in names {
            guard let pid = Int32(n), let env = FileManager.default.contents(atPath: "/proc/\(pid)/environ"),
                  let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), !stat.contains(") Z") else { continue }
            if env.split(separator: 0).contains(where: { Array($0) == needle }) { return true }
        }
        return false
    }

    /// No two runs of one job overlap in time.
    static func overlaps(_ runs: [Run]) -> [String] {
        var out: [String] = []
        for (job, rs) in Dictionary(grouping: runs, by: \.job) {
            let sorted = rs.sorted { $0.start < $1.start }
            for (a, b) in zip(sorted, sorted.dropFirst()) where (a.end ?? .max) > b.start {
                out.append("\(job): \(a.assignment) [\(a.start), \(a.end.map(String.init) ?? "open")] overlaps \(b.assignment) from \(b.start)")
            }
        }
        return out
    }

    @Test func killNineOfTheAgentMidJobRepeatedlyNeverRunsAJobTwice() throws {
        // A debug-build agent takes about a second to start: a lease that outlasts a restart.
        let s = try Setup(leaseMs: 6000)
        defer { s.c.stopAll() }
        try s.startAgent("n1")
        try s.waitForNodes(1)
        let client = try s.c.client()
        var ids: [String] = []
        for i in 0..<2 {
            let r = try client.submit(s.spec("kill9-\(i)", seconds: 7))
            #expect(r.accepted, "\(r.reason)")
            ids.append(r.jobID)
        }
        // Kill -9 the agent twice per job while it runs, restarting it each time.
        var generation = 0
        for round in 0..<4 {
            _ = try s.c.eventually(20, "a job to be running (round \(round))") { () -> Bool? in
                s.runs().contains { $0.end == nil } ? true : nil
            }
            Thread.sleep(forTimeInterval: 0.5)
            let name = generation == 0 ? "n1" : "n1-\(generation)"
            s.c.stop(name, signal: SIGKILL)
            generation += 1
            try s.startAgent("n1", as: "n1-\(generation)")
            _ = try s.c.eventually(20, "the agent to be back") { s.c.log("n1-\(generation)").contains("registered with region") ? true : nil }
        }
        let reattached = (1...generation).filter { s.c.log("n1-\($0)").contains("reattached to job") }.count
        #expect(reattached >= 2, "restarts that found a running job: \(reattached) of \(generation)")
        let jobs = try s.c.eventually(60, "every job to end") { () -> [JobRecord]? in
            let js = try client.jobs().filter { ids.contains($0.id.rawValue) }
            return js.count == ids.count && js.allSatisfy { $0.state.isTerminal } ? js : nil
        }
        let runs = s.runs()
        #expect(jobs.allSatisfy { $0.state == .succeeded }, "\(jobs.map { "\($0.id) \($0.state) \($0.message)" })")
        for id in ids {
            let mine = runs.filter { $0.job == id }
            #expect(mine.count == 1, "job \(id) ran \(mine.count) times: \(mine)")
            #expect(mine.first?.ended == "end", "job \(id) did not run to its end: \(mine)")
        }
        #expect(Self.overlaps(runs).isEmpty, "\(Self.overlaps(runs))")
        // Each job's result was reported once: one attempt, ended by the job itself.
        for j in jobs { #expect(j.attempts.count == 1 && j.attempts.first?.endReason == .exited, "\(j.id): \(j.attempts)") }
        // A stopped agent leaves nothing behind.
        #expect(s.c.stop("n1-\(generation)") == 0)
        #expect(Self.survivors(jobIDs: Set(ids)).isEmpty)
    }

    /// A gang of two on three nodes; kill -9 of the agent of one rank (never restarted). Its
    /// rank's shim fences its process when the lease lapses, the region then takes the whole
    /// run back, stops the other rank, and runs the gang again on the two live nodes: no run of
    /// the second epoch starts before every run of the first has ended, and the job succeeds.
    @Test func killNineOfOneRanksAgentRunsTheGangAgainNeverTwiceAtOnce() throws {
        let s = try Setup()
        defer { s.c.stopAll() }
        for n in ["n1", "n2", "n3"] { try s.startAgent(n) }
        try s.waitForNodes(3)
        let client = try s.c.client()
        var spec = s.spec("gang", seconds: 6)
        spec.nodes = 2
        let r = try client.submit(spec)
        #expect(r.accepted, "\(r.reason)")
        let first = try s.c.eventually(30, "both ranks running") { () -> JobRecord? in
            let j = try s.job(r.jobID)
            return j?.state == .running && s.runs().filter({ $0.end == nil }).count == 2 ? j : nil
        }
        let victim = try #require(first.gang.last?.node.rawValue)
        s.c.stop(victim, signal: SIGKILL)
        let done = try s.c.eventually(90, "the gang to end") { () -> JobRecord? in
            let j = try s.job(r.jobID)
            return j?.state.isTerminal == true ? j : nil
        }
        #expect(done.state == .succeeded, "\(done.state): \(done.message)")
        #expect(done.attempts.first?.endReason == .nodeLost && done.attempts.count == 2, "\(done.attempts)")
        #expect(!done.gang.contains { $0.node.rawValue == victim })
        let runs = s.runs()
        func epoch(_ assignment: String) -> Int {
            Int(assignment.split(separator: ".").last?.split(separator: "-").first ?? "") ?? -1
        }
        let byEpoch = Dictionary(grouping: runs, by: { epoch($0.assignment) })
        #expect(byEpoch.keys.sorted() == [1, 2], "\(runs)")
        #expect(byEpoch[1]?.count == 2 && byEpoch[1]?.allSatisfy { $0.ended == "stop" } == true, "the first run's ranks were stopped: \(runs)")
        #expect(byEpoch[2]?.count == 2 && byEpoch[2]?.allSatisfy { $0.ended == "end" } == true, "the second run's ranks ran to their end: \(runs)")
        let firstEnd = byEpoch[1]?.compactMap(\.end).max() ?? .max
        let secondStart = byEpoch[2]?.map(\.start).min() ?? 0
        #expect(firstEnd < secondStart, "a rank of the second run started before the first run had ended: \(runs)")
        #expect(Self.survivors(jobIDs: [r.jobID]).isEmpty)
    }

    @Test func aJobThatEndsWhileTheAgentIsDownIsReportedOnceWithItsStatus() throws {
        let s = try Setup()
        defer { s.c.stopAll() }
        try s.startAgent("n1")
        try s.waitForNodes(1)
        let client = try s.c.client()
        let r = try client.submit(s.spec("while-down", seconds: 0.8, exit: 3))
        _ = try s.c.eventually(20, "the job to start") { s.runs().isEmpty ? nil : true }
        s.c.stop("n1", signal: SIGKILL)
        let run = try s.c.eventually(20, "the job to end with no agent") { s.runs().first?.end == nil ? nil : s.runs().first }
        // ...and its shim to have recorded the end and gone (it outlives the job by a moment).
        let exitRecord = s.c.dir.appendingPathComponent("n1/jobs/\(run.assignment).exit").path
        _ = try s.c.eventually(20, "the shim's exit record") { FileManager.default.fileExists(atPath: exitRecord) ? true : nil }
        Thread.sleep(forTimeInterval: 0.2)
        try s.startAgent("n1", as: "n1-again")
        let job = try s.c.eventually(30, "the result to be reported") { () -> JobRecord? in
            let j = try s.job(r.jobID)
            return j?.state.isTerminal == true ? j : nil
        }
        #expect(job.state == .failed && job.exitCode == 3, "\(job.state) \(job.exitCode.map(String.init) ?? "-") \(job.message)")
        #expect(job.message.contains("while the agent was down"))
        #expect(s.runs().count == 1, "run once: \(s.runs())")
        Thread.sleep(forTimeInterval: 1.5)
        #expect(s.runs().count == 1, "and not again later: \(s.runs())")
    }

    @Test func aFrozenAgentsJobIsGoneBeforeItsRequeuedRunStarts() throws {
        let s = try Setup()
        defer { s.c.stopAll() }
        try s.startAgent("n1")
        try s.waitForNodes(1)
        let client = try s.c.client()
        let r = try client.submit(s.spec("frozen", seconds: 8))
        let first = try s.c.eventually(20, "the first run to start") { s.runs().first }
        // Only now a second node, so the first run is on n1.
        try s.startAgent("n2")
        try s.waitForNodes(2)
        let frozen = try #require(s.c.daemon("n1")?.process.processIdentifier)
        kill(frozen, SIGSTOP)
        defer { kill(frozen, SIGCONT) }
        let second = try s.c.eventually(30, "the requeued run to start") { () -> Run? in
            s.runs().first { $0.assignment != first.assignment }
        }
        #expect(!Self.assignmentRunning(first.assignment), "the frozen agent's job still has processes")
        let runs = s.runs()
        let old = try #require(runs.first { $0.assignment == first.assignment })
        #expect(old.ended == "stop", "the old run was stopped by its shim: \(old)")
        #expect((old.end ?? .max) < second.start, "old run ended at \(old.end.map(String.init) ?? "never"), new one started at \(second.start)")
        kill(frozen, SIGCONT)
        let job = try s.c.eventually(30, "the job to finish on n2") { () -> JobRecord? in
            let j = try s.job(r.jobID)
            return j?.state.isTerminal == true ? j : nil
        }
        #expect(job.state == .succeeded && job.node == "n2", "\(job.state) on \(job.node?.rawValue ?? "-"): \(job.message)")
        #expect(job.attempts.count == 2 && job.attempts.first?.endReason == .nodeLost, "\(job.attempts)")
        #expect(Self.overlaps(s.runs()).isEmpty, "\(Self.overlaps(s.runs()))")
    }

    @Test func requeueNeverEndsLostAndTheJobIsNotRunAgain() throws {
        let s = try Setup()
        defer { s.c.stopAll() }
        try s.startAgent("n1")
        try s.startAgent("n2")
        try s.waitForNodes(2)
        let client = try s.c.client()
        let r = try client.submit(s.spec("once-only", seconds: 20, retry: RetryPolicy(requeueNever: true)))
        let run = try s.c.eventually(20, "the run to start") { s.runs().first }
        let job0 = try s.c.eventually(20, "the national view to show where it runs") { () -> JobRecord? in
            let j = try s.job(r.jobID)
            return j?.state == .running ? j : nil
        }
        let node = try #require(job0.node?.rawValue)
        s.c.stop(node, signal: SIGKILL)
        let job = try s.c.eventually(30, "the job to end lost") { () -> JobRecord? in
            let j = try s.job(r.jobID)
            return j?.state == .lost ? j : nil
        }
        #expect(job.message.contains("requeue: never"))
        #expect(job.attempts.count == 1 && job.attempts.first?.endReason == .nodeLost && job.attempts.first?.node.rawValue == node)
        // The agent is dead, but the shim fenced the job when the lease lapsed.
        _ = try s.c.eventually(10, "the orphaned run to be fenced") { Self.assignmentRunning(run.assignment) ? nil : true }
        Thread.sleep(forTimeInterval: 1.5)
        #expect(s.runs().count == 1, "never run again: \(s.runs())")
    }

    @Test func drainStopsAndReportsJobsAndTheRegionRunsThemAgain() throws {
        let s = try Setup()
        defer { s.c.stopAll() }
        try s.startAgent("n1")
        try s.waitForNodes(1)
        let client = try s.c.client()
        let r = try client.submit(s.spec("drained", seconds: 30))
        let first = try s.c.eventually(20, "the run to start") { s.runs().first }
        let drain = Process()
        drain.executableURL = Cluster.binDir.appendingPathComponent("grid-agent")
        drain.arguments = ["drain", "--data-dir", s.c.dir.appendingPathComponent("n1").path]
        try drain.run()
        try drain.finish(within: 60)
        #expect(drain.terminationStatus == 0)
        #expect(!Self.assignmentRunning(first.assignment), "drain left the job running")
        #expect(s.runs().first?.ended == "stop")
        let queued = try s.c.eventually(20, "the region to take the job back") { () -> JobRecord? in
            let j = try s.job(r.jobID)
            return j?.state == .queued ? j : nil
        }
        #expect(queued.attempts.first?.endReason == .agentStopped, "\(queued.attempts)")
        // `gridctl job ID` shows the attempt with its node, epoch and why it ended.
        let shown = try s.c.gridctl(["job", r.jobID]).output
        #expect(shown.contains("attempts: 1 of at most 3") && shown.contains("agent_stopped") && shown.contains("\(r.jobID).1"), "\(shown)")
        try s.startAgent("n1", as: "n1-back")
        _ = try s.c.eventually(30, "the second run") { s.runs().count == 2 ? true : nil }
        #expect(Self.overlaps(s.runs()).isEmpty)
    }

    @Test func aDeviceAnotherProcessComputesOnIsNotGivenOutUntilItIsFree() throws {
        let s = try Setup()
        defer { s.c.stopAll() }
        // A process of this host, listed by the (captured) nvidia-smi as computing on the T4.
        // Started through sh so it is not a Foundation `Process` (whose exit monitoring can wait
        // for descendants that inherited a descriptor).
        let sh = Process()
        sh.executableURL = URL(fileURLWithPath: "/bin/sh")
        sh.arguments = ["-c", "sleep 120 >/dev/null 2>&1 </dev/null & echo $!"]
        let out = Pipe()
        sh.standardOutput = out
        try sh.run()
        // Not waited for: Foundation sees sh end only once the sleep (which inherited its exit
        // socket) ends. The sleep's output goes to /dev/null, so the pipe closes with sh.
        let squatter = try #require(Int32(try PipeDrain(out).text().trimmingCharacters(in: .whitespacesAndNewlines)))
        var squatterAlive = true
        defer { if squatterAlive { kill(squatter, SIGKILL) } }
        let capture = try String(contentsOf: Cluster.fixtures.appendingPathComponent("nvidia-smi-q-x_tesla-t4_v11.xml"), encoding: .utf8)
            .replacingOccurrences(of: "<pid>5762</pid>", with: "<pid>\(squatter)</pid>")
            .replacingOccurrences(of: "<process_name>python</process_name>", with: "<process_name>/bin/sleep</process_name>")
        let fixture = s.c.dir.appendingPathComponent("t4-held.xml")
        try capture.write(to: fixture, atomically: true, encoding: .utf8)
        let config = s.c.dir.appendingPathComponent("agent-probing.yaml")
        try (NoJobRunsTwiceTests.agentConfig + "\nprobe_interval_s: 0.5\n").write(to: config, atomically: true, encoding: .utf8)
        try s.c.start("n1", "grid-agent", [
            "run", "--config", config.path, "--node-id", "n1", "--region", try #require(s.c.regionEndpoints["r1"]),
            "--data-dir", s.c.dir.appendingPathComponent("n1").path, "--simulate", fixture.path,
        ])
        try s.waitForNodes(1)
        let client = try s.c.client()
        let r = try client.submit(s.spec("polite", seconds: 0.2))
        #expect(r.accepted, "\(r.reason)")
        Thread.sleep(forTimeInterval: 2)
        #expect(s.runs().isEmpty, "placed on a device another process computes on")
        let waiting = try #require(try s.job(r.jobID))
        #expect(waiting.state == .queued, "\(waiting.state): \(waiting.message)")
        kill(squatter, SIGKILL)  // (the test runner's children may ignore SIGTERM)
        squatterAlive = false
        let job = try s.c.eventually(30, "the job to run once the device is free") { () -> JobRecord? in
            let j = try s.job(r.jobID)
            return j?.state.isTerminal == true ? j : nil
        }
        #expect(job.state == .succeeded && s.runs().count == 1)
    }

    @Test func aSecondAgentOnTheSameDataDirectoryIsRefused() throws {
        let s = try Setup()
        defer { s.c.stopAll() }
        try s.startAgent("n1")
        try s.waitForNodes(1)
        let second = try s.c.start("n1-twin", "grid-agent", [
            "run", "--config", s.agentConfig.path, "--node-id", "n1", "--region", try #require(s.c.regionEndpoints["r1"]),
            "--data-dir", s.c.dir.appendingPathComponent("n1").path,
            "--simulate", Cluster.fixtures.appendingPathComponent("nvidia-smi-q-x_tesla-t4_v11.xml").path,
        ])
        try second.process.finish(within: 30)
        #expect(second.process.terminationStatus != 0)
        #expect(s.c.log("n1-twin").contains("in use by another grid-agent"), "\(s.c.log("n1-twin"))")
        #expect(s.c.daemon("n1")?.process.isRunning == true)
    }
}
}
