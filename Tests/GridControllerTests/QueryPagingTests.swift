import Foundation
@testable import GridController
import GridCore
import GridProtocol
import Testing

@Suite struct QueryPagingTests {
    /// Paged job lists come in (submission time, id) order, each job once, a tenant's only its
    /// own, with the total and the next offset right — against a plain sort of the records (many
    /// jobs share a submission time, as a job array's do).
    @Test(arguments: [UInt64(1), 2, 3])
    func jobPagesFollowSubmissionThenIdOrder(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        let t0 = Date(timeIntervalSince1970: 1_750_000_000)
        var jobs = RecordTable<JobID, JobRecord>()
        for _ in 0..<200 {
            let id = JobID("j-\(Int.random(in: 0..<100_000, using: &rng))")
            var spec = JobSpec(name: "t", command: "true")
            spec.account = ["", "team-a", "team-b"].randomElement(using: &rng)!
            let at = t0.addingTimeInterval(Double(Int.random(in: 0..<5, using: &rng)))
            jobs[id] = JobRecord(id: id, spec: spec, state: .queued, submittedAt: at, updatedAt: at)
        }
        for tenant in [nil, "team-a"] as [String?] {
            let expected = jobs.values.filter { r in tenant.map { r.spec.accountName == $0 } ?? true }
                .sorted { ($0.submittedAt, $0.id) < ($1.submittedAt, $1.id) }.map(\.id.rawValue)
            var seen: [String] = []
            var q = Wire.Query()
            q.kind = .jobs
            q.limit = 7
            repeat {
                var reply = Wire.QueryReply()
                #expect(QueryPaging.answerJobs(jobs, q, &reply, tenant: tenant))
                #expect(reply.total == UInt64(expected.count))
                seen += reply.jobs.map(\.jobID)
                q.offset = reply.nextOffset
            } while q.offset != 0
            #expect(seen == expected, "tenant \(tenant ?? "none")")
            #expect(!expected.isEmpty)
        }
    }
}

@Suite struct RecordTableTests {
    /// It behaves as a dictionary of values: a copy keeps what it held when copied, whatever
    /// the original stores or removes after (records are never changed in their boxes).
    @Test func aCopyIsAValueAndTheTableActsAsADictionary() {
        var table = RecordTable<String, Int>()
        var plain: [String: Int] = [:]
        var rng = SplitMix64(seed: 9)
        for step in 0..<2_000 {
            let key = "k\(Int.random(in: 0..<300, using: &rng))"
            switch Int.random(in: 0..<4, using: &rng) {
            case 0: table[key] = nil; plain[key] = nil
            case 1: #expect(table.removeValue(forKey: key) == plain.removeValue(forKey: key))
            default: table[key] = step; plain[key] = step
            }
        }
        #expect(table.count == plain.count && table.isEmpty == plain.isEmpty)
        #expect(Dictionary(uniqueKeysWithValues: table.map { ($0.key, $0.value) }) == plain)
        #expect(table.values.sorted() == plain.values.sorted())
        #expect(Set(table.keys) == Set(plain.keys))
        let copy = table
        for key in plain.keys { table[key] = -1 }
        table["new"] = 1
        #expect(Dictionary(uniqueKeysWithValues: copy.map { ($0.key, $0.value) }) == plain, "the copy did not change")
        #expect(table.values.allSatisfy { $0 == -1 || $0 == 1 })
    }
}
