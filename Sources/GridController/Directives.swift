import Foundation
import GridCore
import GridProtocol
import GridStore
import GridTransport
import Logging

/// What a controller instance asks its shell to do. Instances decide; shells perform. Tests
/// assert on these, the way postgres-nio's pool state machine tests assert on actions.
public enum ControllerDirective: Sendable {
    /// Send a message. `replyTo`/`delimited` answer a request the way it came.
    case send(Body, to: Peer, replyTo: UInt64 = 0, delimited: Bool = false)
    /// Record a change durably. The shell commits every change of a batch in one transaction
    /// before it performs any `send` of that batch: nothing is acknowledged before its commit.
    case persist(StoreMutation)
    case log(LogEvent)
    /// A service's rotation at the region's gateway changed: these replicas, and only these, get
    /// its requests (SERVICES.md, "Gateway").
    case routes(String, [ServiceRoute])
}

public struct LogEvent: Sendable {
    public var level: Logger.Level
    public var message: String
    public var metadata: [String: String]
    public init(_ level: Logger.Level, _ message: String, _ metadata: [String: String] = [:]) {
        self.level = level
        self.message = message
        self.metadata = metadata
    }
}

/// Who asked, so answers go back the way the question came.
public struct Origin: Sendable {
    public var peer: Peer
    public var sequence: UInt64
    public var delimited: Bool
    /// Whom the sender's CURVE key speaks for; nil on a socket without authentication (and for
    /// the controller's own in-process asks and its parent).
    public var principal: Principal?
    public init(peer: Peer, sequence: UInt64 = 0, delimited: Bool = false, principal: Principal? = nil) {
        self.peer = peer
        self.sequence = sequence
        self.delimited = delimited
        self.principal = principal
    }

    /// The account the asker acts for only (an operator key bound to a tenant); nil = any.
    public var tenant: String? { principal?.tenant }

    /// Whether the asker may see and act on work charged to `account` (`JobSpec.accountName`).
    public func owns(account: String) -> Bool { tenant.map { $0 == account } ?? true }
}

extension ControllerDirective {
    static func reply(_ body: Body, to origin: Origin) -> ControllerDirective {
        .send(body, to: origin.peer, replyTo: origin.sequence, delimited: origin.delimited)
    }

    static func error(_ code: String, _ message: String, to origin: Origin, correlation: UInt64 = 0) -> ControllerDirective {
        var e = Wire.ErrorReply()
        e.code = code
        e.message = message
        e.correlation = correlation
        return reply(.errorReply(e), to: origin)
    }

    public var sentBody: Body? {
        if case .send(let body, _, _, _) = self { return body }
        return nil
    }

    public var mutation: StoreMutation? {
        if case .persist(let m) = self { return m }
        return nil
    }
}

/// Due times in a binary min-heap. Entries are never removed early: a fired entry that no longer
/// applies (the node spoke again, the assignment was acknowledged) is checked and dropped by its
/// handler, which keeps every operation O(log n) with no bookkeeping per heartbeat.
public struct TimerHeap<Timer: Sendable>: Sendable {
    /// Heap entries are plain values (no reference counting while sifting); the timers
    /// themselves (which hold ids) sit in `payloads`, reused through a free list.
    struct Entry: Sendable {
        var due: Int64
        var order: UInt64
        var slot: Int32
    }
    var entries: [Entry] = []
    var payloads: [Timer?] = []
    var freeSlots: [Int32] = []
    var counter: UInt64 = 0

    public init() {}

    public var count: Int { entries.count }
    public var nextDue: Int64? { entries.first?.due }

    public mutating func schedule(_ timer: Timer, at due: Int64) {
        counter &+= 1
        let slot: Int32
        if let free = freeSlots.popLast() {
            slot = free
            payloads[Int(slot)] = timer
        } else {
            slot = Int32(payloads.count)
            payloads.append(timer)
        }
        entries.append(Entry(due: due, order: counter, slot: slot))
        var i = entries.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard less(entries[i], entries[parent]) else { break }
            entries.swapAt(i, parent)
            i = parent
        }
    }

    /// Removes and returns the earliest timer due at or before `now`.
    public mutating func popDue(_ now: Int64) -> Timer? {
        guard let first = entries.first, first.due <= now else { return nil }
        let last = entries.removeLast()
        if !entries.isEmpty {
            entries[0] = last
            var i = 0
            let n = entries.count
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < n, less(entries[l], entries[m]) { m = l }
                if r < n, less(entries[r], entries[m]) { m = r }
                if m == i { break }
                entries.swapAt(i, m)
                i = m
            }
        }
        let timer = payloads[Int(first.slot)]
        payloads[Int(first.slot)] = nil
        freeSlots.append(first.slot)
        return timer
    }

    func less(_ a: Entry, _ b: Entry) -> Bool { a.due != b.due ? a.due < b.due : a.order < b.order }
}

/// Paging of `QUERY JOBS` and `QUERY NODES`: `offset`, `limit` (0 = 1000, at most 10,000),
/// and the reply's `total` and `next_offset` (0 on the last page).
enum QueryPaging {
    /// `JOBS` (a page, oldest submission first) or `JOB` (one); false when that one is unknown.
    /// `tenant`: only jobs charged to that account exist for the asker (another's is not found).
    static func answerJobs(_ jobs: RecordTable<JobID, JobRecord>, _ m: Wire.Query, _ reply: inout Wire.QueryReply, tenant: String? = nil) -> Bool {
        if m.kind == .job {
            guard let job = jobs[JobID(m.jobID)], tenant.map({ job.spec.accountName == $0 }) ?? true else { return false }
            reply.jobs = [Wire.Job(job)]
            return true
        }
        // Sorted by (submission, id) as keys, not as whole records: a page of a 100,000-job
        // list sorted and copied every record (~600 bytes each) on the loop thread each time.
        var keys: [(at: Date, id: JobID)] = []
        keys.reserveCapacity(jobs.count)
        for (id, job) in jobs where tenant.map({ job.spec.accountName == $0 }) ?? true { keys.append((job.submittedAt, id)) }
        keys.sort { $0.at != $1.at ? $0.at < $1.at : $0.id < $1.id }
        reply.jobs = page(keys, m, &reply).compactMap { jobs[$0.id].map(Wire.Job.init) }
        return true
    }

    static func page<T>(_ all: [T], _ m: Wire.Query, _ reply: inout Wire.QueryReply) -> ArraySlice<T> {
        let size = Int(m.limit == 0 ? 1000 : min(m.limit, 10_000))
        let offset = Int(min(m.offset, UInt64(all.count)))
        let page = all[offset...].prefix(size)
        reply.total = UInt64(all.count)
        reply.nextOffset = offset + page.count < all.count ? UInt64(offset + page.count) : 0
        return page
    }
}
