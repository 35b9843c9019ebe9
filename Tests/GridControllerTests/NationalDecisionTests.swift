import Foundation
import GridController
import GridCore
import GridProtocol
import GridScheduler
import PropertyBased
import Testing

/// The national scheduler routing with region profiles (issue 10), through the instance:
/// submissions in, forwards/holds/refusals and stored explanations out.
@Suite struct NationalDecisionTests {
    /// east: Shanghai-like, dear and coal-heavy; west: Ningxia-like, cheap and cleaner.
    /// The harness clock is hour 15 (UTC) of its day; `cheapHour` makes west's power nearly free then.
    static func settings(cheapHour: Int? = nil, rtt: Double = 30) -> NationalInstance.Settings {
        var s = NationalInstance.Settings()
        var westPrice = Array(repeating: 0.35, count: 24)
        if let h = cheapHour { westPrice[h] = 0.05 }
        s.profiles = [
            RegionChoice.Region(id: "east", jurisdictions: ["CN-SH"], pue: 1.3, pricePerKWh: Array(repeating: 0.80, count: 24),
                                carbonGPerKWh: Array(repeating: 580, count: 24), embodiedGPerGPUHour: 3.7),
            RegionChoice.Region(id: "west", jurisdictions: ["CN-NX"], pue: 1.15, pricePerKWh: westPrice,
                                carbonGPerKWh: Array(repeating: 420, count: 24), embodiedGPerGPUHour: 3.7),
        ]
        s.rtt = ["east": ["west": rtt]]
        return s
    }

    /// A job that does not mind waiting until its deadline: at the default 2 CNY per GPU-hour
    /// of waiting, no hour's power is cheap enough to wait for.
    static let waitFree = RoutingObjective.weights(energy: 1, carbon: 1, transfer: 1, wait: 0)

    static func harness(_ settings: NationalInstance.Settings = settings(), recovered: NationalRecovery = NationalRecovery()) -> NationalHarness {
        var h = NationalHarness()
        h.instance = NationalInstance(settings: settings, recovered: recovered, now: h.now)
        return h
    }

    static func job(_ id: String, gpus: Int = 8, routing: RoutingRequest) -> Wire.Submit {
        var s = Wire.Submit()
        s.jobID = id
        s.spec = Wire.JobSpec(JobSpec(name: id, command: "true", accelerators: AcceleratorRequest(count: gpus), routing: routing))
        return s
    }

    static func reply(_ out: [ControllerDirective]) -> Wire.SubmitReply? {
        if case .submitReply(let r) = out.bodies.last { return r }
        return nil
    }

    static func forwards(_ out: [ControllerDirective]) -> [Wire.JobForward] {
        out.bodies.compactMap { if case .jobForward(let f) = $0 { return f } else { return nil } }
    }

    @Test func westForPriceAndCarbonUnlessTheDataMustStay() throws {
        var h = Self.harness()
        _ = h.summary("east", free: 16, total: 16)
        _ = h.summary("west", free: 16, total: 16)
        let free = Self.reply(h.send(.submit(Self.job("free", routing: RoutingRequest(origin: "east", dataGB: 5, runSeconds: 7200))), from: h.client))
        #expect(free?.accepted == true && free?.regionID == "west")
        let e = try #require(h.instance.job("free")?.route)
        #expect(e.region == "west" && e.candidates.count == 2 && e.candidates.allSatisfy { $0.reason == nil })
        let west = try #require(e.candidates.first { $0.region == "west" }), east = try #require(e.candidates.first { $0.region == "east" })
        #expect(west.total < east.total && west.operationalG < east.operationalG && west.transfer > 0 && east.transfer == 0)
        #expect(abs(west.total - (west.energy + west.carbon + west.transfer + west.wait)) < 1e-9)

        let kept = Self.reply(h.send(.submit(Self.job("kept", routing: RoutingRequest(origin: "east", jurisdictions: ["CN-SH"]))), from: h.client))
        #expect(kept?.regionID == "east")
        let k = try #require(h.instance.job("kept")?.route)
        #expect(k.candidates.first { $0.region == "west" }?.reason?.contains("jurisdiction") == true)

        let near = Self.reply(h.send(.submit(Self.job("near", routing: RoutingRequest(origin: "east", latencySLOMs: 10))), from: h.client))
        #expect(near?.regionID == "east", "west is 30 ms from east, over the 10 ms SLO")
    }

    @Test func aRegionWithALongQueueIsChargedTheWaitAndPassedOver() throws {
        var h = Self.harness()
        // west is cheaper but full with three hours of queue; east has room now.
        var busy = Wire.RegionSummary(RegionSummary(
            region: "west", nodesReady: 1, nodesLost: 0, queuedJobs: 40, runningJobs: 16,
            capacity: [CapacityEntry(vendor: .nvidia, model: "A100", memoryTotalMiB: 81920, total: 16, free: 0, healthy: 16, grade: .a)],
            nodes: [], nodesTruncated: false, generatedAt: h.now.wall))
        busy.full = true
        busy.sequence = 1
        busy.expectedWaitS = 3 * 3600
        _ = h.send(.regionSummary(busy), from: NationalHarness.regionOrigin("west"))
        _ = h.summary("east", free: 16, total: 16)
        _ = h.send(.submit(Self.job("j", routing: RoutingRequest(origin: "east", runSeconds: 3600))), from: h.client)
        let e = try #require(h.instance.job("j")?.route)
        #expect(e.region == "east")
        let west = try #require(e.candidates.first { $0.region == "west" })
        #expect(west.wait >= 3 * 8 * 2 - 1e-9, "three hours of waiting for 8 GPUs at 2 CNY")
    }

    @Test func aJobNoRegionCanEverRunIsRefusedAtSubmitWithTheReason() {
        var h = Self.harness()
        _ = h.summary("east", free: 16, total: 16)
        let r = Self.reply(h.send(.submit(Self.job("nowhere", routing: RoutingRequest(jurisdictions: ["CN-BJ"]))), from: h.client))
        #expect(r?.accepted == false)
        #expect(r?.reason.contains("jurisdiction") == true && r?.reason.contains("east") == true)
        #expect(h.instance.job("nowhere") == nil, "nothing stored for a refused job")
        let far = Self.reply(h.send(.submit(Self.job("far", routing: RoutingRequest(origin: "nowhere-region", latencySLOMs: 5))), from: h.client))
        #expect(far?.accepted == false && far?.reason.contains("RTT") == true)
    }

    @Test func aJobWhoseJurisdictionIsFullWaitsThereAndNeverLeaks() {
        var h = Self.harness()
        _ = h.summary("east", free: 0, total: 0, model: "H100")
        _ = h.summary("west", free: 16, total: 16)
        let r = Self.reply(h.send(.submit(Self.job("stay", routing: RoutingRequest(jurisdictions: ["CN-SH"]))), from: h.client))
        #expect(r?.accepted == true && r?.regionID == "")
        #expect(h.instance.job("stay")?.state == .pending)
        for _ in 0..<5 {
            _ = h.summary("west", free: 16, total: 16, sequence: 1)
            #expect(Self.forwards(h.tick(advanceMs: 1000)).isEmpty, "never to west")
        }
        _ = h.summary("east", free: 8, total: 8, sequence: 2)
        let out = h.tick(advanceMs: 1000) + h.tick()
        #expect(Self.forwards(out).map(\.jobID) == ["stay"])
        #expect(h.instance.job("stay")?.region == "east")
    }

    @Test func aJobWithADeadlineIsHeldForTheCheapHourThenReleased() throws {
        var h = Self.harness(Self.settings(cheapHour: 18))
        _ = h.summary("west", free: 8, total: 8)
        let deadline = h.now.wall.addingTimeInterval(10 * 3600)
        let r = Self.reply(h.send(.submit(Self.job("later", routing: RoutingRequest(objective: Self.waitFree, deadline: deadline, runSeconds: 3600))), from: h.client))
        #expect(r?.accepted == true && r?.regionID == "")
        let job = try #require(h.instance.job("later"))
        let start = try #require(job.route?.start)
        #expect(job.state == .pending && job.message.contains("held"))
        #expect(Int(start.timeIntervalSince1970 / 3600) % 24 == 18)
        // A second job for the same hour finds the devices reserved by the first.
        _ = h.send(.submit(Self.job("later2", routing: RoutingRequest(objective: Self.waitFree, deadline: deadline, runSeconds: 3600))), from: h.client)
        let start2 = try #require(h.instance.job("later2")?.route?.start)
        #expect(start2 != start)
        // Nothing goes before the hour; at the hour it is forwarded.
        let ms = Int64(start.timeIntervalSince(h.now.wall) * 1000)
        var early: [Wire.JobForward] = []
        var t: Int64 = 0
        while t + 600_000 < ms {
            t += 600_000
            _ = h.summary("west", free: 8, total: 8, sequence: 1)
            early += Self.forwards(h.tick(advanceMs: 600_000)).filter { $0.jobID == "later" }
        }
        #expect(early.isEmpty)
        early += Self.forwards(h.tick(advanceMs: ms - t - 1000)).filter { $0.jobID == "later" }
        #expect(early.isEmpty)
        _ = h.summary("west", free: 8, total: 8, sequence: 1)
        let out = h.tick(advanceMs: 1001) + h.tick()
        #expect(Self.forwards(out).map(\.jobID).contains("later"))
        #expect(h.instance.job("later")?.state == .forwarded)
    }

    @Test func heldJobsAreReplannedTogetherLargestFirstAtTheTopOfTheHour() throws {
        var settings = Self.settings(cheapHour: 18)
        settings.profiles[1].pricePerKWh[20] = 0.10  // west's second-cheapest hour
        var h = Self.harness(settings)
        _ = h.summary("west", free: 8, total: 8)
        let deadline = h.now.wall.addingTimeInterval(10 * 3600)
        let r = RoutingRequest(objective: Self.waitFree, deadline: deadline, runSeconds: 3600)
        _ = h.send(.submit(Self.job("small", gpus: 1, routing: r)), from: h.client)
        _ = h.send(.submit(Self.job("big", gpus: 8, routing: r)), from: h.client)
        func hourOf(_ id: String) -> Int? { h.instance.job(JobID(id))?.route?.start.map { Int($0.timeIntervalSince1970 / 3600) % 24 } }
        #expect(hourOf("small") == 18 && hourOf("big") == 20, "first come, first served at submit")
        // The next top of the hour: both decided again, the big one first.
        let toNextHour = Int64((3600 - h.now.wall.timeIntervalSince1970.truncatingRemainder(dividingBy: 3600)) * 1000) + 1500
        _ = h.tick(advanceMs: toNextHour - 2000)
        _ = h.summary("west", free: 8, total: 8, sequence: 1)
        _ = h.tick(advanceMs: 2000)
        #expect(hourOf("big") == 18 && hourOf("small") == 20, "big \(hourOf("big") ?? -1), small \(hourOf("small") ?? -1)")
        #expect(h.instance.job("big")?.state == .pending && h.instance.job("small")?.state == .pending)
        // An hour later with west silent: nobody loses the plan they have.
        _ = h.tick(advanceMs: 3_600_000)
        #expect(hourOf("big") == 18 && hourOf("small") == 20 && h.instance.job("big")?.state == .pending)
    }

    /// `routing.replan_order`: largest first gives the big job the cheap hour 17, the only hour
    /// the urgent job has left (hour 16 is full), and leaves the urgent one without a slot;
    /// `best` then plans bound first too (both may run anywhere, so least slack first) and keeps
    /// that plan: both keep a slot.
    @Test(arguments: ["size", "best"])
    func jointReplanningTriesLeastSlackFirstWhenLargestFirstLeavesAJobOut(order: String) throws {
        var settings = Self.settings(cheapHour: 17)
        settings.profiles[1].pricePerKWh[18] = 0.10
        settings.routing.replanOrder = order
        #expect(settings.routing.problems().isEmpty)
        var h = Self.harness(settings)
        _ = h.summary("west", free: 8, total: 8)
        func hourOf(_ id: String) -> Int? { h.instance.job(JobID(id))?.route?.start.map { Int($0.timeIntervalSince1970 / 3600) % 24 } }
        let urgent = RoutingRequest(objective: Self.waitFree, deadline: h.now.wall.addingTimeInterval(3 * 3600 - 60), runSeconds: 3600)
        _ = h.send(.submit(Self.job("urgent", gpus: 8, routing: urgent)), from: h.client)
        let big = RoutingRequest(objective: Self.waitFree, deadline: h.now.wall.addingTimeInterval(10 * 3600), runSeconds: 7200)
        _ = h.send(.submit(Self.job("big", gpus: 8, routing: big)), from: h.client)
        #expect(hourOf("urgent") == 17 && hourOf("big") == 18, "urgent \(hourOf("urgent") ?? -1), big \(hourOf("big") ?? -1)")
        // The top of hour 16, with west full this hour.
        let toNextHour = Int64((3600 - h.now.wall.timeIntervalSince1970.truncatingRemainder(dividingBy: 3600)) * 1000) + 1500
        _ = h.tick(advanceMs: toNextHour - 2000)
        _ = h.summary("west", free: 0, total: 8, sequence: 1)
        _ = h.tick(advanceMs: 2000)
        if order == "size" {
            #expect(hourOf("big") == 17, "largest first: the big job takes the cheap hour")
        } else {
            #expect(hourOf("urgent") == 17 && hourOf("big") == 18, "urgent \(hourOf("urgent") ?? -1), big \(hourOf("big") ?? -1)")
            #expect(h.instance.job("urgent")?.state == .pending && h.instance.job("big")?.state == .pending)
        }
    }

    /// `routing.forecast_days`: yesterday a 16-GPU job bound to east (CN-SH) came at 15:00 and
    /// could run until 23:00. Today at 13:00 a job that may run anywhere, whose data sits in
    /// east, would take 8 of east's 16 GPUs until 17:00. Without a forecast it stays by its data
    /// (500 GB to move costs more than west's cheaper power saves); with one day of history it
    /// goes west and leaves east the room yesterday's bound job needed.
    @Test(arguments: [0, 1])
    func yesterdaysBoundJobsKeepRoomForTodaysWhenForecastIsOn(days: Int) throws {
        var settings = Self.settings()
        settings.profiles.append(RegionChoice.Region(id: "south", jurisdictions: ["CN-GD"], pue: 1.3, pricePerKWh: Array(repeating: 0.7, count: 24),
                                                     carbonGPerKWh: Array(repeating: 500, count: 24), embodiedGPerGPUHour: 3.7))
        settings.routing.protectPrice = 0
        settings.routing.forecastDays = days
        settings.historyRetentionMs = 72 * 3_600_000
        #expect(settings.routing.problems().isEmpty)
        var h = Self.harness(settings)
        _ = h.summary("east", free: 16, total: 16)
        _ = h.summary("west", free: 16, total: 16)
        let bound = RoutingRequest(origin: "east", dataGB: 10, jurisdictions: ["CN-SH"],
                                   deadline: h.now.wall.addingTimeInterval(8 * 3600), runSeconds: 7200)
        #expect(Self.reply(h.send(.submit(Self.job("bound", gpus: 16, routing: bound)), from: h.client))?.regionID == "east")
        // 22 hours later: 13:00 the next day.
        _ = h.tick(advanceMs: 22 * 3_600_000)
        _ = h.summary("east", free: 16, total: 16, sequence: 2)
        _ = h.summary("west", free: 16, total: 16, sequence: 2)
        let flexible = RoutingRequest(origin: "east", dataGB: 500, runSeconds: 4 * 3600)
        let reply = Self.reply(h.send(.submit(Self.job("flex", gpus: 8, routing: flexible)), from: h.client))
        #expect(reply?.accepted == true)
        #expect(reply?.regionID == (days == 0 ? "east" : "west"), "\(h.instance.job("flex")?.route?.candidates.map { "\($0.region): \($0.score)" } ?? [])")
    }

    @Test func aBadReplanOrderIsNamedWithItsKey() {
        var r = RoutingPolicy()
        r.replanOrder = "fastest"
        #expect(r.problems() == ["routing.replan_order: 'fastest' is not one of size, slack, bound, best"])
    }

    @Test func aHeldJobSurvivesARestart() throws {
        var h = Self.harness(Self.settings(cheapHour: 18))
        _ = h.summary("west", free: 8, total: 8)
        _ = h.send(.submit(Self.job("later", routing: RoutingRequest(objective: Self.waitFree, deadline: h.now.wall.addingTimeInterval(10 * 3600), runSeconds: 3600))), from: h.client)
        let stored = try #require(h.instance.job("later"))
        var recovered = NationalRecovery()
        recovered.jobs = [stored]
        var h2 = Self.harness(Self.settings(cheapHour: 18), recovered: recovered)
        h2.now = h.now
        _ = h2.summary("west", free: 8, total: 8)
        #expect(Self.forwards(h2.tick(advanceMs: 1000)).isEmpty, "still held after the restart")
        let ms = Int64(try #require(stored.route?.start).timeIntervalSince(h2.now.wall) * 1000)
        _ = h2.tick(advanceMs: ms - 1000)
        _ = h2.summary("west", free: 8, total: 8, sequence: 1)
        #expect(Self.forwards(h2.tick(advanceMs: 1001) + h2.tick()).map(\.jobID) == ["later"])
    }

    @Test func aRegionThatRefusesIsSkippedAndWhenAllRefuseTheJobFails() throws {
        var h = Self.harness()
        _ = h.summary("east", free: 16, total: 16)
        _ = h.summary("west", free: 16, total: 16)
        _ = h.send(.submit(Self.job("j", routing: RoutingRequest())), from: h.client)
        #expect(h.instance.job("j")?.region == "west")
        var ack = Wire.JobForwardAck()
        ack.jobID = "j"
        ack.accepted = false
        ack.reason = "capacity moved"
        _ = h.tick()
        let out = h.send(.jobForwardAck(ack), from: NationalHarness.regionOrigin("west"))
        #expect(h.instance.job("j")?.region == "east" && h.instance.job("j")?.state == .forwarded)
        #expect(h.instance.job("j")?.route?.refusedBy == ["west"])
        #expect(out.persistedJobs.last?.region == "east")
        _ = h.tick()
        _ = h.send(.jobForwardAck(ack), from: NationalHarness.regionOrigin("east"))
        let j = try #require(h.instance.job("j"))
        #expect(j.state == .failed && j.message.contains("refused by west, east"))
    }

    @Test func waitingJobsAreDecidedAgainABoundedNumberPerTurn() {
        var s = Self.settings()
        s.routeBudget = 2
        var h = Self.harness(s)
        for n in 0..<5 { _ = h.send(.submit(Self.job("w\(n)", gpus: 1, routing: RoutingRequest())), from: h.client) }
        #expect((0..<5).allSatisfy { h.instance.job(JobID("w\($0)"))?.state == .pending })
        _ = h.summary("west", free: 16, total: 16)
        var forwarded: [Int] = []
        for _ in 0..<3 {
            _ = h.tick()
            forwarded.append((0..<5).filter { h.instance.job(JobID("w\($0)"))?.state == .forwarded }.count)
        }
        #expect(forwarded == [2, 4, 5], "oldest first, two per turn")
    }

    @Test func statusFromARegionThatDoesNotHoldTheJobIsIgnored() {
        var h = Self.harness()
        _ = h.summary("east", free: 16, total: 16)
        _ = h.summary("west", free: 16, total: 16)
        _ = h.send(.submit(Self.job("j", routing: RoutingRequest())), from: h.client)
        var u = Wire.StatusUpdate()
        u.jobID = "j"
        u.regionID = "east"
        u.state = "running"
        u.epoch = 1
        u.updateID = "east:j:1:running"
        let out = h.send(.statusUpdate(u), from: NationalHarness.regionOrigin("east"))
        #expect(out.statusAcks.first?.applied == true)
        #expect(h.instance.job("j")?.state == .forwarded && h.instance.job("j")?.region == "west")
    }

    /// Random regions, capacities and jobs through the instance: every forward honours the
    /// job's jurisdictions, latency SLO and allowed regions; nothing is forwarded to a region
    /// with fewer healthy matching devices than the job needs.
    @Test func forwardsNeverViolateAHardConstraint() async {
        await propertyCheck(count: 60, input: Gen.int(in: 0...1_000_000)) { seed in
            var rng = SplitMix(seed: UInt64(seed))
            let ids = ["r0", "r1", "r2", "r3"]
            var s = NationalInstance.Settings()
            s.profiles = ids.map { id in
                RegionChoice.Region(id: id, jurisdictions: ["J\(rng.int(3))"], pue: 1.1 + Double(rng.int(5)) / 10,
                                    pricePerKWh: (0..<24).map { _ in Double(rng.int(100)) / 100 },
                                    carbonGPerKWh: (0..<24).map { _ in Double(rng.int(800)) }, embodiedGPerGPUHour: 3)
            }
            for a in ids { for b in ids where a < b { s.rtt[a, default: [:]][b] = Double(rng.int(60)) } }
            var h = Self.harness(s)
            var totals: [String: Int] = [:]
            for id in ids {
                let total = rng.int(20)
                totals[id] = total
                _ = h.summary(id, free: rng.int(total + 1), total: total)
            }
            var specs: [String: RoutingRequest] = [:]
            var gpus: [String: Int] = [:]
            var forwarded: [Wire.JobForward] = []
            for n in 0..<30 {
                let id = "j\(n)"
                let r = RoutingRequest(origin: RegionID(ids[rng.int(4)]), dataGB: Double(rng.int(500)),
                                       jurisdictions: rng.int(2) == 0 ? [] : ["J\(rng.int(3))"],
                                       latencySLOMs: rng.int(3) == 0 ? Double(rng.int(60)) : nil,
                                       objective: [.cost, .carbon, .latency, .balanced][rng.int(4)],
                                       deadline: rng.int(2) == 0 ? h.now.wall.addingTimeInterval(Double(rng.int(20) + 1) * 3600) : nil,
                                       runSeconds: (rng.int(4) + 1) * 1800)
                specs[id] = r
                gpus[id] = rng.int(9)
                forwarded += Self.forwards(h.send(.submit(Self.job(id, gpus: gpus[id]!, routing: r)), from: h.client))
                forwarded += Self.forwards(h.tick(advanceMs: Int64(rng.int(3_600_000))))
            }
            for f in forwarded {
                let r = specs[f.jobID]!
                let holder = h.instance.job(JobID(f.jobID))?.region?.rawValue
                let region = s.profiles.first { $0.id == holder }
                guard let region else { Issue.record("forward of \(f.jobID) to an unknown region"); continue }
                if !r.jurisdictions.isEmpty { #expect(region.jurisdictions.contains(where: r.jurisdictions.contains), "seed \(seed)") }
                if let slo = r.latencySLOMs, let o = r.origin?.rawValue, o != region.id {
                    let rtt = s.rtt[o]?[region.id] ?? s.rtt[region.id]?[o] ?? .infinity
                    #expect(rtt <= slo, "seed \(seed): \(f.jobID) RTT \(rtt) > SLO \(slo)")
                }
                #expect(totals[region.id]! >= gpus[f.jobID]!, "seed \(seed)")
            }
        }
    }
}

/// The seeded generator of the property tests' scenarios.
typealias SplitMix = SplitMix64
