import Foundation
import GRDB
import GridCore
import GridProtocol
import SwiftProtobuf

/// Something the store could not do, with the database file named so an operator can act.
public struct StoreError: Error, CustomStringConvertible {
    public let path: String
    public let operation: String
    public let underlying: String
    public var description: String { "store \(path): \(operation) failed: \(underlying)" }
}

/// A message waiting in the outbox until its receiver acknowledges it. Written in the same
/// transaction as the state change that produced it, so nothing accepted is lost by a crash.
public struct OutboxItem: Sendable, Hashable {
    /// Idempotency key: the receiver deduplicates on it (job id, update id...).
    public var key: String
    /// Where it goes: "national", a region id, or a node id.
    public var destination: String
    /// Wire message type name, e.g. "JOB_FORWARD".
    public var type: String
    public var payload: OutboxPayload
    public var createdAt: Date
    public var attempts: Int
    public var lastAttemptAt: Date?

    public init(key: String, destination: String, type: String, payload: [UInt8], createdAt: Date, attempts: Int = 0, lastAttemptAt: Date? = nil) {
        self.init(key: key, destination: destination, type: type, message: .encoded(payload), createdAt: createdAt,
                  attempts: attempts, lastAttemptAt: lastAttemptAt)
    }

    public init(key: String, destination: String, type: String, message: OutboxPayload, createdAt: Date, attempts: Int = 0, lastAttemptAt: Date? = nil) {
        self.key = key
        self.destination = destination
        self.type = type
        self.payload = message
        self.createdAt = createdAt
        self.attempts = attempts
        self.lastAttemptAt = lastAttemptAt
    }
}

/// An outbox item's message: typed, as a controller's logic produced it, and encoded only when
/// the store writes it (in the shell's commit, not on the decision path); or the bytes read
/// back from the store.
public enum OutboxPayload: Sendable, Hashable {
    case encoded([UInt8])
    case statusUpdate(Wire.StatusUpdate)

    /// The protobuf encoding of the message (empty if it cannot be encoded).
    public var bytes: [UInt8] {
        switch self {
        case .encoded(let b): return b
        case .statusUpdate(let u): return (try? u.serializedBytes()) ?? []
        }
    }
}

/// An assignment of a job to a node, as the region tracks it.
public struct AssignmentRecord: Sendable, Hashable {
    public var id: AssignmentID
    public var job: JobID
    public var node: NodeID
    public var epoch: Int
    public var deviceIDs: [String]
    public var state: AssignmentState
    public var createdAt: Date

    public init(id: AssignmentID, job: JobID, node: NodeID, epoch: Int, deviceIDs: [String], state: AssignmentState, createdAt: Date) {
        self.id = id
        self.job = job
        self.node = node
        self.epoch = epoch
        self.deviceIDs = deviceIDs
        self.state = state
        self.createdAt = createdAt
    }
}

/// SQLite persistence for one controller. One file per controller; WAL with synchronous=FULL
/// so anything acknowledged to a peer survives power loss.
public final class GridStore: Sendable {
    public let path: String
    let pool: DatabasePool

    public init(path: String) throws {
        self.path = path
        var config = Configuration()
        config.busyMode = .timeout(5)
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
            try db.execute(sql: "PRAGMA foreign_keys = ON")
        }
        do {
            let dir = URL(fileURLWithPath: path).deletingLastPathComponent()
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            pool = try DatabasePool(path: path, configuration: config)
            try Self.migrator.migrate(pool)
        } catch {
            throw StoreError(path: path, operation: "open/migrate", underlying: String(describing: error))
        }
    }

    /// Versioned schema. Append migrations; never edit a released one.
    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1-initial") { db in
            try db.execute(sql: """
                CREATE TABLE nodes (
                    id TEXT PRIMARY KEY NOT NULL,
                    hostname TEXT NOT NULL,
                    state TEXT NOT NULL,
                    devices BLOB NOT NULL,
                    last_seen_ms INTEGER NOT NULL,
                    registered_ms INTEGER NOT NULL
                );
                CREATE TABLE jobs (
                    id TEXT PRIMARY KEY NOT NULL,
                    record BLOB NOT NULL,
                    state TEXT NOT NULL,
                    region TEXT,
                    node TEXT,
                    submitted_ms INTEGER NOT NULL,
                    updated_ms INTEGER NOT NULL
                );
                CREATE INDEX jobs_state ON jobs(state);
                CREATE TABLE assignments (
                    id TEXT PRIMARY KEY NOT NULL,
                    job_id TEXT NOT NULL REFERENCES jobs(id),
                    node_id TEXT NOT NULL,
                    epoch INTEGER NOT NULL,
                    device_ids BLOB NOT NULL,
                    state TEXT NOT NULL,
                    created_ms INTEGER NOT NULL
                );
                CREATE INDEX assignments_node ON assignments(node_id, state);
                CREATE TABLE outbox (
                    key TEXT PRIMARY KEY NOT NULL,
                    destination TEXT NOT NULL,
                    type TEXT NOT NULL,
                    payload BLOB NOT NULL,
                    created_ms INTEGER NOT NULL,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    last_attempt_ms INTEGER
                );
                CREATE INDEX outbox_destination ON outbox(destination, created_ms);
                CREATE TABLE applied_updates (
                    id TEXT PRIMARY KEY NOT NULL,
                    applied_ms INTEGER NOT NULL
                );
                CREATE TABLE regions (
                    id TEXT PRIMARY KEY NOT NULL,
                    summary BLOB NOT NULL,
                    last_seen_ms INTEGER NOT NULL
                );
                CREATE TABLE meta (
                    key TEXT PRIMARY KEY NOT NULL,
                    value TEXT NOT NULL
                );
                """)
        }
        m.registerMigration("v2-log") { db in
            // The store is the log the in-memory state is rebuilt from: indexes for recovery
            // (non-terminal jobs, active assignments) and for pruning history by age.
            try db.execute(sql: """
                CREATE INDEX IF NOT EXISTS jobs_updated ON jobs(updated_ms);
                CREATE INDEX IF NOT EXISTS assignments_state ON assignments(state, created_ms);
                CREATE INDEX IF NOT EXISTS applied_updates_age ON applied_updates(applied_ms);
                ALTER TABLE assignments ADD COLUMN updated_ms INTEGER NOT NULL DEFAULT 0;
                """)
        }
        m.registerMigration("v3-cordon") { db in
            // An operator's cordon on a node (JSON NodeCordon; NULL = none).
            try db.execute(sql: "ALTER TABLE nodes ADD COLUMN cordon BLOB")
        }
        m.registerMigration("v4-accounts") { db in
            // Each account's use in this region: all-time and decayed (fair share) totals.
            try db.execute(sql: """
                CREATE TABLE account_usage (
                    account TEXT PRIMARY KEY,
                    device_seconds REAL NOT NULL,
                    gcu_seconds REAL NOT NULL,
                    decayed_device_seconds REAL NOT NULL,
                    decayed_gcu_seconds REAL NOT NULL,
                    updated_ms INTEGER NOT NULL
                );
                """)
        }
        m.registerMigration("v5-services") { db in
            // The national scheduler's services (JSON ServiceRecord), one row each.
            try db.execute(sql: "CREATE TABLE services (name TEXT PRIMARY KEY, record BLOB NOT NULL, updated_ms INTEGER NOT NULL)")
        }
        m.registerMigration("v6-security") { db in
            // Keys enrolled over the wire (KEY_CONTROL), and the audit log of operator actions.
            try db.execute(sql: """
                CREATE TABLE enrolled_keys (
                    public_key TEXT PRIMARY KEY,
                    role TEXT NOT NULL,
                    name TEXT NOT NULL,
                    access_right TEXT NOT NULL,
                    enrolled_ms INTEGER NOT NULL,
                    enrolled_by TEXT NOT NULL
                );
                CREATE TABLE audit (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    at_ms INTEGER NOT NULL,
                    who TEXT NOT NULL,
                    action TEXT NOT NULL,
                    target TEXT NOT NULL,
                    detail TEXT NOT NULL
                );
                """)
        }
        m.registerMigration("v7-tenants") { db in
            // An enrolled operator key may be bound to one account (docs/security.md, "Tenants").
            try db.execute(sql: "ALTER TABLE enrolled_keys ADD COLUMN tenant TEXT NOT NULL DEFAULT ''")
            // A node dedicated to accounts (its agent's run_as), comma-separated; '' = any.
            try db.execute(sql: "ALTER TABLE nodes ADD COLUMN accounts TEXT NOT NULL DEFAULT ''")
        }
        m.registerMigration("v8-job-spec") { db in
            // A job's spec never changes after it is created: kept in its own column, written
            // once, so each change of the job rewrites only the rest (`saveJob`). NULL in rows
            // written before, whose record still holds it.
            try db.execute(sql: "ALTER TABLE jobs ADD COLUMN spec BLOB")
        }
        return m
    }

    /// Applies a batch of changes in one transaction: one fsync for the whole batch. Either all
    /// of them are stored or none is; on error nothing may be acknowledged.
    public func commit(_ batch: [StoreMutation]) throws {
        guard !batch.isEmpty else { return }
        let writes = Self.coalesced(batch)
        try wrap("commit \(batch.count) change(s)") {
            try pool.write { db in
                let tx = StoreTransaction(db: db)
                for m in writes { try tx.apply(m) }
            }
        }
    }

    /// A job saved more than once in one batch (placed, then running, then done, within one
    /// batch of messages) is written once, with its last record, where it was first saved: the
    /// rows that reference it (assignments) still find it, and the whole record is encoded and
    /// written once instead of each time. The stored result is the same as writing every save in
    /// order, since a save replaces the whole row; a `.prune` (the only mutation that deletes
    /// job rows) ends the span over which saves are merged.
    static func coalesced(_ batch: [StoreMutation]) -> [StoreMutation] {
        var out: [StoreMutation] = []
        out.reserveCapacity(batch.count)
        var firstSave: [JobID: Int] = [:]
        for m in batch {
            switch m {
            case .job(let j):
                if let i = firstSave[j.id] { out[i] = m } else {
                    firstSave[j.id] = out.count
                    out.append(m)
                }
            case .prune:
                firstSave.removeAll(keepingCapacity: true)
                out.append(m)
            default:
                out.append(m)
            }
        }
        return out
    }

    /// Names of the migrations applied, oldest first (for tests and `gridctl`).
    public func appliedMigrations() throws -> [String] {
        try wrap("read migrations") { try pool.read { try Self.migrator.appliedMigrations($0) } }
    }

    /// SQLite's own integrity check; "ok" when the file is sound.
    public func integrityCheck() throws -> String {
        try wrap("integrity_check") { try pool.read { try String.fetchOne($0, sql: "PRAGMA integrity_check") ?? "" } }
    }

    /// Reads a PRAGMA value as text (journal_mode, synchronous...), for checks and diagnostics.
    public func pragma(_ name: String) throws -> String {
        guard name.allSatisfy({ $0.isLetter || $0 == "_" }) else {
            throw StoreError(path: path, operation: "pragma", underlying: "invalid pragma name '\(name)'")
        }
        return try wrap("pragma \(name)") { try pool.read { try String.fetchOne($0, sql: "PRAGMA \(name)") ?? "" } }
    }

    func wrap<T>(_ op: String, _ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as StoreError { throw e } catch {
            throw StoreError(path: path, operation: op, underlying: String(describing: error))
        }
    }

    /// Runs `body` in one write transaction: all of it is stored, or none of it.
    public func write<T>(_ op: String, _ body: (StoreTransaction) throws -> T) throws -> T {
        try wrap(op) { try pool.write { db in try body(StoreTransaction(db: db)) } }
    }

    public func read<T>(_ op: String, _ body: (StoreTransaction) throws -> T) throws -> T {
        try wrap(op) { try pool.read { db in try body(StoreTransaction(db: db)) } }
    }
}

let jsonEncoder: JSONEncoder = {
    let e = JSONEncoder()
    e.dateEncodingStrategy = .millisecondsSince1970
    e.outputFormatting = [.sortedKeys]
    return e
}()

let jsonDecoder: JSONDecoder = {
    let d = JSONDecoder()
    d.dateDecodingStrategy = .millisecondsSince1970
    return d
}()

/// Typed access inside one transaction.
public struct StoreTransaction {
    let db: Database

    /// Runs a statement compiled once per connection and reused (compiling is most of the cost
    /// of a small write).
    func run(sql: String, arguments: StatementArguments = StatementArguments()) throws {
        try db.cachedStatement(sql: sql).execute(arguments: arguments)
    }

    // MARK: nodes

    public func upsertNode(_ n: NodeRecord) throws {
        try run(
            sql: """
                INSERT INTO nodes (id, hostname, state, devices, last_seen_ms, registered_ms, accounts)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(id) DO UPDATE SET hostname = excluded.hostname, state = excluded.state,
                    devices = excluded.devices, last_seen_ms = excluded.last_seen_ms, accounts = excluded.accounts
                """,
            arguments: [n.id.rawValue, n.hostname, n.state.rawValue, try Self.encodeDevices(n.devices),
                        n.lastSeen.unixMs, n.registeredAt.unixMs, n.accounts.joined(separator: ",")])
    }

    /// Device ids of an assignment: 0x01, then each id as a 4-byte little-endian length and
    /// its UTF-8 bytes (any id survives, whatever an agent reported). Rows before this
    /// version are JSON.
    static func encodeIDs(_ ids: [String]) -> Data {
        var data = Data([0x01])
        for id in ids {
            let bytes = Array(id.utf8)
            let n = UInt32(bytes.count)
            data.append(contentsOf: [UInt8(n & 0xff), UInt8((n >> 8) & 0xff), UInt8((n >> 16) & 0xff), UInt8(n >> 24)])
            data.append(contentsOf: bytes)
        }
        return data
    }

    static func decodeIDs(_ data: Data) throws -> [String] {
        guard data.first == 0x01 else { return try jsonDecoder.decode([String].self, from: data) }
        let bytes = Array(data)
        var ids: [String] = []
        var i = 1
        while i + 4 <= bytes.count {
            let n = Int(bytes[i]) | Int(bytes[i + 1]) << 8 | Int(bytes[i + 2]) << 16 | Int(bytes[i + 3]) << 24
            i += 4
            guard i + n <= bytes.count else { break }
            ids.append(String(decoding: bytes[i..<(i + n)], as: UTF8.self))
            i += n
        }
        return ids
    }

    /// A job's record: protobuf behind a 0x02 byte, without its spec (which is in the `spec`
    /// column, protobuf behind 0x01). Rows written before hold 0x01 and the whole job, or JSON.
    static func encodeJob(_ j: JobRecord) throws -> Data {
        var data = Data([0x02])
        data.append(try Wire.Job(j, withSpec: false).serializedData())
        return data
    }

    static func encodeSpec(_ spec: JobSpec) throws -> Data {
        var data = Data([0x01])
        data.append(try Wire.JobSpec(spec).serializedData())
        return data
    }

    static func decodeJob(_ data: Data, spec: Data? = nil) throws -> JobRecord {
        switch data.first {
        case 0x02:
            var w = try Wire.Job(serializedBytes: data.dropFirst())
            guard let spec, spec.first == 0x01 else {
                throw StoreError(path: "jobs", operation: "read job \(w.jobID)",
                                 underlying: "its record has no spec and the spec column is empty (damaged row); restore from a backup")
            }
            w.spec = try Wire.JobSpec(serializedBytes: spec.dropFirst())
            return try w.record()
        case 0x01:
            return try Wire.Job(serializedBytes: data.dropFirst()).record()
        default:
            return try jsonDecoder.decode(JobRecord.self, from: data)
        }
    }

    static func decodeJob(_ row: Row) throws -> JobRecord {
        try decodeJob(row["record"], spec: row["spec"])
    }

    /// Devices are stored as protobuf (`DeviceList`) behind a 0x01 byte: about 20x faster to
    /// write than JSON, which rows written before this version hold (they start with '[').
    static func encodeDevices(_ devices: [DeviceInventory]) throws -> Data {
        var list = Wire.DeviceList()
        list.devices = devices.map(Wire.Device.init)
        var data = Data([0x01])
        data.append(try list.serializedData())
        return data
    }

    static func decodeDevices(_ data: Data) throws -> [DeviceInventory] {
        if data.first == 0x01 {
            return try Wire.DeviceList(serializedBytes: data.dropFirst()).devices.map(\.inventory)
        }
        return try jsonDecoder.decode([DeviceInventory].self, from: data)
    }

    public func setNodeState(_ id: NodeID, _ state: NodeState) throws {
        try run(sql: "UPDATE nodes SET state = ? WHERE id = ?", arguments: [state.rawValue, id.rawValue])
    }

    public func nodes(region: RegionID) throws -> [NodeRecord] {
        try Row.fetchAll(db, sql: "SELECT * FROM nodes ORDER BY id").map { row in
            var n = NodeRecord(
                id: NodeID(row["id"]), region: region, hostname: row["hostname"],
                state: NodeState(rawValue: row["state"]) ?? .lost,
                devices: try Self.decodeDevices(row["devices"] as Data),
                lastSeen: Date(ms: row["last_seen_ms"]), registeredAt: Date(ms: row["registered_ms"]))
            if let data = row["cordon"] as Data? { n.cordon = try? JSONDecoder().decode(NodeCordon.self, from: data) }
            n.accounts = (row["accounts"] as String? ?? "").split(separator: ",").map(String.init)
            return n
        }
    }

    // MARK: jobs

    /// Inserts the job unless one with the same id exists; returns what is stored either way.
    public func insertJobIfAbsent(_ j: JobRecord) throws -> (record: JobRecord, inserted: Bool) {
        if let existing = try job(j.id) { return (existing, false) }
        try insertJob(j, record: try Self.encodeJob(j))
        return (j, true)
    }

    /// A job's spec is written when its row is (it never changes after); each later save
    /// rewrites the rest only. (Encoding the spec each time was most of a save.)
    public func saveJob(_ j: JobRecord) throws {
        let record = try Self.encodeJob(j)
        try run(
            sql: """
                UPDATE jobs SET record = ?, state = ?, region = ?, node = ?, updated_ms = ?
                WHERE id = ? AND spec IS NOT NULL
                """,
            arguments: [record, j.state.rawValue, j.region?.rawValue, j.node?.rawValue, j.updatedAt.unixMs, j.id.rawValue])
        guard db.changesCount == 0 else { return }
        // New, or written before the spec had its column.
        try insertJob(j, record: record)
    }

    func insertJob(_ j: JobRecord, record: Data) throws {
        try run(
            sql: """
                INSERT INTO jobs (id, record, spec, state, region, node, submitted_ms, updated_ms)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(id) DO UPDATE SET record = excluded.record, spec = excluded.spec, state = excluded.state,
                    region = excluded.region, node = excluded.node, updated_ms = excluded.updated_ms
                """,
            arguments: [j.id.rawValue, record, try Self.encodeSpec(j.spec), j.state.rawValue, j.region?.rawValue,
                        j.node?.rawValue, j.submittedAt.unixMs, j.updatedAt.unixMs])
    }

    public func job(_ id: JobID) throws -> JobRecord? {
        guard let row = try Row.fetchOne(db, sql: "SELECT record, spec FROM jobs WHERE id = ?", arguments: [id.rawValue])
        else { return nil }
        return try Self.decodeJob(row)
    }

    /// Jobs, newest submission last; `states` filters when non-empty.
    public func jobs(states: [JobState] = [], limit: Int = 10_000) throws -> [JobRecord] {
        let rows: [Row]
        if states.isEmpty {
            rows = try Row.fetchAll(db, sql: "SELECT record, spec FROM jobs ORDER BY submitted_ms, id LIMIT ?", arguments: [limit])
        } else {
            let marks = databaseQuestionMarks(count: states.count)
            var args = StatementArguments(states.map(\.rawValue))
            args += [limit]
            rows = try Row.fetchAll(
                db, sql: "SELECT record, spec FROM jobs WHERE state IN (\(marks)) ORDER BY submitted_ms, id LIMIT ?",
                arguments: args)
        }
        return try rows.map { try Self.decodeJob($0) }
    }

    public func countJobs(state: JobState) throws -> Int {
        try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM jobs WHERE state = ?", arguments: [state.rawValue]) ?? 0
    }

    // MARK: assignments

    /// Inserts or updates an assignment (its state is the only field that changes).
    public func saveAssignment(_ a: AssignmentRecord, at now: Date) throws {
        try run(
            sql: """
                INSERT INTO assignments (id, job_id, node_id, epoch, device_ids, state, created_ms, updated_ms)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(id) DO UPDATE SET state = excluded.state, updated_ms = excluded.updated_ms
                """,
            arguments: [a.id.rawValue, a.job.rawValue, a.node.rawValue, a.epoch, Self.encodeIDs(a.deviceIDs),
                        a.state.rawValue, a.createdAt.unixMs, now.unixMs])
    }

    public func setAssignmentState(_ id: AssignmentID, _ state: AssignmentState) throws {
        try run(sql: "UPDATE assignments SET state = ? WHERE id = ?", arguments: [state.rawValue, id.rawValue])
    }

    public func assignment(_ id: AssignmentID) throws -> AssignmentRecord? {
        try Row.fetchOne(db, sql: "SELECT * FROM assignments WHERE id = ?", arguments: [id.rawValue]).map(Self.assignment)
    }

    /// Assignments still holding devices ("pending" or "accepted").
    public func activeAssignments() throws -> [AssignmentRecord] {
        try Row.fetchAll(db, sql: "SELECT * FROM assignments WHERE state IN ('pending', 'accepted') ORDER BY created_ms, id")
            .map(Self.assignment)
    }

    static func assignment(_ row: Row) throws -> AssignmentRecord {
        AssignmentRecord(
            id: AssignmentID(row["id"]), job: JobID(row["job_id"]), node: NodeID(row["node_id"]),
            epoch: row["epoch"], deviceIDs: try decodeIDs(row["device_ids"] as Data),
            state: AssignmentState(rawValue: row["state"]) ?? .revoked, createdAt: Date(ms: row["created_ms"]))
    }

    // MARK: outbox

    /// Queues a message for reliable delivery; a second enqueue with the same key replaces
    /// the payload (newer state supersedes older) and keeps it pending.
    public func enqueue(key: String, destination: String, type: String, payload: [UInt8], at now: Date) throws {
        try run(
            sql: """
                INSERT INTO outbox (key, destination, type, payload, created_ms) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT(key) DO UPDATE SET payload = excluded.payload, type = excluded.type,
                    destination = excluded.destination, attempts = 0, last_attempt_ms = NULL
                """,
            arguments: [key, destination, type, Data(payload), now.unixMs])
    }

    public func outbox(destination: String? = nil, limit: Int = 1000) throws -> [OutboxItem] {
        let rows: [Row]
        if let destination {
            rows = try Row.fetchAll(db, sql: "SELECT * FROM outbox WHERE destination = ? ORDER BY created_ms, key LIMIT ?",
                                    arguments: [destination, limit])
        } else {
            rows = try Row.fetchAll(db, sql: "SELECT * FROM outbox ORDER BY created_ms, key LIMIT ?", arguments: [limit])
        }
        return rows.map { row in
            OutboxItem(key: row["key"], destination: row["destination"], type: row["type"],
                       payload: Array(row["payload"] as Data), createdAt: Date(ms: row["created_ms"]),
                       attempts: row["attempts"], lastAttemptAt: (row["last_attempt_ms"] as Int64?).map { Date(ms: $0) })
        }
    }

    public func markAttempt(key: String, at now: Date) throws {
        try run(sql: "UPDATE outbox SET attempts = attempts + 1, last_attempt_ms = ? WHERE key = ?",
                       arguments: [now.unixMs, key])
    }

    /// Removes an acknowledged message. Returns false when it was not (or no longer) queued.
    @discardableResult
    public func acknowledge(key: String) throws -> Bool {
        try run(sql: "DELETE FROM outbox WHERE key = ?", arguments: [key])
        return db.changesCount > 0
    }

    // MARK: deduplication

    /// Records that an update id was applied. Returns false when it already was (a duplicate).
    public func markApplied(_ updateID: String, at now: Date) throws -> Bool {
        try run(sql: "INSERT OR IGNORE INTO applied_updates (id, applied_ms) VALUES (?, ?)",
                       arguments: [updateID, now.unixMs])
        return db.changesCount > 0
    }

    // MARK: regions (national)

    public func upsertRegion(_ s: RegionSummary, seen: Date) throws {
        try run(
            sql: """
                INSERT INTO regions (id, summary, last_seen_ms) VALUES (?, ?, ?)
                ON CONFLICT(id) DO UPDATE SET summary = excluded.summary, last_seen_ms = excluded.last_seen_ms
                """,
            arguments: [s.region.rawValue, try jsonEncoder.encode(s), seen.unixMs])
    }

    public func accountUsage() throws -> [AccountUsage] {
        try Row.fetchAll(db, sql: "SELECT * FROM account_usage ORDER BY account").map { row in
            AccountUsage(account: row["account"], deviceSeconds: row["device_seconds"], gcuSeconds: row["gcu_seconds"],
                         decayedDeviceSeconds: row["decayed_device_seconds"], decayedGCUSeconds: row["decayed_gcu_seconds"],
                         updatedAt: Date(ms: row["updated_ms"]))
        }
    }

    public func regions() throws -> [(summary: RegionSummary, lastSeen: Date)] {
        try Row.fetchAll(db, sql: "SELECT * FROM regions ORDER BY id").map { row in
            (try jsonDecoder.decode(RegionSummary.self, from: row["summary"] as Data), Date(ms: row["last_seen_ms"]))
        }
    }

    // MARK: services (national)

    public func services() throws -> [ServiceRecord] {
        try Row.fetchAll(db, sql: "SELECT record FROM services ORDER BY name").map { row in
            try jsonDecoder.decode(ServiceRecord.self, from: row["record"] as Data)
        }
    }

    public func enrolledKeys() throws -> [EnrolledKey] {
        try Row.fetchAll(db, sql: "SELECT * FROM enrolled_keys ORDER BY enrolled_ms, public_key").map { r in
            EnrolledKey(publicKey: r["public_key"], role: r["role"], name: r["name"], right: r["access_right"],
                        enrolledAt: Date(ms: r["enrolled_ms"]), enrolledBy: r["enrolled_by"], tenant: r["tenant"])
        }
    }

    /// The newest `limit` audit records, newest first.
    public func audit(limit: Int) throws -> [AuditRecord] {
        try Row.fetchAll(db, sql: "SELECT * FROM audit ORDER BY seq DESC LIMIT ?", arguments: [limit]).map { r in
            AuditRecord(at: Date(ms: r["at_ms"]), who: r["who"], action: r["action"], target: r["target"], detail: r["detail"])
        }
    }

    public func saveService(_ r: ServiceRecord) throws {
        try run(sql: """
            INSERT INTO services (name, record, updated_ms) VALUES (?, ?, ?)
            ON CONFLICT(name) DO UPDATE SET record = excluded.record, updated_ms = excluded.updated_ms
            """, arguments: [r.spec.name, try jsonEncoder.encode(r), r.updatedAt.unixMs])
    }

    // MARK: meta

    public func meta(_ key: String) throws -> String? {
        try String.fetchOne(db, sql: "SELECT value FROM meta WHERE key = ?", arguments: [key])
    }

    public func setMeta(_ key: String, _ value: String) throws {
        try run(sql: "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                       arguments: [key, value])
    }
}

extension Date {
    var unixMs: Int64 { Int64((timeIntervalSince1970 * 1000).rounded()) }
    init(ms: Int64) { self.init(timeIntervalSince1970: Double(ms) / 1000) }
}

/// One durable change, as a controller's logic asks for it. A shell collects the changes of a
/// batch of messages and commits them together (`GridStore.commit`).
public indirect enum StoreMutation: Sendable {
    case node(NodeRecord)
    case nodeState(NodeID, NodeState)
    /// An operator's cordon set or lifted (nil).
    case nodeCordon(NodeID, NodeCordon?)
    case job(JobRecord)
    case assignment(AssignmentRecord, at: Date)
    /// Queue (or replace) a message for reliable delivery.
    case outbox(OutboxItem)
    /// The receiver acknowledged it.
    case outboxDone(key: String)
    case applied(updateID: String, at: Date)
    case region(RegionSummary, seen: Date)
    /// An operator forgot a region (`gridctl regions remove`).
    case regionRemoved(RegionID)
    /// Forget history older than `before`: applied update ids, finished assignments, and (when
    /// `terminalJobs`) jobs in a terminal state. Live state is never pruned.
    case prune(before: Date, terminalJobs: Bool)
    /// Accounts' usage as it now stands (replaces the stored rows of those accounts).
    case accountUsage([AccountUsage])
    /// A service as it now stands (national).
    case service(ServiceRecord)
    /// An undeployed service is forgotten.
    case serviceRemoved(String)
    /// A small fact the controller must not forget (e.g. the last job-id epoch).
    case meta(key: String, value: String)
    case keyEnrolled(EnrolledKey)
    case keyRevoked(publicKey: String)
    /// An operator action, stored with its effects (same transaction).
    case audit(AuditRecord)
}

/// A key enrolled over the wire (docs/security.md).
public struct EnrolledKey: Sendable, Hashable {
    public var publicKey: String
    public var role: String
    public var name: String
    public var right: String
    public var enrolledAt: Date
    public var enrolledBy: String
    /// An operator key's account, when it is bound to one ("" = none).
    public var tenant: String
    public init(publicKey: String, role: String, name: String, right: String, enrolledAt: Date, enrolledBy: String, tenant: String = "") {
        self.tenant = tenant
        self.publicKey = publicKey
        self.role = role
        self.name = name
        self.right = right
        self.enrolledAt = enrolledAt
        self.enrolledBy = enrolledBy
    }
}

/// One operator action: who did what to what.
public struct AuditRecord: Sendable, Hashable {
    public var at: Date
    public var who: String
    public var action: String
    public var target: String
    public var detail: String
    public init(at: Date, who: String, action: String, target: String, detail: String) {
        self.at = at
        self.who = who
        self.action = action
        self.target = target
        self.detail = detail
    }
}

extension StoreTransaction {
    public func apply(_ m: StoreMutation) throws {
        switch m {
        case .meta(let key, let value): try setMeta(key, value)
        case .keyEnrolled(let k):
            try run(sql: """
                INSERT INTO enrolled_keys (public_key, role, name, access_right, enrolled_ms, enrolled_by, tenant) VALUES (?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(public_key) DO UPDATE SET role = excluded.role, name = excluded.name, access_right = excluded.access_right,
                    enrolled_ms = excluded.enrolled_ms, enrolled_by = excluded.enrolled_by, tenant = excluded.tenant
                """, arguments: [k.publicKey, k.role, k.name, k.right, k.enrolledAt.unixMs, k.enrolledBy, k.tenant])
        case .keyRevoked(let key): try run(sql: "DELETE FROM enrolled_keys WHERE public_key = ?", arguments: [key])
        case .audit(let a):
            try run(sql: "INSERT INTO audit (at_ms, who, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                    arguments: [a.at.unixMs, a.who, a.action, a.target, a.detail])
        case .node(let n): try upsertNode(n)
        case .nodeState(let id, let state): try setNodeState(id, state)
        case .nodeCordon(let id, let cordon):
            try run(sql: "UPDATE nodes SET cordon = ? WHERE id = ?",
                    arguments: [try cordon.map { try JSONEncoder().encode($0) }, id.rawValue])
        case .job(let j): try saveJob(j)
        case .assignment(let a, let at): try saveAssignment(a, at: at)
        case .outbox(let item):
            try enqueue(key: item.key, destination: item.destination, type: item.type, payload: item.payload.bytes, at: item.createdAt)
        case .outboxDone(let key): try acknowledge(key: key)
        case .applied(let id, let at): _ = try markApplied(id, at: at)
        case .region(let s, let seen): try upsertRegion(s, seen: seen)
        case .regionRemoved(let id): try run(sql: "DELETE FROM regions WHERE id = ?", arguments: [id.rawValue])
        case .prune(let before, let terminalJobs): try prune(before: before, terminalJobs: terminalJobs)
        case .service(let r): try saveService(r)
        case .serviceRemoved(let name): try run(sql: "DELETE FROM services WHERE name = ?", arguments: [name])
        case .accountUsage(let rows):
            for u in rows {
                try run(sql: """
                    INSERT INTO account_usage (account, device_seconds, gcu_seconds, decayed_device_seconds, decayed_gcu_seconds, updated_ms)
                    VALUES (?, ?, ?, ?, ?, ?)
                    ON CONFLICT(account) DO UPDATE SET device_seconds = excluded.device_seconds, gcu_seconds = excluded.gcu_seconds,
                        decayed_device_seconds = excluded.decayed_device_seconds, decayed_gcu_seconds = excluded.decayed_gcu_seconds,
                        updated_ms = excluded.updated_ms
                    """, arguments: [u.account, u.deviceSeconds, u.gcuSeconds, u.decayedDeviceSeconds, u.decayedGCUSeconds, u.updatedAt.unixMs])
            }
        }
    }

    public func prune(before: Date, terminalJobs: Bool) throws {
        let ms = before.unixMs
        try run(sql: "DELETE FROM applied_updates WHERE applied_ms < ?", arguments: [ms])
        try run(sql: "DELETE FROM assignments WHERE state IN ('done', 'rejected', 'revoked') AND created_ms < ?", arguments: [ms])
        if terminalJobs {
            try run(sql: """
                DELETE FROM jobs WHERE state IN ('succeeded', 'failed', 'cancelled', 'lost') AND updated_ms < ?
                    AND id NOT IN (SELECT job_id FROM assignments)
                """, arguments: [ms])
        }
    }

    /// Update ids applied since `since`, for duplicate detection after a restart.
    public func appliedUpdates(since: Date) throws -> [(String, Date)] {
        try Row.fetchAll(db, sql: "SELECT id, applied_ms FROM applied_updates WHERE applied_ms >= ?", arguments: [since.unixMs])
            .map { ($0["id"], Date(ms: $0["applied_ms"])) }
    }

    /// Jobs not in a terminal state, oldest submission first.
    public func liveJobs() throws -> [JobRecord] {
        try Row.fetchAll(db, sql: "SELECT record, spec FROM jobs WHERE state NOT IN ('succeeded', 'failed', 'cancelled', 'lost') ORDER BY submitted_ms, id")
            .map { try StoreTransaction.decodeJob($0) }
    }

    /// Terminal jobs updated since `since` (kept in memory for queries and late duplicates).
    public func finishedJobs(since: Date) throws -> [JobRecord] {
        try Row.fetchAll(db, sql: "SELECT record, spec FROM jobs WHERE state IN ('succeeded', 'failed', 'cancelled', 'lost') AND updated_ms >= ? ORDER BY submitted_ms, id",
                          arguments: [since.unixMs])
            .map { try StoreTransaction.decodeJob($0) }
    }
}
