import Foundation
import GridCore
import GridProtocol
import GridScheduler
import GridStore
import GridTransport

/// What the national scheduler rebuilds itself from on start.
public struct NationalRecovery: Sendable {
    public var jobs: [JobRecord] = []
    public var outbox: [OutboxItem] = []
    public var regions: [(summary: RegionSummary, lastSeen: Date)] = []
    public var applied: [(String, Date)] = []
    public var services: [ServiceRecord] = []
    /// The epoch (ms) of the last run's generated job ids: the next run's is later, whatever
    /// the clock says, so a generated id is never handed out twice.
    public var idEpochMs: UInt64 = 0
    public init() {}

    public static let idEpochKey = "job_id_epoch_ms"

    public static func load(from store: GridStore, retention: TimeInterval, now: Date) throws -> NationalRecovery {
        try store.read("recover national state") { tx in
            var r = NationalRecovery()
            r.jobs = try tx.liveJobs() + tx.finishedJobs(since: now.addingTimeInterval(-retention))
            r.outbox = try tx.outbox(limit: Int.max)
            r.regions = try tx.regions()
            r.applied = try tx.appliedUpdates(since: now.addingTimeInterval(-retention))
            r.services = try tx.services()
            r.idEpochMs = UInt64(try tx.meta(idEpochKey) ?? "") ?? 0
            return r
        }
    }
}

/// The national scheduler's logic as a value, like `RegionInstance`: accepts submissions (one
/// or a batch, in one commit), routes each job to a region with `NationalRouting`, forwards it
/// until the region acknowledges, keeps every job's state as regions report it, keeps each
/// region's capacity from full summaries and deltas, and relays node queries to the region
/// that owns the nodes.
public struct NationalInstance: Sendable {
    public struct Settings: Sendable {
        public var name: String = "national"
        public var routing: RoutingPolicy = RoutingPolicy()
        public var retryIntervalMs: Int64 = 1000
        public var maxRetryIntervalMs: Int64 = 30_000
        public var historyRetentionMs: Int64 = 24 * 3_600_000
        /// A relayed query not answered by its region within this is answered with an error.
        public var queryTimeoutMs: Int64 = 5000
        /// Jobs per submit request (arrays expanded).
        public var maxBatch: Int = 100_000
        /// Waiting jobs decided again per loop turn.
        public var routeBudget: Int = 2000
        /// Region profiles (issue 10): with them, jobs are routed by price, carbon, transfer,
        /// waiting, jurisdiction and latency; without them, by free devices.
        public var profiles: [RegionChoice.Region] = []
        /// RTT between regions, ms (either direction).
        public var rtt: [String: [String: Double]] = [:]
        public var prices = RegionChoice.Prices(carbonPerTonne: 80, transferPerGB: 0.14, waitPerGPUHour: 2)
        public var currency = "CNY"
        /// A region that confirms starts and is silent this long loses its forwarded and queued
        /// jobs to other regions; 0 = never.
        public var regionLostAfterMs: Int64 = 60_000
        public init() {}

        /// The RTT between two regions as configured (either direction), ms.
        var rttBetween: (String, String) -> Double? {
            let rtt = self.rtt
            return { a, b in rtt[a]?[b] ?? rtt[b]?[a] }
        }
    }

    struct RegionView: Sendable {
        var summary: RegionSummary
        var capacity: [CapacityKeyWire: CapacityEntry]
        var sequence: UInt64
        var lastSeenMs: Int64
        /// When the view was last written, and what was written (counts without the timestamp).
        var writtenMs: Int64 = .min
        var written: RegionSummary? = nil
        var route: Peer?
        /// The region's service gateway and the load through it (SERVICES.md), from its last summary.
        var gatewayURL = ""
        var loads: [String: Wire.ServiceLoad] = [:]
    }

    struct CapacityKeyWire: Hashable, Sendable {
        var vendor: String
        var model: String
        var memory: Int
        var grade: String
        var partition: String
    }

    struct Forward: Sendable {
        var message: Wire.JobForward
        var region: RegionID
        var attempts: Int
        var dueMs: Int64
        var item: OutboxItem
        /// The order of its last send among all forwards (0: not yet sent).
        var sentOrder: UInt64 = 0
    }

    /// How far a region has got through the forwards sent to it. One connection delivers in
    /// order and a region answers each forward as it reads it, so while its answers keep coming
    /// a forward sent after the latest one it answered has not been reached yet, and a resend
    /// would only be a duplicate for it to decode and answer (under a flood, most forwards went
    /// out three times before this). Only forwards answered after one send count (Karn's rule:
    /// the answer to a resent one does not say which copy it answers).
    struct ForwardProgress: Sendable {
        var answeredMs: Int64
        /// The latest (in send order) forward it answered.
        var reached: UInt64
    }

    struct PendingQuery: Sendable {
        var origin: Origin
        var deadlineMs: Int64
        var region: RegionID
    }

    enum Timer: Sendable {
        case forward(JobID)
        /// Resend a cancel to the job's region until the job ends.
        case cancel(JobID)
        /// A held job's hour has come: decide again and release it.
        case release(JobID)
        /// The top of an hour: held jobs are decided again together (`replanJointly`).
        case replan
        case route
        case queries
        case prune
        /// Services are reconciled (replicas started, replaced, drained; rollouts advanced).
        case services
    }

    public let settings: Settings
    var jobs = RecordTable<JobID, JobRecord>()
    /// Services by name (SERVICES.md); their replicas are jobs in `jobs`.
    var services: [String: ServiceRecord] = [:]
    /// Jobs no region could take yet, oldest first.
    var unrouted: [JobID] = []
    var regions: [RegionID: RegionView] = [:]
    var forwards: [JobID: Forward] = [:]
    var forwardProgress: [RegionID: ForwardProgress] = [:]
    /// Jobs whose cancel is on its way to their region (outbox `cancel:<job>`), with the resends so far.
    var cancelling: [JobID: Int] = [:]
    var applied: [String: Int64] = [:]
    var appliedOrder: [(String, Int64)] = []
    var queries: [UInt64: PendingQuery] = [:]
    var nextCorrelation: UInt64 = 1
    var timers = TimerHeap<Timer>()
    var idPrefix: String
    /// Stored with the first id generated from it (nil once stored).
    var idEpochToStore: UInt64?
    var idCounter = 0
    var routeDirty = false
    /// Devices forwarded to each region since its last summary (not yet in its free counts).
    var inflight: [RegionID: Int] = [:]
    /// Devices promised to held jobs, by region and hour.
    var reserved: [String: [Int: Int]] = [:]
    /// Jobs held for a cheaper or cleaner hour: what they reserved.
    var held: [JobID: (region: String, start: Int, hours: Int, gpus: Int)] = [:]
    /// When this instance started: a region's silence counts from then at the earliest.
    var startedMs: Int64 = 0
    var nextMoveCheckMs: Int64 = 0
    /// Congestion and protection prices for the decision, learning from the jobs that arrive.
    var pricing: ScarcityPricing
    /// The UTC day (hours since the epoch / 24) the bound-demand forecast was built for.
    var forecastDay = Int.min
    var allSilentReported = false
    /// Running counts for /metrics (plain integers; read when scraped).
    struct Counters: Sendable {
        var submissions = 0
        var decisions = 0
        var forwards = 0
        var movedFromSilent = 0
        /// The chosen candidates' terms summed over every job forwarded (money in the
        /// configured currency; energy in kWh; carbon in grams, operational + embodied).
        var cost = DecisionCost()
    }
    var counters = Counters()

    public init(settings: Settings, recovered: NationalRecovery, now: Moment) {
        self.settings = settings
        pricing = ScarcityPricing(fullPrice: settings.routing.scarcityPrice, protectPrice: settings.routing.protectPrice)
        startedMs = now.monotonicMs
        // Job ids are `j-<epoch>-<n>`: the epoch is this start's time in ms, or later than the last
        // run's if the clock stepped back, so no two runs share a prefix.
        let epoch = max(UInt64(clamping: now.wall.unixMilliseconds), recovered.idEpochMs + 1)
        idPrefix = "j-" + String(epoch, radix: 36)
        idEpochToStore = epoch
        for j in recovered.jobs {
            jobs[j.id] = j
            guard j.state == .pending, j.hold == nil else { continue }
            if let route = j.route, let region = route.region, let start = route.start, start > now.wall {
                // Held for a later hour: keep its reservation and release it then.
                hold(j, region: region.rawValue, until: start, now: now)
            } else {
                unrouted.append(j.id)
            }
        }
        refreshForecast(now: now)
        for item in recovered.outbox where item.type == "cancel" {
            let id = JobID(String(item.key.dropFirst("cancel:".count)))
            cancelling[id] = 0
            timers.schedule(.cancel(id), at: now.monotonicMs)
        }
        for item in recovered.outbox where item.type == "job_forward" {
            guard let f = try? Wire.JobForward(serializedBytes: item.payload.bytes) else { continue }
            let id = JobID(f.jobID)
            forwards[id] = Forward(message: f, region: RegionID(item.destination), attempts: 0, dueMs: now.monotonicMs, item: item)
            timers.schedule(.forward(id), at: now.monotonicMs)
        }
        for (summary, seen) in recovered.regions {
            let ageMs = Int64(max(0, now.wall.timeIntervalSince(seen)) * 1000)
            var view = RegionView(summary: summary, capacity: [:], sequence: 0, lastSeenMs: now.monotonicMs - ageMs, route: nil)
            for c in summary.capacity { view.capacity[Self.key(c)] = c }
            regions[summary.region] = view
        }
        for (id, at) in recovered.applied {
            applied[id] = now.monotonicMs - Int64(max(0, now.wall.timeIntervalSince(at)) * 1000)
        }
        appliedOrder = applied.map { ($0.key, $0.value) }.sorted { $0.1 < $1.1 }
        for svc in recovered.services { services[svc.spec.name] = svc }
        timers.schedule(.services, at: now.monotonicMs + 1000)
        timers.schedule(.route, at: now.monotonicMs + 1000)
        timers.schedule(.replan, at: Self.nextHourMs(now))
        timers.schedule(.queries, at: now.monotonicMs + 1000)
        timers.schedule(.prune, at: now.monotonicMs + 60_000)
    }

    static func key(_ c: CapacityEntry) -> CapacityKeyWire {
        CapacityKeyWire(vendor: c.vendor.rawValue, model: c.model, memory: c.memoryTotalMiB, grade: c.grade?.rawValue ?? "",
                        partition: c.partition ?? "")
    }

    public mutating func receive(_ message: Message, origin: Origin, now: Moment) -> [ControllerDirective] {
        switch message.body {
        case .submit(let m): return onSubmit(m, origin: origin, now: now)
        case .regionSummary(let m): return onRegionSummary(m, origin: origin, now: now)
        case .jobForwardAck(let m): return onJobForwardAck(m, origin: origin, now: now)
        case .statusUpdate(let m): return onStatusUpdate(m, origin: origin, now: now)
        case .statusBatch(let m): return onStatusBatch(m, origin: origin, now: now)
        case .query(let m): return onQuery(m, origin: origin, now: now)
        case .cancel(let m): return onCancel(m, origin: origin, now: now)
        case .nodeCommand(let m): return onNodeCommand(m, origin: origin, now: now)
        case .jobControl(let m): return onJobControl(m, origin: origin, now: now)
        case .regionControl(let m): return onRegionControl(m, origin: origin, now: now)
        case .deploy(let m): return onDeploy(m, origin: origin, now: now)
        case .serviceControl(let m): return onServiceControl(m, origin: origin, now: now)
        case .queryReply(let m): return onQueryReply(m)
        case .errorReply(let e):
            // A refused relayed request (node command, job control): the asker gets the error.
            if e.correlation != 0, let pending = queries.removeValue(forKey: e.correlation) {
                var relayed = e
                relayed.correlation = 0
                return [.reply(.errorReply(relayed), to: pending.origin)]
            }
            return [.log(LogEvent(.warning, "a region answered with an error", ["from": origin.peer.label, "code": e.code, "message": e.message]))]
        default:
            return [.error("unsupported", "the national scheduler does not accept \(message.body.type)", to: origin)]
        }
    }

    // MARK: submissions

    public mutating func onSubmit(_ m: Wire.Submit, origin: Origin, now: Moment) -> [ControllerDirective] {
        var items = m.items
        let batch = !items.isEmpty
        if !batch {
            var one = Wire.SubmitItem()
            one.spec = m.spec
            one.jobID = m.jobID
            items = [one]
        }
        let expanded = items.reduce(0) { $0 + Int(max(1, $1.count)) }
        if expanded > settings.maxBatch {
            var reply = Wire.SubmitReply()
            reply.accepted = false
            reply.reason = "batch of \(expanded) jobs exceeds the limit of \(settings.maxBatch); split it"
            return [.reply(.submitReply(reply), to: origin)]
        }
        var out: [ControllerDirective] = []
        var results: [Wire.SubmitResult] = []
        results.reserveCapacity(expanded)
        for (i, item) in items.enumerated() {
            var spec: JobSpec
            do { spec = try item.spec.spec() } catch {
                results.append(result("", false, "item \(i): \(error)", ""))
                continue
            }
            // A tenant's key submits for its own account: unnamed, the job is charged to it.
            if let tenant = origin.tenant {
                if spec.account.isEmpty { spec.account = tenant }
                guard spec.account == tenant else {
                    results.append(result(item.jobID, false, "item \(i): account '\(spec.account)': this key submits for tenant '\(tenant)' only", ""))
                    continue
                }
            }
            let problems = spec.problems()
            if !problems.isEmpty {
                results.append(result(item.jobID, false, "item \(i): " + problems.joined(separator: "; "), ""))
                continue
            }
            if !item.jobID.isEmpty, let problem = IdentifierRules.problem(with: item.jobID) {
                results.append(result(item.jobID, false, "item \(i): job_id \(problem)", ""))
                continue
            }
            let count = Int(max(1, item.count))
            let base = item.jobID.isEmpty ? nextJobID(count: count) : item.jobID
            if item.jobID.isEmpty, let epoch = idEpochToStore {
                out.append(.persist(.meta(key: NationalRecovery.idEpochKey, value: "\(epoch)")))
                idEpochToStore = nil
            }
            if count > 1, let problem = IdentifierRules.problem(with: "\(base)-\(count - 1)") {
                results.append(result(item.jobID, false, "item \(i): array ids \(base)-0 … \(base)-\(count - 1): \(problem)", ""))
                continue
            }
            for k in 0..<count {
                let id = JobID(count > 1 ? "\(base)-\(k)" : base)
                if let existing = jobs[id] {
                    // A retried submit: answer from what is stored (another tenant's id is taken).
                    guard origin.owns(account: existing.spec.accountName) else {
                        results.append(result(id.rawValue, false, "item \(i): job id \(id) is taken; choose another", ""))
                        continue
                    }
                    results.append(result(id.rawValue, true, existing.message, existing.region?.rawValue ?? ""))
                    continue
                }
                var job = JobRecord(id: id, spec: spec, state: .pending, submittedAt: now.wall, updatedAt: now.wall)
                let (outcome, directives) = route(&job, now: now)
                if case .impossible(let why) = outcome {
                    results.append(result(id.rawValue, false, "item \(i): no region can ever run it: \(why)", ""))
                    continue
                }
                if case .waiting = outcome { unrouted.append(id) }
                jobs[id] = job
                counters.submissions += 1
                out.append(.persist(.job(job)))
                out += directives
                results.append(result(id.rawValue, true, job.message, job.region?.rawValue ?? ""))
            }
        }
        var reply = Wire.SubmitReply()
        if batch {
            reply.results = results
            reply.accepted = results.allSatisfy(\.accepted)
            reply.reason = "\(results.filter(\.accepted).count) of \(results.count) accepted"
        } else if let r = results.first {
            reply.jobID = r.jobID
            reply.accepted = r.accepted
            reply.reason = r.reason
            reply.regionID = r.regionID
        }
        out.append(.log(LogEvent(.info, "jobs submitted", ["accepted": "\(results.filter(\.accepted).count)", "rejected": "\(results.filter { !$0.accepted }.count)"])))
        out.append(.reply(.submitReply(reply), to: origin))
        return out
    }

    func result(_ id: String, _ accepted: Bool, _ reason: String, _ region: String) -> Wire.SubmitResult {
        var r = Wire.SubmitResult()
        r.jobID = id
        r.accepted = accepted
        r.reason = reason
        r.regionID = region
        return r
    }

    /// A fresh id (or array prefix) no job in memory already uses, even if the clock stepped
    /// back since an earlier run used the same prefix: a new submission never answers as an old job.
    mutating func nextJobID(count: Int = 1) -> String {
        while true {
            idCounter += 1
            let base = "\(idPrefix)-\(idCounter)"
            let ids = count > 1 ? (0..<count).map { JobID("\(base)-\($0)") } : [JobID(base)]
            if ids.allSatisfy({ jobs[$0] == nil }) { return base }
        }
    }

    enum RouteOutcome: Sendable {
        case forwarded(RegionID)
        case held(until: Date)
        /// No region can take it now; tried again as summaries arrive.
        case waiting
        /// No region can ever take it.
        case impossible(String)
    }

    /// Decides where (and when) one pending job goes and acts on it: forward now, hold for a
    /// later hour, or leave it waiting. Updates `job` (state, region, message, explanation);
    /// the caller stores it.
    mutating func route(_ job: inout JobRecord, now: Moment) -> (RouteOutcome, [ControllerDirective]) {
        // Held by an operator: routed nowhere until released (`onJobControl` puts it back).
        if let h = job.hold {
            job.state = .pending
            job.region = nil
            job.message = "held: \(h.reason)"
            return (.waiting, [])
        }
        let routed = decide(job, now: now)
        counters.decisions += 1
        if job.route == nil, let o = routed.observed { pricing.observe(o.job, allowed: o.allowed) }
        if let e = routed.explanation { job.route = e }
        job.updatedAt = now.wall
        guard let region = routed.region else {
            job.region = nil
            if routed.impossible { return (.impossible(routed.reason), []) }
            job.message = "no region can take it yet: " + routed.reason
            return (.waiting, [])
        }
        if let until = routed.holdUntil {
            job.state = .pending
            job.region = nil
            job.message = job.route?.note ?? "held until \(Self.iso(until))"
            hold(job, region: region.rawValue, until: until, now: now)
            return (.held(until: until), [])
        }
        job.state = .forwarded
        job.region = region
        if let chosen = job.route?.candidates.first(where: { $0.region == region && $0.reason == nil }) {
            counters.cost.energy += chosen.energy
            counters.cost.carbon += chosen.carbon
            counters.cost.transfer += chosen.transfer
            counters.cost.wait += chosen.wait
            counters.cost.kWh += chosen.kWh
            counters.cost.co2Grams += chosen.operationalG + chosen.embodiedG
        }
        let note = job.route?.note ?? ""
        job.message = "forwarded to \(region)" + (note.isEmpty ? "" : "; " + note)
        inflight[region, default: 0] += job.spec.totalDevices
        return (.forwarded(region), forward(job, to: region, now: now))
    }

    /// Keeps a job at the national level until `until`, with its devices reserved in the
    /// chosen region for the hours it will run, so later decisions do not count them free.
    mutating func hold(_ job: JobRecord, region: String, until: Date, now: Moment) {
        release(job.id)
        let start = Self.hour(until)
        let hours = job.spec.expectedRunHours
        let gpus = job.spec.totalDevices
        held[job.id] = (region, start, hours, gpus)
        for h in start..<(start + hours) { reserved[region, default: [:]][h, default: 0] += gpus }
        let dueMs = now.monotonicMs + max(0, Int64((until.timeIntervalSince(now.wall) * 1000).rounded(.up)))
        timers.schedule(.release(job.id), at: dueMs)
    }

    /// Drops a held job's reservation (it is being decided again, or was cancelled).
    mutating func release(_ id: JobID) {
        guard let h = held.removeValue(forKey: id) else { return }
        for hour in h.start..<(h.start + h.hours) {
            reserved[h.region]?[hour, default: 0] -= h.gpus
            if reserved[h.region]?[hour] ?? 0 <= 0 { reserved[h.region]?[hour] = nil }
        }
        if reserved[h.region]?.isEmpty == true { reserved[h.region] = nil }
    }

    /// A held job's hour has come: decide again (capacity may have moved) and act.
    mutating func releaseHeld(_ id: JobID, now: Moment) -> [ControllerDirective] {
        // Only at its hour (a re-plan may have moved it later since this timer was set).
        guard let h = held[id], now.wall.timeIntervalSince1970 >= Double(h.start) * 3600 - 1 else { return [] }
        release(id)
        guard var job = jobs[id], job.state == .pending else { return [] }
        let (outcome, out) = route(&job, now: now)
        switch outcome {
        case .waiting: unrouted.append(id)
        case .impossible(let why):
            job.state = .failed
            job.message = "no region can run it any more: \(why)"
        case .forwarded, .held: break
        }
        jobs[id] = job
        return [.persist(.job(job))] + out
    }

    /// Monotonic time of the next top of the hour (wall clock), a second past it.
    static func nextHourMs(_ now: Moment) -> Int64 {
        let next = (now.wall.timeIntervalSince1970 / 3600).rounded(.down) * 3600 + 3600
        return now.monotonicMs + Int64((next - now.wall.timeIntervalSince1970) * 1000) + 1000
    }

    /// Builds the bound-demand forecast (`routing.forecast_days`) from the jobs submitted on
    /// each of the last days, once per UTC day (at start and from the hourly `.replan` timer,
    /// which fires a second past each hour): each day is a period, a job's hours counted
    /// from that day's midnight. Days before the first job this scheduler knows of are not
    /// counted (a new scheduler has no history, not a history of quiet days).
    mutating func refreshForecast(now: Moment) {
        let days = settings.routing.forecastDays
        guard days > 0, !settings.profiles.isEmpty else { return }
        let today = Self.hour(now.wall) / 24
        guard today != forecastDay else { return }
        forecastDay = today
        let rttOf = settings.rttBetween
        var byDay: [Int: [BoundDemandForecast.PastJob]] = [:]
        var firstDay = today
        for (_, job) in jobs {
            let submitted = Self.hour(job.submittedAt)
            let day = submitted / 24
            firstDay = min(firstDay, day)
            guard day < today, day >= today - days else { continue }
            let spec = job.spec, r = spec.routing
            let hours = max(1, spec.expectedRunHours)
            let deadline = r.deadline.map { Self.hour($0) } ?? submitted + settings.routing.horizonHours
            let allowed = allowedRegions(job.id, r, rtt: rttOf)
            byDay[day, default: []].append(BoundDemandForecast.PastJob(
                release: submitted - day * 24, deadline: min(deadline - day * 24, 24), gpus: spec.totalDevices,
                hours: hours, regions: allowed))
        }
        let periods = (max(today - days, firstDay)..<today).map { byDay[$0] ?? [] }
        pricing.forecast = periods.isEmpty ? nil : BoundDemandForecast(periods: periods, hours: 24)
        pricing.forecastWeight = settings.routing.forecastWeight
    }

    /// The regions a job's jurisdictions and latency SLO allow (what the scarcity price and the
    /// forecast call bound); size, window and cost do not matter to it.
    func allowedRegions(_ id: JobID, _ r: RoutingRequest, rtt: (String, String) -> Double?) -> [String] {
        let rc = RegionChoice.Job(id: id.rawValue, gpus: 0, hours: 1, kwPerGPU: 0, release: 0, deadline: 1,
                                  origin: r.origin?.rawValue ?? "", dataGB: 0, allowedJurisdictions: r.jurisdictions,
                                  latencySLOms: r.latencySLOMs, objective: r.objective)
        return ScarcityPricing.allowedRegions(rc, regions: settings.profiles, rtt: rtt)
    }

    /// Joint re-planning: every held job gives back its reservation, then all are decided again
    /// in one pass, so a reservation made early does not block a better plan found later. The
    /// order of the pass is `routing.replan_order` (`ReplanOrder`): with `best` (default) the
    /// pass runs largest first, and when that leaves a held job with no slot, bound first (fewest
    /// allowed regions, then least slack) too, on a copy of this instance; the plan that scores
    /// lower is kept.
    mutating func replanHeld(now: Moment) -> [ControllerDirective] {
        guard !held.isEmpty else { return [] }
        let nowHour = Self.hour(now.wall)
        let rttOf = settings.rttBetween
        let items = held.map { id, h in
            let latest = jobs[id]?.spec.routing.deadline.map { Self.hour($0) - h.hours } ?? h.start
            let regions = jobs[id].map { allowedRegions(id, $0.spec.routing, rtt: rttOf).count } ?? .max
            return ReplanOrder.Item(id: id.rawValue, gpuHours: h.gpus * h.hours, slack: latest - nowHour, regions: regions)
        }
        let orders = settings.routing.replanOrderKind.candidates(items).map { $0.map { JobID($0) } }
        var first = self
        let a = first.replan(in: orders[0], now: now)
        guard orders.count > 1, a.unplaced > 0 else {
            self = first
            return a.directives
        }
        // The other orders, each on its own copy; the lowest score wins, the first on a tie.
        var plans = [(first, a.directives, a.score)]
        for order in orders.dropFirst() {
            var copy = self
            let p = copy.replan(in: order, now: now)
            plans.append((copy, p.directives, p.score))
        }
        let k = ReplanOrder.pick(plans.map(\.2))
        self = plans[k].0
        return plans[k].1
    }

    /// One joint re-planning pass in `order`: its directives, what the chosen options scored
    /// (plus the unplaced price of each job left with no slot) and how many were left so.
    mutating func replan(in order: [JobID], now: Moment) -> (directives: [ControllerDirective], score: Double, unplaced: Int) {
        let previous = held
        for id in order { release(id) }
        var out: [ControllerDirective] = []
        var score = 0.0
        var unplaced = 0
        for id in order {
            guard var job = jobs[id], job.state == .pending else { continue }
            let before = job.route?.start
            let kept = job
            let (outcome, directives) = route(&job, now: now)
            switch outcome {
            case .waiting:
                unplaced += 1
                if let p = previous[id] { score += pricing.unplacedPrice * Double(p.gpus * p.hours) }
                // No region to be had right now (silent, say): keep the plan it had.
                if let p = previous[id], let start = kept.route?.start, start > now.wall {
                    job = kept
                    hold(job, region: p.region, until: start, now: now)
                } else {
                    unrouted.append(id)
                }
            case .impossible(let why):
                job.state = .failed
                job.message = "no region can run it any more: \(why)"
            case .forwarded, .held:
                if let e = job.route, let r = e.region, let c = e.candidates.first(where: { $0.region == r }) { score += c.score }
            }
            jobs[id] = job
            if job.state != .pending || job.route?.start != before { out.append(.persist(.job(job))) }
            out += directives
        }
        return (out, score, unplaced)
    }

    /// Queues a JOB_FORWARD in the outbox (same commit as the job) and sends it now.
    mutating func forward(_ job: JobRecord, to region: RegionID, now: Moment) -> [ControllerDirective] {
        var f = Wire.JobForward()
        f.jobID = job.id.rawValue
        f.spec = Wire.JobSpec(job.spec)
        f.submittedUnixMs = job.submittedAt.unixMilliseconds
        let payload: [UInt8] = (try? f.serializedBytes()) ?? []
        let item = OutboxItem(key: "forward:\(job.id)", destination: region.rawValue, type: "job_forward", payload: payload,
                              createdAt: now.wall, attempts: 0, lastAttemptAt: nil)
        forwards[job.id] = Forward(message: f, region: region, attempts: 0, dueMs: now.monotonicMs, item: item)
        timers.schedule(.forward(job.id), at: now.monotonicMs)
        return [.persist(.outbox(item))]
    }

    func candidates(now: Moment) -> [RegionCandidate] {
        regions.map { id, v in
            RegionCandidate(summary: v.summary, ageSeconds: Double(now.monotonicMs - v.lastSeenMs) / 1000, inflight: inflight[id] ?? 0)
        }
    }

    // MARK: regions

    public mutating func onRegionSummary(_ m: Wire.RegionSummary, origin: Origin, now: Moment) -> [ControllerDirective] {
        let id = RegionID(m.regionID)
        var ack = Wire.RegionSummaryAck()
        ack.regionID = m.regionID
        ack.acceptsStatusBatch = true
        var out: [ControllerDirective] = []
        var view = regions[id] ?? RegionView(summary: m.summary, capacity: [:], sequence: 0, lastSeenMs: now.monotonicMs, route: origin.peer)
        let isNew = regions[id]?.route == nil
        // A new connection (the region restarted or reconnected): what it had read says nothing now.
        if regions[id]?.route != origin.peer { forwardProgress[id] = nil }
        if m.full || m.sequence == 0 {
            view.capacity = [:]
            for c in m.summary.capacity { view.capacity[Self.key(c)] = c }
        } else if m.baseSequence == view.sequence && view.sequence != 0 {
            for c in m.summary.capacity {
                view.capacity[Self.key(c)] = c.total == 0 ? nil : c
            }
        } else {
            // Missed the base of this delta (restart, lost message): ask for a full one and keep
            // the counts we have until it comes.
            ack.wantFull = true
            view.route = origin.peer
            view.lastSeenMs = now.monotonicMs
            regions[id] = view
            return [.reply(.regionSummaryAck(ack), to: origin)]
        }
        var s = m.summary
        s.capacity = view.capacity.values.sorted {
            ($0.vendor.rawValue, $0.model, $0.memoryTotalMiB, $0.grade?.rawValue ?? "", $0.partition ?? "")
                < ($1.vendor.rawValue, $1.model, $1.memoryTotalMiB, $1.grade?.rawValue ?? "", $1.partition ?? "")
        }
        s.nodes = []
        view.summary = s
        view.gatewayURL = m.gatewayURL
        view.loads = Dictionary(m.serviceLoads.map { ($0.service, $0) }, uniquingKeysWith: { a, _ in a })
        inflight[id] = nil
        view.sequence = m.sequence
        view.lastSeenMs = now.monotonicMs
        view.route = origin.peer
        // The latest view of each region is kept for restarts, one row per region: written
        // when the counts change, else every 30 s (not on every summary, a commit a second).
        var counts = s
        counts.generatedAt = Date(timeIntervalSince1970: 0)
        if counts != view.written || view.writtenMs == .min || now.monotonicMs - view.writtenMs >= 30_000 {
            view.written = counts
            view.writtenMs = now.monotonicMs
            out.append(.persist(.region(s, seen: now.wall)))
        }
        regions[id] = view
        if isNew {
            out.append(.log(LogEvent(.info, "region connected", ["region": "\(id)", "nodes_ready": "\(m.nodesReady)"])))
            // Forwards waiting for this region go now.
            for (jid, f) in forwards where f.region == id {
                forwards[jid]?.dueMs = now.monotonicMs
                timers.schedule(.forward(jid), at: now.monotonicMs)
            }
        }
        if !unrouted.isEmpty { routeDirty = true }
        out.append(.reply(.regionSummaryAck(ack), to: origin))
        return out
    }

    public mutating func onJobForwardAck(_ m: Wire.JobForwardAck, origin: Origin, now: Moment) -> [ControllerDirective] {
        let id = JobID(m.jobID)
        // A late answer from a region the job has since been moved away from is not this forward's.
        guard let f = forwards[id], regions[f.region]?.route == nil || regions[f.region]?.route == origin.peer else { return [] }
        forwards[id] = nil
        var progress = forwardProgress[f.region] ?? ForwardProgress(answeredMs: now.monotonicMs, reached: 0)
        progress.answeredMs = now.monotonicMs
        if f.attempts == 1 { progress.reached = max(progress.reached, f.sentOrder) }
        forwardProgress[f.region] = progress
        var out: [ControllerDirective] = [.persist(.outboxDone(key: "forward:\(id)"))]
        guard var job = jobs[id] else { return out }
        if m.accepted {
            if job.state.progress < JobState.queued.progress {
                job.state = .queued
                job.message = "queued in \(job.region?.rawValue ?? "?")"
            }
        } else if job.state == .forwarded, let region = job.region {
            // Capacity moved, or the region cannot run it: the next best region, never this one again.
            Self.takeAway(&job, from: region, currency: settings.currency, now: now)
            let route = job.route!
            let (outcome, directives) = self.route(&job, now: now)
            switch outcome {
            case .impossible(let why):
                job.state = .failed
                job.message = "refused by \(route.refusedBy.map(\.rawValue).joined(separator: ", ")) (last: \(m.reason)); no other region can run it: \(why)"
            case .waiting:
                unrouted.append(id)
            case .forwarded, .held:
                break
            }
            out.append(.log(LogEvent(.warning, "a region refused a job", ["job": "\(id)", "region": "\(region)", "reason": m.reason])))
            out += directives
        }
        job.updatedAt = now.wall
        jobs[id] = job
        out.append(.persist(.job(job)))
        return out
    }

    /// A region's status updates of one turn in one frame: each handled as if it came alone, their
    /// acknowledgements answered together, in order.
    public mutating func onStatusBatch(_ m: Wire.StatusBatch, origin: Origin, now: Moment) -> [ControllerDirective] {
        var out: [ControllerDirective] = []
        var acks = Wire.StatusBatchAck()
        acks.acks = m.updates.map { applyStatus($0, now: now, into: &out) }
        out.append(.reply(.statusBatchAck(acks), to: origin))
        return out
    }

    public mutating func onStatusUpdate(_ m: Wire.StatusUpdate, origin: Origin, now: Moment) -> [ControllerDirective] {
        var out: [ControllerDirective] = []
        let ack = applyStatus(m, now: now, into: &out)
        out.append(.reply(.statusAck(ack), to: origin))
        return out
    }

    /// Applies one region status update (or finds it applied, stale or moved); its
    /// acknowledgement, with what it changed appended to `out`.
    mutating func applyStatus(_ m: Wire.StatusUpdate, now: Moment, into out: inout [ControllerDirective]) -> Wire.StatusAck {
        var ack = Wire.StatusAck()
        ack.updateID = m.updateID
        guard var job = jobs[JobID(m.jobID)] else {
            ack.applied = false
            ack.reason = "job \(m.jobID) unknown to the national scheduler"
            return ack
        }
        ack.applied = true
        if applied[m.updateID] != nil { return ack }
        if !m.regionID.isEmpty, job.region?.rawValue != m.regionID, job.route?.refusedBy.contains(RegionID(m.regionID)) == true {
            // The job was routed elsewhere (this region refused it, or was silent and its jobs
            // were moved): `moved` tells the region to drop it if it has not started it (a
            // region that confirms starts never has).
            ack.applied = false
            ack.reason = "moved: job \(m.jobID) is \(job.region.map { "held by region \($0)" } ?? "no longer in this region")"
            out.append(.log(LogEvent(.warning, "status from a region that no longer holds the job", ["job": m.jobID, "from": m.regionID, "holder": job.region?.rawValue ?? "-"])))
            return ack
        }
        if !m.regionID.isEmpty, let current = job.region, current.rawValue != m.regionID {
            out.append(.log(LogEvent(.warning, "status from a region that does not hold the job", ["job": m.jobID, "from": m.regionID, "holder": "\(current)"])))
            return ack
        }
        applied[m.updateID] = now.monotonicMs
        appliedOrder.append((m.updateID, now.monotonicMs))
        out.append(.persist(.applied(updateID: m.updateID, at: now.wall)))
        // A newer epoch (the region re-placed the job) wins; within one epoch states only move
        // forward. Terminal states never change.
        // A `queued` report of the current epoch is the region taking the job back (node lost,
        // agent restarted or stopped): it follows the running report of that epoch.
        if let state = JobState(rawValue: m.state), !job.state.isTerminal,
           Int(clamping: m.epoch) > job.epoch
            || (Int(clamping: m.epoch) == job.epoch && (state.progress >= job.state.progress || (state == .queued && m.epoch > 0))) {
            job.state = state
            job.epoch = Int(clamping: m.epoch)
            job.region = m.regionID.isEmpty ? job.region : RegionID(m.regionID)
            job.node = m.nodeID.isEmpty ? nil : NodeID(m.nodeID)
            job.assignment = m.assignmentID.isEmpty ? nil : AssignmentID(m.assignmentID)
            job.deviceIDs = m.deviceIds
            job.deviceModels = m.deviceModels
            job.deviceGrades = m.deviceGrades
            job.exitCode = m.hasExitCode_p ? Int(m.exitCode) : nil
            job.message = m.message
            job.outputTail = m.outputTail
            job.visibleDevices = m.visibleDevices
            job.precision = Precision(rawValue: m.precision)
            job.hold = m.holdReason.isEmpty ? nil : JobHold(reason: m.holdReason, since: job.hold?.since ?? now.wall)
            if !m.attempts.isEmpty { job.attempts = m.attempts.map(\.attempt) }
            job.endpoint = m.endpoint.isEmpty ? nil : m.endpoint
            job.ready = job.state == .running && m.ready
            job.gang = m.gang.compactMap { try? $0.member() }
            job.updatedAt = now.wall
            jobs[job.id] = job
            out.append(.persist(.job(job)))
            if let r = job.spec.replica { out += replicaChanged(job, of: r.service, now: now) }
            if job.state.isTerminal, cancelling.removeValue(forKey: job.id) != nil {
                out.append(.persist(.outboxDone(key: "cancel:\(job.id)")))
            }
        }
        return ack
    }

    // MARK: cancel

    /// `gridctl cancel`: a job still at the national level (pending or held) ends `cancelled`
    /// at once; one in a region gets a CANCEL sent there (from the outbox, resent until the
    /// region reports the job ended: the region cancels a queued job, or stops a running one
    /// through its agent, TERM then KILL). Answered with the job as it now stands.
    public mutating func onCancel(_ m: Wire.Cancel, origin: Origin, now: Moment) -> [ControllerDirective] {
        let id = JobID(m.jobID)
        guard var job = jobs[id], origin.owns(account: job.spec.accountName) else {
            return [.error("not_found", "job \(m.jobID) is not known to the national scheduler", to: origin)]
        }
        var out = cancelJob(&job, now: now)
        var reply = Wire.QueryReply()
        reply.jobs = [Wire.Job(job)]
        reply.total = 1
        out.append(.reply(.queryReply(reply), to: origin))
        return out
    }

    /// Ends a job here (pending, or held for a later hour) or has its region stop it (a CANCEL
    /// from the outbox, resent until the job ends). `job` is updated as stored.
    mutating func cancelJob(_ job: inout JobRecord, now: Moment) -> [ControllerDirective] {
        let id = job.id
        var out: [ControllerDirective] = []
        if !job.state.isTerminal {
            if job.state == .pending {
                release(id)
                unrouted.removeAll { $0 == id }
                job.state = .cancelled
                job.message = "cancelled before it was sent to a region"
                job.updatedAt = now.wall
                jobs[id] = job
                out.append(.persist(.job(job)))
            } else if cancelling[id] == nil {
                var c = Wire.Cancel()
                c.jobID = id.rawValue
                let item = OutboxItem(key: "cancel:\(id)", destination: job.region?.rawValue ?? "", type: "cancel",
                                      payload: (try? c.serializedBytes()) ?? [], createdAt: now.wall, attempts: 0, lastAttemptAt: nil)
                cancelling[id] = 0
                job.message = "cancel requested; " + job.message
                jobs[id] = job
                out.append(.persist(.outbox(item)))
                out.append(.persist(.job(job)))
                timers.schedule(.cancel(id), at: now.monotonicMs)
            }
            out.append(.log(LogEvent(.info, "cancel requested", ["job": "\(id)", "state": job.state.rawValue])))
        }
        return out
    }

    mutating func sendCancel(_ id: JobID, now: Moment) -> [ControllerDirective] {
        guard let sends = cancelling[id] else { return [] }
        guard let job = jobs[id], !job.state.isTerminal else {
            cancelling[id] = nil
            return [.persist(.outboxDone(key: "cancel:\(id)"))]
        }
        let delay = min(settings.maxRetryIntervalMs, settings.retryIntervalMs << Int64(min(sends, 5)))
        timers.schedule(.cancel(id), at: now.monotonicMs + delay)
        // The job's region now (it may have moved since the cancel was asked for).
        guard let region = job.region, let route = regions[region]?.route else { return [] }
        cancelling[id] = sends + 1
        var c = Wire.Cancel()
        c.jobID = id.rawValue
        return [.send(.cancel(c), to: route)]
    }

    // MARK: queries

    public mutating func onQuery(_ m: Wire.Query, origin: Origin, now: Moment) -> [ControllerDirective] {
        var reply = Wire.QueryReply()
        reply.correlation = m.correlation
        var m = m
        // A resource name carries the region to ask (the codec checked that it parses).
        var named: ResourceName? = nil
        if !m.resource.isEmpty, let name = try? ResourceName(parsing: m.resource) {
            if let r = name.region {
                if !m.regionID.isEmpty, m.regionID != r.rawValue {
                    return [.error("bad_request", "Query.resource \(name) is in region \(r), not region_id \(m.regionID)", to: origin)]
                }
                m.regionID = r.rawValue
            }
            named = name
        }
        switch m.kind {
        case .jobs, .job:
            guard QueryPaging.answerJobs(jobs, m, &reply, tenant: origin.tenant) else {
                return [.error("not_found", "job \(m.jobID) is not known to the national scheduler", to: origin)]
            }
        case .regions where named?.region != nil:
            let r = named?.region ?? ""
            guard let view = regions[r] else { return [.error("not_found", "cg://\(r) is not a region the national scheduler knows", to: origin)] }
            reply.regions = [regionReply(view, now: now)]
            reply.total = 1
        case .nodes, .accounts:
            // Nodes and accounts live in their region; ask it and relay its answer (pages included).
            return relay(to: m.regionID, purpose: "name the region to ask with --region", origin: origin, now: now) { correlation in
                var q = m
                q.correlation = correlation
                return .query(q)
            }
        case .services:
            if !m.service.isEmpty {
                guard let svc = services[m.service], origin.owns(account: svc.spec.template.accountName) else {
                    return [.error("not_found", "service \(m.service) is not deployed (gridctl services lists them)", to: origin)]
                }
                reply.services = [serviceStatus(svc, origin: m.regionID)]
            } else {
                reply.services = services.keys.sorted().compactMap { name in
                    services[name].flatMap { origin.owns(account: $0.spec.template.accountName) ? serviceStatus($0, origin: m.regionID) : nil }
                }
            }
            reply.total = UInt64(reply.services.count)
        case .regions:
            reply.regions = regions.values.sorted { $0.summary.region < $1.summary.region }.map { regionReply($0, now: now) }
            reply.total = UInt64(reply.regions.count)
        default:
            return [.error("bad_request", "query kind \(m.kind) not supported", to: origin)]
        }
        return [.reply(.queryReply(reply), to: origin)]
    }

    /// A region as QUERY REGIONS shows it: its last summary, dated, without node lists.
    private func regionReply(_ view: RegionView, now: Moment) -> Wire.RegionSummary {
        var s = view.summary
        s.nodes = []
        s.generatedAt = now.wall.addingTimeInterval(-Double(now.monotonicMs - view.lastSeenMs) / 1000)
        s.stale = now.monotonicMs - view.lastSeenMs > staleAfterMs
        return Wire.RegionSummary(s)
    }

    /// `gridctl hold|release|requeue JOB`. A job still here (pending, or planned for a later
    /// hour) is held or released here: held, it gives back any reservation and is routed
    /// nowhere; released, it is routed again. A job in a region has the request relayed there
    /// (the region's answer, or its refusal, goes back to the asker); the region reports the
    /// hold upward with the job's status.
    public mutating func onJobControl(_ m: Wire.JobControl, origin: Origin, now: Moment) -> [ControllerDirective] {
        let id = JobID(m.jobID)
        guard var job = jobs[id], origin.owns(account: job.spec.accountName) else {
            return [.error("not_found", "job \(m.jobID) is not known to the national scheduler", to: origin)]
        }
        if job.state.isTerminal { return [.error("bad_request", "job \(id) has already ended (\(job.state.rawValue))", to: origin)] }
        guard job.state == .pending else {
            guard let region = job.region else { return [.error("internal", "job \(id) is \(job.state.rawValue) but has no region", to: origin)] }
            return relay(to: region.rawValue, purpose: "the job's region", origin: origin, now: now) { correlation in
                var c = m
                c.correlation = correlation
                return .jobControl(c)
            }
        }
        var out: [ControllerDirective] = []
        switch m.action {
        case .hold:
            release(id)
            unrouted.removeAll { $0 == id }
            job.hold = JobHold(reason: m.reason, since: job.hold?.since ?? now.wall)
            job.message = "held: \(m.reason)"
            job.route?.start = nil
        case .release:
            guard job.hold != nil else { break }
            job.hold = nil
            job.message = "released" + (m.reason.isEmpty ? "" : ": \(m.reason)")
            if !unrouted.contains(id) && held[id] == nil { unrouted.append(id) }
            routeDirty = true
        case .requeue:
            return [.error("bad_request", "job \(id) is pending at the national scheduler, not running: nothing to requeue", to: origin)]
        default:
            return [.error("bad_request", "job control: action must be hold, release or requeue", to: origin)]
        }
        job.updatedAt = now.wall
        jobs[id] = job
        out.append(.persist(.job(job)))
        out.append(.log(LogEvent(.notice, m.action == .hold ? "job held by an operator" : "job released by an operator",
                                 ["job": "\(id)", "reason": m.reason])))
        var reply = Wire.QueryReply()
        reply.jobs = [Wire.Job(job)]
        reply.total = 1
        out.append(.reply(.queryReply(reply), to: origin))
        return out
    }

    /// How long a region may be silent before it shows as stale and may be removed.
    var staleAfterMs: Int64 { settings.regionLostAfterMs > 0 ? settings.regionLostAfterMs : 60_000 }

    /// `gridctl regions remove R`: forget a region that is stale and holds no live job. A live
    /// region would come straight back with its next summary, and a region with jobs still in
    /// it must first have them moved (they move once it is silent past the region lease, when
    /// it confirms starts) or cancelled: forgetting it would lose track of them.
    public mutating func onRegionControl(_ m: Wire.RegionControl, origin: Origin, now: Moment) -> [ControllerDirective] {
        let id = RegionID(m.regionID)
        guard m.action == .remove else { return [.error("bad_request", "region control: action must be remove", to: origin)] }
        guard let view = regions[id] else {
            let known = regions.keys.map(\.rawValue).sorted()
            return [.error("not_found", "region \(id) is not known (known: \(known.isEmpty ? "none" : known.joined(separator: ", ")))", to: origin)]
        }
        let silentMs = now.monotonicMs - view.lastSeenMs
        guard silentMs > staleAfterMs else {
            return [.error("bad_request", "region \(id) is live (last summary \(silentMs / 1000) s ago); stop its controller first — it can be removed once silent for \(staleAfterMs / 1000) s", to: origin)]
        }
        let live = jobs.values.filter { $0.region == id && !$0.state.isTerminal }.map(\.id.rawValue).sorted()
        let planned = held.filter { $0.value.region == id.rawValue }.map(\.key.rawValue).sorted()
        guard live.isEmpty && planned.isEmpty else {
            let all = live + planned
            return [.error("bad_request", "region \(id) still holds \(all.count) job(s) (\(all.prefix(5).joined(separator: ", "))\(all.count > 5 ? ", …" : "")); cancel them, or wait until they move to another region", to: origin)]
        }
        regions[id] = nil
        inflight[id] = nil
        reserved[id.rawValue] = nil
        var reply = Wire.QueryReply()
        reply.regions = regions.values.sorted { $0.summary.region < $1.summary.region }.map { v in
            var s = v.summary
            s.nodes = []
            return Wire.RegionSummary(s)
        }
        reply.total = UInt64(reply.regions.count)
        return [.persist(.regionRemoved(id)),
                .log(LogEvent(.notice, "region removed by an operator", ["region": "\(id)", "silent_s": "\(silentMs / 1000)"])),
                .reply(.queryReply(reply), to: origin)]
    }

    /// Node commands go to the node's region (named, or the only one) and its answer comes back
    /// as a relayed query reply.
    public mutating func onNodeCommand(_ m: Wire.NodeCommand, origin: Origin, now: Moment) -> [ControllerDirective] {
        relay(to: m.regionID, purpose: "name the node's region with --region", origin: origin, now: now) { correlation in
            var c = m
            c.correlation = correlation
            return .nodeCommand(c)
        }
    }

    /// Sends a request to a region (named, or the only one connected) under a fresh correlation;
    /// its `QUERY_REPLY` is relayed to `origin`, or an error after `queryTimeoutMs`.
    mutating func relay(to regionID: String, purpose: String, origin: Origin, now: Moment,
                        _ body: (UInt64) -> Body) -> [ControllerDirective] {
        let known = regions.filter { $0.value.route != nil }.keys.sorted()
        let target: RegionID
        if !regionID.isEmpty {
            target = RegionID(regionID)
        } else if known.count == 1 {
            target = known[0]
        } else {
            return [.error("bad_request", "\(purpose) (one of: \(known.map(\.rawValue).joined(separator: ", ")))", to: origin)]
        }
        guard let route = regions[target]?.route else {
            return [.error("not_found", "region \(target) is not connected", to: origin)]
        }
        let correlation = nextCorrelation
        nextCorrelation += 1
        queries[correlation] = PendingQuery(origin: origin, deadlineMs: now.monotonicMs + settings.queryTimeoutMs, region: target)
        return [.send(body(correlation), to: route)]
    }

    public mutating func onQueryReply(_ m: Wire.QueryReply) -> [ControllerDirective] {
        guard let pending = queries.removeValue(forKey: m.correlation) else { return [] }
        var reply = m
        reply.correlation = 0
        return [.reply(.queryReply(reply), to: pending.origin)]
    }

    // MARK: time

    public mutating func onTick(now: Moment, backlog: Bool = false) -> [ControllerDirective] {
        var out: [ControllerDirective] = []
        while let timer = timers.popDue(now.monotonicMs) {
            switch timer {
            case .forward(let id): out += sendForward(id, now: now)
            case .release(let id): out += releaseHeld(id, now: now)
            case .replan:
                refreshForecast(now: now)
                if settings.routing.replanJointly { out += replanHeld(now: now) }
                timers.schedule(.replan, at: Self.nextHourMs(now))
            case .cancel(let id): out += sendCancel(id, now: now)
            case .route:
                out += moveJobsOfSilentRegions(now: now)
                routeDirty = true
                timers.schedule(.route, at: now.monotonicMs + 1000)
            case .queries:
                for (c, q) in queries where q.deadlineMs <= now.monotonicMs {
                    queries[c] = nil
                    out.append(.error("unavailable", "region \(q.region) did not answer within \(settings.queryTimeoutMs) ms; retry", to: q.origin))
                }
                timers.schedule(.queries, at: now.monotonicMs + 1000)
            case .prune:
                out += prune(now: now)
                timers.schedule(.prune, at: now.monotonicMs + 60_000)
            case .services:
                for name in services.keys.sorted() { out += reconcile(name, now: now) }
                timers.schedule(.services, at: now.monotonicMs + 1000)
            }
        }
        if routeDirty { out += routeUnrouted(now: now) }
        return out
    }

    mutating func sendForward(_ id: JobID, now: Moment) -> [ControllerDirective] {
        guard var f = forwards[id] else { return [] }
        guard f.dueMs <= now.monotonicMs else {
            timers.schedule(.forward(id), at: f.dueMs)
            return []
        }
        guard let route = regions[f.region]?.route else {
            // Not connected yet: try when it is (onRegionSummary re-arms) or after a while.
            f.dueMs = now.monotonicMs + settings.retryIntervalMs
            forwards[id] = f
            timers.schedule(.forward(id), at: f.dueMs)
            return []
        }
        if f.attempts > 0, let p = forwardProgress[f.region], now.monotonicMs - p.answeredMs < settings.retryIntervalMs,
           f.sentOrder > p.reached {
            // The region is still working through what was sent before this one.
            f.dueMs = now.monotonicMs + settings.retryIntervalMs
            forwards[id] = f
            timers.schedule(.forward(id), at: f.dueMs)
            return []
        }
        f.attempts += 1
        counters.forwards += 1
        f.sentOrder = UInt64(counters.forwards)  // every send counts there, in order
        f.dueMs = now.monotonicMs + min(settings.maxRetryIntervalMs, settings.retryIntervalMs << min(f.attempts - 1, 5))
        forwards[id] = f
        timers.schedule(.forward(id), at: f.dueMs)
        return [.send(.jobForward(f.message), to: route)]
    }

    /// Jobs no region could take at submit time are tried again as summaries arrive, at most
    /// `routeBudget` per turn (the rest next turn), so a large backlog never stalls the loop.
    mutating func routeUnrouted(now: Moment) -> [ControllerDirective] {
        routeDirty = false
        guard !unrouted.isEmpty else { return [] }
        var out: [ControllerDirective] = []
        var still: [JobID] = []
        let budget = min(unrouted.count, settings.routeBudget)
        for id in unrouted[..<budget] {
            guard var job = jobs[id], job.state == .pending, held[id] == nil, job.hold == nil else { continue }
            let before = job.message
            let (outcome, directives) = route(&job, now: now)
            switch outcome {
            case .waiting:
                still.append(id)
                // Unchanged reasons are not written again (this runs every second).
                if job.message == before { jobs[id] = job; continue }
            case .impossible(let why):
                job.state = .failed
                job.message = "no region can run it any more: \(why)"
            case .forwarded, .held:
                break
            }
            jobs[id] = job
            out.append(.persist(.job(job)))
            out += directives
        }
        // Those not examined keep their place ahead of those examined again; the next turn
        // goes on with them.
        let unexamined = unrouted.count - budget
        unrouted = Array(unrouted[budget...]) + still
        if unexamined > 0 { routeDirty = true }
        return out
    }

    /// Takes a job back from a region that refused it or fell silent: pending again, that region
    /// never chosen again for it (`refusedBy`), epochs counted afresh in the next region.
    static func takeAway(_ job: inout JobRecord, from region: RegionID, currency: String, now: Moment) {
        var route = job.route ?? RouteExplanation(decidedAt: now.wall, objective: job.spec.routing.objective.description,
                                                  currency: currency, region: nil, start: nil, note: "", candidates: [])
        route.refusedBy.append(region)
        job.route = route
        job.state = .pending
        job.region = nil
        job.epoch = 0
    }

    /// Regions that confirm starts (so have started nothing the national scheduler does not
    /// know of) and have been silent past `regionLostAfterMs` lose their forwarded and queued
    /// jobs to regions that can take them now; a job no other region can take stays (and is
    /// tried again every few seconds). Should the region come back, its `assigned` report for
    /// a moved job is answered `moved` and it drops the job. When no region at all has spoken
    /// within the limit, nothing moves: the silence is more likely this scheduler's own network.
    mutating func moveJobsOfSilentRegions(now: Moment) -> [ControllerDirective] {
        guard settings.regionLostAfterMs > 0, now.monotonicMs >= nextMoveCheckMs else { return [] }
        nextMoveCheckMs = now.monotonicMs + 5000
        func silent(_ v: RegionView) -> Bool { now.monotonicMs - max(v.lastSeenMs, startedMs) > settings.regionLostAfterMs }
        let lost = Set(regions.filter { $0.value.summary.confirmsStarts && silent($0.value) }.keys)
        guard !lost.isEmpty else { return [] }
        guard regions.values.contains(where: { !silent($0) }) else {
            guard !allSilentReported else { return [] }
            allSilentReported = true
            return [.log(LogEvent(.error, "every region is silent: holding their jobs where they are (check this scheduler's network)",
                                  ["regions": "\(regions.count)"]))]
        }
        allSilentReported = false
        var out: [ControllerDirective] = []
        var moved = 0, stayed = 0
        let ids = jobs.compactMap { id, j in (j.state == .forwarded || j.state == .queued) && j.region.map(lost.contains) == true ? id : nil }
        for id in ids.sorted(by: { jobs[$0]!.submittedAt < jobs[$1]!.submittedAt }) {
            guard let job = jobs[id], let from = job.region else { continue }
            let hadForward = forwards[id] != nil
            var trial = job
            Self.takeAway(&trial, from: from, currency: settings.currency, now: now)
            let (outcome, directives) = self.route(&trial, now: now)
            switch outcome {
            case .waiting, .impossible:
                // Nowhere else to go now: it waits for its region (or for room elsewhere).
                stayed += 1
                continue
            case .forwarded, .held:
                break
            }
            let why = "region \(from) silent for more than \(settings.regionLostAfterMs / 1000) s"
            trial.message = "\(why); " + trial.message
            if var r = trial.route {
                r.note = r.note.isEmpty ? why : why + "; " + r.note
                trial.route = r
            }
            if hadForward { out.append(.persist(.outboxDone(key: "forward:\(id)"))) }
            jobs[id] = trial
            out.append(.persist(.job(trial)))
            out += directives
            moved += 1
            counters.movedFromSilent += 1
        }
        if moved > 0 || stayed > 0 {
            out.append(.log(LogEvent(.warning, "regions silent: their waiting jobs were routed again",
                                     ["regions": lost.map(\.rawValue).sorted().joined(separator: ","), "moved": "\(moved)", "stayed": "\(stayed)"])))
        }
        return out
    }

    mutating func prune(now: Moment) -> [ControllerDirective] {
        let horizon = now.monotonicMs - settings.historyRetentionMs
        var drop = 0
        while drop < appliedOrder.count, appliedOrder[drop].1 < horizon {
            if applied[appliedOrder[drop].0] == appliedOrder[drop].1 { applied[appliedOrder[drop].0] = nil }
            drop += 1
        }
        if drop > 0 { appliedOrder.removeFirst(drop) }
        let cutoff = now.wall.addingTimeInterval(-Double(settings.historyRetentionMs) / 1000)
        for (id, j) in jobs where j.state.isTerminal && j.updatedAt < cutoff { jobs[id] = nil }
        return [.persist(.prune(before: cutoff, terminalJobs: true))]
    }

    public var nextDueMs: Int64? { timers.nextDue }

    public func job(_ id: JobID) -> JobRecord? { jobs[id] }
    public func service(_ name: String) -> ServiceRecord? { services[name] }
    /// A cancel of this job is in flight (sent to its region until the job ends).
    public func isCancelling(_ id: JobID) -> Bool { cancelling[id] != nil }
    public var jobCount: Int { jobs.count }
    public var jobIDs: [String] { jobs.keys.map(\.rawValue).sorted() }
    public var forwardsInFlight: Int { forwards.count }
}

public typealias NationalShell = ControllerShell<NationalInstance>

extension NationalInstance: ControllerInstance {
    public static func recover(settings: Settings, store: GridStore, now: Moment) throws -> NationalInstance {
        let recovered = try NationalRecovery.load(from: store, retention: Double(settings.historyRetentionMs) / 1000, now: now.wall)
        return NationalInstance(settings: settings, recovered: recovered, now: now)
    }

    public static func name(_ settings: Settings) -> String { settings.name }
    public mutating func takePlacementWaits() -> [Double] { [] }
}

extension NationalInstance.Settings {
    public init(config: ControllerConfig) {
        self.init()
        name = config.id
        routing = config.routing
        retryIntervalMs = Int64(config.retryIntervalMs)
        historyRetentionMs = Int64(config.historyRetentionHours * 3_600_000)
        regionLostAfterMs = Int64(config.routing.regionLostAfterSeconds * 1000)
        profiles = config.regions.map(\.decisionRegion)
        for p in config.regions { rtt[p.id] = p.rttMs }
        prices = config.prices.decision
        currency = config.prices.currency
    }
}
