import Foundation
import GridCore
import GridScheduler

/// The national scheduler's choice of region and hour for one job (issue 10). With region
/// profiles in the config it is `RegionChoice.decide` (price, carbon, transfer, waiting,
/// jurisdictions, latency SLO, time shifting) over what the regions last reported; without
/// them it is the older `NationalRouting` (most free matching devices).
extension NationalInstance {
    struct Routed: Sendable {
        var region: RegionID?
        /// Hold the job at the national level until then (time shifting).
        var holdUntil: Date?
        /// No region could ever take it (jurisdiction, latency, refusals, allowed regions).
        var impossible: Bool
        var explanation: RouteExplanation?
        /// Why no region now, one clause per region.
        var reason: String
        /// The job as the decision saw it and the regions it may ever run in (for the
        /// protection the scarcity pricing learns).
        var observed: (job: RegionChoice.Job, allowed: [String])? = nil
    }

    /// Hours since the epoch, the decision's clock (curves are read at hour + the region's UTC offset).
    static func hour(_ date: Date) -> Int { Int((date.timeIntervalSince1970 / 3600).rounded(.down)) }

    func decide(_ job: JobRecord, now: Moment) -> Routed {
        let spec = job.spec
        let refused = Set(job.route?.refusedBy ?? [])
        guard !settings.profiles.isEmpty else {
            // Allowed regions of which none has ever reported here: a typo, not a region to wait for.
            if !spec.allowedRegions.isEmpty, !regions.isEmpty, !spec.allowedRegions.contains(where: { regions[$0] != nil }) {
                let known = regions.keys.map(\.rawValue).sorted().joined(separator: ", ")
                return Routed(region: nil, impossible: true, explanation: job.route,
                              reason: "allowed_regions \(spec.allowedRegions.map(\.rawValue).joined(separator: ", ")): no such region (known: \(known))")
            }
            let all = candidates(now: now)
            let d = NationalRouting.choose(candidates: all.filter { !refused.contains($0.summary.region) }, spec: spec, policy: settings.routing)
            let everyoneRefused = !refused.isEmpty && all.allSatisfy { refused.contains($0.summary.region) }
            let reason = (refused.sorted().map { "\($0): refused the job" } + d.terms).joined(separator: "; ")
            return Routed(region: d.region, impossible: d.region == nil && everyoneRefused, explanation: job.route, reason: reason)
        }
        let r = spec.routing
        let unix = now.wall.timeIntervalSince1970
        let nowHour = Self.hour(now.wall)
        let runSeconds = spec.expectedRunSeconds
        let hours = spec.expectedRunHours
        var deadlineHour = r.deadline.map { Self.hour($0) }
        var note = ""
        if let d = r.deadline, unix + Double(runSeconds) > d.timeIntervalSince1970 {
            deadlineHour = nil
            note = "the deadline can no longer be met: started as soon as possible"
        }
        let gpus = spec.totalDevices
        let wants = ModelFit.requests(for: spec)
        // What the controller knows that the profiles do not: who is connected and fresh, who
        // has the devices, who refused.
        var unavailable: [String: (reason: String, permanent: Bool)] = [:]
        var freeNow: [String: Int] = [:]
        var healthy: [String: Int] = [:]
        /// Hours before the region's queue has drained (at least the current one).
        var queueHours: [String: Int] = [:]
        for p in settings.profiles {
            let id = RegionID(p.id)
            if refused.contains(id) { unavailable[p.id] = ("refused the job", true); continue }
            if !spec.allowedRegions.isEmpty && !spec.allowedRegions.contains(id) {
                unavailable[p.id] = ("not in the job's allowed_regions", true)
                continue
            }
            guard let view = regions[id] else { unavailable[p.id] = ("has not reported to this scheduler", false); continue }
            let age = Double(now.monotonicMs - view.lastSeenMs) / 1000
            if age > settings.routing.staleAfterSeconds {
                unavailable[p.id] = ("silent for \(Int(age)) s (> \(Int(settings.routing.staleAfterSeconds)) s)", false)
                continue
            }
            let matching = view.summary.capacity.filter { e in wants.contains { NationalRouting.matches(e, $0) } }
            let free = matching.reduce(0) { $0 + min($1.free, $1.healthy) }
            let total = matching.reduce(0) { $0 + $1.healthy }
            if let why = view.summary.tooFewReadyNodes(for: spec) {
                unavailable[p.id] = (why, false)
                continue
            }
            if total < gpus {
                unavailable[p.id] = ("\(total) healthy matching device(s) < \(gpus) wanted", false)
                continue
            }
            freeNow[p.id] = max(0, free - (inflight[id] ?? 0))
            queueHours[p.id] = max(1, Int((Double(view.summary.expectedWaitSeconds) / 3600).rounded(.up)))
            healthy[p.id] = settings.routing.allowQueueing ? total : freeNow[p.id]!
        }
        let reserved = self.reserved
        let capacity: RegionChoice.Capacity = { region, h in
            guard unavailable[region] == nil else { return -1 }
            // Free now until the region's queue has drained; all healthy devices after that.
            let base = h < nowHour + (queueHours[region] ?? 1) ? freeNow[region] ?? 0 : healthy[region] ?? 0
            return base - (reserved[region]?[h] ?? 0)
        }
        let rc = RegionChoice.Job(
            id: job.id.rawValue, gpus: gpus, hours: hours, kwPerGPU: r.kwPerDevice ?? settings.routing.defaultKWPerDevice,
            release: nowHour, deadline: deadlineHour, origin: r.origin?.rawValue ?? "", dataGB: r.dataGB,
            allowedJurisdictions: r.jurisdictions, latencySLOms: r.latencySLOMs, objective: r.objective)
        let rttOf = settings.rttBetween
        let allowed = ScarcityPricing.allowedRegions(rc, regions: settings.profiles, rtt: rttOf)
        let total: RegionChoice.Capacity = { region, _ in healthy[region] ?? 0 }
        let scarcity = pricing.price(for: rc, allowedCount: allowed.count, free: capacity, capacity: total,
                                     now: nowHour, forecastOrigin: nowHour / 24 * 24)
        let d = RegionChoice.decide(rc, regions: settings.profiles, rtt: rttOf,
                                    capacity: capacity, now: nowHour, horizon: nowHour + settings.routing.horizonHours,
                                    prices: settings.prices, shift: settings.routing.timeShifting, scarcity: scarcity)
        func date(_ hour: Int) -> Date { hour <= nowHour ? now.wall : Date(timeIntervalSince1970: Double(hour) * 3600) }
        var permanentEverywhere = true
        var clauses: [String] = []
        var candidates: [RouteExplanation.Candidate] = d.candidates.map { c in
            var e = RouteExplanation.Candidate(region: RegionID(c.region))
            if let why = c.infeasible {
                if case .capacity = why, let u = unavailable[c.region] {
                    e.reason = u.reason
                    if !u.permanent { permanentEverywhere = false }
                } else {
                    e.reason = why.description
                    if !why.permanent { permanentEverywhere = false }
                }
                clauses.append("\(c.region): \(e.reason!)")
            } else {
                permanentEverywhere = false
            }
            if let s = c.start { e.start = date(s) }
            if let t = c.terms {
                e.energy = t.energy
                e.carbon = t.carbon
                e.transfer = t.transfer
                e.wait = t.wait
                e.total = t.total
                e.kWh = t.kWh
                e.operationalG = t.operationalG
                e.embodiedG = t.embodiedG
                e.rttMs = t.rttMs
            }
            e.score = c.score ?? 0
            return e
        }
        // Connected regions the config has no profile for are shown, never chosen.
        let profiled = Set(settings.profiles.map(\.id))
        for id in regions.keys.sorted() where !profiled.contains(id.rawValue) {
            candidates.append(RouteExplanation.Candidate(region: id, reason: "no profile in the national config"))
        }
        var routed = Routed(region: d.region.map(RegionID.init), impossible: d.region == nil && permanentEverywhere, explanation: nil,
                            reason: clauses.joined(separator: "; "), observed: (rc, allowed))
        if let start = d.start, start > nowHour, deadlineHour != nil, let region = d.region {
            routed.holdUntil = date(start)
            let chosen = d.candidates.first { $0.region == region }
            note = "held for \(region) at \(Self.iso(date(start))): cheapest by \(r.objective) within the deadline"
                + (chosen?.terms.map { String(format: " (%.2f %@)", $0.total, settings.currency) } ?? "")
        }
        routed.explanation = RouteExplanation(
            decidedAt: now.wall, objective: r.objective.description, currency: settings.currency, region: routed.region,
            start: d.start.map(date), note: note, refusedBy: job.route?.refusedBy ?? [], candidates: candidates)
        return routed
    }

    static func iso(_ d: Date) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime]
        return f.string(from: d)
    }
}
