import Foundation
import GridAgent
import Testing

/// `grid-job-shim` on its own, with real processes: what it records, what it leaves behind,
/// how it fences.
extension EndToEnd {
@Suite(.serialized) struct JobShimTests {
    static let shim = Cluster.binDir.appendingPathComponent("grid-job-shim").path

    final class Scratch {
        let dir: URL
        init() throws {
            dir = FileManager.default.temporaryDirectory.appendingPathComponent("shim-\(UUID().uuidString.prefix(8))")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        }
        deinit { try? FileManager.default.removeItem(at: dir) }
        func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
    }

    /// Runs the shim to its end; returns its exit status and how long it took.
    static func run(_ args: [String], signalAfter: (Double, Int32)? = nil) throws -> (Int32, Double) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: shim)
        p.arguments = args
        p.standardInput = FileHandle.nullDevice
        let start = Date()
        try p.run()
        if let (delay, sig) = signalAfter {
            Thread.sleep(forTimeInterval: delay)
            kill(p.processIdentifier, sig)
        }
        try p.finish(within: 60)
        return (p.terminationStatus, Date().timeIntervalSince(start))
    }

    static func alive(_ pidFile: String) -> Bool {
        guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8), let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            return false
        }
        return ProcessIdentity.startTicks(pid) != nil
    }

    @Test func recordsTheExitAndKillsWhatTheJobLeftBehindEvenSetsid() throws {
        let s = try Scratch()
        let script = "setsid sh -c 'echo $$ > \(s.path("escapee")); exec sleep 30' & sleep 0.3; exit 3"
        let (status, _) = try Self.run(["--exit-file", s.path("exit"), "--", "/bin/sh", "-c", script])
        #expect(status == 3)
        #expect(try String(contentsOfFile: s.path("exit"), encoding: .utf8) == "exited 3 0\n")
        #expect(!Self.alive(s.path("escapee")), "a setsid'd process reparented to the shim (a subreaper) is killed with the job")
    }

    @Test func fencesWhenTheLeaseLapsesEvenIfTheJobIgnoresTerm() throws {
        let s = try Scratch()
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        let now = Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
        try "\(now + 1200) 600 boot\n".write(toFile: s.path("lease"), atomically: true, encoding: .utf8)
        let (status, took) = try Self.run(["--exit-file", s.path("exit"), "--lease-file", s.path("lease"), "--",
                                           "/bin/sh", "-c", "trap '' TERM; sleep 30"])
        #expect(status == 128 + SIGKILL)
        #expect(try String(contentsOfFile: s.path("exit"), encoding: .utf8) == "signaled 9 1\n", "fenced, and says so")
        #expect(took > 1.0 && took < 5, "TERM at deadline − grace was ignored; KILL at the deadline (\(took) s)")
    }

    @Test func keepIsNotFenced() throws {
        let s = try Scratch()
        try "1 100 boot\n".write(toFile: s.path("lease"), atomically: true, encoding: .utf8)  // long lapsed
        let (status, _) = try Self.run(["--exit-file", s.path("exit"), "--lease-file", s.path("lease"), "--keep", "--",
                                        "/bin/sh", "-c", "sleep 0.5; exit 0"])
        #expect(status == 0)
        #expect(try String(contentsOfFile: s.path("exit"), encoding: .utf8) == "exited 0 0\n")
    }

    @Test func usr1KillsTheJobButTheShimStaysToRecordIt() throws {
        let s = try Scratch()
        let (status, took) = try Self.run(["--exit-file", s.path("exit"), "--", "/bin/sh", "-c", "trap '' TERM; sleep 30"],
                                          signalAfter: (0.5, SIGUSR1))
        #expect(status == 128 + SIGKILL && took < 5, "status \(status) after \(took) s; record: \((try? String(contentsOfFile: s.path("exit"), encoding: .utf8)) ?? "none")")
        #expect(try String(contentsOfFile: s.path("exit"), encoding: .utf8) == "signaled 9 0\n")
    }

    @Test func joinsTheJobsCgroupBeforeTheJobStarts() throws {
        // A plain directory stands in for a delegated cgroup v2 subtree (this host has v1): it
        // shows the shim creates the job's cgroup and writes itself into cgroup.procs first.
        let s = try Scratch()
        let cg = s.path("job-j-1.1")
        let (status, _) = try Self.run(["--exit-file", s.path("exit"), "--cgroup", cg, "--", "/bin/sh", "-c", "exit 0"])
        #expect(status == 0)
        let procs = try String(contentsOfFile: cg + "/cgroup.procs", encoding: .utf8)
        #expect(Int(procs.trimmingCharacters(in: .whitespacesAndNewlines)) != nil)
    }
}
}
