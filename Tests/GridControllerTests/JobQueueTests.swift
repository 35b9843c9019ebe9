@testable import GridController
import GridCore
import PropertyBased
import Testing

/// The region's job queue against the sorted array it replaced (kept here as the model): the
/// same order after any mix of inserts (back and front), removals, turns and re-sorts, and the
/// same jobs in every turn.
@Suite struct JobQueueTests {
    /// The model: one array, highest priority first; a new job after every job of higher or
    /// equal priority, a front one before the others of its priority; a cursor index that
    /// moves back to a job put in ahead of it.
    struct Model {
        var ids: [JobID] = []
        var priority: [JobID: Int] = [:]
        var cursor = 0

        mutating func insert(_ id: JobID, _ p: Int, front: Bool) {
            remove(id)
            priority[id] = p
            var lo = 0, hi = ids.count
            while lo < hi {
                let mid = (lo + hi) / 2
                let q = priority[ids[mid]]!
                if front ? q > p : q >= p { lo = mid + 1 } else { hi = mid }
            }
            ids.insert(id, at: lo)
            if lo < cursor { cursor = lo }
        }

        mutating func remove(_ id: JobID) {
            guard let i = ids.firstIndex(of: id) else { return }
            ids.remove(at: i)
            priority[id] = nil
            if i < cursor { cursor -= 1 }
        }

        mutating func nextTurn(budget: Int) -> ([JobID], Bool) {
            if cursor >= ids.count { cursor = 0 }
            let end = min(ids.count, cursor + budget)
            let turn = Array(ids[cursor..<end])
            let more = end < ids.count
            cursor = more ? end : 0
            return (turn, more)
        }

        /// Stable: equal keys keep their order.
        mutating func sortWithinPriorities(key: (JobID) -> Int) {
            let place = Dictionary(uniqueKeysWithValues: ids.enumerated().map { ($1, $0) })
            ids.sort { a, b in (-priority[a]!, key(a), place[a]!) < (-priority[b]!, key(b), place[b]!) }
            cursor = 0
        }
    }

    @Test func keepsTheOrderAndTurnsOfTheSortedArrayItReplaced() async {
        await propertyCheck(count: 200, input: Gen.int(in: 0...1_000_000)) { seed in
            var rng = SplitMix(seed: UInt64(seed))
            var queue = JobQueue()
            var model = Model()
            let pool = 5 + rng.int(200)
            let priorities = [-100, 0, 100, 1000, 7][0..<(1 + rng.int(5))]
            for step in 0..<(50 + rng.int(2_000)) {
                let id = JobID("j\(rng.int(pool))")
                switch rng.int(10) {
                case 0..<4:
                    let p = priorities[rng.int(priorities.count)]
                    let front = rng.int(4) == 0
                    queue.insert(id, priority: p, front: front)
                    model.insert(id, p, front: front)
                case 4..<7:
                    queue.remove(id)
                    model.remove(id)
                case 7..<9:
                    let budget = 1 + rng.int(20)
                    let got = queue.nextTurn(budget: budget)
                    let want = model.nextTurn(budget: budget)
                    #expect(got.ids == want.0 && got.more == want.1, "seed \(seed) step \(step): turn of \(budget) gave \(got), the model \(want)")
                    // Placement takes some of the turn's jobs out.
                    for placed in got.ids where rng.int(2) == 0 {
                        queue.remove(placed)
                        model.remove(placed)
                    }
                default:
                    let salt = rng.int(1_000)
                    // Few distinct keys: many ties, which keep their order.
                    let key = { (id: JobID) in abs(id.rawValue.hashValue ^ salt) % 4 }
                    queue.sortWithinPriorities(key: key, by: <)
                    model.sortWithinPriorities(key: key)
                }
                #expect(queue.count == model.ids.count)
                #expect(queue.first == model.ids.first)
                #expect(model.ids.allSatisfy(queue.contains))
            }
            #expect(Array(queue) == model.ids, "seed \(seed): final order")
        }
    }

    /// Removal is lazy: a job taken out and put in again is examined once, at its new place,
    /// and a queue that lost most of its jobs (compacted) keeps its cursor on the same job.
    @Test func aJobPutBackAfterRemovalIsExaminedOnceAndCompactionKeepsTheCursor() {
        var queue = JobQueue()
        for k in 0..<200 { queue.insert(JobID("j\(k)"), priority: 0, front: false) }
        let first = queue.nextTurn(budget: 100)
        #expect(first.ids.count == 100 && first.more)
        for k in 0..<150 where k != 120 { queue.remove(JobID("j\(k)")) }
        queue.remove(JobID("j199"))
        queue.insert(JobID("j199"), priority: 0, front: false)
        let second = queue.nextTurn(budget: 1_000)
        #expect(second.ids == [JobID("j120")] + (150..<199).map { JobID("j\($0)") } + [JobID("j199")])
        #expect(!second.more)
        #expect(Array(queue).count == queue.count && queue.count == 51)
    }
}
