import Foundation
import GridCore
import PropertyBased
import Testing
import Yams

@testable import GridScheduler

/// Issue 9, item 4: quotas in devices, devices per grade and GCU; cohorts that lend unused
/// quota; fair share with decay.
@Suite struct AccountLedgerTests {
    static let policy = AccountPolicy(quotas: [
        "ml": AccountQuota(shares: 2, devices: 4, devicesByGrade: [.a: 1], gcu: 1000, cohort: "research"),
        "vision": AccountQuota(shares: 1, devices: 4, cohort: "research"),
        "ops": AccountQuota(devices: 2, borrow: true),
        "solo": AccountQuota(devices: 2, cohort: "research", borrow: false),
    ])

    static let t = Date(timeIntervalSince1970: 1_800_000_000)

    @Test func withinQuotaThenBorrowingThenRefusedWithTheFigures() {
        var l = AccountLedger(policy: Self.policy)
        #expect(l.admit("ml", ResourceUse(devices: 4, byGrade: [.b: 4], gcu: 400)) == .within)
        l.charge("ml", ResourceUse(devices: 4, byGrade: [.b: 4], gcu: 400), at: Self.t)
        // Past its own 4: the cohort's unused quota (vision 4, solo 2) may be borrowed.
        #expect(l.admit("ml", ResourceUse(devices: 2, byGrade: [.b: 2], gcu: 200)) == .borrowing)
        l.charge("ml", ResourceUse(devices: 2, byGrade: [.b: 2], gcu: 200), at: Self.t)
        l.charge("vision", ResourceUse(devices: 4), at: Self.t)
        guard case .refused(let why) = l.admit("ml", ResourceUse(devices: 1, byGrade: [.b: 1], gcu: 10)) else {
            Issue.record("the cohort has nothing left"); return
        }
        #expect(why == "account ml: 6 + 1 devices > quota 4; cohort research has 0 unused")
        // An account outside any cohort cannot borrow; one that may not borrow neither.
        var o = AccountLedger(policy: Self.policy)
        o.charge("ops", ResourceUse(devices: 2), at: Self.t)
        #expect(o.admit("ops", ResourceUse(devices: 1)) == .refused("account ops: 2 + 1 devices > quota 2"))
        o.charge("solo", ResourceUse(devices: 2), at: Self.t)
        guard case .refused = o.admit("solo", ResourceUse(devices: 1)) else { Issue.record("solo borrowed"); return }
        // Accounts without limits are never refused.
        #expect(o.admit("anyone", ResourceUse(devices: 1000, gcu: 1e6)) == .within)
        // Refunds give the room back.
        l.refund("vision", ResourceUse(devices: 4), at: Self.t)
        #expect(l.admit("ml", ResourceUse(devices: 1, byGrade: [.b: 1])) == .borrowing)
        l.refund("ml", ResourceUse(devices: 6, byGrade: [.b: 6], gcu: 600), at: Self.t)
        #expect(l.admit("ml", ResourceUse(devices: 1, byGrade: [.b: 1])) == .within)
        #expect(l.inUse["ml"] == nil, "an account that holds nothing is forgotten")
    }

    @Test func gradeAndComputeLimits() {
        var l = AccountLedger(policy: Self.policy)
        #expect(l.exhaustedGrades("ml").isEmpty)
        l.charge("ml", ResourceUse(devices: 1, byGrade: [.a: 1], gcu: 989), at: Self.t)
        // Nobody else in the cohort has a grade-A limit to lend: A is closed to ml.
        #expect(l.exhaustedGrades("ml") == [.a])
        guard case .refused(let why) = l.admit("ml", ResourceUse(devices: 1, byGrade: [.b: 1], gcu: 312)) else {
            Issue.record("GCU quota not applied"); return
        }
        #expect(why.contains("989 + 312 GCU > quota 1000"))
    }

    @Test func fairShareFollowsUsePerShareAndDecays() {
        var l = AccountLedger(policy: Self.policy)
        #expect(l.fairShareFactors()["ml"] == 1, "nothing used: factor 1")
        let start = Date(timeIntervalSince1970: 1_800_000_000 - 3600)
        let t0 = start.addingTimeInterval(3600)
        l.charge("ml", ResourceUse(devices: 2, gcu: 200), at: start)
        l.charge("vision", ResourceUse(devices: 2, gcu: 200), at: start)
        l.accrue(at: t0)
        #expect(l.usage["ml"]?.deviceSeconds == 7200 && l.usage["ml"]?.gcuSeconds == 720_000)
        let f = l.fairShareFactors()
        // ml used 1/2 of all with 2/5 of the shares; vision 1/2 with 1/5: both past their share,
        // vision (more use per share) further; ops and solo used nothing.
        #expect(abs(f["ml"]! - pow(2, -(1.0 / 2) / (2.0 / 5))) < 1e-12)
        #expect(f["vision"]! < f["ml"]! && f["ops"] == 1)
        // A week on with nothing running, the decayed use is half; the all-time total stays.
        l.refund("ml", ResourceUse(devices: 2, gcu: 200), at: t0)
        l.refund("vision", ResourceUse(devices: 2, gcu: 200), at: t0)
        l.accrue(at: t0.addingTimeInterval(168 * 3600))
        #expect(abs(l.usage["ml"]!.decayedDeviceSeconds - 3600) < 1e-6)
        #expect(l.usage["ml"]!.deviceSeconds == 7200)
    }

    @Test func shortRunsAreCountedExactly() {
        var l = AccountLedger(policy: AccountPolicy())
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        l.charge("web", ResourceUse(devices: 3, gcu: 30), at: t0)
        l.charge("web", ResourceUse(devices: 1, gcu: 10), at: t0.addingTimeInterval(1))
        l.refund("web", ResourceUse(devices: 4, gcu: 40), at: t0.addingTimeInterval(2.5))
        // 3 devices for 2.5 s and 1 more for 1.5 s, with no periodic accrual in between.
        #expect(abs(l.usage["web"]!.deviceSeconds - 9) < 1e-9 && abs(l.usage["web"]!.gcuSeconds - 90) < 1e-9)
        l.accrue(at: t0.addingTimeInterval(100))
        #expect(abs(l.usage["web"]!.deviceSeconds - 9) < 1e-9, "nothing held: nothing more counted")
    }

    /// Random charges and refunds across a cohort: an account past its own quota holds
    /// something it borrowed; a borrowing never takes the cohort past its members' quotas
    /// together; an account outside a cohort, or one that may not borrow, never goes past its own.
    @Test func quotasHoldExceptByBorrowingWithinTheCohort() async {
        await propertyCheck(count: 80, input: Gen.int(in: 0...1_000_000)) { seed in
            var rng = SeededRandom(seed: UInt64(seed))
            let names = ["a", "b", "c", "d"]
            var quotas: [String: AccountQuota] = [:]
            for n in names {
                quotas[n] = AccountQuota(devices: Int.random(in: 0...6, using: &rng),
                                         devicesByGrade: Bool.random(using: &rng) ? [.a: Int.random(in: 0...2, using: &rng)] : [:],
                                         cohort: n == "d" ? nil : "c1", borrow: Bool.random(using: &rng))
            }
            var l = AccountLedger(policy: AccountPolicy(quotas: quotas))
            var held: [(name: String, use: ResourceUse, verdict: Admission)] = []
            let members = names.filter { quotas[$0]!.cohort == "c1" }
            let cap = members.reduce(0) { $0 + quotas[$1]!.devices! }
            for _ in 0..<100 {
                if !held.isEmpty && Int.random(in: 0..<3, using: &rng) == 0 {
                    let h = held.remove(at: Int.random(in: 0..<held.count, using: &rng))
                    l.refund(h.name, h.use, at: Self.t)
                    continue
                }
                let n = names[Int.random(in: 0..<names.count, using: &rng)]
                let g: DeviceGrade = Bool.random(using: &rng) ? .a : .b
                let k = Int.random(in: 1...3, using: &rng)
                let u = ResourceUse(devices: k, byGrade: [g: k])
                let verdict = l.admit(n, u)
                if case .refused = verdict { continue }
                l.charge(n, u, at: Self.t)
                held.append((n, u, verdict))
                if verdict == .borrowing {
                    #expect(quotas[n]!.cohort != nil && quotas[n]!.borrow, "seed \(seed): \(n) borrowed without a cohort")
                    // In each dimension this request took past the account's own limit, the cohort stays within its members' limits together.
                    let mine = l.inUse[n]!
                    if mine.devices > quotas[n]!.devices! {
                        let used = members.reduce(0) { $0 + (l.inUse[$1]?.devices ?? 0) }
                        #expect(used <= cap, "seed \(seed): borrowing took the cohort to \(used) > \(cap) devices")
                    }
                    if g == .a, let limitA = quotas[n]!.devicesByGrade[.a], (mine.byGrade[.a] ?? 0) > limitA {
                        let withA = members.filter { quotas[$0]!.devicesByGrade[.a] != nil }
                        let capA = withA.reduce(0) { $0 + quotas[$1]!.devicesByGrade[.a]! }
                        let usedA = withA.reduce(0) { $0 + (l.inUse[$1]?.byGrade[.a] ?? 0) }
                        #expect(usedA <= capA, "seed \(seed): borrowing took the cohort to \(usedA) > \(capA) grade-A devices")
                    }
                }
                for m in names {
                    let mine = l.inUse[m] ?? ResourceUse()
                    let q = quotas[m]!
                    let over = mine.devices > q.devices! || (q.devicesByGrade[.a].map { (mine.byGrade[.a] ?? 0) > $0 } ?? false)
                    #expect(!over || held.contains { $0.name == m && $0.verdict == .borrowing }, "seed \(seed): \(m) past its quota, nothing borrowed")
                }
            }
        }
    }

    @Test func policyDecodesAndNamesBadKeys() throws {
        let p = try YAMLDecoder().decode(AccountPolicy.self, from: """
            fair_share: false
            usage_half_life_hours: 24
            default: {devices: 2}
            quotas:
              ml: {shares: 3, devices: 16, devices_by_grade: {a: 4}, gcu: 5000, cohort: research}
            """)
        #expect(!p.fairShare && p.usageHalfLifeHours == 24 && p.defaultQuota.devices == 2)
        #expect(p.quotas["ml"]?.devicesByGrade == [.a: 4] && p.quotas["ml"]?.cohort == "research" && p.quotas["ml"]?.shares == 3)
        #expect(throws: (any Error).self) { try YAMLDecoder().decode(AccountPolicy.self, from: "quotas: {ml: {devcies: 3}}") }
        #expect(throws: (any Error).self) { try YAMLDecoder().decode(AccountPolicy.self, from: "quotas: {ml: {devices_by_grade: {Z: 3}}}") }
        let bad = AccountPolicy(quotas: ["ml": AccountQuota(shares: 0, devices: -1)], usageHalfLifeHours: 0)
        let problems = bad.problems()
        #expect(problems.contains { $0.hasPrefix("accounts.quotas.ml.shares:") })
        #expect(problems.contains { $0.hasPrefix("accounts.quotas.ml.devices:") })
        #expect(problems.contains { $0.hasPrefix("accounts.usage_half_life_hours:") })
    }
}
