import Foundation
import GridCLI
import Testing

// Every wait these tests do on a child process is bounded, and none runs a run loop.
//
// Foundation's `Process` on Linux learns that a child ended from EOF on a socket the child
// inherits, so a descendant that inherited it too (and did not close it) keeps the child
// "running" until the descendant ends; `waitUntilExit()` then waits as long, and it spins the
// calling thread's run loop, which has been seen to wait forever on its own
// (swiftlang/swift#79881). A CI run of this suite sat after the drain test until its 90-minute
// limit. A pipe read to its end blocks as long as any descendant holds the pipe. So: `isRunning`
// is polled with a deadline, pipes are drained on a thread of their own, and a watchdog ends the
// daemons of a test that runs far past any test's length.

extension Process {
    /// Waits up to `seconds` for the process to end, polling `isRunning`. True once it has ended
    /// (only then may `terminationStatus` be read).
    func waitForExit(within seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while isRunning {
            if Date() >= deadline { return false }
            Thread.sleep(forTimeInterval: 0.02)
        }
        return true
    }

    /// Waits for the end; past `seconds` kills the process (SIGKILL) and throws, naming it.
    func finish(within seconds: Double) throws {
        if waitForExit(within: seconds) { return }
        kill(processIdentifier, SIGKILL)
        let gone = waitForExit(within: 5)
        throw ClientError("\(executableURL?.lastPathComponent ?? "?") \((arguments ?? []).joined(separator: " ")) did not end within \(seconds) s; "
            + (gone ? "killed" : "killed, and still not seen to end"))
    }
}

/// What a pipe carries until its writers close, read on a thread of its own so the wait for it
/// can be bounded.
final class PipeDrain: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private let lock = NSLock()
    private var data = Data()

    init(_ pipe: Pipe) {
        let handle = pipe.fileHandleForReading
        Thread.detachNewThread { [self] in
            let all = handle.readDataToEndOfFile()
            lock.withLock { data = all }
            done.signal()
        }
    }

    /// Everything read, once the pipe has closed; throws if it stays open `seconds` longer.
    func result(within seconds: Double = 10) throws -> Data {
        guard done.wait(timeout: .now() + seconds) == .success else {
            throw ClientError("a pipe stayed open \(seconds) s after its writer ended (a descendant holds it?)")
        }
        return lock.withLock { data }
    }

    func text(within seconds: Double = 10) throws -> String { String(decoding: try result(within: seconds), as: UTF8.self) }
}

/// Ends the daemons of an end-to-end test that runs past `limit` (no test here needs a tenth of
/// the default): it prints which test, for how long, and the tail of each daemon's log to
/// standard error, then kills the daemons, which ends any wait on them; the test then fails
/// instead of holding the whole run until CI's limit. `GRID_E2E_TEST_LIMIT_S` overrides.
final class EndToEndWatchdog: @unchecked Sendable {
    static let shared = EndToEndWatchdog()
    let limit: Double = ProcessInfo.processInfo.environment["GRID_E2E_TEST_LIMIT_S"].flatMap(Double.init) ?? 300

    private struct Watched {
        var test: String
        var dir: URL
        var started: Date
        var pids: [(name: String, pid: Int32)]
        var fired = false
    }
    private let lock = NSLock()
    private var watched: [ObjectIdentifier: Watched] = [:]

    private init() {
        Thread.detachNewThread { [self] in
            while true {
                Thread.sleep(forTimeInterval: 1)
                check()
            }
        }
    }

    func watch(_ owner: AnyObject, dir: URL) {
        let name = Test.current?.name ?? "?"
        lock.withLock { watched[ObjectIdentifier(owner)] = Watched(test: name, dir: dir, started: Date(), pids: []) }
    }

    func started(_ owner: AnyObject, name: String, pid: Int32) {
        lock.withLock { watched[ObjectIdentifier(owner)]?.pids.append((name, pid)) }
    }

    func forget(_ owner: AnyObject) {
        lock.withLock { _ = watched.removeValue(forKey: ObjectIdentifier(owner)) }
    }

    private func check() {
        let (late, stuck): ([Watched], [Watched]) = lock.withLock {
            var late: [Watched] = [], stuck: [Watched] = []
            for (key, w) in watched {
                let age = Date().timeIntervalSince(w.started)
                if !w.fired, age > limit {
                    watched[key]?.fired = true
                    late.append(w)
                } else if w.fired, age > limit + 120 {
                    stuck.append(w)
                }
            }
            return (late, stuck)
        }
        // Killing its daemons did not end it: it waits on something else. End the run with what
        // this process's children are, rather than let it sit until CI's limit.
        if let w = stuck.first {
            let tree = (try? Cluster.run("/bin/ps", ["-eo", "pid,ppid,stat,etime,args", "--forest"], within: 10).output) ?? "(ps failed)"
            FileHandle.standardError.write(Data(
                "\nWATCHDOG: test \(w.test) still runs \(Int(limit) + 120) s after its limit with its daemons killed; ending the test run\n\(tree)\n".utf8))
            _exit(3)
        }
        for w in late {
            var report = "\nWATCHDOG: test \(w.test) has run \(Int(Date().timeIntervalSince(w.started))) s (limit \(Int(limit)) s); killing its daemons\n"
            for (name, pid) in w.pids {
                let log = (try? String(contentsOf: w.dir.appendingPathComponent("\(name).err"), encoding: .utf8)) ?? ""
                report += "--- \(name) (pid \(pid)) ---\n\(log.suffix(2000))\n"
            }
            FileHandle.standardError.write(Data(report.utf8))
            for (_, pid) in w.pids { kill(pid, SIGKILL) }
        }
    }
}
