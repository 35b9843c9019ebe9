import Foundation
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

/// A job's child process: its own process group (so a kill reaches everything it started),
/// stdin from /dev/null, stdout and stderr appended to one file whose tail is reported.
public final class JobProcess: Sendable {
    public let pid: pid_t
    public let outputPath: String

    /// Resolves `command` on the job's PATH, spawns it and starts a dedicated reaper thread that
    /// calls `onExit` once (from that thread).
    public init(command: String, args: [String], environment: [String: String], outputPath: String,
                onExit: @escaping @Sendable (ProcessEnd) -> Void) throws(SpawnError) {
        guard let executable = JobProcess.resolve(command, path: environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin") else {
            throw SpawnError(command: command, reason: "not found on PATH (\(environment["PATH"] ?? "default PATH"))")
        }
        self.outputPath = outputPath
        var fileActions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&fileActions)
        defer { posix_spawn_file_actions_destroy(&fileActions) }
        posix_spawn_file_actions_addopen(&fileActions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&fileActions, 1, outputPath, O_WRONLY | O_CREAT | O_APPEND, 0o640)
        posix_spawn_file_actions_adddup2(&fileActions, 1, 2)
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

        let argv = [executable] + args
        let envp = environment.map { "\($0.key)=\($0.value)" }.sorted()
        var child: pid_t = 0
        let rc = withCStrings(argv) { cargv in
            withCStrings(envp) { cenv in
                posix_spawn(&child, executable, &fileActions, &attr, cargv, cenv)
            }
        }
        guard rc == 0 else { throw SpawnError(command: command, reason: String(cString: strerror(rc))) }
        pid = child
        let reaped = child
        let thread = Thread {
            var status: Int32 = 0
            while waitpid(reaped, &status, 0) < 0 && errno == EINTR {}
            let end: ProcessEnd = (status & 0x7f) == 0 ? .exited((status >> 8) & 0xff) : .signaled(status & 0x7f)
            onExit(end)
        }
        thread.name = "job-\(child)"
        thread.start()
    }

    /// Signals the whole process group.
    public func signal(_ sig: Int32) {
        if kill(-pid, sig) != 0 { _ = kill(pid, sig) }
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

private func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
    let pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) } + [nil]
    defer { for p in pointers { free(p) } }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}
