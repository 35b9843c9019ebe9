import GridScheduler
import Testing

/// The orders joint re-planning tries (issue 10): each a permutation, deterministic on ties.
@Suite struct ReplanOrderTests {
    typealias Item = ReplanOrder.Item
    static let items = [Item(id: "a", gpuHours: 16, slack: 9), Item(id: "b", gpuHours: 64, slack: 5),
                        Item(id: "c", gpuHours: 16, slack: 0), Item(id: "d", gpuHours: 8, slack: 0)]

    @Test func sizeIsLargestFirstSlackIsLeastSlackFirstThenLargest() {
        #expect(ReplanOrder.size.candidates(Self.items) == [["b", "a", "c", "d"]])
        #expect(ReplanOrder.slack.candidates(Self.items) == [["c", "d", "b", "a"]])
        #expect(ReplanOrder.best.candidates(Self.items) == [["b", "a", "c", "d"], ["c", "d", "b", "a"]])
    }

    /// Bound first: a job allowed in one region before one allowed in two before a flexible one,
    /// whatever their slack; least slack and then size among equally bound jobs.
    @Test func boundIsFewestRegionsFirstThenLeastSlack() {
        let items = [Item(id: "flex", gpuHours: 128, slack: 0), Item(id: "sh", gpuHours: 112, slack: 14, regions: 1),
                     Item(id: "pair", gpuHours: 8, slack: 2, regions: 2), Item(id: "sh2", gpuHours: 8, slack: 3, regions: 1)]
        #expect(ReplanOrder.bound.candidates(items) == [["sh2", "sh", "pair", "flex"]])
        #expect(ReplanOrder.best.candidates(items) == [["flex", "sh", "pair", "sh2"], ["sh2", "sh", "pair", "flex"]])
        #expect(ReplanOrder.slack.candidates(items) == [["flex", "pair", "sh2", "sh"]])
    }

    /// Without region counts bound first is least slack first.
    @Test func bestPlansOnceWhenBothOrdersAgree() {
        let same = [Item(id: "x", gpuHours: 64, slack: 0), Item(id: "y", gpuHours: 8, slack: 4)]
        #expect(ReplanOrder.best.candidates(same) == [["x", "y"]])
        #expect(ReplanOrder.best.candidates([]) == [[]])
    }

    @Test func pickKeepsTheLowestScoreAndTheFirstOnATie() {
        #expect(ReplanOrder.pick([5, 3]) == 1)
        #expect(ReplanOrder.pick([3, 3]) == 0)
        #expect(ReplanOrder.pick([3, 3 - 1e-12]) == 0, "within 1e-9 is a tie")
        #expect(ReplanOrder.pick([.nan, 1]) == 0)
        #expect(ReplanOrder.pick([7]) == 0)
    }

    @Test func everyOrderIsAPermutation() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            let items = (0..<Int.random(in: 0...12, using: &rng)).map {
                Item(id: "j\($0)", gpuHours: Int.random(in: 0...3, using: &rng) * 8, slack: Int.random(in: -2...3, using: &rng),
                     regions: Int.random(in: 1...3, using: &rng))
            }
            for order in ReplanOrder.allCases {
                for c in order.candidates(items) { #expect(c.sorted() == items.map(\.id).sorted()) }
            }
        }
    }
}
