import ArgumentParser
import Foundation
import GridScheduler

/// `grid-bench national --scenario FILE`: replays a scenario (issue 10's JSON format) hour by
/// hour through the real decision code (`RegionChoice`), jobs revealed at their release hour,
/// and compares the policy with three baselines in the same run.
struct NationalBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "national",
        abstract: "Issue 10: replay a scenario through the national decision code and baselines.")
    @Option(help: "Scenario JSON (see bench/scenarios/README.md).") var scenario: String
    @Option(help: "Write the policy's decisions as {\"job\": [\"region\", start] or null}.") var decisionsOut: String?
    @Option(help: "cost | carbon | balanced | latency (the job objective the policy uses).") var policy = "cost"
    @Option(help: "Scarcity price (currency per GPU-hour) of a region-hour that is full; it grows with the square of the share taken. 0 = off.")
    var scarcity: Double = 0
    @Option(help: "square (scarcity x share²) or exponential (online primal-dual threshold: (L/e)(U·e/L)^share, U = the unplaced penalty, L = --scarcity-floor).")
    var scarcityCurve = "square"
    @Option(help: "L of the exponential curve: the cheapest a GPU-hour can be worth.") var scarcityFloor: Double = 1
    @Option(help: "keep: a held job gives back only its own reservation when re-planned (it never loses its slot); joint: every held reservation is given back and all waiting and held jobs are decided again, largest first.")
    var replan = "joint"
    @Option(help: "Price per GPU-hour for a job that could run in many regions to use capacity protected for jobs bound to one or two regions (the largest such job seen so far in each region). 0 = off.")
    var protect: Double = 5
    @Option(help: "none: a region keeps room only once a bound job has been seen there; largest: before that, it keeps room for the largest job seen anywhere.")
    var protectPrior = "none"
    @Option(name: .customLong("history"), help: "A past period's scenario (same regions and hours; repeat for more): the bound demand forecast (BoundDemandForecast) replaces the protection learned online.")
    var history: [String] = []
    @Option(help: "With --history: the part of the expected loss (unplaced price × expected shortfall) a flexible job pays per GPU-hour.")
    var forecastWeight: Double = 0.5
    @Option(help: "With --history: largest (the largest bound job that may run in a region-hour) or largest+share (plus the other bound jobs spread over their windows).")
    var forecastNeed: BoundDemandForecast.Need = .largest
    @Option(help: "Order of joint re-planning: size (largest GPU-hours first), slack (least slack first), best (both, keeping the plan that scores lower; the national scheduler's default).")
    var replanOrder: ReplanOrder = .best
    @Option(help: "Packing: price per GPU-hour for breaking a region-hour's gap as wide as the largest job seen so far (ScarcityPricing.gapPrice). 0 = off.")
    var gapPrice: Double = 0

    struct Scenario: Decodable {
        struct Region: Decodable {
            var id: String
            var jurisdiction: String
            var pue: Double
            var price_per_kwh: [Double]
            var carbon_g_per_kwh: [Double]
            var free_gpus: [Int]
            var embodied_g_per_gpu_hour: Double
        }
        struct Job: Decodable {
            var id: String
            var kind: String?
            var gpus: Int
            var hours: Int
            var kw_per_gpu: Double
            var release_hour: Int
            var deadline_hour: Int
            var origin: String
            var data_gb: Double
            var allowed_jurisdictions: [String]
            var latency_slo_ms: Double?
        }
        var hours: Int
        var currency: String?
        var carbon_price_per_tonne: Double
        var transfer_price_per_gb: Double
        var wait_cost_per_gpu_hour: Double
        var regions: [Region]
        var rtt_ms: [String: [String: Double]]
        var jobs: [Job]
    }

    enum Strategy: String, CaseIterable {
        case policy, roundRobin = "round-robin", leastLoaded = "least-loaded", cheapestNow = "cheapest-price-now"
    }

    struct Outcome {
        var decisions: [String: (String, Int)?] = [:]
        var terms = RegionChoice.Terms()
        var placedGPUHours = 0
        var unplacedGPUHours = 0
        var waits: [Int] = []
        var decideCalls = 0
        var decideSeconds = 0.0
        var violations: [String] = []
    }

    static func load(_ path: String) throws -> Scenario {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw ValidationError("cannot read \(path): \(error.localizedDescription)")
        }
        do { return try JSONDecoder().decode(Scenario.self, from: data) } catch {
            throw ValidationError("\(path): not a scenario: \(error)")
        }
    }

    func run() throws {
        let s = try Self.load(scenario)
        let past = try history.map { path -> Scenario in
            let h = try Self.load(path)
            guard h.hours == s.hours, Set(h.regions.map(\.id)) == Set(s.regions.map(\.id)) else {
                throw ValidationError("--history \(path): \(h.hours) hours and regions \(h.regions.map(\.id).sorted()); the scenario has \(s.hours) hours and \(s.regions.map(\.id).sorted())")
            }
            return h
        }
        let objective: RegionChoice.Objective
        switch policy {
        case "cost": objective = .cost
        case "carbon": objective = .carbon
        case "balanced": objective = .balanced
        case "latency": objective = .latency
        default: throw ValidationError("--policy: '\(policy)' is not one of cost, carbon, balanced, latency")
        }
        print("grid-bench national: \(URL(fileURLWithPath: scenario).lastPathComponent): \(s.regions.count) regions, \(s.jobs.count) jobs, \(s.hours) hours; policy \(policy), re-planning \(replan) in order \(replanOrder.rawValue)" + (past.isEmpty ? "" : ", bound demand forecast from \(past.count) past periods (need \(forecastNeed.rawValue), weight \(forecastWeight))"))
        var results: [(Strategy, Outcome)] = []
        for strategy in Strategy.allCases {
            results.append((strategy, replay(s, strategy: strategy, objective: objective, history: past)))
        }
        let cur = s.currency ?? ""
        func f(_ v: Double) -> String { String(format: "%.1f", v) }
        print("strategy             total(\(cur))   energy   carbon transfer     wait  unplaced*100  op.CO2(t) emb.CO2(t)  GPUh placed/unplaced  wait mean/p99(h)  violations  decisions/s")
        for (strategy, o) in results {
            let total = o.terms.total + Double(o.unplacedGPUHours) * 100
            let sorted = o.waits.sorted()
            let mean = sorted.isEmpty ? 0 : Double(sorted.reduce(0, +)) / Double(sorted.count)
            let p99 = sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * 0.99))]
            let rate = o.decideSeconds > 0 ? Double(o.decideCalls) / o.decideSeconds : 0
            print(strategy.rawValue.padding(toLength: 20, withPad: " ", startingAt: 0),
                  f(total).leftPad(12), f(o.terms.energy).leftPad(8), f(o.terms.carbon).leftPad(8), f(o.terms.transfer).leftPad(8),
                  f(o.terms.wait).leftPad(8), f(Double(o.unplacedGPUHours) * 100).leftPad(13),
                  String(format: "%.3f", o.terms.operationalG / 1e6).leftPad(10), String(format: "%.3f", o.terms.embodiedG / 1e6).leftPad(10),
                  "\(o.placedGPUHours)/\(o.unplacedGPUHours)".leftPad(21), "\(String(format: "%.2f", mean))/\(p99)".leftPad(17),
                  String(o.violations.count).leftPad(11), String(format: "%.0f", rate).leftPad(12))
            for v in o.violations.prefix(5) { print("  violation: \(v)") }
        }
        let mine = results[0].1
        print("RESULT national: policy total \(f(mine.terms.total + Double(mine.unplacedGPUHours) * 100)), operational CO2 \(String(format: "%.3f", mine.terms.operationalG / 1e6)) t, violations \(mine.violations.count)")
        if let out = decisionsOut {
            var json: [String: Any] = [:]
            for (job, d) in mine.decisions { json[job] = d.map { [$0.0, $0.1] as [Any] } ?? NSNull() }
            let bytes = try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys, .prettyPrinted])
            try bytes.write(to: URL(fileURLWithPath: out))
            print("decisions written to \(out)")
        }
    }

    /// Hour by hour: each hour's released jobs (and those still waiting) are decided in id
    /// order against what earlier decisions left free; a decision reserves its GPU-hours.
    func replay(_ s: Scenario, strategy: Strategy, objective: RegionChoice.Objective, history: [Scenario] = []) -> Outcome {
        let regions = s.regions.map {
            RegionChoice.Region(id: $0.id, jurisdictions: [$0.jurisdiction], pue: $0.pue, pricePerKWh: $0.price_per_kwh,
                                carbonGPerKWh: $0.carbon_g_per_kwh, embodiedGPerGPUHour: $0.embodied_g_per_gpu_hour)
        }
        let byID = Dictionary(uniqueKeysWithValues: regions.map { ($0.id, $0) })
        let scenarioRegion = Dictionary(uniqueKeysWithValues: s.regions.map { ($0.id, $0) })
        let order = regions.map(\.id).sorted()
        var free: [String: [Int]] = Dictionary(uniqueKeysWithValues: s.regions.map { r in
            (r.id, (0..<s.hours).map { $0 < r.free_gpus.count ? r.free_gpus[$0] : 0 })
        })
        let prices = RegionChoice.Prices(carbonPerTonne: s.carbon_price_per_tonne, transferPerGB: s.transfer_price_per_gb,
                                         waitPerGPUHour: s.wait_cost_per_gpu_hour)
        let rtt: (String, String) -> Double? = { a, b in s.rtt_ms[a]?[b] ?? s.rtt_ms[b]?[a] }
        let initialFree = free
        var out = Outcome()
        var waiting: [Scenario.Job] = []
        let jobs = s.jobs.sorted { ($0.release_hour, $0.id) < ($1.release_hour, $1.id) }
        var next = 0
        var rr = 0
        let replanOrder = self.replanOrder
        // The policy holds a job whose best start is later (time shifting) with a reservation it
        // re-plans every hour: released first, decided again before new jobs, so it never loses
        // its slot but can take a better one. Baselines start jobs only when they can start now.
        var held: [String: (job: Scenario.Job, region: String, start: Int)] = [:]
        // The same scarcity pricing as the national scheduler, learning protection as jobs arrive.
        var pricing = ScarcityPricing(fullPrice: scarcity, curve: ScarcityPricing.Curve(rawValue: scarcityCurve) ?? .square,
                                      floor: scarcityFloor, unplacedPrice: 100, protectPrice: protect)
        pricing.priorFromAnyJob = protectPrior == "largest"
        pricing.gapPrice = gapPrice
        func decisionJob(_ j: Scenario.Job) -> RegionChoice.Job {
            RegionChoice.Job(id: j.id, gpus: j.gpus, hours: j.hours, kwPerGPU: j.kw_per_gpu, release: j.release_hour,
                             deadline: j.deadline_hour, origin: j.origin, dataGB: j.data_gb,
                             allowedJurisdictions: j.allowed_jurisdictions, latencySLOms: j.latency_slo_ms, objective: objective)
        }
        if !history.isEmpty {
            pricing.forecast = BoundDemandForecast(periods: history.map { day in
                day.jobs.map { j in
                    BoundDemandForecast.PastJob(release: j.release_hour, deadline: j.deadline_hour, gpus: j.gpus, hours: j.hours,
                                                regions: ScarcityPricing.allowedRegions(decisionJob(j), regions: regions, rtt: rtt))
                }
            }, hours: s.hours)
            pricing.forecast?.need = forecastNeed
            pricing.forecastWeight = forecastWeight
        }
        var allowedCount: [String: Int] = [:]
        for hour in 0..<s.hours {
            while next < jobs.count && jobs[next].release_hour <= hour {
                let j = jobs[next]
                let places = ScarcityPricing.allowedRegions(decisionJob(j), regions: regions, rtt: rtt)
                allowedCount[j.id] = places.count
                pricing.observe(decisionJob(j), allowed: places)
                waiting.append(j)
                next += 1
            }
            let replanned = held.values.sorted { $0.job.id < $1.job.id }
            let previous = held
            held = [:]
            var still: [Scenario.Job] = []
            let joint = self.replan == "joint" && strategy == .policy  // baselines decide in arrival order
            var queue = replanned.map(\.job) + waiting.sorted(by: { $0.id < $1.id })
            var planned: [String: RegionChoice.Decision] = [:]
            // One job against `f` (what is free): the policy with time shifting and its scarcity
            // price; the baselines at the earliest start that fits, with no price.
            func decideOne(_ j: Scenario.Job, _ f: [String: [Int]]) -> RegionChoice.Decision {
                let job = decisionJob(j)
                let capacity: RegionChoice.Capacity = { r, h in h >= 0 && h < s.hours ? f[r]?[h] ?? 0 : 0 }
                guard strategy == .policy else {
                    return RegionChoice.decide(job, regions: regions, rtt: rtt, capacity: capacity, now: hour, horizon: s.hours,
                                               prices: prices, shift: false)
                }
                let initial = initialFree
                let scarce = pricing.price(for: job, allowedCount: allowedCount[j.id] ?? regions.count, free: capacity,
                                           capacity: { r, h in h >= 0 && h < s.hours ? initial[r]?[h] ?? 0 : 0 }, now: hour)
                return RegionChoice.decide(job, regions: regions, rtt: rtt, capacity: capacity, now: hour, horizon: s.hours,
                                           prices: prices, shift: true, scarcity: scarce)
            }
            if joint {
                for h in replanned { for x in h.start..<(h.start + h.job.hours) { free[h.region]![x] += h.job.gpus } }
                // What a plan in this order would score: the chosen options' scores, and the
                // unplaced price for each job left with no slot in its window.
                func dryRun(_ q: [Scenario.Job]) -> (score: Double, decisions: [String: RegionChoice.Decision], unplaced: [String]) {
                    var f = free
                    var total = 0.0
                    var decisions: [String: RegionChoice.Decision] = [:]
                    var unplaced: [String] = []
                    for j in q {
                        let d = decideOne(j, f)
                        decisions[j.id] = d
                        if let r = d.region, let st = d.start, let score = d.candidates.first(where: { $0.region == r })?.score {
                            total += score
                            for x in st..<(st + j.hours) { f[r]![x] -= j.gpus }
                        } else if !d.impossible {
                            total += 100 * Double(j.gpus * j.hours)
                            unplaced.append(j.id)
                        }
                    }
                    return (total, decisions, unplaced)
                }
                let byID = Dictionary(queue.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
                let orders = replanOrder.candidates(queue.map {
                    ReplanOrder.Item(id: $0.id, gpuHours: $0.gpus * $0.hours, slack: $0.deadline_hour - $0.hours - max(hour, $0.release_hour),
                                     regions: ScarcityPricing.allowedRegions(decisionJob($0), regions: regions, rtt: rtt).count)
                }).map { $0.map { byID[$0]! } }
                if orders.count > 1 {
                    let t0 = DispatchTime.now().uptimeNanoseconds
                    // The plan kept is the dry run's own: its decisions are used as they are.
                    // The other orders are tried only when the first leaves a job with no slot.
                    var plans = [dryRun(orders[0])]
                    if !plans[0].unplaced.isEmpty { plans += orders.dropFirst().map(dryRun) }
                    let k = ReplanOrder.pick(plans.map(\.score))
                    queue = orders[k]
                    planned = plans[k].decisions
                    out.decideSeconds += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
                } else {
                    queue = orders[0]
                }
            }
            for j in queue {
                // keep: a held job gives back only its own reservation, so its old slot is
                // always there to take again and it cannot take another held job's.
                if !joint, let h = previous[j.id] { for x in h.start..<(h.start + h.job.hours) { free[h.region]![x] += h.job.gpus } }
                let job = decisionJob(j)
                let t0 = DispatchTime.now().uptimeNanoseconds
                let d = planned[j.id] ?? decideOne(j, free)
                out.decideSeconds += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
                out.decideCalls += 1
                var choice: (String, Int)?
                let feasible = d.candidates.filter { $0.start != nil }
                switch strategy {
                case .policy:
                    if let r = d.region, let st = d.start { choice = (r, st) }
                case .roundRobin:
                    // The next region in turn that can take it (at its earliest start).
                    for k in 0..<regions.count {
                        let id = order[(rr + k) % order.count]
                        if let c = feasible.first(where: { $0.region == id }) {
                            choice = (c.region, c.start!)
                            rr = (rr + k + 1) % regions.count
                            break
                        }
                    }
                case .leastLoaded:
                    if let c = feasible.max(by: { (free[$0.region]?[hour] ?? 0, $1.region) < (free[$1.region]?[hour] ?? 0, $0.region) }) {
                        choice = (c.region, c.start!)
                    }
                case .cheapestNow:
                    if let c = feasible.min(by: { (byID[$0.region]!.price(hour), $0.region) < (byID[$1.region]!.price(hour), $1.region) }) {
                        choice = (c.region, c.start!)
                    }
                }
                if let (r, st) = choice, st == hour || (strategy == .policy && st > hour) {
                    for h in st..<(st + j.hours) { free[r]![h] -= j.gpus }
                    if st > hour {
                        held[j.id] = (j, r, st)
                        continue
                    }
                    out.decisions[j.id] = (r, st)
                    let t = RegionChoice.terms(job, in: byID[r]!, start: st, prices: prices, rttMs: 0)
                    out.terms += t
                    out.placedGPUHours += j.gpus * j.hours
                    out.waits.append(st - j.release_hour)
                    out.violations += Self.violations(j, region: scenarioRegion[r]!, start: st, rtt: rtt)
                } else if d.impossible || hour >= j.deadline_hour - j.hours {
                    out.decisions[j.id] = .some(nil)
                    out.unplacedGPUHours += j.gpus * j.hours
                } else {
                    still.append(j)
                }
            }
            waiting = still
        }
        for h in held.values { waiting.append(h.job) }
        for j in waiting + jobs[next...] {
            out.decisions[j.id] = .some(nil)
            out.unplacedGPUHours += j.gpus * j.hours
        }
        for (r, hours) in free {
            for (h, f) in hours.enumerated() where f < 0 { out.violations.append("\(r) hour \(h): over capacity by \(-f) GPUs") }
        }
        return out
    }

    /// An independent check of one decision against the scenario's hard constraints.
    static func violations(_ j: Scenario.Job, region r: Scenario.Region, start: Int, rtt: (String, String) -> Double?) -> [String] {
        var out: [String] = []
        if !j.allowed_jurisdictions.isEmpty && !j.allowed_jurisdictions.contains(r.jurisdiction) {
            out.append("\(j.id) in \(r.id): jurisdiction \(r.jurisdiction) not allowed")
        }
        if let slo = j.latency_slo_ms, r.id != j.origin, (rtt(j.origin, r.id) ?? .infinity) > slo {
            out.append("\(j.id) in \(r.id): RTT over \(slo) ms")
        }
        if start < j.release_hour || start + j.hours > j.deadline_hour { out.append("\(j.id): start \(start) outside its window") }
        return out
    }
}

extension String {
    func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}

extension ReplanOrder: ExpressibleByArgument {}
extension BoundDemandForecast.Need: ExpressibleByArgument {}
