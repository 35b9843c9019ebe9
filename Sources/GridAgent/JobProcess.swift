import Foundation
import GridProbe
#if canImport(Glibc)
import Glibc
#endif

/// How a job's process ended.
public enum ProcessEnd: Sendable, Equatable {
    case exited(Int32)
    case signaled(Int32)

    public var succeeded: Bool { self == .exited(0) }
    /// Shell convention: 128 + signal for signalled processes.
    public var exitCode: Int32 {
        switch self {
        case .exited(let c): return c
        case .signaled(let s): return 128 + s
        }
    }
}

/// Why a job's process could not be started.
public struct SpawnError: Error, CustomStringConvertible, Sendable {
    public var command: String
    public var reason: String
    public var description: String { "cannot start '\(command)': \(reason)" }
}

/// Where a job's shim finds what it needs.
public struct ShimOptions: Sendable {
    /// The `grid-job-shim` executable.
    public var path: String
    /// The file holding the lease deadline (CLOCK_MONOTONIC ms) the shim fences on.
    public var leaseFile: String
    public var fenceGraceMs: Int64
    /// Where job cgroups go (`JobCgroups`); nil = process groups only.
    public var cgroupParent: String?
    public init(path: String, leaseFile: String, fenceGraceMs: Int64, cgroupParent: String? = nil) {
        self.path = path
        self.leaseFile = leaseFile
        self.fenceGraceMs = fenceGraceMs
        self.cgroupParent = cgroupParent
    }
}

/// A job's run: `grid-job-shim` as the leader of a new process group, the job's command as the
/// shim's child in that group; stdin from /dev/null, stdout and stderr appended to one file whose
/// tail is reported. The shim outlives the agent, records the exit status in `exitPath` and fences
/// the job when the lease lapses (see Sources/grid-job-shim/main.c).
///
/// Signals go to the process group only while the shim is not yet reaped: the reaper thread
/// waits with WNOWAIT and reaps under the same lock `signal` takes, so the group id cannot have
/// been reused by an unrelated process when a signal is sent.
public final class JobProcess: @unchecked Sendable {
    public let pid: pid_t
    public let outputPath: String
    public let exitPath: String
    /// Start time of the shim (clock ticks since boot), with the pid its identity in the journal;
    /// nil if it had already ended when read.
    public let startTicks: UInt64?
    let lock = NSLock()
    var reaped = false

    /// Resolves `command` on the job's PATH, spawns the shim with it and starts a reaper thread
    /// that calls `onExit` once (from that thread) with the shim's wait status.
    public init(command: String, args: [String], environment: [String: String], outputPath: String, exitPath: String,
                shim: ShimOptions, keepOnLeaseLoss: Bool, cgroup: String? = nil, runAs: RunIdentity? = nil, workDirectory: String? = nil,
                onExit: @escaping @Sendable (ProcessEnd) -> Void) throws(SpawnError) {
        guard let executable = JobProcess.resolve(command, path: environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin") else {
            throw SpawnError(command: command, reason: "not found on PATH (\(environment["PATH"] ?? "default PATH"))")
        }
        self.outputPath = outputPath
        self.exitPath = exitPath
        unlink(exitPath)
        var fileActions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&fileActions)
        defer { posix_spawn_file_actions_destroy(&fileActions) }
        posix_spawn_file_actions_addopen(&fileActions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&fileActions, 1, outputPath, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        posix_spawn_file_actions_adddup2(&fileActions, 1, 2)
        InheritedDescriptors.closeInChild(&fileActions)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var defaultSignals = sigset_t()
        sigemptyset(&defaultSignals)
        for s in [SIGTERM, SIGINT, SIGPIPE, SIGHUP, SIGQUIT] { sigaddset(&defaultSignals, s) }
        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        posix_spawnattr_setsigdefault(&attr, &defaultSignals)
        posix_spawnattr_setsigmask(&attr, &emptyMask)
        posix_spawnattr_setpgroup(&attr, 0)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        var argv = [shim.path, "--exit-file", exitPath, "--lease-file", shim.leaseFile, "--fence-grace-ms", String(shim.fenceGraceMs)]
        if keepOnLeaseLoss { argv.append("--keep") }
        if let cgroup { argv += ["--cgroup", cgroup] }
        if let runAs { argv += ["--user", runAs.shimArgument] }
        if let workDirectory { argv += ["--chdir", workDirectory] }
        argv += ["--", executable] + args
        let envp = environment.map { "\($0.key)=\($0.value)" }.sorted()
        var child: pid_t = 0
        let rc = withCStrings(argv) { cargv in
            withCStrings(envp) { cenv in
                posix_spawn(&child, shim.path, &fileActions, &attr, cargv, cenv)
            }
        }
        guard rc == 0 else { throw SpawnError(command: command, reason: "cannot start \(shim.path): \(String(cString: strerror(rc)))") }
        pid = child
        startTicks = ProcessIdentity.startTicks(child)
        let reaped = child
        let thread = Thread { [self] in
            var info = siginfo_t()
            while waitid(P_PID, id_t(reaped), &info, WEXITED | WNOWAIT) < 0 && errno == EINTR {}
            var status: Int32 = 0
            lock.lock()
            while waitpid(reaped, &status, 0) < 0 && errno == EINTR {}
            self.reaped = true
            lock.unlock()
            let end: ProcessEnd = (status & 0x7f) == 0 ? .exited((status >> 8) & 0xff) : .signaled(status & 0x7f)
            onExit(end)
        }
        thread.name = "job-\(child)"
        thread.start()
    }

    /// Signals the whole process group (or only the shim), unless the shim was already reaped.
    public func signal(_ sig: Int32, group: Bool = true) {
        lock.lock()
        defer { lock.unlock() }
        guard !reaped else { return }
        if !group || kill(-pid, sig) != 0 { _ = kill(pid, sig) }
    }

    /// Last `limit` bytes of the combined output, decoded leniently.
    public static func tail(of path: String, limit: Int) -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else { return "" }
        defer { try? handle.close() }
        let size = (try? handle.seekToEnd()) ?? 0
        let start = size > UInt64(limit) ? size - UInt64(limit) : 0
        try? handle.seek(toOffset: start)
        let data = (try? handle.readToEnd()) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }

    /// The shim's exit record: "exited N F" or "signaled N F" (F: 1 when it fenced the job).
    public static func readExitRecord(_ path: String) -> ProcessOutcome? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        let parts = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard parts.count >= 2, let n = Int32(parts[1]) else { return nil }
        let fenced = parts.count >= 3 && parts[2] == "1"
        switch parts[0] {
        case "exited": return ProcessOutcome(end: .exited(n), fenced: fenced)
        case "signaled": return ProcessOutcome(end: .signaled(n), fenced: fenced)
        default: return nil
        }
    }

    static func resolve(_ command: String, path: String) -> String? {
        if command.contains("/") { return access(command, X_OK) == 0 ? command : nil }
        for dir in path.split(separator: ":") where !dir.isEmpty {
            let candidate = "\(dir)/\(command)"
            var st = stat()
            if stat(candidate, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }
}

/// A process as /proc shows it, for finding journalled runs again after a restart.
public enum ProcessIdentity {
    /// Field 22 of /proc/PID/stat (start time in clock ticks since boot); nil when the process
    /// does not exist or is a zombie.
    public static func startTicks(_ pid: pid_t) -> UInt64? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // fields[0] is the state (field 3); the start time is field 22.
        guard fields.count > 19, fields[0] != "Z", fields[0] != "X" else { return nil }
        return UInt64(fields[19])
    }

    /// Whether `pid` is the process journalled with `startTicks` and still running. Without a
    /// recorded start time nothing can be told apart from a process that reused the pid: false.
    public static func isAlive(_ pid: pid_t, startTicks expected: UInt64?) -> Bool {
        guard pid > 0, let expected, expected != 0, let actual = startTicks(pid) else { return false }
        return actual == expected
    }

    /// The shim of `assignment` when the agent died between starting it and journalling its pid:
    /// the process group leader whose environment carries GRID_ASSIGNMENT_ID=assignment.
    public static func findShim(assignment: String) -> pid_t? {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return nil }
        let needle = Array("GRID_ASSIGNMENT_ID=\(assignment)".utf8) + [0]
        for name in entries {
            guard let pid = pid_t(name), pid > 0, getpgid(pid) == pid,
                  let env = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { continue }
            let bytes = [UInt8](env)
            var start = 0
            for i in 0..<bytes.count where bytes[i] == 0 {
                if Array(bytes[start...i]) == needle { return pid }
                start = i + 1
            }
        }
        return nil
    }
}

private func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
    let pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) } + [nil]
    defer { for p in pointers { free(p) } }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}
