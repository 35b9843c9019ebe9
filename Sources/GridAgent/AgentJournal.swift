import Foundation
import GridCore
import GridProtocol
#if canImport(Glibc)
import Glibc
#endif

/// One line of the agent's journal. The journal is what makes an agent restart safe: an
/// assignment is journalled before it is acknowledged, the child's identity before anything is
/// reported about it, and every status update until the region acknowledges it.
public struct JournalRecord: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable {
        /// Accepted (written before the ack); `payload` is the protobuf `Assignment`.
        case accepted
        /// The job's process exists: the shim's pid and its start time in clock ticks since
        /// boot (`/proc/PID/stat` field 22), together robust to PID reuse.
        case started
        /// The agent decided to stop the run (cancel, time limit, lease lapsed, agent stopped).
        case stopping
        /// The run is over; a `status` record with its final state follows in the same write.
        case ended
        /// A status update not yet acknowledged; `payload` is the protobuf `StatusUpdate`.
        case status
        /// The region acknowledged `updateID`.
        case acked
    }

    public var kind: Kind
    public var assignment: String?
    public var payload: Data?
    public var pid: Int32?
    public var startTicks: UInt64?
    public var reason: EndReason?
    public var state: JobState?
    public var updateID: String?
    /// `started`: the agent's monotonic clock (CLOCK_MONOTONIC ms) when the run started, so a
    /// run found again after a restart keeps its time limit.
    public var atMs: Int64?

    public init(kind: Kind, assignment: String? = nil, payload: Data? = nil, pid: Int32? = nil, startTicks: UInt64? = nil,
                reason: EndReason? = nil, state: JobState? = nil, updateID: String? = nil, atMs: Int64? = nil) {
        self.atMs = atMs
        self.kind = kind
        self.assignment = assignment
        self.payload = payload
        self.pid = pid
        self.startTicks = startTicks
        self.reason = reason
        self.state = state
        self.updateID = updateID
    }

    public static func accepted(_ a: Wire.Assignment) -> JournalRecord {
        JournalRecord(kind: .accepted, assignment: a.assignmentID, payload: (try? a.serializedData()) ?? Data())
    }
    public static func status(_ u: Wire.StatusUpdate) -> JournalRecord {
        JournalRecord(kind: .status, assignment: u.assignmentID, payload: (try? u.serializedData()) ?? Data(), updateID: u.updateID)
    }
}

/// What replaying the journal yields: the state an agent had when it stopped, whatever the way.
public struct JournalState: Sendable, Equatable {
    public struct Job: Sendable, Equatable {
        public var assignment: Wire.Assignment
        public var pid: Int32?
        public var startTicks: UInt64?
        public var stopReason: EndReason?
        public var startedAtMs: Int64?
        public init(assignment: Wire.Assignment, pid: Int32? = nil, startTicks: UInt64? = nil, stopReason: EndReason? = nil,
                    startedAtMs: Int64? = nil) {
            self.startedAtMs = startedAtMs
            self.assignment = assignment
            self.pid = pid
            self.startTicks = startTicks
            self.stopReason = stopReason
        }
    }
    /// Accepted assignments whose run has not ended, in acceptance order.
    public var jobs: [Job] = []
    /// Status updates not acknowledged, oldest first.
    public var pending: [Wire.StatusUpdate] = []
    /// Assignments that ended here, newest last (a resent assignment is not run again).
    public var finished: [(AssignmentID, JobState)] = []
    /// Lines that could not be read (a torn last write after a crash, or damage).
    public var unreadable = 0

    public init() {}

    public static func == (a: JournalState, b: JournalState) -> Bool {
        a.jobs == b.jobs && a.pending == b.pending && a.unreadable == b.unreadable
            && a.finished.map(\.0) == b.finished.map(\.0) && a.finished.map(\.1) == b.finished.map(\.1)
    }

    /// Folds records in order. Pure: the replay unit tests run it on hand-written records.
    public static func replay(_ records: [JournalRecord], unreadable: Int = 0, finishedLimit: Int = 10_000) -> JournalState {
        var jobs: [String: Job] = [:]
        var order: [String] = []
        var pending: [String: Wire.StatusUpdate] = [:]
        var pendingOrder: [String] = []
        var finished: [(AssignmentID, JobState)] = []
        for r in records {
            switch r.kind {
            case .accepted:
                guard let id = r.assignment, let data = r.payload, let a = try? Wire.Assignment(serializedBytes: data),
                      jobs[id] == nil, !finished.contains(where: { $0.0.rawValue == id }) else { continue }
                jobs[id] = Job(assignment: a)
                order.append(id)
            case .started:
                guard let id = r.assignment else { continue }
                jobs[id]?.pid = r.pid
                jobs[id]?.startTicks = r.startTicks
                jobs[id]?.startedAtMs = r.atMs
            case .stopping:
                guard let id = r.assignment, jobs[id]?.stopReason == nil else { continue }
                jobs[id]?.stopReason = r.reason
            case .ended:
                guard let id = r.assignment else { continue }
                if jobs.removeValue(forKey: id) != nil { order.removeAll { $0 == id } }
                finished.append((AssignmentID(id), r.state ?? .failed))
            case .status:
                guard let data = r.payload, let u = try? Wire.StatusUpdate(serializedBytes: data) else { continue }
                if pending[u.updateID] == nil { pendingOrder.append(u.updateID) }
                pending[u.updateID] = u
            case .acked:
                guard let key = r.updateID, pending.removeValue(forKey: key) != nil else { continue }
                pendingOrder.removeAll { $0 == key }
            }
        }
        var s = JournalState()
        s.jobs = order.compactMap { jobs[$0] }
        s.pending = pendingOrder.compactMap { pending[$0] }
        s.finished = Array(finished.suffix(finishedLimit))
        s.unreadable = unreadable
        return s
    }

    /// The records that rebuild this state, for compaction.
    public var records: [JournalRecord] {
        var out: [JournalRecord] = []
        for (id, state) in finished {
            out.append(JournalRecord(kind: .ended, assignment: id.rawValue, state: state))
        }
        for j in jobs {
            out.append(.accepted(j.assignment))
            if let pid = j.pid {
                out.append(JournalRecord(kind: .started, assignment: j.assignment.assignmentID, pid: pid, startTicks: j.startTicks,
                                         atMs: j.startedAtMs))
            }
            if let r = j.stopReason { out.append(JournalRecord(kind: .stopping, assignment: j.assignment.assignmentID, reason: r)) }
        }
        for u in pending { out.append(.status(u)) }
        return out
    }
}

/// Why the journal could not be used.
public struct JournalError: Error, CustomStringConvertible {
    public var path: String
    public var what: String
    public var description: String { "agent journal \(path): \(what)" }
}

/// The journal file: JSON lines, appended and fsynced once per batch (the shell writes a
/// turn's records, then syncs, then sends). On open it is replayed and rewritten compactly
/// (temporary file, fsync, rename, directory fsync), and again whenever it has grown past
/// `compactAfter` lines.
public final class AgentJournal {
    public let path: String
    var fd: Int32 = -1
    var buffer: [UInt8] = []
    public private(set) var lines = 0
    public var compactAfter = 20_000
    let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return e
    }()

    /// Opens (creating) the journal and returns what it held.
    public init(path: String) throws {
        self.path = path
        let dir = URL(fileURLWithPath: path).deletingLastPathComponent()
        do { try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true) } catch {
            throw JournalError(path: path, what: "cannot create directory \(dir.path): \(error.localizedDescription)")
        }
    }

    /// Reads every record; unreadable lines are counted and skipped.
    public func load() throws -> JournalState {
        guard FileManager.default.fileExists(atPath: path) else { return JournalState() }
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw JournalError(path: path, what: "cannot read: \(error.localizedDescription)")
        }
        let decoder = JSONDecoder()
        var records: [JournalRecord] = []
        var bad = 0
        for line in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true) {
            if let r = try? decoder.decode(JournalRecord.self, from: Data(line)) { records.append(r) } else { bad += 1 }
        }
        return JournalState.replay(records, unreadable: bad)
    }

    /// Replaces the file with `state`'s records and opens it for appending.
    public func rewrite(_ state: JournalState) throws {
        if fd >= 0 { close(fd); fd = -1 }
        let tmp = path + ".tmp"
        var bytes: [UInt8] = []
        for r in state.records { bytes += encodeLine(r) }
        let t = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard t >= 0 else { throw JournalError(path: tmp, what: "cannot create: \(String(cString: strerror(errno)))") }
        defer { close(t) }
        try writeAll(t, bytes, file: tmp)
        guard fsync(t) == 0 else { throw JournalError(path: tmp, what: "fsync failed: \(String(cString: strerror(errno)))") }
        guard rename(tmp, path) == 0 else { throw JournalError(path: path, what: "cannot replace: \(String(cString: strerror(errno)))") }
        syncDirectory()
        fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC)
        guard fd >= 0 else { throw JournalError(path: path, what: "cannot open for append: \(String(cString: strerror(errno)))") }
        lines = state.records.count
    }

    /// Queues a record; nothing is durable until `sync`.
    public func append(_ r: JournalRecord) {
        buffer += encodeLine(r)
        lines += 1
    }

    public var hasUnsynced: Bool { !buffer.isEmpty }

    /// Writes the queued records and fsyncs once. On failure (disk full) a partial write is cut
    /// off again and the records stay queued for the next attempt.
    public func sync() throws {
        guard !buffer.isEmpty else { return }
        if fd < 0 {
            fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw JournalError(path: path, what: "cannot open: \(String(cString: strerror(errno)))") }
        }
        let end = lseek(fd, 0, SEEK_END)
        do {
            try writeAll(fd, buffer, file: path)
            guard fdatasync(fd) == 0 else { throw JournalError(path: path, what: "fsync failed: \(String(cString: strerror(errno)))") }
        } catch {
            if end >= 0 { _ = ftruncate(fd, end) }
            throw error
        }
        buffer.removeAll(keepingCapacity: true)
    }

    deinit { if fd >= 0 { close(fd) } }

    func encodeLine(_ r: JournalRecord) -> [UInt8] {
        var bytes = [UInt8]((try? encoder.encode(r)) ?? Data())
        bytes.append(UInt8(ascii: "\n"))
        return bytes
    }

    func writeAll(_ fd: Int32, _ bytes: [UInt8], file: String) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw JournalError(path: file, what: "write failed: \(String(cString: strerror(errno))) (disk full?)")
            }
            offset += n
        }
    }

    func syncDirectory() {
        let dir = URL(fileURLWithPath: path).deletingLastPathComponent().path
        let d = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if d >= 0 { fsync(d); close(d) }
    }
}
