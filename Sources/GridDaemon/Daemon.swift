import Foundation
import GridCore
import Logging
import ServiceLifecycle
import Synchronization
import UnixSignals
#if canImport(Glibc)
import Glibc
#endif

/// What every ComputeGrid executable says to `--version`.
public enum BuildInfo {
    /// The release these sources are.
    public static let version = "0.12.0"
    /// The git commit the binary was built from (`-dirty`: with uncommitted changes).
    public static let commit = buildCommit
    public static var line: String { "\(version) (commit \(commit))" }
}

/// A log level every handler of the process reads, so SIGHUP can change it at run time.
public final class SharedLogLevel: Sendable {
    private let level: Mutex<Logger.Level>
    public init(_ level: Logger.Level) { self.level = Mutex(level) }
    public var value: Logger.Level {
        get { level.withLock { $0 } }
        set { level.withLock { $0 = newValue } }
    }
}

/// Log lines as text (like swift-log's stream handler) or JSON (one object per line: `time`,
/// `level`, `label`, `message`, then the line's fields), to standard error, at the shared level.
public struct DaemonLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    let label: String
    let format: LogFormat
    let shared: SharedLogLevel
    private var text: StreamLogHandler

    public init(label: String, format: LogFormat, level: SharedLogLevel) {
        self.label = label
        self.format = format
        self.shared = level
        text = StreamLogHandler.standardError(label: label)
        text.logLevel = .trace
    }

    /// Installs it for the whole process.
    public static func bootstrap(format: LogFormat, level: SharedLogLevel) {
        LoggingSystem.bootstrap { DaemonLogHandler(label: $0, format: format, level: level) }
    }

    /// A floor set on one logger (`logger.logLevel = .warning` for a chatty library): it
    /// applies to that logger's copies only. The process-wide level is the shared one, changed
    /// through `SharedLogLevel` (SIGHUP), never through a logger.
    var floor: Logger.Level = .trace

    public var logLevel: Logger.Level {
        get { max(shared.value, floor) }
        set { floor = newValue }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        switch format {
        case .text:
            var t = text
            t.metadata = metadata
            t.log(event: event)
        case .json:
            var fields = metadata
            if let m = event.metadata { fields.merge(m) { $1 } }
            var object: [String: Any] = [
                "time": Self.timestamp(), "level": event.level.rawValue, "label": label, "message": event.message.description,
            ]
            for (k, v) in fields where object[k] == nil { object[k] = Self.json(v) }
            guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]) else { return }
            var line = data
            line.append(0x0A)
            // One write(2) per line: lines from several threads never interleave.
            line.withUnsafeBytes { _ = write(2, $0.baseAddress, $0.count) }
        }
    }

    static func json(_ v: Logger.Metadata.Value) -> Any {
        switch v {
        case .string(let s): return s
        case .stringConvertible(let c): return c.description
        case .array(let a): return a.map(json)
        case .dictionary(let d): return d.mapValues(json)
        }
    }

    static func timestamp() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var t = ts.tv_sec
        var tm = tm()
        gmtime_r(&t, &tm)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                      tm.tm_sec, ts.tv_nsec / 1_000_000)
    }
}

/// SIGHUP as a `Service`: runs `reload` on each one, until the group shuts down. Without it,
/// SIGHUP would end the process (the default action).
public struct ReloadOnHangup: Service {
    let logger: Logger
    let reload: @Sendable () -> Void
    let onReady: @Sendable () -> Void

    /// `onReady` runs once SIGHUP is trapped (send systemd's READY=1 there: a `systemctl reload`
    /// right after start then reloads instead of being lost).
    public init(logger: Logger, onReady: @escaping @Sendable () -> Void = {}, reload: @escaping @Sendable () -> Void) {
        self.logger = logger
        self.reload = reload
        self.onReady = onReady
    }

    /// Call first thing in `main`: a SIGHUP before the handler is installed is then ignored
    /// instead of ending the process (the default action).
    public static func ignoreUntilTrapped() {
        signal(SIGHUP, SIG_IGN)
    }

    public func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        onReady()
        try await withGracefulShutdownHandler {
            for await _ in signals.cancelOnGracefulShutdown() {
                logger.notice("SIGHUP: reloading")
                reload()
            }
        } onGracefulShutdown: {}
    }
}

extension ReloadOnHangup {
    /// The one log line a reload leaves: what was applied, what was refused and why (each part
    /// of a reload stands alone: a renewed certificate that does not parse does not undo the new
    /// log level or tokens), and which changed keys need a restart. At error level when
    /// something was refused, so it reaches whoever watches errors.
    public static func report(_ logger: Logger, applied: [String], refused: [String] = [], changed: [String],
                              reloadable: Set<String>) {
        let rest = changed.filter { !reloadable.contains($0) }
        var metadata: Logger.Metadata = [
            "applied": "\(applied.isEmpty ? "nothing changed" : applied.joined(separator: ", "))",
            "needs_restart": "\(rest.isEmpty ? "none" : rest.joined(separator: ", "))",
        ]
        if refused.isEmpty {
            logger.notice("configuration reloaded", metadata: metadata)
        } else {
            metadata["refused"] = "\(refused.joined(separator: "; "))"
            logger.error("configuration reloaded in part: what was refused stays as it was", metadata: metadata)
        }
    }

    /// Runs one part of a reload: its description goes to `applied`, or its error (on one
    /// line) to `refused` under `key`; the other parts go on either way.
    public static func part(_ key: String, applied: inout [String], refused: inout [String], _ body: () throws -> String?) {
        do {
            if let done = try body() { applied.append(done) }
        } catch {
            // On one line: the report is one log record, whatever the error's own layout.
            let reason = "\(error)".split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
                .filter { !$0.isEmpty }.joined(separator: " ")
            refused.append("\(key): \(reason)")
        }
    }
}

/// systemd's readiness protocol (`Type=notify`): "READY=1", "STOPPING=1", "STATUS=…" sent to
/// `$NOTIFY_SOCKET` when systemd set it; nothing otherwise.
public enum SystemdNotify {
    @discardableResult
    public static func send(_ state: String, environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        guard var path = environment["NOTIFY_SOCKET"], !path.isEmpty else { return false }
        if path.hasPrefix("@") { path = "\0" + path.dropFirst() }  // abstract namespace
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return false }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in raw.copyBytes(from: bytes) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count)
        let sent = state.withCString { s in
            withUnsafePointer(to: &addr) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, s, strlen(s), 0, $0, length) }
            }
        }
        return sent >= 0
    }
}

/// What changed between two versions of a configuration, key by key, for the SIGHUP log line.
public func changedKeys<T: Encodable>(_ old: T, _ new: T) -> [String] {
    func flat(_ v: T) -> [String: String] {
        guard let data = try? JSONEncoder().encode(v), let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return [:] }
        var out: [String: String] = [:]
        for (k, v) in obj {
            out[k] = (try? JSONSerialization.data(withJSONObject: v, options: [.sortedKeys, .fragmentsAllowed]))
                .map { String(decoding: $0, as: UTF8.self) } ?? "\(v)"
        }
        return out
    }
    let a = flat(old), b = flat(new)
    return Set(a.keys).union(b.keys).filter { a[$0] != b[$0] }.sorted()
}
