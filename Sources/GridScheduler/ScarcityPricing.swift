import Foundation

/// What using a region-hour's capacity costs the jobs that come later, added to the score of
/// `RegionChoice.decide` (not to the money total). Two parts, both optional:
///
/// - **Congestion**: `fullPrice × share²` per GPU-hour, `share` the part of the region-hour's
///   capacity already taken (`square`), or the online primal-dual threshold
///   `(L/e)(U·e/L)^share` with U = `unplacedPrice`, L = `floor` (`exponential`).
/// - **Protection**: a job that could run in many regions pays `protectPrice` per GPU-hour for
///   the part of its GPUs that would eat into the capacity kept for jobs bound to one or two
///   regions (by jurisdiction or latency); what is kept is the largest such job seen so far in
///   each region, learned online.
///
/// The national scheduler and `grid-bench national` use this same code.
public struct ScarcityPricing: Sendable, Equatable {
    public enum Curve: String, Sendable, Codable, CaseIterable { case square, exponential }
    public var fullPrice: Double
    public var curve: Curve
    public var floor: Double
    public var unplacedPrice: Double
    public var protectPrice: Double
    /// A job allowed in at most this many regions is "bound" and protected.
    public var boundRegions: Int
    /// GPUs kept in each region for bound jobs (the largest bound job seen there).
    public private(set) var protected: [String: Int] = [:]
    /// Whether a region no bound job has been seen in yet keeps room for one as large as the
    /// largest job seen anywhere (a prior: the first bound job of a region is often its largest).
    public var priorFromAnyJob: Bool = false
    /// The largest job seen so far, bound or not.
    public private(set) var largestSeen = 0
    /// Bound demand learned from past periods. When set, it replaces the protection learned
    /// online: a flexible job pays `forecastWeight × unplacedPrice` per GPU-hour for the
    /// expected part of its GPUs a later bound job would have needed (`BoundDemandForecast`).
    public var forecast: BoundDemandForecast?
    /// How much of the expected loss a flexible job pays (a displaced bound job may still fit
    /// at another hour, so less than 1).
    public var forecastWeight: Double = 0.5
    /// Packing: price per GPU-hour for taking a region-hour from at least the largest job seen
    /// so far to less (breaking a gap as wide as the widest job), for any job narrower than
    /// that. 0 = off.
    public var gapPrice: Double = 0

    public init(fullPrice: Double = 0, curve: Curve = .square, floor: Double = 1, unplacedPrice: Double = 100,
                protectPrice: Double = 5, boundRegions: Int = 2) {
        self.fullPrice = fullPrice
        self.curve = curve
        self.floor = floor
        self.unplacedPrice = unplacedPrice
        self.protectPrice = protectPrice
        self.boundRegions = boundRegions
    }

    /// The regions a job may run in by its jurisdictions and latency SLO (capacity aside).
    public static func allowedRegions(_ job: RegionChoice.Job, regions: [RegionChoice.Region],
                                      rtt: (String, String) -> Double?) -> [String] {
        regions.filter { r in
            (job.allowedJurisdictions.isEmpty || r.jurisdictions.contains(where: job.allowedJurisdictions.contains))
                && (job.latencySLOms == nil || r.id == job.origin || (rtt(job.origin, r.id) ?? .infinity) <= job.latencySLOms!)
        }.map(\.id)
    }

    /// Learns from a job as it arrives: a bound job raises its regions' protection.
    public mutating func observe(_ job: RegionChoice.Job, allowed: [String]) {
        largestSeen = max(largestSeen, job.gpus)
        guard allowed.count <= boundRegions else { return }
        for r in allowed { protected[r] = max(protected[r] ?? 0, job.gpus) }
    }

    /// The scarcity price for `job` (allowed in `allowedCount` regions), given what is free and
    /// what each region-hour holds in all.
    /// `now`: the hour of the decision; `forecastOrigin`: the hour the forecast's period starts
    /// at on the same clock (the forecast is asked for `now − origin` and `hour − origin`).
    public func price(for job: RegionChoice.Job, allowedCount: Int, free: @escaping RegionChoice.Capacity,
                      capacity: @escaping RegionChoice.Capacity, now: Int = 0, forecastOrigin: Int = 0) -> RegionChoice.Scarcity {
        let flexible = (protectPrice > 0 || forecast != nil) && allowedCount > boundRegions
        let shield = protected
        let prior = priorFromAnyJob ? largestSeen : 0
        let me = self
        return { r, h in
            let cap = capacity(r, h)
            guard cap > 0 else { return 0 }
            let left = free(r, h)
            var p = 0.0
            if me.fullPrice > 0 || me.curve == .exponential {
                let share = min(1, max(0, 1 - Double(left) / Double(cap)))
                switch me.curve {
                case .square: p += me.fullPrice * share * share
                case .exponential: p += me.floor / M_E * pow(me.unplacedPrice * M_E / me.floor, share)
                }
            }
            if me.gapPrice > 0, job.gpus > 0, job.gpus < me.largestSeen, left >= me.largestSeen, left - job.gpus < me.largestSeen {
                p += me.gapPrice
            }
            if flexible, job.gpus > 0, let forecast = me.forecast {
                let short = forecast.shortfall(region: r, now: now &- forecastOrigin, hour: h &- forecastOrigin, gpus: job.gpus, left: left)
                if short > 0 { p += me.forecastWeight * me.unplacedPrice * short }
            } else if flexible, job.gpus > 0, case let keep = max(shield[r] ?? 0, prior), keep > 0 {
                let after = left - job.gpus
                if after < keep { p += me.protectPrice * Double(min(job.gpus, keep - after)) / Double(job.gpus) }
            }
            return p
        }
    }
}
