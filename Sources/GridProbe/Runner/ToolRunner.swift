#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// What happened when a vendor tool ran.
public struct ToolResult: Sendable, Hashable {
    public enum Outcome: Sendable, Hashable {
        /// The tool exited by itself with this status.
        case exited(Int32)
        /// The tool died from this signal before the deadline (a crash, or killed by someone else).
        case signaled(Int32)
        /// The deadline passed; the process group got SIGTERM, then SIGKILL.
        case timedOut
        /// Stdout passed the byte limit; the process group was killed and stdout holds the first
        /// `maxOutputBytes` bytes.
        case outputTooLarge
        /// An earlier run of the same tool has not been reaped yet (e.g. stuck in uninterruptible
        /// sleep); nothing was started.
        case busy
        /// The executable does not exist or is not executable (searched path or given path).
        case notFound(String)
        /// posix_spawn or pipe creation failed.
        case launchFailed(String)
        /// The calling task was cancelled; the process group was killed.
        case cancelled
    }

    /// The in-flight key (defaults to the executable's file name).
    public var tool: String
    /// Absolute path that ran (or the name that could not be found).
    public var executable: String
    public var arguments: [String]
    public var outcome: Outcome
    /// Stdout decoded as UTF-8 (invalid bytes replaced), at most `maxOutputBytes` bytes.
    public var stdout: String
    /// True when stdout was cut at the byte limit.
    public var stdoutTruncated: Bool
    /// The last few KiB of stderr.
    public var stderrTail: String
    /// From spawn to result, seconds.
    public var durationSeconds: Double
    /// False when the process had not been reaped when the result was returned (it ignored
    /// SIGKILL, e.g. stuck in the kernel). A dedicated thread keeps waiting for it; until it
    /// is reaped, runs of the same tool return `.busy`.
    public var reaped: Bool

    /// The exit status when the tool exited by itself.
    public var exitStatus: Int32? {
        if case .exited(let code) = outcome { return code }
        return nil
    }

    public init(
        tool: String, executable: String, arguments: [String], outcome: Outcome, stdout: String = "",
        stdoutTruncated: Bool = false, stderrTail: String = "", durationSeconds: Double = 0, reaped: Bool = true
    ) {
        self.tool = tool
        self.executable = executable
        self.arguments = arguments
        self.outcome = outcome
        self.stdout = stdout
        self.stdoutTruncated = stdoutTruncated
        self.stderrTail = stderrTail
        self.durationSeconds = durationSeconds
        self.reaped = reaped
    }
}

/// Runs vendor command-line tools with a deadline, bounded output and at most one run in flight
/// per tool.
///
/// - The child gets its own process group, stdin from /dev/null, default signal dispositions and
///   `LC_ALL=C` (configurable). On timeout the whole group gets SIGTERM, then SIGKILL after
///   `killGraceSeconds`.
/// - Each run is supervised by a dedicated OS thread (not a Swift concurrency task), which reads
///   both pipes with `poll`, so a child filling a pipe can never deadlock it. Stdout beyond
///   `maxOutputBytes` kills the group (`.outputTooLarge`); stderr keeps only its tail.
/// - The caller gets its result at most `timeout + killGraceSeconds + reapGraceSeconds` after
///   the start, even when the child cannot be reaped (uninterruptible sleep: a hung nvidia-smi).
///   The supervising thread then goes on waiting for the child; the tool counts as in flight,
///   and later runs of it answer `.busy` at once, until it is reaped.
public final class ToolRunner: Sendable {
    /// Directories searched for bare tool names, after `$PATH`: where vendor packages install
    /// their CLIs (ROCm, Ascend, CoreX).
    public static let defaultSearchPath: [String] = [
        "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin",
        "/opt/rocm/bin", "/usr/local/Ascend/driver/tools", "/usr/local/corex/bin",
    ]

    /// One runner the whole process shares, so that a hung tool stays "in flight" across probers.
    public static let shared = ToolRunner()

    public let searchPath: [String]
    public let environmentOverrides: [String: String]
    public let killGraceSeconds: Double
    public let reapGraceSeconds: Double
    public let stderrTailBytes: Int
    private let inFlight = ProbeLockedBox<Set<String>>([])

    public init(
        searchPath: [String]? = nil, environmentOverrides: [String: String] = ["LC_ALL": "C"],
        killGraceSeconds: Double = 1.0, reapGraceSeconds: Double = 0.5, stderrTailBytes: Int = 4096
    ) {
        if let searchPath {
            self.searchPath = searchPath
        } else {
            let path = ProcessInfo.processInfo.environment["PATH"]?.split(separator: ":").map(String.init) ?? []
            var seen = Set<String>()
            self.searchPath = (path + Self.defaultSearchPath).filter { !$0.isEmpty && seen.insert($0).inserted }
        }
        self.environmentOverrides = environmentOverrides
        self.killGraceSeconds = max(0, killGraceSeconds)
        self.reapGraceSeconds = max(0, reapGraceSeconds)
        self.stderrTailBytes = max(0, stderrTailBytes)
    }

    /// Whether a run of `tool` is still in flight (possibly an unreaped, hung one).
    public func isBusy(_ tool: String) -> Bool {
        inFlight.withLock { $0.contains(tool) }
    }

    /// The absolute path that `executable` names: itself when it contains a slash, else the
    /// first executable file of that name in the search path.
    public func resolve(_ executable: String) -> String? {
        if executable.contains("/") {
            return Self.isExecutableFile(executable) ? executable : nil
        }
        for dir in searchPath {
            let candidate = dir.hasSuffix("/") ? dir + executable : dir + "/" + executable
            if Self.isExecutableFile(candidate) { return candidate }
        }
        return nil
    }

    static func isExecutableFile(_ path: String) -> Bool {
        var st = stat()
        guard stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return false }
        return access(path, X_OK) == 0
    }

    /// Runs `executable` with `arguments`. Never throws; see `ToolResult.Outcome`.
    ///
    /// - Parameters:
    ///   - tool: the in-flight key; defaults to the executable's file name.
    ///   - timeoutSeconds: deadline from spawn.
    ///   - maxOutputBytes: stdout bytes kept; more kills the tool.
    public func run(
        _ executable: String, arguments: [String] = [], tool: String? = nil,
        timeoutSeconds: Double, maxOutputBytes: Int = 8 << 20
    ) async -> ToolResult {
        let key = tool ?? (executable.split(separator: "/").last.map(String.init) ?? executable)
        guard let path = resolve(executable) else {
            return ToolResult(tool: key, executable: executable, arguments: arguments, outcome: .notFound(executable))
        }
        let claimed = inFlight.withLock { $0.insert(key).inserted }
        guard claimed else {
            return ToolResult(tool: key, executable: path, arguments: arguments, outcome: .busy)
        }
        let release: @Sendable () -> Void = { [inFlight] in _ = inFlight.withLock { $0.remove(key) } }

        let spawn = Self.spawn(path: path, arguments: arguments, overrides: environmentOverrides)
        let child: SpawnedChild
        switch spawn {
        case .failure(let message):
            release()
            return ToolResult(tool: key, executable: path, arguments: arguments, outcome: .launchFailed(message))
        case .success(let c):
            child = c
        }

        let job = Supervision(
            key: key, path: path, arguments: arguments, child: child,
            timeout: max(0, timeoutSeconds), maxOutputBytes: max(0, maxOutputBytes),
            killGrace: killGraceSeconds, reapGrace: reapGraceSeconds, stderrTailBytes: stderrTailBytes,
            release: release)
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<ToolResult, Never>) in
                let thread = Thread { job.supervise { continuation.resume(returning: $0) } }
                thread.name = "ToolRunner \(key)"
                thread.stackSize = 256 * 1024
                thread.start()
            }
        } onCancel: {
            job.cancel()
        }
    }

    // MARK: - Spawning

    struct SpawnedChild: Sendable {
        var pid: pid_t
        var stdoutFD: Int32
        var stderrFD: Int32
        var startNanos: UInt64
    }

    enum SpawnOutcome {
        case success(SpawnedChild)
        case failure(String)
    }

    static func errnoText(_ err: Int32) -> String {
        "\(String(cString: strerror(err))) (errno \(err))"
    }

    static func spawn(path: String, arguments: [String], overrides: [String: String]) -> SpawnOutcome {
        var outPipe: [Int32] = [-1, -1]
        var errPipe: [Int32] = [-1, -1]
        // pipe2(O_CLOEXEC) is not visible to Swift; set close-on-exec right after (the dup2
        // in the child clears it on fds 1 and 2).
        guard pipe(&outPipe) == 0 else { return .failure("pipe: \(errnoText(errno))") }
        guard pipe(&errPipe) == 0 else {
            let e = errno
            close(outPipe[0]); close(outPipe[1])
            return .failure("pipe: \(errnoText(e))")
        }
        for fd in outPipe + errPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        InheritedDescriptors.closeInChild(&actions)

        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        // Own process group (so the whole tree can be killed), empty signal mask, default
        // dispositions for signals a parent may ignore (SIGPIPE is ignored by many runtimes).
        let flags = Int32(POSIX_SPAWN_SETPGROUP) | Int32(POSIX_SPAWN_SETSIGMASK) | Int32(POSIX_SPAWN_SETSIGDEF)
        posix_spawnattr_setflags(&attr, Int16(flags))
        posix_spawnattr_setpgroup(&attr, 0)
        var mask = sigset_t()
        sigemptyset(&mask)
        posix_spawnattr_setsigmask(&attr, &mask)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for sig in [SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, SIGCHLD] {
            sigaddset(&defaults, sig)
        }
        posix_spawnattr_setsigdefault(&attr, &defaults)

        var env = ProcessInfo.processInfo.environment
        for (k, v) in overrides { env[k] = v }
        let argvStrings = [path] + arguments
        let envStrings = env.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        let argv: [UnsafeMutablePointer<CChar>?] = argvStrings.map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = envStrings.map { strdup($0) } + [nil]
        defer {
            for p in argv { free(p) }
            for p in envp { free(p) }
        }

        var pid: pid_t = 0
        var start = monotonicNanos()
        var rc = posix_spawn(&pid, path, &actions, &attr, argv, envp)
        // ETXTBSY: someone still has the executable open for writing (a package upgrade, or a
        // concurrent fork inherited the writer's descriptor). Brief, retry a few times.
        var retries = 0
        while rc == ETXTBSY && retries < 5 {
            retries += 1
            _ = poll(nil, 0, Int32(20 * retries))
            start = monotonicNanos()
            rc = posix_spawn(&pid, path, &actions, &attr, argv, envp)
        }
        close(outPipe[1])
        close(errPipe[1])
        guard rc == 0 else {
            close(outPipe[0])
            close(errPipe[0])
            return .failure("posix_spawn \(path): \(errnoText(rc))")
        }
        _ = fcntl(outPipe[0], F_SETFL, fcntl(outPipe[0], F_GETFL) | O_NONBLOCK)
        _ = fcntl(errPipe[0], F_SETFL, fcntl(errPipe[0], F_GETFL) | O_NONBLOCK)
        return .success(SpawnedChild(pid: pid, stdoutFD: outPipe[0], stderrFD: errPipe[0], startNanos: start))
    }

    static func monotonicNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}

/// One run's supervisor. Lives on its own thread; `cancel()` may come from any thread.
private final class Supervision: Sendable {
    let key: String
    let path: String
    let arguments: [String]
    let child: ToolRunner.SpawnedChild
    let timeout: Double
    let maxOutputBytes: Int
    let killGrace: Double
    let reapGrace: Double
    let stderrTailBytes: Int
    let release: @Sendable () -> Void
    private let cancelled = ProbeLockedBox(false)

    init(
        key: String, path: String, arguments: [String], child: ToolRunner.SpawnedChild, timeout: Double,
        maxOutputBytes: Int, killGrace: Double, reapGrace: Double, stderrTailBytes: Int,
        release: @escaping @Sendable () -> Void
    ) {
        self.key = key
        self.path = path
        self.arguments = arguments
        self.child = child
        self.timeout = timeout
        self.maxOutputBytes = maxOutputBytes
        self.killGrace = killGrace
        self.reapGrace = reapGrace
        self.stderrTailBytes = stderrTailBytes
        self.release = release
    }

    func cancel() { cancelled.withLock { $0 = true } }
    private var isCancelled: Bool { cancelled.withLock { $0 } }

    private enum Stop {
        case timedOut, tooLarge, cancelled
    }

    /// Runs on the dedicated thread. Calls `deliver` exactly once, no later than the deadline
    /// plus the kill and reap graces; then, if the child was not reaped, blocks until it is.
    func supervise(_ deliver: (ToolResult) -> Void) {
        let pid = child.pid
        let start = child.startNanos
        let deadline = start + UInt64(timeout * 1e9)
        var outFD: Int32 = child.stdoutFD
        var errFD: Int32 = child.stderrFD
        var out: [UInt8] = []
        var errTail: [UInt8] = []
        var truncated = false
        var waitStatus: Int32? = nil
        var exitedAt: UInt64? = nil
        var stop: Stop? = nil
        var leftoversInGroup = false
        var buffer = [UInt8](repeating: 0, count: 65536)

        func closeFD(_ fd: inout Int32) {
            if fd >= 0 { close(fd); fd = -1 }
        }

        loop: while true {
            if isCancelled { stop = .cancelled; break }
            let now = ToolRunner.monotonicNanos()
            if waitStatus == nil {
                if let st = Self.tryReap(pid) {
                    waitStatus = st
                    exitedAt = now
                }
            }
            if waitStatus != nil && outFD < 0 && errFD < 0 { break }
            if let exitedAt, now > exitedAt + 250_000_000 {
                // The child is gone but something it started still holds the pipes.
                leftoversInGroup = true
                break
            }
            if waitStatus == nil && now >= deadline { stop = .timedOut; break }

            let remainingMs = waitStatus == nil ? Int32(min(50, (deadline - now) / 1_000_000 + 1)) : 20
            var fds: [pollfd] = []
            if outFD >= 0 { fds.append(pollfd(fd: outFD, events: Int16(POLLIN), revents: 0)) }
            if errFD >= 0 { fds.append(pollfd(fd: errFD, events: Int16(POLLIN), revents: 0)) }
            let ready = fds.isEmpty ? poll(nil, 0, remainingMs) : poll(&fds, nfds_t(fds.count), remainingMs)
            if ready <= 0 { continue }
            for pfd in fds where pfd.revents != 0 {
                let isOut = pfd.fd == outFD
                // Drain what is there now; bounded per wakeup so the deadline is still checked.
                for _ in 0..<16 {
                    let n = buffer.withUnsafeMutableBytes { read(pfd.fd, $0.baseAddress, $0.count) }
                    if n < 0 {
                        if errno == EINTR { continue }
                        if errno == EAGAIN || errno == EWOULDBLOCK { break }
                        if isOut { closeFD(&outFD) } else { closeFD(&errFD) }
                        break
                    }
                    if n == 0 {
                        if isOut { closeFD(&outFD) } else { closeFD(&errFD) }
                        break
                    }
                    if isOut {
                        let room = maxOutputBytes - out.count
                        if n > room {
                            out.append(contentsOf: buffer[0..<max(0, room)])
                            truncated = true
                            stop = .tooLarge
                            break loop
                        }
                        out.append(contentsOf: buffer[0..<n])
                    } else {
                        errTail.append(contentsOf: buffer[0..<n])
                        if errTail.count > 2 * stderrTailBytes + 65536 {
                            errTail.removeFirst(errTail.count - stderrTailBytes)
                        }
                    }
                }
            }
        }

        // Kill what is left: the tool (on timeout/overflow/cancel) or its orphans.
        if stop != nil || waitStatus == nil {
            _ = kill(-pid, SIGTERM)
            waitStatus = waitStatus ?? Self.waitReap(pid, seconds: killGrace)
            if waitStatus == nil {
                _ = kill(-pid, SIGKILL)
                waitStatus = Self.waitReap(pid, seconds: reapGrace)
            } else {
                _ = kill(-pid, SIGKILL)  // stragglers in the group
            }
        } else if leftoversInGroup {
            _ = kill(-pid, SIGKILL)
        }
        closeFD(&outFD)
        closeFD(&errFD)

        if errTail.count > stderrTailBytes { errTail.removeFirst(errTail.count - stderrTailBytes) }
        let outcome: ToolResult.Outcome
        switch stop {
        case .timedOut: outcome = .timedOut
        case .tooLarge: outcome = .outputTooLarge
        case .cancelled: outcome = .cancelled
        case nil:
            let st = waitStatus ?? 0
            let sig = st & 0x7f
            outcome = sig == 0 ? .exited((st >> 8) & 0xff) : .signaled(sig)
        }
        let result = ToolResult(
            tool: key, executable: path, arguments: arguments, outcome: outcome,
            stdout: String(decoding: out, as: UTF8.self), stdoutTruncated: truncated,
            stderrTail: String(decoding: errTail, as: UTF8.self),
            durationSeconds: Double(ToolRunner.monotonicNanos() - start) / 1e9,
            reaped: waitStatus != nil)

        if waitStatus != nil {
            release()
            deliver(result)
            return
        }
        // Unreapable for now (uninterruptible sleep): answer the caller, then keep waiting here,
        // on this dedicated thread, so the tool stays "in flight" until the kernel lets go.
        deliver(result)
        var st: Int32 = 0
        while waitpid(pid, &st, 0) < 0 && errno == EINTR {}
        release()
    }

    /// The wait status if `pid` has exited (reaping it), else nil.
    private static func tryReap(_ pid: pid_t) -> Int32? {
        var st: Int32 = 0
        while true {
            let r = waitpid(pid, &st, WNOHANG)
            if r == pid { return st }
            if r < 0 && errno == EINTR { continue }
            if r < 0 && errno == ECHILD { return 0 }  // someone else reaped it; treat as exited 0
            return nil
        }
    }

    private static func waitReap(_ pid: pid_t, seconds: Double) -> Int32? {
        let until = ToolRunner.monotonicNanos() + UInt64(seconds * 1e9)
        while true {
            if let st = tryReap(pid) { return st }
            if ToolRunner.monotonicNanos() >= until { return nil }
            _ = poll(nil, 0, 10)
        }
    }
}
