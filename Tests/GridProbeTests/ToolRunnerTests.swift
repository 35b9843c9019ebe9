import Foundation
import Testing
@testable import GridProbe

@Suite("Tool runner")
struct ToolRunnerTests {
    let runner = ToolRunner(killGraceSeconds: 0.5, reapGraceSeconds: 0.5)

    @Test func capturesStdoutAndExitStatus() async throws {
        let r = try FakeRoot("run-ok")
        let tool = try r.script("ok", "echo hello; echo oops >&2; exit 0")
        let res = await runner.run(tool, timeoutSeconds: 5)
        #expect(res.outcome == .exited(0))
        #expect(res.exitStatus == 0)
        #expect(res.stdout == "hello\n")
        #expect(res.stderrTail == "oops\n")
        #expect(res.reaped)
        #expect(!runner.isBusy("ok"))
    }

    /// A descriptor the agent holds without close-on-exec (one its own parent handed it) does not
    /// reach the tool: a hung tool outliving the agent would otherwise hold it.
    @Test func theToolInheritsNoDescriptorAboveStderr() async throws {
        #expect(InheritedDescriptors.supported, "glibc 2.34+ has posix_spawn_file_actions_addclosefrom_np")
        let r = try FakeRoot("run-fds")
        let opened = open("/dev/null", O_RDONLY)
        let leaked = dup2(opened, 900)  // no close-on-exec; a number no shell uses for itself
        close(opened)
        #expect(leaked == 900)
        defer { close(leaked) }
        let tool = try r.script("fds", "for f in /proc/$$/fd/*; do echo ${f##*/}; done")
        let res = await runner.run(tool, timeoutSeconds: 5)
        #expect(res.outcome == .exited(0))
        let fds = Set(res.stdout.split(separator: "\n").compactMap { Int32($0) })
        #expect(fds.isSuperset(of: [0, 1, 2]), "\(fds)")
        #expect(!fds.contains(leaked), "the tool got descriptor \(leaked): \(fds)")
    }

    @Test func argumentsAndLocale() async throws {
        let r = try FakeRoot("run-args")
        let tool = try r.script("args", "echo \"$1|$2|$LC_ALL\"")
        let res = await runner.run(tool, arguments: ["-q", "a b"], timeoutSeconds: 5)
        #expect(res.stdout == "-q|a b|C\n")
    }

    @Test func nonZeroExit() async throws {
        let r = try FakeRoot("run-exit3")
        let tool = try r.script("fail", "echo 'NVIDIA-SMI has failed' >&2; exit 3")
        let res = await runner.run(tool, timeoutSeconds: 5)
        #expect(res.outcome == .exited(3))
        #expect(res.stderrTail.contains("NVIDIA-SMI has failed"))
    }

    @Test func sleepsForeverTimesOutWithinDeadline() async throws {
        let r = try FakeRoot("run-sleep")
        let tool = try r.script("hang", "echo partial; exec sleep 1000")
        let start = Date()
        let res = await runner.run(tool, timeoutSeconds: 1)
        #expect(res.outcome == .timedOut)
        #expect(secondsElapsed(since: start) < 60, "bounded by the deadline, not by the 1000 s tool (60 s leaves room for a loaded 2-core CI machine whose test pool stalls)")
        #expect(res.reaped)
        #expect(!runner.isBusy("hang"))
    }

    @Test func ignoresSigtermStillKilled() async throws {
        let r = try FakeRoot("run-trap")
        let tool = try r.script("stubborn", "trap '' TERM\nwhile :; do sleep 1; done")
        let start = Date()
        let res = await runner.run(tool, timeoutSeconds: 1)
        #expect(res.outcome == .timedOut)
        #expect(res.reaped)
        #expect(secondsElapsed(since: start) < 60, "bounded by the deadline, not by the 1000 s tool (60 s leaves room for a loaded 2-core CI machine whose test pool stalls)")
    }

    @Test func hugeOutputIsBoundedAndDoesNotDeadlock() async throws {
        let r = try FakeRoot("run-huge")
        // 50 MB on stdout and plenty on stderr: neither pipe may fill up and block the tool.
        let tool = try r.script("flood", "yes error >&2 & yes 0123456789abcdef | head -c 50000000; wait")
        let start = Date()
        let res = await runner.run(tool, timeoutSeconds: 10, maxOutputBytes: 1 << 20)
        #expect(res.outcome == .outputTooLarge)
        #expect(res.stdoutTruncated)
        #expect(res.stdout.utf8.count == 1 << 20)
        #expect(res.stderrTail.utf8.count <= 4096)
        #expect(secondsElapsed(since: start) < 60, "50 MB of output neither blocks the tool nor the caller")
    }

    @Test func outputUnderTheLimitIsComplete() async throws {
        let r = try FakeRoot("run-big")
        let tool = try r.script("big", "head -c 3000000 /dev/zero | tr '\\0' x; yes e | head -c 200000 >&2")
        let res = await runner.run(tool, timeoutSeconds: 10, maxOutputBytes: 8 << 20)
        #expect(res.outcome == .exited(0))
        #expect(res.stdout.utf8.count == 3_000_000)
        #expect(!res.stdoutTruncated)
        #expect(res.stderrTail.utf8.count == 4096)
    }

    @Test func crashIsSignaled() async throws {
        let r = try FakeRoot("run-crash")
        let tool = try r.script("crash", "kill -SEGV $$")
        let res = await runner.run(tool, timeoutSeconds: 5)
        #expect(res.outcome == .signaled(11))
    }

    @Test func backgroundChildHoldingThePipeDoesNotHoldTheCaller() async throws {
        let r = try FakeRoot("run-bg")
        let tool = try r.script("daemonish", "sleep 1000 &\necho done")
        let start = Date()
        let res = await runner.run(tool, timeoutSeconds: 5)
        #expect(res.outcome == .exited(0))
        #expect(res.stdout == "done\n")
        #expect(secondsElapsed(since: start) < 60, "bounded by the tool's own exit, not by its 1000 s background child")
    }

    @Test func secondRunWhileFirstInFlightIsBusy() async throws {
        let r = try FakeRoot("run-busy")
        let tool = try r.script("slow", "exec sleep 1000")
        let first = Task { await runner.run(tool, tool: "slow-tool", timeoutSeconds: 2) }
        // Wait until the first run is registered.
        var waited = 0
        while !runner.isBusy("slow-tool") && waited < 200 {
            try await Task.sleep(nanoseconds: 10_000_000)
            waited += 1
        }
        let second = await runner.run(tool, tool: "slow-tool", timeoutSeconds: 2)
        #expect(second.outcome == .busy)
        // The first run ends only at its own deadline: still in flight means the busy answer did not wait for it.
        #expect(runner.isBusy("slow-tool"), "answered busy without waiting for the first run")
        let firstResult = await first.value
        #expect(firstResult.outcome == .timedOut)
        #expect(!runner.isBusy("slow-tool"))
        // And once reaped the tool runs again.
        let third = await runner.run("/bin/true", tool: "slow-tool", timeoutSeconds: 2)
        #expect(third.outcome == .exited(0))
    }

    @Test func notFound() async {
        let res = await runner.run("definitely-not-a-vendor-smi", timeoutSeconds: 1)
        #expect(res.outcome == .notFound("definitely-not-a-vendor-smi"))
        let abs = await runner.run("/nonexistent/nvidia-smi", timeoutSeconds: 1)
        #expect(abs.outcome == .notFound("/nonexistent/nvidia-smi"))
    }

    @Test func notExecutableFormatIsLaunchFailure() async throws {
        let r = try FakeRoot("run-noexec")
        try r.file("bin/bad", "\u{7f}ELFgarbage")
        chmod(r.path + "/bin/bad", 0o755)
        let res = await runner.run(r.path + "/bin/bad", timeoutSeconds: 1)
        guard case .launchFailed = res.outcome else {
            Issue.record("expected launchFailed, got \(res.outcome)")
            return
        }
    }

    @Test func cancellationKillsTheTool() async throws {
        let r = try FakeRoot("run-cancel")
        let tool = try r.script("cancelme", "exec sleep 1000")
        let task = Task { await runner.run(tool, timeoutSeconds: 30) }
        try await Task.sleep(nanoseconds: 200_000_000)
        task.cancel()
        let res = await task.value
        // Cancelled, not left to its 30 s deadline (that would be timedOut). No wall-clock bound:
        // on a loaded 2-core machine the test task itself may wait seconds for a thread.
        #expect(res.outcome == .cancelled)
        #expect(res.reaped, "the process group was killed and reaped")
    }
}
