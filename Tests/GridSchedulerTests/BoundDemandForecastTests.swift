import GridScheduler
import Testing

/// The bound-demand forecast learned from past periods (issue 10): what it keeps, when it stops
/// keeping it, and the price a flexible job pays for taking it.
@Suite struct BoundDemandForecastTests {
    typealias Past = BoundDemandForecast.PastJob

    /// Two past days: day 0 had a 32-GPU job bound to east released at hour 5 (window 5..<15),
    /// day 1 had none there but a 16-GPU job bound to east or south released at hour 2 (2..<6),
    /// and a flexible 64-GPU job (four regions) that is never kept for.
    static let forecast = BoundDemandForecast(periods: [
        [Past(release: 5, deadline: 15, gpus: 32, regions: ["east"]),
         Past(release: 0, deadline: 24, gpus: 64, regions: ["east", "west", "south", "north"])],
        [Past(release: 2, deadline: 6, gpus: 16, regions: ["east", "south"])],
    ], hours: 24, boundRegions: 2)

    @Test func keepsRoomOnlyForBoundJobsNotYetReleasedWhoseWindowHoldsTheHour() {
        let f = Self.forecast
        #expect(f.largestExpected(region: "east", now: 0, hour: 8) == 32)
        #expect(f.largestExpected(region: "east", now: 0, hour: 3) == 16, "only day 1's job may run at hour 3")
        #expect(f.largestExpected(region: "east", now: 5, hour: 8) == 0, "released by hour 5: known, no longer forecast")
        #expect(f.largestExpected(region: "east", now: 4, hour: 15) == 0, "past its deadline")
        #expect(f.largestExpected(region: "west", now: 0, hour: 8) == 0, "the flexible job is not kept for")
        #expect(f.largestExpected(region: "south", now: 0, hour: 4) == 16)
        #expect(f.largestExpected(region: "nowhere", now: 0, hour: 4) == 0)
        #expect(f.largestExpected(region: "east", now: 24, hour: 4) == 0 && f.largestExpected(region: "east", now: -1, hour: 4) == 0)
    }

    @Test func shortfallIsTheMeanPartOfTheGPUsALaterBoundJobWouldHaveNeeded() {
        let f = Self.forecast
        // 40 free, take 16: 24 left; day 0 needs 32 (8 short of 16 → 0.5), day 1 nothing at hour 8.
        #expect(abs(f.shortfall(region: "east", now: 0, hour: 8, gpus: 16, left: 40) - 0.25) < 1e-12)
        // 64 free, take 16: 48 left ≥ 32: no shortfall.
        #expect(f.shortfall(region: "east", now: 0, hour: 8, gpus: 16, left: 64) == 0)
        // 16 free, take 16: nothing left; both days short at hour 4 (day 0 is not: its window starts at 5).
        #expect(abs(f.shortfall(region: "east", now: 0, hour: 4, gpus: 16, left: 16) - 0.5) < 1e-12)
        #expect(abs(f.shortfall(region: "east", now: 0, hour: 5, gpus: 16, left: 16) - 1.0) < 1e-12)
        #expect(f.shortfall(region: "east", now: 0, hour: 5, gpus: 0, left: 16) == 0)
        #expect(BoundDemandForecast(periods: [], hours: 24).shortfall(region: "east", now: 0, hour: 5, gpus: 8, left: 0) == 0)
    }

    @Test func aFlexibleJobPaysTheExpectedLossABoundJobPaysNothing() {
        var p = ScarcityPricing(fullPrice: 0, protectPrice: 0, boundRegions: 2)
        p.forecast = Self.forecast
        p.forecastWeight = 0.5
        let flexible = RegionChoice.Job(id: "f", gpus: 16, hours: 4, kwPerGPU: 0.5, release: 0, deadline: nil, origin: "east",
                                        dataGB: 1, allowedJurisdictions: [], latencySLOms: nil, objective: .cost)
        let free: RegionChoice.Capacity = { _, _ in 40 }
        let cap: RegionChoice.Capacity = { _, _ in 64 }
        let price = p.price(for: flexible, allowedCount: 4, free: free, capacity: cap, now: 0)
        #expect(abs(price("east", 8) - 0.5 * 100 * 0.25) < 1e-9)
        #expect(price("west", 8) == 0)
        #expect(p.price(for: flexible, allowedCount: 4, free: free, capacity: cap, now: 6)("east", 8) == 0, "released by now")
        #expect(p.price(for: flexible, allowedCount: 2, free: free, capacity: cap, now: 0)("east", 8) == 0, "bound jobs never pay it")
    }

    @Test func largeSizesAndOddWindowsDoNotTrap() {
        let f = BoundDemandForecast(periods: [[Past(release: -5, deadline: Int.max, gpus: Int.max, regions: ["a"]),
                                               Past(release: 10, deadline: 3, gpus: 8, regions: ["a"])]], hours: 12)
        #expect(f.largestExpected(region: "a", now: 0, hour: 11) == 0, "released before the period: known from the start")
        #expect(f.shortfall(region: "a", now: 0, hour: 11, gpus: Int.max / 2, left: Int.min / 2) == 0)
        #expect(BoundDemandForecast(periods: [[Past(release: 0, deadline: 5, gpus: 1, regions: ["a"])]], hours: -3)
            .largestExpected(region: "a", now: 0, hour: 0) == 0)
    }
}

extension BoundDemandForecastTests {
    /// `largest+share`: many small bound jobs stack up on top of the largest.
    @Test func largestPlusShareCountsTheOthersSpreadOverTheirWindows() {
        // Four 4-GPU jobs bound to east, each 2 h in a 4-hour window (half of it): 2 GPUs each
        // spread; with an 8-GPU job as the largest (1 h in 8: 1 GPU, not counted twice).
        var f = BoundDemandForecast(periods: [
            (0..<4).map { _ in Past(release: 4, deadline: 8, gpus: 4, hours: 2, regions: ["east"]) }
                + [Past(release: 4, deadline: 12, gpus: 8, hours: 1, regions: ["east"])],
        ], hours: 24)
        #expect(f.largestExpected(region: "east", now: 0, hour: 5) == 8)
        // 20 free, take 8: 12 left; largest alone needs 8: no shortfall.
        #expect(f.shortfall(region: "east", now: 0, hour: 5, gpus: 8, left: 20) == 0)
        f.need = .largestPlusShare
        // 8 + 4 × 2 = 16 needed, 12 left: 4 of the 8 GPUs short.
        #expect(abs(f.shortfall(region: "east", now: 0, hour: 5, gpus: 8, left: 20) - 0.5) < 1e-9)
        // Hour 9: only the 8-GPU job's window; nothing spread besides it.
        #expect(f.shortfall(region: "east", now: 0, hour: 9, gpus: 8, left: 16) == 0)
    }
}
