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
        var jobs: [JobID: JobRecord] = [:]
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
