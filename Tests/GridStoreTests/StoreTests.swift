import Foundation
import GridCore
import GridProtocol
@testable import GridStore
import Testing

func temporaryDirectory(_ name: String = #function) -> URL {
    let dir = FileManager.default.temporaryDirectory
        .appendingPathComponent("grid-store-\(name.filter { $0.isLetter })-\(UUID().uuidString.prefix(8))")
    try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}

@Suite struct StoreTests {
    let t0 = Date(timeIntervalSince1970: 1_750_000_000)

    func job(_ id: String, _ state: JobState = .queued, at: Date? = nil) -> JobRecord {
        JobRecord(id: JobID(id), spec: JobSpec(name: id, command: "true"), state: state, submittedAt: at ?? t0, updatedAt: at ?? t0)
    }

    @Test func freshFileGetsEveryMigrationAndWALWithFullSync() throws {
        let dir = temporaryDirectory()
        let store = try GridStore(path: dir.appendingPathComponent("c.sqlite").path)
        #expect(try store.appliedMigrations() == ["v1-initial", "v2-log", "v3-cordon", "v4-accounts", "v5-services", "v6-security", "v7-tenants", "v8-job-spec"])
        #expect(try store.integrityCheck() == "ok")
        #expect(try store.pragma("journal_mode") == "wal")
        #expect(try store.pragma("synchronous") == "2")  // FULL
    }

    @Test func reopeningKeepsDataAndDoesNotRemigrate() throws {
        let path = temporaryDirectory().appendingPathComponent("c.sqlite").path
        do {
            let store = try GridStore(path: path)
            try store.write("t") { _ = try $0.insertJobIfAbsent(job("j-1")) }
        }
        let again = try GridStore(path: path)
        #expect(try again.appliedMigrations() == ["v1-initial", "v2-log", "v3-cordon", "v4-accounts", "v5-services", "v6-security", "v7-tenants", "v8-job-spec"])
        #expect(try again.read("t") { try $0.job("j-1") }?.spec.name == "j-1")
    }

    /// A job's spec is written once, in its own column; later saves rewrite the rest. A row
    /// written before (the whole job in its record, no spec column) still reads, and its first
    /// save moves the spec into the column.
    @Test func aJobsSpecIsWrittenOnceAndOlderRowsStillRead() throws {
        let store = try GridStore(path: temporaryDirectory().appendingPathComponent("c.sqlite").path)
        var j = job("new")
        j.spec.args = ["--epochs", "3"]
        try store.write("t") { try $0.saveJob(j) }
        j.state = .running
        j.message = "running on n1"
        try store.write("t") { try $0.saveJob(j) }
        #expect(try store.read("t") { try $0.job("new") } == j)
        let specBytes = try store.read("t") { try Data.fetchOne($0.db, sql: "SELECT spec FROM jobs WHERE id = 'new'") }
        #expect(specBytes == (try StoreTransaction.encodeSpec(j.spec)))

        var old = job("old", .queued)
        old.spec.env = ["A": "1"]
        var legacy = Data([0x01])
        legacy.append(try Wire.Job(old).serializedData())
        try store.write("t") { tx in
            try tx.db.execute(sql: "INSERT INTO jobs (id, record, state, submitted_ms, updated_ms) VALUES ('old', ?, 'queued', 0, 0)",
                              arguments: [legacy])
        }
        #expect(try store.read("t") { try $0.job("old") } == old)
        old.state = .assigned
        try store.write("t") { try $0.saveJob(old) }
        #expect(try store.read("t") { try $0.job("old") } == old)
        #expect(try store.read("t") { try $0.liveJobs() }.map(\.id.rawValue).sorted() == ["new", "old"])
        let moved = try store.read("t") { try Data.fetchOne($0.db, sql: "SELECT spec FROM jobs WHERE id = 'old'") }
        #expect(moved == (try StoreTransaction.encodeSpec(old.spec)), "the spec moved to its column")
    }

    @Test func insertJobIfAbsentIsIdempotent() throws {
        let store = try GridStore(path: temporaryDirectory().appendingPathComponent("c.sqlite").path)
        let first = try store.write("t") { try $0.insertJobIfAbsent(job("j-1")) }
        var changed = job("j-1", .running)
        changed.message = "second"
        let second = try store.write("t") { try $0.insertJobIfAbsent(changed) }
        #expect(first.inserted && !second.inserted)
        #expect(second.record.state == .queued, "the stored record answers a duplicate")
    }

    @Test func jobsAreListedInSubmissionOrderAndFilteredByState() throws {
        let store = try GridStore(path: temporaryDirectory().appendingPathComponent("c.sqlite").path)
        try store.write("t") { tx in
            _ = try tx.insertJobIfAbsent(job("b", .queued, at: t0.addingTimeInterval(2)))
            _ = try tx.insertJobIfAbsent(job("a", .running, at: t0.addingTimeInterval(1)))
            _ = try tx.insertJobIfAbsent(job("c", .queued, at: t0.addingTimeInterval(3)))
        }
        #expect(try store.read("t") { try $0.jobs() }.map(\.id.rawValue) == ["a", "b", "c"])
        #expect(try store.read("t") { try $0.jobs(states: [.queued]) }.map(\.id.rawValue) == ["b", "c"])
        #expect(try store.read("t") { try $0.countJobs(state: .queued) } == 2)
    }

    /// A typed outbox message (as the region's logic hands it over) is encoded when the batch
    /// is committed, and reads back as the same message.
    @Test func aTypedOutboxMessageIsStoredEncodedAndReadsBackTheSame() throws {
        let store = try GridStore(path: temporaryDirectory().appendingPathComponent("u.sqlite").path)
        var u = Wire.StatusUpdate()
        u.jobID = "j-1"
        u.epoch = UInt64.max
        u.state = "assigned"
        u.updateID = "r1:j-1:7:assigned"
        u.deviceIds = ["GPU-0", "GPU-1"]
        let t0 = Date(timeIntervalSince1970: 1_700_000_000)
        try store.commit([.outbox(OutboxItem(key: u.updateID, destination: "national", type: "status_update", message: .statusUpdate(u), createdAt: t0))])
        let back = try store.read("t") { try $0.outbox(destination: "national") }
        #expect(back.count == 1)
        guard case .encoded(let bytes) = back.first?.payload else {
            Issue.record("read back as \(String(describing: back.first?.payload)), not bytes")
            return
        }
        #expect(try Wire.StatusUpdate(serializedBytes: bytes) == u)
        #expect(back[0].payload.bytes == OutboxPayload.statusUpdate(u).bytes)
    }

    @Test func outboxKeepsItemsUntilAcknowledged() throws {
        let store = try GridStore(path: temporaryDirectory().appendingPathComponent("c.sqlite").path)
        try store.write("t") { tx in
            try tx.enqueue(key: "k1", destination: "r1", type: "job_forward", payload: [1, 2], at: t0)
            try tx.enqueue(key: "k2", destination: "r2", type: "job_forward", payload: [3], at: t0)
            try tx.markAttempt(key: "k1", at: t0.addingTimeInterval(1))
        }
        let r1 = try store.read("t") { try $0.outbox(destination: "r1") }
        #expect(r1.count == 1 && r1[0].attempts == 1 && r1[0].payload.bytes == [1, 2])
        #expect(try store.write("t") { try $0.acknowledge(key: "k1") })
        #expect(try store.write("t") { try $0.acknowledge(key: "k1") } == false)
        #expect(try store.read("t") { try $0.outbox() }.map(\.key) == ["k2"])
    }

    @Test func appliedUpdatesDeduplicate() throws {
        let store = try GridStore(path: temporaryDirectory().appendingPathComponent("c.sqlite").path)
        #expect(try store.write("t") { try $0.markApplied("u1", at: t0) })
        #expect(try store.write("t") { try $0.markApplied("u1", at: t0) } == false)
    }

    @Test func failedTransactionLeavesNothingBehind() throws {
        let store = try GridStore(path: temporaryDirectory().appendingPathComponent("c.sqlite").path)
        struct Boom: Error {}
        #expect(throws: StoreError.self) {
            try store.write("t") { tx in
                _ = try tx.insertJobIfAbsent(job("j-1"))
                throw Boom()
            }
        }
        #expect(try store.read("t") { try $0.job("j-1") } == nil)
    }

    @Test func assignmentsTrackActiveState() throws {
        let store = try GridStore(path: temporaryDirectory().appendingPathComponent("c.sqlite").path)
        try store.write("t") { tx in
            _ = try tx.insertJobIfAbsent(job("j-1"))
            try tx.saveAssignment(AssignmentRecord(id: "j-1.1", job: "j-1", node: "n1", epoch: 1, deviceIDs: ["d0", "d1"], state: .pending, createdAt: t0), at: t0)
        }
        #expect(try store.read("t") { try $0.activeAssignments() }.map(\.deviceIDs) == [["d0", "d1"]])
        try store.write("t") { try $0.setAssignmentState("j-1.1", .done) }
        #expect(try store.read("t") { try $0.activeAssignments() }.isEmpty)
    }

    @Test func nodesAndRegionsRoundTrip() throws {
        let store = try GridStore(path: temporaryDirectory().appendingPathComponent("c.sqlite").path)
        let node = NodeRecord(id: "n1", region: "r1", hostname: "h", state: .ready,
                              devices: [DeviceInventory(id: "d0", index: 0, vendor: .amd, model: "MI100", memoryTotalMiB: 32752)],
                              lastSeen: t0, registeredAt: t0)
        let summary = RegionSummary(region: "r1", nodesReady: 1, nodesLost: 0, queuedJobs: 2, runningJobs: 1,
                                    capacity: [CapacityEntry(vendor: .amd, model: "MI100", memoryTotalMiB: 32752, total: 1, free: 1, healthy: 1)],
                                    nodes: [], nodesTruncated: false, generatedAt: t0)
        try store.write("t") { tx in
            try tx.upsertNode(node)
            try tx.setNodeState("n1", .lost)
            try tx.upsertRegion(summary, seen: t0)
        }
        let nodes = try store.read("t") { try $0.nodes(region: "r1") }
        // Devices are stored as their wire form: what a region got from the agent, no more.
        #expect(nodes.count == 1 && nodes[0].state == .lost && nodes[0].devices == node.devices.map { Wire.Device($0).inventory })
        #expect(try store.read("t") { try $0.regions() }.first?.summary == summary)
    }

    @Test func aCordonIsKeptAndSurvivesARegister() throws {
        let store = try GridStore(path: temporaryDirectory().appendingPathComponent("cordon.sqlite").path)
        let node = NodeRecord(id: "n1", region: "r1", hostname: "h", state: .ready, devices: [], lastSeen: t0, registeredAt: t0)
        let cordon = NodeCordon(reason: "fan replacement", drain: true, since: t0)
        try store.commit([.node(node), .nodeCordon("n1", cordon)])
        try store.commit([.node(node)])  // the agent registers again
        #expect(try store.read("t") { try $0.nodes(region: "r1") }.first?.cordon == cordon)
        try store.commit([.nodeCordon("n1", nil)])
        #expect(try store.read("t") { try $0.nodes(region: "r1") }.first?.cordon == nil)
        #expect(try store.appliedMigrations().contains("v3-cordon"))
    }

    @Test func accountUsageIsReplacedPerAccount() throws {
        let store = try GridStore(path: temporaryDirectory().appendingPathComponent("accounts.sqlite").path)
        let ml = AccountUsage(account: "ml", deviceSeconds: 7200, gcuSeconds: 2.2e6, decayedDeviceSeconds: 3600, decayedGCUSeconds: 1.1e6, updatedAt: t0)
        try store.commit([.accountUsage([ml, AccountUsage(account: "web", deviceSeconds: 1, updatedAt: t0)])])
        var later = ml
        later.deviceSeconds = 10_800
        later.updatedAt = t0.addingTimeInterval(60)
        try store.commit([.accountUsage([later])])
        let rows = try store.read("t") { try $0.accountUsage() }
        #expect(rows.map(\.account) == ["ml", "web"])
        #expect(rows.first == later)
    }

    @Test func unopenablePathGivesAClearError() {
        do {
            _ = try GridStore(path: "/proc/computegrid/x.sqlite")
            Issue.record("opened a store under /proc")
        } catch {
            #expect(String(describing: error).contains("/proc/computegrid/x.sqlite"))
        }
    }

    @Test func notADatabaseIsReportedNotCrashed() throws {
        let path = temporaryDirectory().appendingPathComponent("junk.sqlite").path
        try Data(repeating: 0x42, count: 8192).write(to: URL(fileURLWithPath: path))
        #expect(throws: StoreError.self) { _ = try GridStore(path: path) }
    }
}

@Suite struct StoreBatchTests {
    let t0 = Date(timeIntervalSince1970: 1_750_000_000)

    func job(_ id: String, _ state: JobState = .queued) -> JobRecord {
        JobRecord(id: JobID(id), spec: JobSpec(name: "t", command: "true"), state: state, submittedAt: t0, updatedAt: t0)
    }

    @Test func aBatchIsStoredWholeOrNotAtAll() throws {
        let store = try GridStore(path: FileManager.default.temporaryDirectory.appendingPathComponent("batch-\(UUID().uuidString).sqlite").path)
        try store.commit([.job(job("j-1")), .applied(updateID: "u1", at: t0)])
        // An assignment of a job that does not exist breaks a foreign key: the whole batch fails.
        let orphan = AssignmentRecord(id: "x.1", job: "x", node: "n", epoch: 1, deviceIDs: [], state: .pending, createdAt: t0)
        #expect(throws: StoreError.self) { try store.commit([.job(self.job("j-2")), .assignment(orphan, at: self.t0)]) }
        #expect(try store.read("t") { try $0.job("j-2") } == nil, "nothing of a failed batch may be stored")
        #expect(try store.read("t") { try $0.job("j-1") }?.state == .queued)
        #expect(try store.read("t") { try $0.appliedUpdates(since: .distantPast) }.map(\.0) == ["u1"])
    }

    /// A job saved several times in one batch is written once with its last record where it
    /// was first saved (GridStore.coalesced): over random batches of saves, assignments (which
    /// need their job's row) and prunes, the stored jobs and assignments are the same as when
    /// every change is committed on its own, in order.
    @Test(arguments: [1, 2, 3, 4, 5, 6, 7, 8])
    func savesOfOneJobInABatchStoreWhatSavingEachInOrderStores(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        let dir = FileManager.default.temporaryDirectory
        let merged = try GridStore(path: dir.appendingPathComponent("merged-\(UUID().uuidString).sqlite").path)
        let oneByOne = try GridStore(path: dir.appendingPathComponent("single-\(UUID().uuidString).sqlite").path)
        let states: [JobState] = [.queued, .assigned, .running, .succeeded, .failed]
        var known: Set<String> = []
        var epochs: [String: Int] = [:]
        for round in 0..<20 {
            var batch: [StoreMutation] = []
            // Jobs whose row is sure to exist at this point of the batch (an assignment needs it).
            var available = known
            for _ in 0..<Int.random(in: 1...30, using: &rng) {
                let id = "j\(Int.random(in: 0..<8, using: &rng))"
                switch Int.random(in: 0..<10, using: &rng) {
                case 0..<6:
                    var j = job(id, states.randomElement(using: &rng)!)
                    j.message = "round \(round) \(Int.random(in: 0..<1000, using: &rng))"
                    // Some saves carry an old time, so that a prune may drop them.
                    j.updatedAt = t0.addingTimeInterval(Double(Int.random(in: -2...2, using: &rng)) * 3600)
                    batch.append(.job(j))
                    available.insert(id)
                case 6..<9 where available.contains(id):
                    epochs[id, default: 0] += 1
                    let a = AssignmentRecord(id: AssignmentID("\(id).\(epochs[id]!)"), job: JobID(id), node: "n", epoch: epochs[id]!,
                                             deviceIDs: ["d0"], state: Bool.random(using: &rng) ? .pending : .done, createdAt: t0)
                    batch.append(.assignment(a, at: t0))
                case 9:
                    batch.append(.prune(before: t0, terminalJobs: true))
                    available = []
                default:
                    break
                }
            }
            try merged.commit(batch)
            for m in batch { try oneByOne.commit([m]) }
            // What a later batch may reference: jobs whose rows exist now.
            known = Set(try oneByOne.read("t") { try $0.jobs() }.map(\.id.rawValue))
        }
        let jobsMerged = try merged.read("t") { try $0.jobs() }
        let jobsSingle = try oneByOne.read("t") { try $0.jobs() }
        #expect(jobsMerged == jobsSingle)
        #expect(!jobsSingle.isEmpty)
        let assignments = { (s: GridStore) in try s.read("t") { try $0.activeAssignments() }.map(\.id) }
        #expect(try assignments(merged) == assignments(oneByOne))
        let batch: [StoreMutation] = [.job(job("x")), .job(job("x", .running)), .prune(before: t0, terminalJobs: true), .job(job("x", .succeeded))]
        #expect(GridStore.coalesced(batch).count == 3, "two saves merged; the save after the prune kept apart")
    }

    @Test func pruningKeepsLiveStateAndDropsOldHistory() throws {
        let store = try GridStore(path: FileManager.default.temporaryDirectory.appendingPathComponent("prune-\(UUID().uuidString).sqlite").path)
        var old = job("old", .succeeded)
        old.updatedAt = t0
        var live = job("live", .running)
        live.updatedAt = t0
        try store.commit([.job(old), .job(live), .applied(updateID: "u-old", at: t0),
                          .applied(updateID: "u-new", at: t0.addingTimeInterval(7200))])
        try store.commit([.prune(before: t0.addingTimeInterval(3600), terminalJobs: true)])
        #expect(try store.read("t") { try $0.job("old") } == nil)
        #expect(try store.read("t") { try $0.job("live") } != nil, "a live job is never pruned")
        #expect(try store.read("t") { try $0.appliedUpdates(since: .distantPast) }.map(\.0) == ["u-new"])
        #expect(try store.appliedMigrations().last == "v8-job-spec")
    }
}

@Suite struct StoreEncodingTests {
    @Test(arguments: [[], ["GPU-1"], ["a\nb", "", "x,y", "Ascend 910B"], [String(repeating: "é", count: 300)]])
    func assignmentDeviceIDsRoundTrip(ids: [String]) throws {
        #expect(try StoreTransaction.decodeIDs(StoreTransaction.encodeIDs(ids)) == ids)
    }

    @Test func legacyJSONRowsStillRead() throws {
        #expect(try StoreTransaction.decodeIDs(Data("[\"d0\",\"d1\"]".utf8)) == ["d0", "d1"])
    }
}
