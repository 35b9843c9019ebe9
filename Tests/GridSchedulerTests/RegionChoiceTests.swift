import Foundation
import GridScheduler
import PropertyBased
import Testing

/// The national decision (issue 10), pure: hard constraints never bend; cost decides the rest.
@Suite struct RegionChoiceTests {
    typealias RC = RegionChoice
    static let prices = RC.Prices(carbonPerTonne: 80, transferPerGB: 0.15, waitPerGPUHour: 2)

    static func region(_ id: String, _ j: String, price: Double, carbon: Double, pue: Double = 1.2) -> RC.Region {
        RC.Region(id: id, jurisdictions: [j], pue: pue, pricePerKWh: Array(repeating: price, count: 24),
                  carbonGPerKWh: Array(repeating: carbon, count: 24), embodiedGPerGPUHour: 3.74)
    }

    static func job(_ id: String = "j", gpus: Int = 8, hours: Int = 4, release: Int = 0, deadline: Int? = nil, origin: String = "east",
                    data: Double = 100, allowed: [String] = [], slo: Double? = nil, objective: RC.Objective = .cost) -> RC.Job {
        RC.Job(id: id, gpus: gpus, hours: hours, kwPerGPU: 0.55, release: release, deadline: deadline, origin: origin, dataGB: data,
               allowedJurisdictions: allowed, latencySLOms: slo, objective: objective)
    }

    static let rtts: [String: [String: Double]] = ["east": ["west": 40, "south": 25], "west": ["east": 40, "south": 30], "south": ["east": 25, "west": 30]]
    static func rtt(_ a: String, _ b: String) -> Double? { rtts[a]?[b] }
    static func plenty(_: String, _: Int) -> Int { 1000 }

    @Test func termsAddUpEnergyCarbonTransferAndWait() {
        let r = Self.region("west", "CN-NX", price: 0.3, carbon: 600)
        let t = RC.terms(Self.job(release: 0), in: r, start: 2, prices: Self.prices, rttMs: 40)
        let kWh = 8 * 0.55 * 1.2 * 4
        #expect(abs(t.kWh - kWh) < 1e-9)
        #expect(abs(t.energy - kWh * 0.3) < 1e-9)
        #expect(abs(t.operationalG - kWh * 600) < 1e-6 && abs(t.embodiedG - 32 * 3.74) < 1e-9)
        #expect(abs(t.carbon - (kWh * 600 + 32 * 3.74) / 1e6 * 80) < 1e-9)
        #expect(abs(t.transfer - 100 * 0.15) < 1e-9, "data leaves its origin")
        #expect(abs(t.wait - 2 * 8 * 2) < 1e-9, "two hours late, 8 GPUs")
    }

    @Test func protectionKeepsRoomForBoundJobsAndChargesOnlyFlexibleOnes() {
        let regions = [Self.region("east", "CN-SH", price: 0.9, carbon: 560), Self.region("west", "CN-NX", price: 0.3, carbon: 300),
                       Self.region("south", "CN-GD", price: 0.5, carbon: 500)]
        var p = ScarcityPricing(fullPrice: 0, protectPrice: 5, boundRegions: 2)
        let bound = Self.job("b", gpus: 16, allowed: ["CN-SH"])
        let allowedBound = ScarcityPricing.allowedRegions(bound, regions: regions, rtt: Self.rtt)
        #expect(allowedBound == ["east"])
        p.observe(bound, allowed: allowedBound)
        p.observe(Self.job("small", gpus: 4, allowed: ["CN-SH"]), allowed: ["east"])
        #expect(p.protected == ["east": 16], "the largest bound job seen")
        let free: RC.Capacity = { _, _ in 20 }
        let cap: RC.Capacity = { _, _ in 40 }
        let flexible = Self.job("f", gpus: 8)
        let price = p.price(for: flexible, allowedCount: 3, free: free, capacity: cap)
        // 20 free − 8 = 12 left, 4 GPUs short of the 16 kept: 4 of its 8 GPUs pay 5.
        #expect(abs(price("east", 0) - 5 * 4.0 / 8) < 1e-9)
        #expect(price("west", 0) == 0, "nothing kept in west")
        #expect(p.price(for: bound, allowedCount: 1, free: free, capacity: cap)("east", 0) == 0, "bound jobs never pay it")
        // With a congestion price on top: 30 × (half taken)².
        var q = p
        q.fullPrice = 30
        #expect(abs(q.price(for: bound, allowedCount: 1, free: free, capacity: cap)("east", 0) - 30 * 0.25) < 1e-9)
        // The prior (`--protect-prior largest`): regions no bound job has been seen in keep room
        // for the largest job seen anywhere (16 here), so west and south charge too.
        var r = p
        r.priorFromAnyJob = true
        #expect(r.largestSeen == 16)
        let withPrior = r.price(for: flexible, allowedCount: 3, free: free, capacity: cap)
        #expect(abs(withPrior("west", 0) - 5 * 4.0 / 8) < 1e-9 && withPrior("south", 0) == withPrior("west", 0))
        #expect(abs(withPrior("east", 0) - price("east", 0)) < 1e-9)
    }

    /// `gapPrice`: a job narrower than the largest seen pays for taking a region-hour from a gap
    /// that wide to less; one that leaves the gap, or is as wide itself, pays nothing.
    @Test func gapPriceChargesOnlyForBreakingTheWidestGap() {
        var p = ScarcityPricing(fullPrice: 0, protectPrice: 0)
        p.gapPrice = 3
        p.observe(Self.job("wide", gpus: 32), allowed: ["east", "west", "south"])
        let cap: RC.Capacity = { _, _ in 64 }
        let small = Self.job("small", gpus: 8)
        func price(_ job: RC.Job, free: Int) -> Double {
            p.price(for: job, allowedCount: 3, free: { _, _ in free }, capacity: cap)("east", 0)
        }
        #expect(price(small, free: 36) == 3, "36 − 8 = 28 < 32: the last 32-wide gap broken")
        #expect(price(small, free: 40) == 0, "40 − 8 = 32: the gap is left")
        #expect(price(small, free: 20) == 0, "no 32-wide gap to break")
        #expect(price(Self.job("wide2", gpus: 32), free: 36) == 0, "as wide as the widest")
        p.gapPrice = 0
        #expect(price(small, free: 36) == 0, "off")
    }

    @Test func cheapCleanWestWinsUnlessTheDataMayNotLeave() {
        let regions = [Self.region("east", "CN-SH", price: 0.9, carbon: 560), Self.region("west", "CN-NX", price: 0.3, carbon: 300)]
        let free = RC.decide(Self.job(data: 10), regions: regions, rtt: Self.rtt, capacity: Self.plenty, now: 0, horizon: 48, prices: Self.prices)
        #expect(free.region == "west" && free.start == 0)
        let resident = RC.decide(Self.job(data: 10, allowed: ["CN-SH"]), regions: regions, rtt: Self.rtt, capacity: Self.plenty, now: 0, horizon: 48,
                                 prices: Self.prices)
        #expect(resident.region == "east")
        #expect(resident.candidates.first { $0.region == "west" }?.infeasible == .jurisdiction(allowed: ["CN-SH"], region: ["CN-NX"]))
        #expect(RC.decide(Self.job(data: 500), regions: regions, rtt: Self.rtt, capacity: Self.plenty, now: 0, horizon: 48,
                          prices: Self.prices).region == "east", "500 GB to move west costs more than the power saved")
        let nearby = RC.decide(Self.job(data: 10, slo: 20), regions: regions, rtt: Self.rtt, capacity: Self.plenty, now: 0, horizon: 48, prices: Self.prices)
        #expect(nearby.region == "east", "40 ms to the west breaks a 20 ms SLO")
    }

    @Test func aJobWhoseJurisdictionIsFullWaitsAndOneNoRegionCanRunIsImpossible() {
        let regions = [Self.region("east", "CN-SH", price: 0.9, carbon: 560), Self.region("west", "CN-NX", price: 0.3, carbon: 300)]
        let full: RC.Capacity = { r, _ in r == "east" ? 0 : 1000 }
        let waits = RC.decide(Self.job(allowed: ["CN-SH"]), regions: regions, rtt: Self.rtt, capacity: full, now: 0, horizon: 48, prices: Self.prices)
        #expect(waits.region == nil && !waits.impossible, "waits in its jurisdiction, never leaks west")
        let never = RC.decide(Self.job(allowed: ["CN-GD"]), regions: regions, rtt: Self.rtt, capacity: Self.plenty, now: 0, horizon: 48,
                              prices: Self.prices)
        #expect(never.region == nil && never.impossible)
    }

    @Test func aDeadlineLetsTheJobWaitForACheaperHourButNotMissIt() {
        let prices = RC.Prices(carbonPerTonne: 80, transferPerGB: 0.15, waitPerGPUHour: 0.05)
        var r = Self.region("west", "CN-NX", price: 0.8, carbon: 500)
        r.pricePerKWh = (0..<24).map { (1...5).contains($0) ? 0.2 : 0.8 }  // cheap night hours 1–5
        let flexible = RC.decide(Self.job(hours: 4, release: 0, deadline: 10, origin: "west"), regions: [r], rtt: Self.rtt,
                                 capacity: Self.plenty, now: 0, horizon: 48, prices: prices)
        #expect(flexible.start == 1, "held to the cheap hours, within the deadline")
        let urgent = RC.decide(Self.job(hours: 4, release: 0, deadline: 4, origin: "west"), regions: [r], rtt: Self.rtt,
                               capacity: Self.plenty, now: 0, horizon: 48, prices: prices)
        #expect(urgent.start == 0)
        let noDeadline = RC.decide(Self.job(hours: 4, release: 0, origin: "west"), regions: [r], rtt: Self.rtt, capacity: Self.plenty,
                                   now: 0, horizon: 48, prices: prices)
        #expect(noDeadline.start == 0, "no deadline: as soon as it can")
    }

    @Test func capacityMustHoldForTheWholeRun() {
        let r = Self.region("west", "CN-NX", price: 0.3, carbon: 300)
        let dip: RC.Capacity = { _, h in h == 2 ? 4 : 16 }  // only 4 GPUs free in hour 2
        let d = RC.decide(Self.job(gpus: 8, hours: 3, release: 0, origin: "west"), regions: [r], rtt: Self.rtt, capacity: dip, now: 0,
                          horizon: 48, prices: Self.prices)
        #expect(d.start == 3)
    }

    @Test func decisionsNeverViolateAHardConstraint() async {
        await propertyCheck(count: 200, input: Gen.int(in: 0...1_000_000)) { seed in
            var rng = SeededRandom(seed: UInt64(seed))
            let ids = ["east", "west", "south"]
            let regions = ids.map { id in
                RC.Region(id: id, jurisdictions: ["J-\(id)"], pue: 1 + Double(rng.below(100)) / 200,
                          pricePerKWh: (0..<24).map { _ in Double(rng.below(100)) / 100 },
                          carbonGPerKWh: (0..<24).map { _ in Double(rng.below(800)) }, embodiedGPerGPUHour: 3)
            }
            var free: [String: [Int]] = [:]
            for id in ids { free[id] = (0..<48).map { _ in rng.below(24) } }
            let hours = 1 + rng.below(6)
            let release = rng.below(10)
            let deadline: Int? = rng.below(2) == 0 ? nil : release + hours + rng.below(12)
            let allowed = rng.below(2) == 0 ? [] : ["J-\(ids[rng.below(3)])"]
            let slo: Double? = rng.below(2) == 0 ? nil : Double(rng.below(45))
            let job = RC.Job(id: "p", gpus: 1 + rng.below(16), hours: hours, kwPerGPU: 0.4, release: release, deadline: deadline,
                             origin: ids[rng.below(3)], dataGB: Double(rng.below(500)), allowedJurisdictions: allowed, latencySLOms: slo,
                             objective: [.cost, .carbon, .balanced, .latency][rng.below(4)])
            let now = rng.below(8)
            let cap: RC.Capacity = { r, h in h < 48 ? free[r]![h] : 0 }
            let d = RC.decide(job, regions: regions, rtt: Self.rtt, capacity: cap, now: now, horizon: 48, prices: Self.prices)
            guard let region = d.region, let start = d.start else { return }
            let r = regions.first { $0.id == region }!
            #expect(allowed.isEmpty || r.jurisdictions.contains(where: allowed.contains), "jurisdiction")
            if let slo { #expect((region == job.origin ? 0 : Self.rtt(job.origin, region)!) <= slo, "latency") }
            #expect(start >= max(now, release), "not before release or now")
            if let deadline { #expect(start + hours <= deadline, "within the deadline") }
            #expect((start..<(start + hours)).allSatisfy { cap(region, $0) >= job.gpus }, "capacity over the whole run")
        }
    }
}

extension SeededRandom {
    mutating func below(_ bound: Int) -> Int { Int.random(in: 0..<max(1, bound), using: &self) }
}
