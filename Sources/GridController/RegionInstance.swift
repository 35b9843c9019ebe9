import Foundation
import GridCore
import GridProtocol
import GridScheduler
import GridStore
import GridTransport

/// What a region controller rebuilds itself from on start: the durable log in SQLite.
public struct RegionRecovery: Sendable {
    public var nodes: [NodeRecord] = []
    /// Non-terminal jobs, and terminal ones within the retention window.
    public var jobs: [JobRecord] = []
    /// Assignments that still hold devices (pending or accepted).
    public var assignments: [AssignmentRecord] = []
    /// Upward messages not yet acknowledged.
    public var outbox: [OutboxItem] = []
    /// Update ids applied within the retention window.
    public var applied: [(String, Date)] = []
    /// Accounts' usage (fair share, accounting).
    public var accountUsage: [AccountUsage] = []
    public init() {}

    /// Reads everything a region needs from its store.
    public static func load(from store: GridStore, region: RegionID, retention: TimeInterval, now: Date) throws -> RegionRecovery {
        try store.read("recover region state") { tx in
            var r = RegionRecovery()
            r.nodes = try tx.nodes(region: region)
            r.jobs = try tx.liveJobs() + tx.finishedJobs(since: now.addingTimeInterval(-retention))
            r.assignments = try tx.activeAssignments()
            r.outbox = try tx.outbox(limit: Int.max)
            r.applied = try tx.appliedUpdates(since: now.addingTimeInterval(-retention))
            r.accountUsage = try tx.accountUsage()
            return r
        }
    }
}

/// The regional controller's logic as a value: every input is a `mutating func on…` that
/// returns the directives it decided on, and nothing in here touches a socket, a file, a clock
/// or a process (apple/swift-cluster-membership's `SWIM.Instance` is the model).
///
/// In memory, indexed, authoritative while running: nodes with their routes and liveness,
/// the placement index of free units, queued jobs in FIFO order, active assignments by id and
/// by node, the upward outbox with a due time per item, recently applied update ids, and a heap
/// of due times. Every acknowledged change is also a `.persist` directive; the shell commits a
/// batch of them in one transaction before it sends anything the batch produced.
public struct RegionInstance: Sendable {
    public struct Settings: Sendable {
        public var region: RegionID
        public var heartbeatIntervalMs: Int64 = 1000
        /// Silence after which a node is declared lost (before the local-health stretch).
        public var nodeLostAfterMs: Int64 = 10_000
        /// The lease every acknowledged heartbeat renews. An agent stops its jobs once it has not
        /// heard the region for lease − margin; the region runs them again only after a node has
        /// been silent for lease + margin (PROTOCOL.md, "Leases and self-fencing").
        /// nil = `nodeLostAfterMs`.
        public var leaseMs: Int64? = nil
        public var leaseMarginMs: Int64 = 2000
        public var lease: Int64 { leaseMs ?? nodeLostAfterMs }
        public var summaryIntervalMs: Int64 = 1000
        public var retryIntervalMs: Int64 = 1000
        /// Longest wait between resends of one message (the backoff doubles up to this).
        public var maxRetryIntervalMs: Int64 = 30_000
        /// Jobs examined per placement turn: bounds the time a burst can keep heartbeats waiting.
        public var placementBudget: Int = 2048
        /// Every n-th summary is full; the others carry only changed capacity classes.
        public var fullSummaryEvery: Int = 30
        /// How long finished jobs, finished assignments and applied update ids are kept.
        public var historyRetentionMs: Int64 = 24 * 3_600_000
        /// A gap between turns longer than this counts as the controller stalling.
        public var stallThresholdMs: Int64 = 500
        public var placement: PlacementIndex.Options = .init()
        /// Start a placed job only once the national scheduler has acknowledged its `assigned`
        /// status (PROTOCOL.md, "Region loss"): then the national scheduler may run this region's
        /// queued jobs elsewhere when the region falls silent, and never twice.
        public var confirmStarts: Bool = false
        /// Maintenance: refuse new jobs from the national scheduler (it sends them elsewhere);
        /// jobs already here run and finish as usual.
        public var draining: Bool = false
        /// Stop lower-priority runs (TERM, then KILL after the agent's grace) when a
        /// higher-priority job finds no free devices; they are queued again.
        public var preemption: Bool = true
        /// Nodes holding work examined per preemption attempt.
        public var preemptionScanLimit: Int = 1024
        /// Accounts: quotas, cohorts, fair share.
        public var accounts = AccountPolicy()
        /// Whether work a lower grade could run may use grade A when the lower grades are busy.
        public var frontier: FrontierPolicy = .reserve
        /// Reserve nodes for waiting multi-device jobs and gangs, so a stream of small jobs
        /// cannot starve them; others backfill a reserved node only when their time limit ends
        /// them first.
        public var reservations: Bool = true
        /// How many waiting jobs may hold reservations at once (on distinct nodes), highest
        /// priority first. With one, a gang (which needs several nodes free at the same time)
        /// held none while a one-node job held the only reservation.
        public var reservationDepth: Int = 4
        public init(region: RegionID) { self.region = region }
    }

    /// What the region keeps of a device between reports: enough to place, to show and to see
    /// whether a new report changes anything placement depends on. The full inventory is
    /// written to SQLite when it changes and not kept in memory (100,000 nodes × 8 devices).
    struct DeviceSlot: Sendable, Equatable {
        var id: String
        var model: String
        var health: HealthState
        var capability: Int
        var grade: DeviceGrade?
        /// Held by a process the agent does not run.
        var foreign: Bool = false
    }

    struct Node: Sendable {
        /// Identity and state; `devices` is left empty in memory (see `slots`).
        var record: NodeRecord
        var slots: [DeviceSlot]
        var route: Peer?
        var lastHeardMs: Int64
        /// `stalledMs` when last heard: time the controller itself was stalled since then does
        /// not count as the node's silence.
        var stalledAtHeard: Int64
        /// Active assignments on the node (pending or accepted).
        var held: Set<AssignmentID> = []
        var digest: UInt64 = 0
        /// Whether a deadline timer for this node is in the heap (at most one is).
        var deadlineArmed = false
    }

    /// An upward status waiting for its ack (the stored outbox row is written from `update`).
    struct Outgoing: Sendable {
        var update: Wire.StatusUpdate
        var attempts: Int
        var dueMs: Int64
    }

    enum Timer: Sendable {
        case nodeDeadline(NodeID)
        /// A lost node's lease + margin is over: its assignments may run elsewhere.
        case leaseExpiry(NodeID)
        /// A job's retry backoff is over: back into the queue.
        case retry(JobID)
        case resend(AssignmentID)
        case outbox(String)
        case summary
        case prune
        /// A replica drained from the gateway's rotation is now stopped (SERVICES.md).
        case drain(JobID)
    }

    public let settings: Settings
    public var region: RegionID { settings.region }
    var nodes: [NodeID: Node] = [:]
    public private(set) var index: PlacementIndex
    var jobs = RecordTable<JobID, JobRecord>()
    /// Queued jobs in the order placement examines them (`JobQueue`).
    var queue = JobQueue()
    var assignments: [AssignmentID: AssignmentRecord] = [:]
    var sentAt: [AssignmentID: (at: Int64, attempts: Int)] = [:]
    var outbox: [String: Outgoing] = [:]
    var applied: [String: Int64] = [:]
    var appliedOrder: [(String, Int64)] = []
    var appliedHead = 0
    var timers = TimerHeap<Timer>()
    var cancelRequested: Set<JobID> = []
    /// Placed but not yet confirmed by the national scheduler (`confirmStarts`): assignment →
    /// the update id of its `assigned` status, and back.
    var unconfirmed: [AssignmentID: String] = [:]
    var awaitingConfirmation: [String: AssignmentID] = [:]
    /// Runs being stopped for a higher-priority job (victim → the job it makes room for), and
    /// the reverse, so one job has one preemption in flight at a time.
    var preempting: [AssignmentID: JobID] = [:]
    /// Runs an operator asked to requeue (`gridctl requeue`), with the reason: stopped, then queued again.
    var requeueing: [AssignmentID: String] = [:]
    /// Ranks of a gang whose run ended (another rank failed, the gang was requeued or
    /// cancelled): told to stop, their devices held until they report their end (or their node
    /// is lost, or says it no longer holds them). Why, for logs.
    var stopping: [AssignmentID: String] = [:]
    /// What each account holds and has used; what each assignment charged it, and whether it
    /// borrowed from the account's cohort (then it may be reclaimed).
    public private(set) var ledger: AccountLedger
    var charged: [AssignmentID: (account: String, use: ResourceUse, borrowed: Bool)] = [:]
    /// Jobs waiting for devices their account lent to its cohort (being reclaimed), by cohort:
    /// while any waits, no one in the cohort borrows.
    var reclaimers: [String: Set<JobID>] = [:]
    /// A node promised to a waiting job: until that job is placed, no job of lower or equal
    /// priority is placed there, save work whose time limit ends it before `startMs` (backfill).
    struct Reservation {
        var job: JobID
        var priority: Int
        /// When the job is expected to be able to start there; nil = unknown (no backfill).
        var startMs: Int64?
        /// Preemption: the node's devices are being freed by stopping lower-priority work for
        /// the job, so what the victims give back goes to it, not to the next small job; kept
        /// for a minute (`untilMs`), whether or not the job is held.
        var forPreemption: Bool
        var untilMs: Int64?

        func live(_ jobs: RecordTable<JobID, JobRecord>, _ nowMs: Int64) -> Bool {
            guard let j = jobs[job], j.state == .queued, forPreemption || j.hold == nil else { return false }
            return untilMs.map { $0 > nowMs } ?? true
        }
    }
    /// Reservations by node: for a preemption in progress, and (backfill) for the first waiting
    /// multi-device job, from when its running work is expected to have freed enough devices.
    var reservedFor: [NodeID: Reservation] = [:]
    /// What preemption reads of an active run (its job's spec does not change at the region),
    /// filled on first use and dropped when the run lets go of its devices.
    struct RunFacts: Sendable {
        var job: JobID
        var node: NodeID
        var deviceIDs: [String]
        var createdAt: Date
        var priority: Int
        var ranks: Int
        var requeueNever: Bool
        var account: String
        /// The job accepts a grade below A (`frontier: borrow`).
        var acceptsLowerGrade: Bool
    }
    var runFactsTable: [AssignmentID: RunFacts] = [:]

    mutating func runFacts(_ aid: AssignmentID) -> RunFacts? {
        if let f = runFactsTable[aid] { return f }
        guard let a = assignments[aid], let v = jobs[a.job] else { return nil }
        let f = RunFacts(job: a.job, node: a.node, deviceIDs: a.deviceIDs, createdAt: a.createdAt, priority: v.spec.priority,
                         ranks: v.spec.nodes, requeueNever: v.spec.retry.requeueNever, account: v.spec.accountName,
                         acceptsLowerGrade: Self.acceptsLowerGrade(v.spec))
        runFactsTable[aid] = f
        return f
    }

    /// Jobs that found nothing to preempt, and when to look again.
    var noVictimsUntil: [JobID: Int64] = [:]
    /// When usage was last written; the wall time of the latest input (for refunds, whose
    /// callers do not all carry the time).
    var usageWrittenAtMs: Int64 = 0
    var lastWall = Date(timeIntervalSince1970: 0)
    var preemptionsFor: [JobID: Set<AssignmentID>] = [:]
    /// Recent `diagnosis` texts by request shape.
    var diagnoses: [PlacementShape: (atMs: Int64, text: String)] = [:]
    /// The queue's expected wait as last worked out (see `summary`).
    var expectedWait: (atMs: Int64?, seconds: Int) = (nil, 0)
    var placementDirty = true
    /// Service replicas in this region by service (live jobs; ended ones are dropped when the
    /// rotation is worked out), the rotations last published to the gateway, the services whose
    /// rotation may have changed, and replicas draining before their stop (since when).
    var serviceJobs: [String: Set<JobID>] = [:]
    var publishedRoutes: [String: [ServiceRoute]] = [:]
    var routesDirty: Set<String> = []
    var draining: [JobID: Int64] = [:]
    /// The gateway's URL and load, as the shell last reported them (for summaries).
    var gatewayURL = ""
    var gatewayLoads: [Wire.ServiceLoad] = []
    var lastTurnMs: Int64?
    /// Total time the controller was stalled (turn gaps beyond the threshold).
    public private(set) var stalledMs: Int64 = 0
    /// Lifeguard-style local health: raised when the controller stalls, lowered after calm
    /// seconds; the lost-node timeout is stretched by (1 + localHealth / 4), at most 2x. Stall
    /// time itself is already subtracted from every node's silence; this is the margin for
    /// lag that turn gaps do not show.
    public private(set) var localHealth = 0
    var calmSinceMs: Int64 = 0
    var summarySequence: UInt64 = 0
    var summariesSinceFull = 0
    var wantFullSummary = true
    /// The national scheduler said it reads STATUS_BATCH (its latest summary acknowledgement).
    var upstreamReadsBatches = false
    var counters = RegionCounters()
    /// Submission-to-placement seconds of jobs placed since the shell last took them (metrics).
    var placementWaits: [Double] = []
    /// When the national scheduler last said anything (readiness).
    var nationalHeardMs: Int64?
    /// One copy of each model string, shared by every slot that names it.
    var models: [String: String] = [:]

    /// One slot per schedulable unit: a whole device, or each slice of a partitioned one
    /// (named "<model> [<profile>]").
    mutating func slots(_ devices: [DeviceInventory]) -> [DeviceSlot] {
        DeviceInventory.schedulableUnits(devices).map { d in
            let name = d.unitName
            let model: String
            if let m = models[name] { model = m } else {
                models[name] = name
                model = name
            }
            return DeviceSlot(id: d.id, model: model, health: d.health.state, capability: d.capability.hashValue,
                              grade: d.grade, foreign: (d.foreignProcesses ?? 0) > 0)
        }
    }

    static func stripped(_ r: NodeRecord) -> NodeRecord {
        var r = r
        r.devices = []
        return r
    }

    public struct RegionCounters: Sendable, Equatable {
        public var heartbeats = 0
        public var placements = 0
        public var nodesLost = 0
        public var stalls = 0
        public var staleUpdates = 0
    }

    public var stats: RegionCounters { counters }

    public init(settings: Settings, recovered: RegionRecovery, now: Moment) {
        self.settings = settings
        self.quotas = settings.accounts.hasLimits
        self.index = PlacementIndex(options: settings.placement)
        self.ledger = AccountLedger(policy: settings.accounts, usage: recovered.accountUsage)
        for a in recovered.assignments where a.state.holdsDevices {
            assignments[a.id] = a
            // Resend pending ones once their node is back; accepted ones wait for the node's word.
            if a.state == .pending { sentAt[a.id] = (0, 0) }
        }
        var heldBy: [NodeID: Set<AssignmentID>] = [:]
        for a in assignments.values { heldBy[a.node, default: []].insert(a.id) }
        for n in recovered.nodes {
            // After a restart every node gets a full grace period to speak again, and offers no
            // devices until it does (its route is unknown).
            nodes[n.id] = Node(record: Self.stripped(n), slots: slots(n.devices), route: nil, lastHeardMs: now.monotonicMs,
                               stalledAtHeard: 0, held: heldBy[n.id] ?? [],
                               digest: AssignmentDigest.of((heldBy[n.id] ?? []).map(\.rawValue)))
            let busy = Set((heldBy[n.id] ?? []).flatMap { assignments[$0]?.deviceIDs ?? [] })
            if n.cordon != nil { index.setCordoned(node: n.id, true) }
            index.setAccounts(node: n.id, n.accounts)
            index.upsert(node: n.id, devices: n.devices, busy: busy, schedulable: false)
            if n.state != .lost { armDeadline(n.id, at: now.monotonicMs + settings.nodeLostAfterMs) }
            // Lost before the restart and still holding work: its lease runs out a full
            // lease + margin from now (the time before the restart is not known to have passed
            // without a heartbeat we did not store).
            else if !(heldBy[n.id] ?? []).isEmpty {
                timers.schedule(.leaseExpiry(n.id), at: now.monotonicMs + settings.lease + settings.leaseMarginMs + 1)
            }
        }
        // Nodes that come back unchanged do not re-register their devices: size here.
        sizeTables(forUnits: index.unitTotal)
        for j in recovered.jobs {
            jobs[j.id] = j
            if j.state == .queued && j.hold == nil { queue.insert(j.id, priority: j.spec.priority, front: false) }
            if let r = j.spec.replica, !j.state.isTerminal {
                serviceJobs[r.service, default: []].insert(j.id)
                routesDirty.insert(r.service)
            }
        }
        // An assignment that still holds devices but is no longer its job's current run: a
        // gang's rank that was being stopped when the region went down. It is stopped again.
        for a in assignments.values where !(jobs[a.job].map { !$0.state.isTerminal && $0.holds(a.id) } ?? false) {
            stopping[a.id] = "stopped before the region restarted"
        }
        // What each account holds, from the assignments that hold devices (oldest first, so
        // the newest runs are the ones marked borrowed past an account's quota).
        for a in assignments.values.sorted(by: { ($0.createdAt, $0.id.rawValue) < ($1.createdAt, $1.id.rawValue) }) {
            guard let j = jobs[a.job] else { continue }
            let use = index.resourceUse(node: a.node, deviceIDs: a.deviceIDs)
            let borrowed = ledger.admit(j.spec.accountName, use) == .borrowing
            ledger.charge(j.spec.accountName, use, at: now.wall)
            charged[a.id] = (j.spec.accountName, use, borrowed)
        }
        usageWrittenAtMs = now.monotonicMs
        lastWall = now.wall
        // Highest priority first, oldest first within a priority (the order `enqueue` keeps).
        let byID = jobs
        queue.sortWithinPriorities(key: { id in byID[id]?.submittedAt ?? .distantPast }, by: <)
        for item in recovered.outbox where item.type == "status_update" {
            guard let u = try? Wire.StatusUpdate(serializedBytes: item.payload.bytes) else { continue }
            outbox[item.key] = Outgoing(update: u, attempts: 0, dueMs: now.monotonicMs)
            timers.schedule(.outbox(item.key), at: now.monotonicMs)
            // A placement whose `assigned` was never acknowledged still waits for it.
            let aid = AssignmentID("\(u.jobID).\(u.epoch)")
            if settings.confirmStarts, u.state == JobState.assigned.rawValue, assignments[aid]?.state == .pending {
                for each in jobs[JobID(u.jobID)]?.currentAssignments ?? [aid] { unconfirmed[each] = item.key }
                awaitingConfirmation[item.key] = aid
            }
        }
        for (id, at) in recovered.applied.sorted(by: { $0.1 < $1.1 }) {
            let ms = now.monotonicMs - Int64(now.wall.timeIntervalSince(at) * 1000)
            applied[id] = ms
            appliedOrder.append((id, ms))
        }
        timers.schedule(.summary, at: now.monotonicMs)
        timers.schedule(.prune, at: now.monotonicMs + 60_000)
        calmSinceMs = now.monotonicMs
    }

    // MARK: inbound

    /// One decoded message from a peer.
    public mutating func receive(_ message: Message, origin: Origin, now: Moment) -> [ControllerDirective] {
        lastWall = now.wall
        if case .upstream = origin.peer { nationalHeardMs = now.monotonicMs }
        // An agent's key speaks for its own nodes only: a report matched by assignment (whose
        // node_id is only for logs) must be about an assignment of one of them.
        // A tenant's key works through the national scheduler, which checks what it owns.
        if let tenant = origin.tenant {
            return [.error("forbidden", "a key bound to tenant '\(tenant)' speaks to the national scheduler only", to: origin)]
        }
        if case .agent(let mine)? = origin.principal {
            var node: NodeID?
            switch message.body {
            case .statusUpdate(let m): node = assignments[AssignmentID(m.assignmentID)]?.node ?? jobs[JobID(m.jobID)]?.node
            case .assignmentAck(let m): node = assignments[AssignmentID(m.assignmentID)]?.node
            default: break
            }
            if let node, !mine.contains(node) {
                return [.error("forbidden", "\(message.body.type) for assignment of node \(node): this key speaks for \(mine.map(\.rawValue).sorted().joined(separator: ", ")) only", to: origin),
                        .log(LogEvent(.warning, "refused", ["reason": "forbidden", "node": "\(node)"]))]
            }
        }
        switch message.body {
        case .register(let m): return onRegister(m, origin: origin, now: now)
        case .heartbeat(let m): return onHeartbeat(m, origin: origin, now: now)
        case .assignmentAck(let m): return onAssignmentAck(m, now: now)
        case .statusUpdate(let m): return onStatusUpdate(m, origin: origin, now: now)
        case .jobForward(let m): return onJobForward(m, origin: origin, now: now)
        case .statusAck(let m): return onStatusAck(m, now: now)
        case .nodeCommand(let m): return onNodeCommand(m, origin: origin, now: now)
        case .jobControl(let m): return onJobControl(m, origin: origin, now: now)
        case .regionSummaryAck(let m):
            if m.wantFull { wantFullSummary = true }
            upstreamReadsBatches = m.acceptsStatusBatch
            return []
        case .statusBatchAck(let m):
            var out: [ControllerDirective] = []
            for ack in m.acks { out += onStatusAck(ack, now: now) }
            return out
        case .jobForwardAck:
            return []
        case .cancel(let m): return onCancel(m, now: now)
        case .query(let m): return onQuery(m, origin: origin, now: now)
        case .submit:
            return [.error("unsupported", "submit jobs to the national scheduler, not to region \(region)", to: origin)]
        default:
            return [.error("unsupported", "region \(region) does not accept \(message.body.type)", to: origin)]
        }
    }

    // MARK: nodes

    public mutating func onRegister(_ m: Wire.Register, origin: Origin, now: Moment) -> [ControllerDirective] {
        let id = NodeID(m.nodeID)
        let devices = m.devices.map(\.inventory)
        let previous = nodes[id]
        var record = NodeRecord(id: id, region: region, hostname: m.hostname, state: .ready, devices: devices,
                                lastSeen: now.wall, registeredAt: previous?.record.registeredAt ?? now.wall)
        record.cordon = previous?.record.cordon
        record.accounts = Array(Set(m.accounts)).sorted()
        let fresh = slots(devices)
        // Dedicated to accounts (its agent's run_as): only their jobs are placed here.
        let rededicated = index.setAccounts(node: id, record.accounts)
        // A register repeated with nothing changed (a retry, a reconnect storm) writes nothing.
        let unchanged = !rededicated && (previous.map { $0.record.state == .ready && $0.slots == fresh && $0.record.hostname == m.hostname } ?? false)
        var out: [ControllerDirective] = unchanged ? [] : [.persist(.node(record))]
        var node = previous ?? Node(record: Self.stripped(record), slots: [], route: origin.peer, lastHeardMs: now.monotonicMs, stalledAtHeard: stalledMs)
        node.record = Self.stripped(record)
        node.slots = fresh
        node.route = origin.peer
        node.lastHeardMs = now.monotonicMs
        node.stalledAtHeard = stalledMs
        nodes[id] = node
        // An agent that restarted lost the processes of assignments it no longer holds: run those
        // jobs again elsewhere rather than wait for results that cannot come.
        let held = Set(m.heldAssignments)
        for aid in node.held.sorted() {
            guard let a = assignments[aid] else { continue }
            if a.state == .accepted && !held.contains(aid.rawValue) {
                out += requeue(a, .nodeRestarted, reason: "node \(id) restarted without assignment \(aid)", now: now)
            } else if a.state == .pending {
                sentAt[aid] = (0, sentAt[aid]?.attempts ?? 0)
                timers.schedule(.resend(aid), at: now.monotonicMs)
            }
        }
        if unchanged {
            index.setSchedulable(node: id, true)
        } else {
            let busy = Set((nodes[id]?.held ?? []).flatMap { assignments[$0]?.deviceIDs ?? [] })
            index.upsert(node: id, devices: devices, busy: busy, schedulable: true)
            sizeTables(forUnits: index.unitTotal)
        }
        refreshDigest(id)
        armDeadline(id, at: now.monotonicMs + lostAfterMs)
        placementDirty = true
        if !unchanged {
            out.append(.log(LogEvent(.info, "node registered", ["node": "\(id)", "resource": resourceName(id), "devices": "\(devices.count)", "from": origin.peer.label])))
        }
        var ack = Wire.RegisterAck()
        ack.nodeID = id.rawValue
        ack.regionID = region.rawValue
        ack.heartbeatIntervalMs = UInt32(clamping: settings.heartbeatIntervalMs)
        ack.leaseMs = UInt32(clamping: settings.lease)
        ack.leaseMarginMs = UInt32(clamping: settings.leaseMarginMs)
        ack.echoSentMs = m.sentMs
        out.append(.reply(.registerAck(ack), to: origin))
        return out
    }

    public mutating func onHeartbeat(_ m: Wire.Heartbeat, origin: Origin, now: Moment) -> [ControllerDirective] {
        let id = NodeID(m.nodeID)
        counters.heartbeats += 1
        var ack = Wire.HeartbeatAck()
        ack.nodeID = m.nodeID
        guard var node = nodes[id] else {
            ack.known = false
            return [.reply(.heartbeatAck(ack), to: origin)]
        }
        var out: [ControllerDirective] = []
        let wasUnreachable = node.route == nil
        node.route = origin.peer
        node.lastHeardMs = now.monotonicMs
        node.stalledAtHeard = stalledMs
        var capabilityChanged = false
        var reported: [DeviceInventory]? = nil
        if node.record.state == .lost {
            node.record.state = .ready
            capabilityChanged = true
            out.append(.log(LogEvent(.notice, "node is back", ["node": "\(id)", "resource": resourceName(id)])))
            armDeadline(id, at: now.monotonicMs + lostAfterMs)
        }
        // An agent that is stopping says so on its heartbeats: no new work until it stops
        // saying so or registers again.
        if m.draining && node.record.state == .ready {
            node.record.state = .draining
            index.setSchedulable(node: id, false)
            out.append(.persist(.nodeState(id, .draining)))
            out.append(.log(LogEvent(.notice, "node draining: its agent is stopping", ["node": "\(id)", "resource": resourceName(id)])))
        } else if !m.draining && node.record.state == .draining {
            node.record.state = .ready
            index.setSchedulable(node: id, true)
            placementDirty = true
            out.append(.persist(.nodeState(id, .ready)))
        }
        if !m.devices.isEmpty {
            let devices = m.devices.map(\.inventory)
            let fresh = slots(devices)
            if fresh != node.slots {
                // Telemetry (temperatures, utilisation) is not part of a slot: only capability and
                // health changes get here, and only they are written.
                let before = Dictionary(node.slots.map { ($0.id, $0.health) }, uniquingKeysWith: { a, _ in a })
                for d in devices where before[d.id] != nil && before[d.id] != d.health.state {
                    out.append(.log(LogEvent(.notice, "device health changed", [
                        "node": "\(id)", "device": d.id, "resource": ResourceName(region: region, node: id, device: d.id).description, "from": before[d.id]!.rawValue, "to": d.health.state.rawValue,
                        "reasons": d.health.reasons.map(\.detail).joined(separator: "; "),
                    ])))
                }
                node.slots = fresh
                reported = devices
                capabilityChanged = true
            }
        }
        nodes[id] = node
        if wasUnreachable && !capabilityChanged && node.record.state == .ready {
            // Known from the log but silent since our restart: it offers its devices again.
            index.setSchedulable(node: id, true)
            placementDirty = true
        }
        if capabilityChanged {
            node.record.lastSeen = now.wall
            nodes[id] = node
            if let devices = reported {
                var full = node.record
                full.devices = devices
                out.append(.persist(.node(full)))
                let busy = Set(node.held.flatMap { assignments[$0]?.deviceIDs ?? [] })
                index.upsert(node: id, devices: devices, busy: busy, schedulable: node.record.state == .ready)
            } else {
                // Back from lost with the same devices.
                out.append(.persist(.nodeState(id, node.record.state)))
                index.setSchedulable(node: id, node.record.state == .ready)
            }
            placementDirty = true
        }
        // The digest says whether the node holds what we think it holds; only when it does not
        // (or the node sent its list) do we compare lists.
        if !m.runningAssignments.isEmpty || (m.assignmentCount == 0 && m.assignmentDigest != node.digest) {
            // A gang rank being stopped that the node does not hold (it never got the
            // assignment, or has forgotten a finished run): its devices are free.
            let holds = Set(m.runningAssignments)
            for aid in node.held where stopping[aid] != nil && !holds.contains(aid.rawValue) {
                guard var a = assignments[aid] else { continue }
                release(a)
                a.state = .revoked
                out.append(.persist(.assignment(a, at: now.wall)))
            }
            for running in m.runningAssignments {
                let aid = AssignmentID(running)
                if let a = assignments[aid] {
                    if cancelRequested.contains(a.job) || preempting[a.id] != nil || requeueing[a.id] != nil || stopping[a.id] != nil {
                        out.append(cancel(a, to: origin.peer))
                    }
                } else {
                    // Revoked here (node was lost, job went elsewhere): its result would be
                    // refused as stale anyway, so the process must stop.
                    out.append(cancelUnknown(aid, node: id, to: origin.peer))
                }
            }
        } else if m.assignmentDigest != node.digest && m.assignmentCount > 0 {
            ack.sendAssignments = true
        }
        ack.known = true
        // The echo renews the node's lease on the agent's own clock.
        ack.echoSentMs = m.sentMs
        ack.leaseMs = UInt32(clamping: settings.lease)
        ack.leaseMarginMs = UInt32(clamping: settings.leaseMarginMs)
        out.append(.reply(.heartbeatAck(ack), to: origin))
        return out
    }

    func cancel(_ a: AssignmentRecord, to peer: Peer) -> ControllerDirective {
        var c = Wire.Cancel()
        c.jobID = a.job.rawValue
        c.assignmentID = a.id.rawValue
        c.epoch = UInt64(a.epoch)
        c.nodeID = a.node.rawValue
        return .send(.cancel(c), to: peer)
    }

    func cancelUnknown(_ aid: AssignmentID, node: NodeID, to peer: Peer) -> ControllerDirective {
        var c = Wire.Cancel()
        c.assignmentID = aid.rawValue
        c.nodeID = node.rawValue
        let raw = aid.rawValue
        if let dot = raw.lastIndex(of: ".") {
            c.jobID = String(raw[..<dot])
            c.epoch = UInt64(raw[raw.index(after: dot)...]) ?? 0
        }
        return .send(.cancel(c), to: peer)
    }

    /// One deadline per node in the heap: a node that already has one keeps it (it re-arms itself
    /// from the node's last-heard time when it fires).
    mutating func armDeadline(_ id: NodeID, at due: Int64) {
        guard nodes[id]?.deadlineArmed == false else { return }
        nodes[id]?.deadlineArmed = true
        timers.schedule(.nodeDeadline(id), at: due)
    }

    var lostAfterMs: Int64 { settings.nodeLostAfterMs * Int64(4 + localHealth) / 4 }

    // MARK: assignments and status

    public mutating func onAssignmentAck(_ m: Wire.AssignmentAck, now: Moment) -> [ControllerDirective] {
        let id = AssignmentID(m.assignmentID)
        guard var a = assignments[id], UInt64(a.epoch) == m.epoch, a.state == .pending else { return [] }
        sentAt[id] = nil
        if m.accepted {
            a.state = .accepted
            assignments[id] = a
            return [.persist(.assignment(a, at: now.wall))]
        }
        a.state = .rejected
        var out: [ControllerDirective] = [.persist(.assignment(a, at: now.wall))]
        out += requeue(a, .rejected, reason: "node \(a.node) rejected assignment \(id): \(m.reason)", now: now, newState: .rejected)
        out.append(.log(LogEvent(.warning, "assignment rejected", ["assignment": "\(id)", "reason": m.reason])))
        return out
    }

    public mutating func onStatusUpdate(_ m: Wire.StatusUpdate, origin: Origin, now: Moment) -> [ControllerDirective] {
        var ack = Wire.StatusAck()
        ack.updateID = m.updateID
        func answer(_ applied: Bool, _ reason: String) -> ControllerDirective {
            ack.applied = applied
            ack.reason = reason
            return .reply(.statusAck(ack), to: origin)
        }
        if stopping[AssignmentID(m.assignmentID)] != nil, let a = assignments[AssignmentID(m.assignmentID)] {
            // A gang's rank that was told to stop: its end frees its devices; nothing else changes.
            guard let state = JobState(rawValue: m.state), state.isTerminal else { return [answer(true, "ignored: this rank is being stopped")] }
            var done = a
            done.state = .done
            release(a)
            return [.persist(.assignment(done, at: now.wall)), answer(true, "rank stopped"),
                    .log(LogEvent(.info, "gang rank stopped", ["job": m.jobID, "assignment": m.assignmentID, "node": "\(a.node)"]))]
        }
        guard var job = jobs[JobID(m.jobID)] else {
            return [answer(false, "job \(m.jobID) unknown in region \(region)")]
        }
        guard job.holds(AssignmentID(m.assignmentID)), UInt64(job.epoch) == m.epoch else {
            counters.staleUpdates += 1
            let current = "assignment \(job.assignment?.rawValue ?? "none") epoch \(job.epoch)"
            return [answer(false, "stale: assignment \(m.assignmentID) epoch \(m.epoch) is not current (\(current))"),
                    .log(LogEvent(.notice, "status update not applied", ["update": m.updateID, "reason": "stale"]))]
        }
        if applied[m.updateID] != nil { return [answer(true, "duplicate \(m.updateID), already applied")] }
        var out: [ControllerDirective] = [.persist(.applied(updateID: m.updateID, at: now.wall))]
        remember(m.updateID, now)
        guard let state = JobState(rawValue: m.state), state.progress >= job.state.progress, !job.state.isTerminal else {
            return out + [answer(true, "ignored: job already \(job.state.rawValue)")]
        }
        if !job.gang.isEmpty {
            return out + onRankUpdate(m, state: state, job: job, now: now) + [answer(true, "")]
        }
        // A run an operator asked to requeue goes back to the queue (unless it succeeded first).
        if state.isTerminal, state != .succeeded, let aid = job.assignment, let why = requeueing[aid], let a = assignments[aid],
           !cancelRequested.contains(job.id) {
            out += requeue(a, .requeued, reason: "requeued by an operator" + (why.isEmpty ? "" : ": \(why)"), now: now, newState: .done)
            out.append(answer(true, ""))
            return out
        }
        // A run stopped to make room for a higher-priority job goes back to the queue (unless
        // it ended by itself first, or its owner cancelled it meanwhile).
        if state.isTerminal, state != .succeeded, let aid = job.assignment, let by = preempting[aid], let a = assignments[aid],
           !cancelRequested.contains(job.id) {
            let notHigher = jobs[by].map({ $0.spec.priority <= job.spec.priority }) ?? false
            let why = (charged[aid]?.borrowed ?? false) && notHigher
                ? "preempted by \(by) (its account reclaims the quota this run borrowed)"
                : notHigher && borrowsFrontier(a, of: job) ? "preempted by \(by) (it needs the frontier devices this run borrowed)"
                : "preempted by \(by) (higher priority)"
            out += requeue(a, .preempted, reason: why, now: now, newState: .done)
            out.append(answer(true, ""))
            return out
        }
        // A run stopped by a fault around it (lease lapsed, agent stopped) is not the job's
        // outcome: the retry policy decides whether it runs again.
        if state.isTerminal, let reason = m.endReason.reason, reason.isFault, let aid = job.assignment, let a = assignments[aid] {
            out += requeue(a, reason, reason: m.message.isEmpty ? reason.rawValue : m.message, now: now, newState: .done)
            out.append(answer(true, ""))
            return out
        }
        if let last = job.attempts.indices.last, job.attempts[last].assignment.rawValue == m.assignmentID {
            if state == .running && job.attempts[last].startedAt == nil { job.attempts[last].startedAt = now.wall }
            if state.isTerminal {
                job.attempts[last].endedAt = now.wall
                job.attempts[last].endReason = m.endReason.reason ?? .exited
                job.attempts[last].message = m.message
            }
        }
        // A running report of a run already running: its readiness (or endpoint) changed. It
        // goes upward under its own id, so the national scheduler applies each such change.
        let again = job.state == .running && state == .running
        job.state = state
        if !m.endpoint.isEmpty { job.endpoint = m.endpoint }
        job.ready = state == .running && m.ready
        if let r = job.spec.replica { routesDirty.insert(r.service) }
        job.exitCode = m.hasExitCode_p ? Int(m.exitCode) : nil
        if !m.message.isEmpty { job.message = m.message }
        if !m.outputTail.isEmpty { job.outputTail = m.outputTail }
        if !m.visibleDevices.isEmpty { job.visibleDevices = m.visibleDevices }
        job.updatedAt = now.wall
        jobs[job.id] = job
        out.append(.persist(.job(job)))
        if state.isTerminal, let aid = job.assignment, var a = assignments[aid] {
            a.state = .done
            out.append(.persist(.assignment(a, at: now.wall)))
            release(a)
            cancelRequested.remove(job.id)
            out.append(.log(LogEvent(.info, "job finished", ["job": m.jobID, "state": m.state, "node": m.nodeID])))
        } else if state == .running, let aid = job.assignment, var a = assignments[aid], a.state == .pending {
            // A running report implies the node accepted it (the ack may still be on its way).
            a.state = .accepted
            assignments[aid] = a
            sentAt[aid] = nil
            out.append(.persist(.assignment(a, at: now.wall)))
        }
        out.append(enqueueStatus(job, now: now, variant: again ? m.updateID : nil))
        out.append(answer(true, ""))
        return out
    }

    // MARK: gangs

    /// A report from one rank of a gang's current run. The job is `running` once every rank
    /// runs and `succeeded` once every rank has; a rank that fails (or is cancelled) ends the
    /// job so and the others are stopped; a rank stopped by a fault, a preemption or an
    /// operator's requeue sends the whole gang back to the queue (`requeue`, retry policy).
    mutating func onRankUpdate(_ m: Wire.StatusUpdate, state: JobState, job: JobRecord, now: Moment) -> [ControllerDirective] {
        var job = job
        let aid = AssignmentID(m.assignmentID)
        guard let r = job.gang.firstIndex(where: { $0.assignment == aid }), var a = assignments[aid] else { return [] }
        let n = job.gang.count
        var out: [ControllerDirective] = []
        if state.isTerminal && state != .succeeded && !cancelRequested.contains(job.id) {
            let ranks = job.gang.map(\.assignment)
            if let why = requeueing[aid] ?? ranks.compactMap({ requeueing[$0] }).first {
                return requeue(a, .requeued, reason: "requeued by an operator" + (why.isEmpty ? "" : ": \(why)"), now: now, newState: .done)
            }
            if let by = preempting[aid] ?? ranks.compactMap({ preempting[$0] }).first {
                return requeue(a, .preempted, reason: "preempted by \(by) (higher priority)", now: now, newState: .done)
            }
            if let reason = m.endReason.reason, reason.isFault {
                return requeue(a, reason, reason: "rank \(r) on \(a.node): " + (m.message.isEmpty ? reason.rawValue : m.message), now: now, newState: .done)
            }
        }
        job.gang[r].state = state
        if m.hasExitCode_p { job.gang[r].exitCode = Int(m.exitCode) }
        if r == 0, !m.visibleDevices.isEmpty { job.visibleDevices = m.visibleDevices }
        var variant: String?
        switch state {
        case .running:
            if a.state == .pending {
                a.state = .accepted
                assignments[aid] = a
                sentAt[aid] = nil
                out.append(.persist(.assignment(a, at: now.wall)))
            }
            let up = job.gang.filter { $0.state == .running || $0.state == .succeeded }.count
            if job.state == .assigned {
                if up == n {
                    job.state = .running
                    job.message = "all \(n) ranks running"
                    if let last = job.attempts.indices.last { job.attempts[last].startedAt = now.wall }
                } else {
                    job.message = "\(up) of \(n) ranks running"
                }
            }
            variant = "ranks-\(up)"
        case .succeeded:
            a.state = .done
            out.append(.persist(.assignment(a, at: now.wall)))
            release(a)
            if r == 0, !m.outputTail.isEmpty { job.outputTail = m.outputTail }
            let done = job.gang.filter { $0.state == .succeeded }.count
            if done == n {
                job.state = .succeeded
                job.exitCode = 0
                job.message = "all \(n) ranks succeeded"
                if let last = job.attempts.indices.last {
                    job.attempts[last].endedAt = now.wall
                    job.attempts[last].endReason = .exited
                    job.attempts[last].message = job.message
                }
                cancelRequested.remove(job.id)
                out.append(.log(LogEvent(.info, "job finished", ["job": m.jobID, "state": state.rawValue, "ranks": "\(n)"])))
            } else {
                job.message = "\(done) of \(n) ranks finished"
                variant = "done-\(done)"
            }
        default:
            guard state.isTerminal else { return [] }
            // This rank failed or was cancelled: so is the job, and the other ranks stop.
            a.state = .done
            out.append(.persist(.assignment(a, at: now.wall)))
            release(a)
            job.state = state
            job.exitCode = m.hasExitCode_p ? Int(m.exitCode) : nil
            job.message = "rank \(r) on \(a.node) \(state.rawValue)" + (m.message.isEmpty ? "" : ": \(m.message)")
                + (n > 1 ? "; the other \(n - 1) rank(s) are stopped" : "")
            if !m.outputTail.isEmpty { job.outputTail = m.outputTail }
            if let last = job.attempts.indices.last {
                job.attempts[last].endedAt = now.wall
                job.attempts[last].endReason = m.endReason.reason ?? .exited
                job.attempts[last].message = job.message
            }
            out += stopRanks(of: job, except: aid, reason: "rank \(r) \(state.rawValue)", now: now)
            cancelRequested.remove(job.id)
            out.append(.log(LogEvent(.info, "job finished", ["job": m.jobID, "state": state.rawValue, "rank": "\(r)", "node": "\(a.node)"])))
        }
        job.updatedAt = now.wall
        jobs[job.id] = job
        out.append(.persist(.job(job)))
        out.append(enqueueStatus(job, now: now, variant: job.state.isTerminal ? nil : variant))
        return out
    }

    /// Stops every rank of `job`'s current run but `except` that still holds devices: a rank
    /// never sent is taken back at once; the others are told to stop (CANCEL; the agent sends
    /// TERM, then KILL after its grace) and keep their devices until they report their end.
    mutating func stopRanks(of job: JobRecord, except: AssignmentID?, reason: String, now: Moment) -> [ControllerDirective] {
        var out: [ControllerDirective] = []
        for member in job.gang where member.assignment != except {
            guard var a = assignments[member.assignment] else { continue }
            if unconfirmed[a.id] != nil {
                release(a)
                a.state = .revoked
                out.append(.persist(.assignment(a, at: now.wall)))
                continue
            }
            stopping[a.id] = reason
            if let peer = nodes[a.node]?.route { out.append(cancel(a, to: peer)) }
            out.append(.log(LogEvent(.notice, "stopping a gang rank", ["job": "\(job.id)", "assignment": "\(a.id)", "node": "\(a.node)", "reason": reason])))
        }
        return out
    }

    /// Takes back a placement never sent to its nodes (every rank of a gang).
    mutating func unplaceAll(_ job: inout JobRecord, now: Moment) -> [ControllerDirective] {
        let ids = job.currentAssignments
        var out: [ControllerDirective] = []
        for aid in ids.reversed() {
            guard let a = assignments[aid] else { continue }
            out.append(unplace(a, from: &job, now: now))
        }
        job.gang = []
        return out
    }

    mutating func remember(_ updateID: String, _ now: Moment) {
        applied[updateID] = now.monotonicMs
        appliedOrder.append((updateID, now.monotonicMs))
    }

    /// The digest a node's heartbeat must match: of the assignments we believe it holds.
    mutating func refreshDigest(_ id: NodeID) {
        guard let held = nodes[id]?.held else { return }
        nodes[id]?.digest = AssignmentDigest.of(held.map(\.rawValue))
    }

    /// `aid` is now held by `node`; its digest follows (XOR of the id's hash, PROTOCOL.md).
    mutating func hold(_ aid: AssignmentID, on node: NodeID) {
        if nodes[node]?.held.insert(aid).inserted == true { nodes[node]?.digest ^= AssignmentDigest.of(id: aid.rawValue) }
    }

    /// `aid` is no longer held by `node`.
    mutating func unhold(_ aid: AssignmentID, on node: NodeID) {
        if nodes[node]?.held.remove(aid) != nil { nodes[node]?.digest ^= AssignmentDigest.of(id: aid.rawValue) }
    }

    /// The assignment no longer holds devices: free them in the index and forget it.
    mutating func release(_ a: AssignmentRecord) {
        assignments[a.id] = nil
        runFactsTable[a.id] = nil
        sentAt[a.id] = nil
        if let uid = unconfirmed.removeValue(forKey: a.id) { awaitingConfirmation[uid] = nil }
        requeueing[a.id] = nil
        stopping[a.id] = nil
        if let c = charged.removeValue(forKey: a.id) { ledger.refund(c.account, c.use, at: lastWall) }
        if let by = preempting.removeValue(forKey: a.id) {
            preemptionsFor[by]?.remove(a.id)
            if preemptionsFor[by]?.isEmpty == true { preemptionsFor[by] = nil }
        }
        unhold(a.id, on: a.node)
        index.release(node: a.node, deviceIDs: a.deviceIDs)
        placementDirty = true
    }

    /// Takes a job back from its node (lost, rejected, restarted, fenced, stopped) and decides
    /// by the job's retry policy: queue it again (after its backoff), or end it `lost` when it
    /// may not run twice (`requeue: never`) or has used up its attempts. The next assignment gets
    /// a higher epoch, so late reports about this one are refused.
    mutating func requeue(_ a: AssignmentRecord, _ why: EndReason, reason: String, now: Moment,
                          newState: AssignmentState = .revoked) -> [ControllerDirective] {
        var revoked = a
        revoked.state = newState
        var out: [ControllerDirective] = [.persist(.assignment(revoked, at: now.wall))]
        release(a)
        guard var job = jobs[a.job], job.holds(a.id), !job.state.isTerminal else { return out }
        // A gang runs all its ranks or none: the others are stopped.
        out += stopRanks(of: job, except: a.id, reason: "rank on \(a.node) ended: \(reason)", now: now)
        job.gang = []
        if let last = job.attempts.indices.last, job.attempts[last].assignment == job.assignment {
            job.attempts[last].endedAt = now.wall
            job.attempts[last].endReason = why
            job.attempts[last].message = reason
        }
        // A rejected assignment never ran; anything else may have. A preempted run is the
        // region's doing: it runs again at once, whatever its attempts.
        let mayHaveRun = why != .rejected && why != .preempted && why != .requeued
        let runs = job.attempts.filter { $0.endReason != .rejected }.count
        job.node = nil
        job.deviceIDs = []
        job.deviceModels = []
        job.deviceGrades = []
        job.assignment = nil
        job.visibleDevices = [:]
        job.precision = nil
        job.updatedAt = now.wall
        if mayHaveRun && job.spec.retry.requeueNever {
            job.state = .lost
            job.message = "\(reason); not run again (requeue: never)"
        } else if mayHaveRun && runs >= job.spec.retry.maxAttempts {
            job.state = .lost
            job.message = "\(reason); gave up after \(runs) of \(job.spec.retry.maxAttempts) attempts"
        } else {
            job.state = .queued
            // Refused placements in a row (a node that keeps saying no) back off too, from the
            // second one: 1 s, doubling, at most 30 s; they never use up attempts.
            let refusals = job.attempts.reversed().prefix { $0.endReason == .rejected }.count
            let wait = mayHaveRun ? job.spec.retry.backoffMs(beforeAttempt: runs + 1)
                : why == .rejected && refusals > 1 ? min(30_000, Int64(1000) << Int64(min(refusals - 2, 5))) : 0
            job.message = wait > 0 ? "\(reason); attempt \(runs + 1) of \(job.spec.retry.maxAttempts) in \(wait / 1000)s" : reason
            if job.hold != nil {
                job.message = "\(reason); held: \(job.hold!.reason)"
            } else if wait > 0 {
                timers.schedule(.retry(job.id), at: now.monotonicMs + wait)
            } else {
                jobs[job.id] = job
                enqueue(job.id, front: true)
            }
        }
        jobs[job.id] = job
        out.append(.persist(.job(job)))
        out.append(enqueueStatus(job, now: now))
        let event = job.state == .lost ? "job lost" : "job re-queued"
        out.append(.log(LogEvent(.warning, event, ["job": "\(job.id)", "reason": reason, "attempts": "\(runs)"])))
        return out
    }

    /// `job` (queued, no free devices for it) may take devices from lower-priority runs: on the
    /// node where that costs least (the lowest priorities stopped, then the fewest devices;
    /// never `requeue: never` work, never a run already being stopped or cancelled), the runs
    /// to stop get a CANCEL (the agent sends TERM, then KILL after its grace). When each reports
    /// its end it is queued again (`preempted`), and the job, ahead of it by priority, takes
    /// the devices on the next pass.
    mutating func preempt(for job: JobRecord, now: Moment) -> [ControllerDirective] {
        let p = job.spec.priority
        let wants = ModelFit.requests(for: job.spec)
        // An account within its own quota takes back what others of its cohort borrowed
        // (Kueue's reclaim), whatever their priority.
        let account = job.spec.accountName
        let reclaim = quotas && ledger.admit(account, ResourceUse(devices: max(1, job.spec.totalDevices))) == .within
        // A gang needs `ranks` nodes: those that fit it now count at no cost.
        let ranks = max(1, job.spec.nodes)
        // `frontier: borrow`: work that needs grade A takes back frontier devices lent to work
        // that did not, whatever its priority.
        let frontierReclaim = settings.frontier == .borrow && Self.needsFrontier(job.spec)
        var costs: [(key: [Int], node: NodeID, victims: [AssignmentRecord])] = []
        var scanned = 0
        for (nid, node) in nodes where node.record.state == .ready && node.route != nil && (ranks > 1 || !node.held.isEmpty) {
            scanned += 1
            if scanned > settings.preemptionScanLimit { break }
            if ranks > 1, wants.contains(where: { index.fitsNow(node: nid, for: $0, account: account) }) {
                costs.append(([Int.min, 0], nid, []))
                continue
            }
            // What the scan reads of each run comes from `runFacts`, not from copies of the run's
            // job and assignment records (BENCHMARKS.md, the reserve trace's profile).
            var ranked: [(aid: AssignmentID, f: RunFacts)] = []
            for aid in node.held {
                guard preempting[aid] == nil, unconfirmed[aid] == nil, let f = runFacts(aid) else { continue }
                let lent = reclaim && f.account != account && (charged[aid]?.borrowed ?? false) && ledger.sameCohort(account, f.account)
                let lentFrontier = frontierReclaim && f.acceptsLowerGrade && holdsFrontier(node: f.node, deviceIDs: f.deviceIDs)
                guard (f.priority < p || lent || lentFrontier) && !f.requeueNever && !cancelRequested.contains(f.job) else { continue }
                ranked.append((aid, f))
            }
            // Lowest priority first; then one-node runs before gangs (stopping one rank stops
            // every rank); among equals the newest run (least work lost).
            ranked.sort { x, y in
                if x.f.priority != y.f.priority { return x.f.priority < y.f.priority }
                if x.f.ranks != y.f.ranks { return x.f.ranks < y.f.ranks }
                return (x.f.createdAt, x.aid.rawValue) > (y.f.createdAt, y.aid.rawValue)
            }
            guard !ranked.isEmpty else { continue }
            var found: [Int]?
            for want in wants where found == nil {
                found = index.preemption(on: nid, for: want, account: account, victims: ranked.map(\.f.deviceIDs))
            }
            guard let chosen = found else { continue }
            let victims = chosen.compactMap { assignments[ranked[$0].aid] }
            guard victims.count == chosen.count else { continue }
            let key = [chosen.map { ranked[$0].f.priority }.max()!, victims.reduce(0) { $0 + $1.deviceIDs.count }]
            costs.append((key, nid, victims))
        }
        // The cheapest nodes (lowest priorities stopped, then fewest devices, then node id).
        let chosen = costs.sorted { a, b in a.key != b.key ? a.key.lexicographicallyPrecedes(b.key) : a.node < b.node }.prefix(ranks)
        guard chosen.count == ranks, chosen.contains(where: { !$0.victims.isEmpty }) else { return [] }
        var out: [ControllerDirective] = []
        preemptionsFor[job.id] = Set(chosen.flatMap { $0.victims.map(\.id) })
        for c in chosen {
            reservedFor[c.node] = Reservation(job: job.id, priority: job.spec.priority, startMs: now.monotonicMs,
                                              forPreemption: true, untilMs: now.monotonicMs + 60_000)
        }
        if reclaim, chosen.contains(where: { $0.victims.contains { charged[$0.id]?.borrowed ?? false } }), let cohort = settings.accounts.quota(for: account).cohort {
            reclaimers[cohort, default: []].insert(job.id)
        }
        for c in chosen {
            for v in c.victims {
                preempting[v.id] = job.id
                if let peer = nodes[c.node]?.route { out.append(cancel(v, to: peer)) }
                out.append(.log(LogEvent(.notice, "preempting a run for a higher-priority job",
                                         ["victim": "\(v.job)", "assignment": "\(v.id)", "for": "\(job.id)", "node": "\(c.node)"])))
            }
        }
        return out
    }

    /// For a model job that fits no ready node at any precision it allows: the precisions it
    /// does not allow that would fit (" — fits only at int4 (7,410 MiB per device), which the
    /// job does not allow (allowed: bf16, int8)"), else "".
    mutating func unfit(_ spec: JobSpec, _ fit: [ModelFit.Option]) -> String {
        guard let m = spec.model else { return "" }
        let need = fit.map { "\($0.precision.rawValue) \($0.perDeviceMiB) MiB" }.joined(separator: ", ")
        var text = "; model needs per device: \(need)"
        guard case .impossible = index.choose(among: fit.map(\.request), account: spec.accountName).choice else { return text }
        let others = ModelFit.disallowedOptions(for: spec).filter { o in
            if case .impossible = index.choose(o.request, account: spec.accountName) { return false }
            return true
        }
        if !others.isEmpty {
            text += "; fits only at " + others.map { "\($0.precision.rawValue) (\($0.perDeviceMiB) MiB per device)" }.joined(separator: " or ")
                + ", which the job does not allow (allowed: \(m.precisions.map(\.rawValue).joined(separator: ", ")))"
        }
        return text
    }

    /// Nodes counted by why they cannot take `want` ("9,812 nodes: grade outside C…A; 28:
    /// busy"), for the waiting job's message; worked out at most every 10 s per request shape.
    mutating func diagnosis(_ want: AcceleratorRequest, account: String, now: Moment) -> String {
        let key = placementShape([want], account: account, keepCount: true)
        if let cached = diagnoses[key], now.monotonicMs - cached.atMs < 10_000 { return cached.text }
        let causes = index.diagnose(want, account: account)
        let shown = causes.prefix(4).map { "\($0.nodes) node\($0.nodes == 1 ? "" : "s"): \($0.cause)" }
        let rest = causes.dropFirst(4).reduce(0) { $0 + $1.nodes }
        let text = causes.isEmpty ? "no nodes" : (shown + (rest > 0 ? ["\(rest) more for other reasons"] : [])).joined(separator: "; ")
        diagnoses[key] = (now.monotonicMs, text)
        if diagnoses.count > 4096 { diagnoses.removeAll() }
        return text
    }

    /// Seconds the queue would take to drain on `healthy` devices: Σ devices × expected run time
    /// (run_seconds, else the timeout, else an hour) over queued jobs, ÷ healthy devices.
    func expectedWaitSeconds(healthy: Int) -> Int {
        guard !queue.isEmpty else { return 0 }
        var deviceSeconds = 0.0
        for id in queue {
            guard let j = jobs[id] else { continue }
            deviceSeconds += Double(max(1, j.spec.totalDevices)) * Double(j.spec.expectedRunSeconds)
        }
        return Int(min(Double(UInt32.max), deviceSeconds / Double(max(1, healthy))))
    }

    /// Puts a queued job in its place: after every job of higher or equal priority (a new one),
    /// or ahead of the others of its priority (`front`: one taken back from a node). The queue
    /// stays ordered by priority, so a pass never places a job ahead of a higher-priority one
    /// that fits; a job put before the pass's cursor is examined next.
    mutating func enqueue(_ id: JobID, front: Bool) {
        queue.insert(id, priority: jobs[id]?.spec.priority ?? 0, front: front)
    }

    static func updateID(_ region: RegionID, _ job: JobRecord) -> String { "\(region):\(job.id):\(job.epoch):\(job.state.rawValue)" }

    /// Records an upward status change in the outbox, in the same batch as the change. A newer
    /// state of the same job and epoch replaces an older one not yet sent.
    /// `variant` tells apart reports of one state that differ in something else (a hold set or
    /// lifted), so the national scheduler applies each instead of taking it for a duplicate.
    mutating func enqueueStatus(_ job: JobRecord, now: Moment, variant: String? = nil) -> ControllerDirective {
        var u = Wire.StatusUpdate()
        u.jobID = job.id.rawValue
        u.assignmentID = job.assignment?.rawValue ?? ""
        u.epoch = UInt64(job.epoch)
        u.nodeID = job.node?.rawValue ?? ""
        u.state = job.state.rawValue
        if let code = job.exitCode {
            u.exitCode = Int32(clamping: code)
            u.hasExitCode_p = true
        }
        u.message = job.message
        u.outputTail = job.outputTail
        u.visibleDevices = job.visibleDevices
        u.regionID = region.rawValue
        u.deviceIds = job.deviceIDs
        u.deviceModels = job.deviceModels
        u.deviceGrades = job.deviceGrades
        u.attempts = job.attempts.map(Wire.Attempt.init)
        u.maxAttempts = UInt32(clamping: job.spec.retry.maxAttempts)
        u.precision = job.precision?.rawValue ?? ""
        u.holdReason = job.hold?.reason ?? ""
        u.endpoint = job.endpoint ?? ""
        u.ready = job.state == .running && job.ready
        u.gang = job.gang.map(Wire.GangRank.init)
        u.updateID = Self.updateID(region, job) + (variant.map { ":" + $0 } ?? "")
        // Encoded by the store when the shell commits the batch, not here.
        let item = OutboxItem(key: u.updateID, destination: "national", type: "status_update", message: .statusUpdate(u),
                              createdAt: now.wall, attempts: 0, lastAttemptAt: nil)
        outbox[u.updateID] = Outgoing(update: u, attempts: 0, dueMs: now.monotonicMs)
        timers.schedule(.outbox(u.updateID), at: now.monotonicMs)
        return .persist(.outbox(item))
    }

    public mutating func onStatusAck(_ m: Wire.StatusAck, now: Moment) -> [ControllerDirective] {
        guard let o = outbox.removeValue(forKey: m.updateID) else { return [] }
        var out: [ControllerDirective] = [.persist(.outboxDone(key: m.updateID))]
        let moved = !m.applied && m.reason.hasPrefix("moved")
        if let first = awaitingConfirmation.removeValue(forKey: m.updateID) {
            let ranks = jobs[assignments[first]?.job ?? JobID("")].map { $0.holds(first) ? $0.currentAssignments : [first] } ?? [first]
            for aid in ranks {
                unconfirmed[aid] = nil
                if !moved {
                    // The national scheduler has recorded the placement (or does not know the job,
                    // so cannot have run it elsewhere): start it.
                    sentAt[aid] = (0, sentAt[aid]?.attempts ?? 0)
                    timers.schedule(.resend(aid), at: now.monotonicMs)
                }
            }
        }
        if moved { out += dropMoved(JobID(o.update.jobID), reason: m.reason, now: now) }
        return out
    }

    /// Takes back a placement that was never sent to its node: the assignment is revoked, its
    /// devices freed, and the job holds no node or attempt for it (it never ran).
    mutating func unplace(_ a: AssignmentRecord, from job: inout JobRecord, now: Moment) -> ControllerDirective {
        var revoked = a
        revoked.state = .revoked
        release(a)
        if let last = job.attempts.indices.last, job.attempts[last].assignment == a.id { job.attempts.removeLast() }
        job.assignment = nil
        job.node = nil
        job.deviceIDs = []
        job.deviceModels = []
        job.deviceGrades = []
        job.precision = nil
        return .persist(.assignment(revoked, at: now.wall))
    }

    // MARK: operator verbs

    /// `gridctl hold|release|requeue JOB` relayed by the national scheduler. Hold: a queued job
    /// leaves the queue (a placement not yet sent is taken back) and stays until released; a
    /// running job runs on and, if it comes back to the queue, waits there. Release: queued
    /// again in its place by priority. Requeue: a running (or assigned) job is stopped — TERM,
    /// then KILL after the agent's grace — and queued again when it reports its end; the run
    /// ends `requeued` and does not use up attempts. Answered with the job as it now stands.
    public mutating func onJobControl(_ m: Wire.JobControl, origin: Origin, now: Moment) -> [ControllerDirective] {
        let id = JobID(m.jobID)
        func refuse(_ code: String, _ text: String) -> [ControllerDirective] {
            [.error(code, text, to: origin, correlation: m.correlation)]
        }
        guard var job = jobs[id] else {
            return refuse("not_found", "job \(m.jobID) is not known in region \(region) (a job just forwarded may still be on its way: try again)")
        }
        if job.state.isTerminal { return refuse("bad_request", "job \(id) has already ended (\(job.state.rawValue))") }
        var out: [ControllerDirective] = []
        let stamp = String(Int64(now.wall.timeIntervalSince1970 * 1000))
        switch m.action {
        case .hold:
            if job.hold == nil || job.hold?.reason != m.reason {
                job.hold = JobHold(reason: m.reason, since: job.hold?.since ?? now.wall)
                if let aid = job.assignment, unconfirmed[aid] != nil {
                    // Placed but not sent (waiting for the national scheduler): taken back.
                    out += unplaceAll(&job, now: now)
                    job.state = .queued
                }
                if job.state == .queued { queue.remove(id) }
                job.message = "held: \(m.reason)" + (job.state == .queued ? "" : "; the current run goes on (gridctl requeue stops it)")
                job.updatedAt = now.wall
                jobs[id] = job
                out.append(.persist(.job(job)))
                out.append(enqueueStatus(job, now: now, variant: "hold-" + stamp))
                out.append(.log(LogEvent(.notice, "job held by an operator", ["job": "\(id)", "reason": m.reason])))
            }
        case .release:
            if job.hold != nil {
                job.hold = nil
                job.message = "released" + (m.reason.isEmpty ? "" : ": \(m.reason)")
                job.updatedAt = now.wall
                jobs[id] = job
                if job.state == .queued && !queue.contains(id) {
                    enqueue(id, front: false)
                    placementDirty = true
                }
                out.append(.persist(.job(job)))
                out.append(enqueueStatus(job, now: now, variant: "release-" + stamp))
                out.append(.log(LogEvent(.notice, "job released by an operator", ["job": "\(id)"])))
            }
        case .requeue:
            guard let aid = job.assignment, let a = assignments[aid] else {
                return refuse("bad_request", "job \(id) is \(job.state.rawValue), not running: nothing to requeue")
            }
            if unconfirmed[aid] != nil {
                out += unplaceAll(&job, now: now)
                job.state = .queued
                job.message = "requeued by an operator before it started" + (m.reason.isEmpty ? "" : ": \(m.reason)")
                job.updatedAt = now.wall
                jobs[id] = job
                if job.hold == nil { enqueue(id, front: true) }
                placementDirty = true
                out.append(.persist(.job(job)))
                out.append(enqueueStatus(job, now: now))
            } else if requeueing[aid] == nil {
                job.message = "requeue requested; stopping the run on \(a.node)" + (job.gang.count > 1 ? " and the other \(job.gang.count - 1) rank(s)" : "")
                jobs[id] = job
                for each in job.currentAssignments {
                    guard let x = assignments[each] else { continue }
                    requeueing[each] = m.reason
                    if let peer = nodes[x.node]?.route { out.append(cancel(x, to: peer)) }
                }
                out.append(.log(LogEvent(.notice, "requeue requested by an operator", ["job": "\(id)", "assignment": "\(aid)"])))
            }
        default:
            return refuse("bad_request", "job control: action must be hold, release or requeue")
        }
        var reply = Wire.QueryReply()
        reply.correlation = m.correlation
        reply.jobs = [Wire.Job(job)]
        reply.total = 1
        out.append(.reply(.queryReply(reply), to: origin))
        return out
    }

    /// The national scheduler has run this job elsewhere (this region was silent past its
    /// limit): forget it here if it has not started. A confirmed, running job is never dropped
    /// (the national scheduler does not move those).
    mutating func dropMoved(_ id: JobID, reason: String, now: Moment) -> [ControllerDirective] {
        guard var job = jobs[id], !job.state.isTerminal else { return [] }
        var out: [ControllerDirective] = []
        switch job.state {
        case .queued:
            queue.remove(id)
        case .assigned:
            let sent = job.currentAssignments.contains { aid in assignments[aid].map { $0.state != .pending || (sentAt[aid]?.at ?? 0) != 0 } ?? true }
            guard job.assignment != nil, !sent else {
                return [.log(LogEvent(.error, "a started job was reported moved; kept", ["job": "\(id)", "reason": reason]))]
            }
            out += unplaceAll(&job, now: now)
        default:
            return []
        }
        job.state = .cancelled
        job.message = "moved by the national scheduler: \(reason)"
        job.updatedAt = now.wall
        jobs[id] = job
        out.append(.persist(.job(job)))
        out.append(.log(LogEvent(.warning, "job moved to another region; dropped here", ["job": "\(id)", "reason": reason])))
        return out
    }

    // MARK: from the national scheduler

    public mutating func onJobForward(_ m: Wire.JobForward, origin: Origin, now: Moment) -> [ControllerDirective] {
        var ack = Wire.JobForwardAck()
        ack.jobID = m.jobID
        var out: [ControllerDirective] = []
        if jobs[JobID(m.jobID)] != nil {
            // A resend of a job already here (its answer crossed the resend): answered as before.
            ack.accepted = true
            return [.reply(.jobForwardAck(ack), to: origin)]
        }
        do {
            let spec = try m.spec.spec()
            let problems = spec.problems()
            if settings.draining && jobs[JobID(m.jobID)] == nil {
                ack.accepted = false
                ack.reason = "region \(region) is draining (drain: true): it takes no new jobs"
            } else if !problems.isEmpty {
                ack.accepted = false
                ack.reason = problems.joined(separator: "; ")
            } else {
                let id = JobID(m.jobID)
                if jobs[id] == nil {
                    let submitted = m.submittedUnixMs > 0 ? Date(unixMilliseconds: m.submittedUnixMs) : now.wall
                    let record = JobRecord(id: id, spec: spec, state: .queued, region: region,
                                           message: "queued in \(region)", submittedAt: submitted, updatedAt: now.wall)
                    jobs[id] = record
                    if let r = spec.replica { serviceJobs[r.service, default: []].insert(id) }
                    enqueue(id, front: false)
                    placementDirty = true
                    out.append(.persist(.job(record)))
                    out.append(.log(LogEvent(.info, "job accepted", ["job": m.jobID, "name": spec.name])))
                }
                ack.accepted = true
            }
        } catch {
            ack.accepted = false
            ack.reason = error.description
        }
        out.append(.reply(.jobForwardAck(ack), to: origin))
        return out
    }

    public mutating func onCancel(_ m: Wire.Cancel, now: Moment) -> [ControllerDirective] {
        let id = JobID(m.jobID)
        guard var job = jobs[id], !job.state.isTerminal else { return [] }
        if job.state == .queued {
            job.state = .cancelled
            job.message = "cancelled before it was placed"
            job.updatedAt = now.wall
            jobs[id] = job
            queue.remove(id)
            return [.persist(.job(job)), enqueueStatus(job, now: now)]
        }
        guard let aid = job.assignment, assignments[aid] != nil else { return [] }
        if unconfirmed[aid] != nil {
            // Placed but never sent to the node (waiting for the national scheduler): it ends here.
            var out = unplaceAll(&job, now: now)
            job.state = .cancelled
            job.message = "cancelled before it started"
            job.updatedAt = now.wall
            jobs[id] = job
            out.append(.persist(.job(job)))
            return out + [enqueueStatus(job, now: now)]
        }
        // A replica in the gateway's rotation leaves it first and is stopped when its drain
        // time is over, so requests in flight finish and none is sent to a stopping process.
        if let r = job.spec.replica, r.drainMs > 0, job.state == .running, job.ready, draining[id] == nil,
           !cancelRequested.contains(id) {
            draining[id] = now.monotonicMs
            routesDirty.insert(r.service)
            timers.schedule(.drain(id), at: now.monotonicMs + Int64(r.drainMs))
            return [.log(LogEvent(.info, "replica draining", ["job": "\(id)", "service": r.service, "drain_ms": "\(r.drainMs)"]))]
        }
        if draining[id] != nil { return [] }  // the stop follows when the drain is over
        cancelRequested.insert(id)
        // Every rank of a gang is stopped; the first to report its end ends the job.
        return job.currentAssignments.compactMap { each in
            guard let x = assignments[each], let peer = nodes[x.node]?.route else { return nil }
            return cancel(x, to: peer)
        }
    }

    /// A drained replica's time is up: stop it.
    mutating func drained(_ id: JobID, now: Moment) -> [ControllerDirective] {
        guard draining.removeValue(forKey: id) != nil, let job = jobs[id], !job.state.isTerminal else { return [] }
        cancelRequested.insert(id)
        var c = Wire.Cancel()
        c.jobID = id.rawValue
        return onCancel(c, now: now)
    }

    /// The gateway's address and load (the shell reports them once a second).
    public mutating func onGateway(url: String, loads: [Wire.ServiceLoad]) {
        gatewayURL = url
        gatewayLoads = loads
    }

    /// Publishes the rotation of each service whose replicas changed: its running, ready,
    /// not draining replicas with an endpoint.
    mutating func publishRoutes() -> [ControllerDirective] {
        var out: [ControllerDirective] = []
        for name in routesDirty.sorted() {
            var routes: [ServiceRoute] = []
            var live: Set<JobID> = []
            for id in serviceJobs[name] ?? [] {
                guard let j = jobs[id], !j.state.isTerminal else { draining[id] = nil; continue }
                live.insert(id)
                guard j.state == .running, j.ready, let e = j.endpoint, draining[id] == nil else { continue }
                routes.append(ServiceRoute(job: id, endpoint: e, version: j.spec.replica?.version ?? ""))
            }
            routes.sort { $0.job < $1.job }
            serviceJobs[name] = live.isEmpty ? nil : live
            if routes != publishedRoutes[name] ?? [] {
                publishedRoutes[name] = routes.isEmpty ? nil : routes
                out.append(.routes(name, routes))
                out.append(.log(LogEvent(.info, "gateway rotation", ["service": name, "replicas": routes.map { "\($0.job)@\($0.endpoint)" }.joined(separator: ",")])))
            }
        }
        routesDirty = []
        return out
    }

    /// `cg://<region>/<node>`, as logs and replies name a node.
    func resourceName(_ id: NodeID) -> String { ResourceName(region: region, node: id).description }

    public func onQuery(_ m: Wire.Query, origin: Origin, now: Moment) -> [ControllerDirective] {
        var reply = Wire.QueryReply()
        reply.correlation = m.correlation
        var m = m
        // A resource name stands for region_id/node_id; the codec checked that it parses.
        var named: ResourceName? = nil
        if !m.resource.isEmpty, let name = try? ResourceName(parsing: m.resource) {
            if let r = name.region, r != region {
                return [.error("not_found", "\(name) is not in region \(region)", to: origin, correlation: m.correlation)]
            }
            if let node = name.node { m.nodeID = node.rawValue }
            named = name
        }
        switch m.kind {
        case .jobs, .job:
            guard QueryPaging.answerJobs(jobs, m, &reply) else {
                return [.error("not_found", "job \(m.jobID) is not known in region \(region)", to: origin, correlation: m.correlation)]
            }
        case .nodes where !m.nodeID.isEmpty:
            // One node, with its units and which job holds each.
            let id = NodeID(m.nodeID)
            guard let b = brief(id, now: now) else {
                return [.error("not_found", "\(named?.description ?? "node \(m.nodeID)") is not known in region \(region)",
                               to: origin, correlation: m.correlation)]
            }
            var holders: [String: String] = [:]
            for aid in nodes[id]?.held ?? [] {
                if let a = assignments[aid] { for d in a.deviceIDs { holders[d] = a.job.rawValue } }
            }
            var w = Wire.NodeBrief(b)
            var units = index.units(of: id)
            if let named, named.level == .device || named.level == .partition {
                units = units.filter { named.contains($0.resource(region: region, node: id)) }
                if units.isEmpty {
                    return [.error("not_found", "\(named) is not a unit of node \(id) in region \(region)", to: origin, correlation: m.correlation)]
                }
            }
            w.units = units.map { u in
                var x = Wire.UnitBrief()
                x.deviceID = u.deviceID
                x.resource = u.resource(region: region, node: id).description
                x.vendor = u.key.vendor.rawValue
                x.model = u.key.model
                x.memoryMib = Int64(u.key.memoryMiB)
                x.grade = u.key.grade?.rawValue ?? ""
                x.health = u.health.rawValue
                x.busy = u.busy
                x.partition = u.key.partition ?? ""
                x.numaNode = Int32(u.numa)
                x.nvlinkPeers = u.nvlinkPeers.map { UInt32(clamping: $0) }
                x.jobID = holders[u.deviceID] ?? ""
                return x
            }
            reply.nodes = [w]
            reply.total = 1
        case .nodes:
            reply.nodes = QueryPaging.page(nodes.keys.sorted(), m, &reply).compactMap { brief($0, now: now) }.map(Wire.NodeBrief.init)
        case .regions:
            var s = Wire.RegionSummary(summaryValue(now: now))
            s.full = true
            s.sequence = summarySequence
            reply.regions = [s]
        case .accounts:
            reply.accounts = accountStatuses()
            reply.total = UInt64(reply.accounts.count)
        default:
            return [.error("bad_request", "query kind \(m.kind) not supported", to: origin, correlation: m.correlation)]
        }
        return [.reply(.queryReply(reply), to: origin)]
    }

    /// `gridctl cordon|uncordon|drain NODE`: an operator's cordon, kept across restarts; the
    /// node takes no new work while it holds, and what runs there runs on.
    public mutating func onNodeCommand(_ m: Wire.NodeCommand, origin: Origin, now: Moment) -> [ControllerDirective] {
        let id = NodeID(m.nodeID)
        guard var node = nodes[id] else {
            return [.error("not_found", "node \(m.nodeID) is not known in region \(region)", to: origin, correlation: m.correlation)]
        }
        var out: [ControllerDirective] = []
        switch m.action {
        case .cordon, .drain:
            let cordon = NodeCordon(reason: m.reason, drain: m.action == .drain, since: node.record.cordon?.since ?? now.wall)
            if node.record.cordon != cordon {
                node.record.cordon = cordon
                index.setCordoned(node: id, true)
                out.append(.persist(.nodeCordon(id, cordon)))
                out.append(.log(LogEvent(.notice, m.action == .drain ? "node drained by an operator" : "node cordoned by an operator",
                                         ["node": "\(id)", "resource": resourceName(id), "reason": m.reason])))
            }
        case .uncordon:
            if node.record.cordon != nil {
                node.record.cordon = nil
                index.setCordoned(node: id, false)
                placementDirty = true
                out.append(.persist(.nodeCordon(id, nil)))
                out.append(.log(LogEvent(.notice, "node uncordoned", ["node": "\(id)", "resource": resourceName(id)])))
            }
        default:
            return [.error("bad_request", "node command: action must be cordon, uncordon or drain", to: origin, correlation: m.correlation)]
        }
        nodes[id] = node
        var reply = Wire.QueryReply()
        reply.correlation = m.correlation
        if let b = brief(id, now: now) { reply.nodes = [Wire.NodeBrief(b)] }
        reply.total = UInt64(reply.nodes.count)
        out.append(.reply(.queryReply(reply), to: origin))
        return out
    }

    func brief(_ id: NodeID, now: Moment) -> NodeBrief? {
        guard let n = nodes[id] else { return nil }
        let ago = Double(now.monotonicMs - n.lastHeardMs) / 1000
        var b = NodeBrief(node: id, region: region, hostname: n.record.hostname, state: n.record.state,
                         deviceCount: n.slots.count, freeDevices: index.freeDevices(of: id),
                         models: Array(Set(n.slots.map(\.model))).sorted(),
                         worstHealth: n.slots.map(\.health).max() ?? .healthy,
                         lastSeen: now.wall.addingTimeInterval(-ago))
        b.cordon = n.record.cordon
        b.accounts = n.record.accounts
        var counts: [HealthState: Int] = [:]
        for slot in n.slots { counts[slot.health, default: 0] += 1 }
        b.healthCounts = counts
        return b
    }

    // MARK: time

    /// Once per loop turn, after the turn's inbound messages were applied. `backlog` says the
    /// shell left inbound messages unread (its batch was full): then no node is judged lost,
    /// since its heartbeat may be among them.
    public mutating func onTick(now: Moment, backlog: Bool = false) -> [ControllerDirective] {
        var out: [ControllerDirective] = []
        lastWall = now.wall
        noteTurn(now)
        var summaryDue = false
        while let timer = timers.popDue(now.monotonicMs) {
            switch timer {
            case .nodeDeadline(let id):
                nodes[id]?.deadlineArmed = false
                if backlog {
                    armDeadline(id, at: now.monotonicMs + settings.heartbeatIntervalMs)
                } else {
                    out += checkNode(id, now: now)
                }
            case .leaseExpiry(let id):
                out += expireLease(id, now: now)
            case .retry(let jid):
                // A job waiting out its backoff is queued but not in `queue` (only this timer puts
                // it there; a cancel or a restart ends the wait first).
                if let j = jobs[jid], j.state == .queued, j.hold == nil, !queue.contains(jid) {
                    enqueue(jid, front: true)
                    placementDirty = true
                }
            case .resend(let aid):
                // While inputs are unread the ack may be among them: do not resend yet.
                // A first send goes now: nothing can be on its way back for it.
                if backlog, (sentAt[aid]?.attempts ?? 0) > 0 {
                    timers.schedule(.resend(aid), at: now.monotonicMs + settings.retryIntervalMs)
                } else {
                    out += resend(aid, now: now)
                }
            case .outbox(let key):
                if backlog, (outbox[key]?.attempts ?? 0) > 0 {
                    timers.schedule(.outbox(key), at: now.monotonicMs + settings.retryIntervalMs)
                } else {
                    out += sendUpward(key, now: now)
                }
            case .summary:
                summaryDue = true
                timers.schedule(.summary, at: now.monotonicMs + settings.summaryIntervalMs)
            case .prune:
                out += prune(now: now)
                timers.schedule(.prune, at: now.monotonicMs + 60_000)
            case .drain(let id):
                out += drained(id, now: now)
            }
        }
        if placementDirty {
            place(now: now, into: &out)
        }
        // Once a second every rotation is worked out again (a run requeued by a lost node
        // leaves it here); otherwise only those touched this turn.
        if summaryDue { routesDirty.formUnion(serviceJobs.keys) }
        if !routesDirty.isEmpty { out += publishRoutes() }
        // After placement, so the summary counts what this turn placed.
        if summaryDue { out += summary(now: now) }
        return upstreamReadsBatches ? Self.batchingUpward(out) : out
    }

    /// At most this many status updates, and about this many bytes, in one STATUS_BATCH.
    public static let maxBatchUpdates = 256
    public static let maxBatchBytes = 1 << 20

    /// The turn's status updates for the national scheduler in STATUS_BATCH frames: one frame and
    /// one acknowledgement per batch instead of per update (each update keeps its own outbox row,
    /// resend timer and id). They go after the turn's other directives, never before.
    public static func batchingUpward(_ out: [ControllerDirective]) -> [ControllerDirective] {
        var updates: [Wire.StatusUpdate] = []
        var rest: [ControllerDirective] = []
        for d in out {
            if case .send(.statusUpdate(let u), .upstream, _, _) = d { updates.append(u) } else { rest.append(d) }
        }
        guard updates.count > 1 else { return out }
        func frame(_ group: [Wire.StatusUpdate]) -> ControllerDirective {
            group.count == 1 ? .send(.statusUpdate(group[0]), to: .upstream) : .send(.statusBatch(.with { $0.updates = group }), to: .upstream)
        }
        var group: [Wire.StatusUpdate] = []
        var bytes = 0
        for u in updates {
            // An estimate: the output tail and the message are what can be large.
            let size = 512 + u.outputTail.utf8.count + u.message.utf8.count
            if !group.isEmpty, group.count >= maxBatchUpdates || bytes + size > maxBatchBytes {
                rest.append(frame(group))
                group = []
                bytes = 0
            }
            group.append(u)
            bytes += size
        }
        rest.append(frame(group))
        return rest
    }

    /// Detects stalls of the controller itself (a turn that came late) and keeps them from
    /// counting against nodes, as Lifeguard's local health multiplier does for SWIM.
    mutating func noteTurn(_ now: Moment) {
        defer { lastTurnMs = now.monotonicMs }
        guard let last = lastTurnMs else { return }
        let gap = now.monotonicMs - last
        if gap > settings.stallThresholdMs {
            stalledMs += gap
            counters.stalls += 1
            localHealth = min(4, localHealth + 1)
            calmSinceMs = now.monotonicMs
        } else if localHealth > 0 && now.monotonicMs - calmSinceMs >= 1000 {
            localHealth -= 1
            calmSinceMs = now.monotonicMs
        }
    }

    /// A node's deadline came: lost if it has been silent (net of our own stalls) past the
    /// limit, otherwise re-armed for when it would be.
    mutating func checkNode(_ id: NodeID, now: Moment) -> [ControllerDirective] {
        guard let n = nodes[id], n.record.state != .lost else { return [] }
        let silent = now.monotonicMs - n.lastHeardMs - (stalledMs - n.stalledAtHeard)
        let limit = lostAfterMs
        guard silent > limit else {
            armDeadline(id, at: now.monotonicMs + (limit - silent) + 1)
            return []
        }
        nodes[id]?.record.state = .lost
        index.setSchedulable(node: id, false)
        counters.nodesLost += 1
        var out: [ControllerDirective] = [
            .persist(.nodeState(id, .lost)),
            .log(LogEvent(.warning, "node lost", ["node": "\(id)", "resource": resourceName(id), "silent_ms": "\(silent)"])),
        ]
        out += expireLease(id, now: now)
        placementDirty = true
        return out
    }

    /// The jobs of a lost node run elsewhere only once it has been silent for lease + margin:
    /// by then its agent (or, if the agent is dead or frozen, each job's shim) has stopped them.
    mutating func expireLease(_ id: NodeID, now: Moment) -> [ControllerDirective] {
        guard let n = nodes[id], n.record.state == .lost, !n.held.isEmpty else { return [] }
        let silent = now.monotonicMs - n.lastHeardMs - (stalledMs - n.stalledAtHeard)
        let expiry = settings.lease + settings.leaseMarginMs
        guard silent > expiry else {
            timers.schedule(.leaseExpiry(id), at: now.monotonicMs + (expiry - silent) + 1)
            return []
        }
        var out: [ControllerDirective] = []
        for aid in n.held.sorted() {
            guard let a = assignments[aid] else { continue }
            out += requeue(a, .nodeLost, reason: "node \(id) lost: no heartbeat for \(silent / 1000)s", now: now)
        }
        return out
    }

    mutating func resend(_ aid: AssignmentID, now: Moment) -> [ControllerDirective] {
        guard let a = assignments[aid], a.state == .pending, let job = jobs[a.job], job.holds(aid), stopping[aid] == nil else { return [] }
        // Not confirmed yet: the confirmation schedules the first send.
        guard unconfirmed[aid] == nil else { return [] }
        let sent = sentAt[aid] ?? (0, 0)
        let backoff = retryDelay(afterSends: sent.attempts)
        guard now.monotonicMs - sent.at >= backoff || sent.at == 0 else {
            timers.schedule(.resend(aid), at: sent.at + backoff)
            return []
        }
        guard let node = nodes[a.node], node.record.state == .ready, let peer = node.route else {
            timers.schedule(.resend(aid), at: now.monotonicMs + settings.retryIntervalMs)
            return []
        }
        sentAt[aid] = (now.monotonicMs, sent.attempts + 1)
        timers.schedule(.resend(aid), at: now.monotonicMs + retryDelay(afterSends: sent.attempts + 1))
        return [assignmentMessage(a, job: job, to: peer)]
    }

    /// The wait after the n-th send: the retry interval, doubling each time up to the maximum.
    func retryDelay(afterSends n: Int) -> Int64 {
        min(settings.maxRetryIntervalMs, settings.retryIntervalMs << Int64(min(max(0, n - 1), 16)))
    }

    mutating func sendUpward(_ key: String, now: Moment) -> [ControllerDirective] {
        guard var o = outbox[key] else { return [] }
        guard o.dueMs <= now.monotonicMs else {
            timers.schedule(.outbox(key), at: o.dueMs)
            return []
        }
        o.attempts += 1
        o.dueMs = now.monotonicMs + retryDelay(afterSends: o.attempts)
        outbox[key] = o
        timers.schedule(.outbox(key), at: o.dueMs)
        return [.send(.statusUpdate(o.update), to: .upstream)]
    }

    func assignmentMessage(_ a: AssignmentRecord, job: JobRecord, to peer: Peer) -> ControllerDirective {
        var m = Wire.Assignment()
        m.assignmentID = a.id.rawValue
        m.epoch = UInt64(a.epoch)
        m.jobID = job.id.rawValue
        m.nodeID = a.node.rawValue
        m.command = job.spec.command
        m.args = job.spec.args
        m.env = job.spec.env
        m.deviceIds = a.deviceIDs
        m.timeoutSeconds = UInt32(clamping: job.spec.timeoutSeconds ?? 0)
        m.keepOnLeaseLoss = job.spec.retry.keepOnLeaseLoss
        m.account = job.spec.accountName
        m.attempt = UInt32(clamping: job.attempts.filter { $0.endReason != .rejected }.count)
        m.precision = job.precision?.rawValue ?? ""
        m.ports = UInt32(clamping: job.spec.ports)
        if let h = job.spec.replica?.health { m.health = Wire.ProbeSpec(h) }
        if let r = job.spec.replica?.readiness { m.readiness = Wire.ProbeSpec(r) }
        if job.gang.count > 1, let rank = job.gang.firstIndex(where: { $0.assignment == a.id }) {
            m.gangRank = UInt32(rank)
            m.gangSize = UInt32(job.gang.count)
            m.gangHosts = job.gang.map { member in
                let host = nodes[member.node]?.record.hostname ?? ""
                return host.isEmpty ? member.node.rawValue : host
            }
        }
        return .send(.assignment(m), to: peer)
    }

    /// Why `node`, reserved for another job, is kept from `job` (nil when it is not): a
    /// reservation keeps a node from work of lower or equal priority, save work whose time
    /// limit ends it before the reservation starts (backfill), never while a preemption is
    /// freeing the node. A reservation whose job no longer waits is dropped here.
    mutating func reservationKeeps(_ nodeID: NodeID, from job: JobRecord, now: Moment) -> String? {
        guard let r = reservedFor[nodeID], r.job != job.id else { return nil }
        guard r.live(jobs, now.monotonicMs) else {
            reservedFor[nodeID] = nil
            return nil
        }
        // `frontier: borrow`: devices freed for work that needs grade A are kept from work that
        // would borrow them again, whatever its priority.
        let frontierHold = settings.frontier == .borrow && r.forPreemption && !Self.needsFrontier(job.spec)
            && (jobs[r.job].map { Self.needsFrontier($0.spec) } ?? false)
        guard job.spec.priority <= r.priority || frontierHold else { return nil }
        let limit = r.forPreemption ? nil : job.spec.timeoutSeconds ?? job.spec.routing.runSeconds
        let ends = limit.map { now.monotonicMs + Int64($0) * 1000 }
        if let ends, let start = r.startMs, ends <= start { return nil }
        let when = r.startMs.map { " from about \(max(0, $0 - now.monotonicMs) / 1000) s from now" } ?? ""
        return r.forPreemption
            ? "waiting: the free devices on \(nodeID) are kept for \(r.job), which stopped lower-priority work there"
            : "waiting: \(nodeID) is reserved for \(r.job)\(when); work with a time limit that ends before then may use it (backfill)"
    }

    /// Places a gang (`spec.nodes` > 1): every rank on its own node at once, or none. The
    /// ranks share one epoch (`<job>.<epoch>` for rank 0, `<job>.<epoch>-r<k>` for rank k),
    /// one attempt and the account's quota (all ranks admitted together). A gang that waits
    /// for busy devices reserves the nodes where it could start soonest (backfill as for any
    /// reservation) unless it can preempt lower-priority work on enough nodes (`preempt`).
    enum GangOutcome {
        case placed
        /// For a reason of its own (a reservation, its quota).
        case waits
        /// The ranks do not fit as the region stands (the reason).
        case doesNotFit(String)
    }

    /// `orFrontier`: the requests before `frontier: reserve` kept them below grade A — used
    /// when the lower grades could never hold the whole gang (the reserve is judged per node).
    mutating func placeGang(_ job: inout JobRecord, wants: [AcceleratorRequest], orFrontier: [AcceleratorRequest],
                            fit: [ModelFit.Option], quotaNote: String, now: Moment) -> ([ControllerDirective], GangOutcome) {
        let jid = job.id
        let account = job.spec.accountName
        let ranks = job.spec.nodes
        var out: [ControllerDirective] = []
        var used = wants
        var (option, choice) = index.chooseGang(among: wants, ranks: ranks, account: account)
        var onBorrowedFrontier = false
        if case .impossible = choice, orFrontier != wants {
            used = orFrontier
            (option, choice) = index.chooseGang(among: orFrontier, ranks: ranks, account: account)
        } else if case .busy = choice, settings.frontier == .borrow, orFrontier != wants {
            // `frontier: borrow`: the lower grades are busy; idle frontier nodes may be borrowed.
            let wider = index.chooseGang(among: orFrontier, ranks: ranks, account: account)
            if case .placed(let slots) = wider.choice, slots.contains(where: { holdsFrontier(node: $0.node, deviceIDs: $0.deviceIDs) }) {
                (option, choice) = wider
                used = orFrontier
                onBorrowedFrontier = true
            }
        }
        switch choice {
        case .placed(let slots):
            for slot in slots {
                if let why = reservationKeeps(slot.node, from: job, now: now) { return (wait(&job, why), .waits) }
            }
            let uses = slots.map { index.resourceUse(node: $0.node, deviceIDs: $0.deviceIDs) }
            var borrowed = false
            if quotas {
                switch ledger.admit(account, uses.reduce(ResourceUse(), +)) {
                case .within: break
                case .borrowing:
                    if let cohort = settings.accounts.quota(for: account).cohort, let by = reclaiming(cohort, except: jid) {
                        return (wait(&job, "quota: account \(account) is past its own quota and cohort \(cohort) is taking back what it lent (for \(by))"), .waits)
                    }
                    borrowed = true
                case .refused(let why):
                    return (wait(&job, "quota: " + why), .waits)
                }
            }
            if !reservedFor.isEmpty { reservedFor = reservedFor.filter { $0.value.job != jid } }
            job.epoch += 1
            var members: [GangMember] = []
            for (rank, slot) in slots.enumerated() {
                if !slot.deviceIDs.isEmpty { index.allocate(node: slot.node, deviceIDs: slot.deviceIDs) }
                let held = nodes[slot.node]?.slots ?? []
                members.append(GangMember(rank: rank, node: slot.node, assignment: GangMember.assignmentID(job: jid, epoch: job.epoch, rank: rank),
                                          deviceIDs: slot.deviceIDs, deviceModels: slot.deviceIDs.map { d in held.first { $0.id == d }?.model ?? "?" }))
            }
            let lead = members[0]
            let leadSlots = nodes[lead.node]?.slots ?? []
            job.gang = members
            job.state = .assigned
            job.node = lead.node
            job.deviceIDs = lead.deviceIDs
            job.deviceModels = lead.deviceModels
            job.deviceGrades = lead.deviceIDs.map { d in leadSlots.first { $0.id == d }?.grade?.rawValue ?? "" }
            job.assignment = lead.assignment
            job.precision = fit.isEmpty ? nil : fit[option].precision
            job.message = "assigned to \(ranks) nodes (gang): " + members.map { "\($0.node)" }.joined(separator: ", ")
                + (job.precision.map { " at \($0.rawValue)" } ?? "")
            if borrowed { job.message += " (borrowing from cohort \(settings.accounts.quota(for: account).cohort ?? "?"))" }
            if onBorrowedFrontier { job.message += Self.borrowingFrontier }
            job.updatedAt = now.wall
            job.attempts.append(Attempt(number: job.attempts.filter { $0.endReason != .rejected }.count + 1,
                                        node: lead.node, assignment: lead.assignment, epoch: job.epoch))
            jobs[jid] = job
            out.append(.persist(.job(job)))
            counters.placements += 1
            if placementWaits.count < 65_536 { placementWaits.append(max(0, now.wall.timeIntervalSince(job.submittedAt))) }
            out.append(enqueueStatus(job, now: now))
            let uid = Self.updateID(region, job)
            for (rank, member) in members.enumerated() {
                let a = AssignmentRecord(id: member.assignment, job: jid, node: member.node, epoch: job.epoch, deviceIDs: member.deviceIDs,
                                         state: .pending, createdAt: now.wall)
                assignments[a.id] = a
                ledger.charge(account, uses[rank], at: now.wall)
                charged[a.id] = (account, uses[rank], borrowed)
                hold(a.id, on: member.node)
                out.append(.persist(.assignment(a, at: now.wall)))
                if settings.confirmStarts {
                    unconfirmed[a.id] = uid
                } else {
                    if let peer = nodes[member.node]?.route {
                        sentAt[a.id] = (now.monotonicMs, 1)
                        out.append(assignmentMessage(a, job: job, to: peer))
                    }
                    timers.schedule(.resend(a.id), at: now.monotonicMs + settings.retryIntervalMs)
                }
            }
            if settings.confirmStarts { awaitingConfirmation[uid] = lead.assignment }
            var fields = ["job": "\(jid)", "nodes": members.map { "\($0.node)" }.joined(separator: ","), "ranks": "\(ranks)", "epoch": "\(job.epoch)"]
            if let p = job.precision { fields["precision"] = p.rawValue }
            out.append(.log(LogEvent(.info, "gang placed", fields)))
            return (out, .placed)
        case .busy(let reason), .impossible(let reason):
            let want = used[used.count - 1]
            if case .busy = choice, settings.preemption, want.count > 0, preemptionsFor[jid] == nil,
               (noVictimsUntil[jid] ?? 0) <= now.monotonicMs {
                let stops = preempt(for: job, now: now)
                if stops.isEmpty { noVictimsUntil[jid] = now.monotonicMs + 5000 } else { noVictimsUntil[jid] = nil }
                out += stops
            }
            if case .busy = choice, settings.reservations, want.count > 0, preemptionsFor[jid] == nil,
               !reservedFor.values.contains(where: { $0.job == jid }), reservationsHeld(now) < settings.reservationDepth {
                reserve(for: job, want, ranks: ranks, now: now)
            }
            let held = reservedFor.filter { $0.value.job == jid && !$0.value.forPreemption }.keys.sorted()
            let why = reason + quotaNote + (held.isEmpty ? "" : "; reserved: " + held.map(\.rawValue).joined(separator: ", "))
            if job.message != why {
                job.message = why
                jobs[jid] = job
                out.append(.persist(.job(job)))
            }
            return (out, .doesNotFit(reason))
        }
    }

    /// How many jobs hold live reservations (not those of a preemption in progress).
    func reservationsHeld(_ now: Moment) -> Int {
        guard !reservedFor.isEmpty else { return 0 }
        return Set(reservedFor.values.lazy.filter { !$0.forPreemption && $0.live(jobs, now.monotonicMs) }.map(\.job)).count
    }

    /// Picks the `ranks` nodes (1 for a one-node job) where `want` could start soonest as the
    /// running work ends (by each run's time limit, else its run-time estimate; a run with
    /// neither never counts as ending) and reserves them for `job` from the latest of their
    /// starts. Up to `reservationDepth` jobs hold reservations at once, on distinct nodes.
    mutating func reserve(for job: JobRecord, _ want: AcceleratorRequest, ranks: Int = 1, now: Moment) {
        var found: [(start: Int64?, node: NodeID)] = []
        var scanned = 0
        for (nid, node) in nodes where node.record.state == .ready && node.route != nil && reservedFor[nid] == nil {
            scanned += 1
            if scanned > settings.preemptionScanLimit { break }
            if ranks > 1, index.fitsNow(node: nid, for: want, account: job.spec.accountName) {
                found.append((now.monotonicMs, nid))
                continue
            }
            let ends = node.held.compactMap { aid -> (Int64?, [String])? in
                guard let a = assignments[aid], let j = jobs[a.job] else { return nil }
                let limit = j.spec.timeoutSeconds ?? j.spec.routing.runSeconds
                let startedMs = now.monotonicMs - Int64(now.wall.timeIntervalSince(a.createdAt) * 1000)
                return (limit.map { startedMs + Int64($0) * 1000 }, a.deviceIDs)
            }.sorted { ($0.0 ?? .max) < ($1.0 ?? .max) }
            // The earliest time enough matching devices are free: victims list in end order.
            guard let chosen = index.preemption(on: nid, for: want, account: job.spec.accountName, victims: ends.map(\.1)) else { continue }
            let start = chosen.map { ends[$0].0 }.reduce(Optional(now.monotonicMs)) { acc, e in
                guard let acc, let e else { return nil }
                return max(acc, e)
            }
            found.append((start, nid))
        }
        guard found.count >= ranks else { return }
        let sooner: ((start: Int64?, node: NodeID), (start: Int64?, node: NodeID)) -> Bool = { ($0.start ?? .max, $0.node) < ($1.start ?? .max, $1.node) }
        // One node: the soonest, without sorting every node scanned.
        let chosen = ranks == 1 ? found.min(by: sooner).map { [$0] } ?? [] : Array(found.sorted(by: sooner).prefix(ranks))
        // The gang starts when the last of its nodes is free (unknown if any is).
        let start = chosen.reduce(Optional(now.monotonicMs)) { acc, c in acc.flatMap { a in c.start.map { max(a, $0) } } }
        for c in chosen {
            reservedFor[c.node] = Reservation(job: job.id, priority: job.spec.priority, startMs: start, forPreemption: false)
        }
    }

    /// A job of `cohort` still waiting for lent devices to come back, if any (others are forgotten).
    mutating func reclaiming(_ cohort: String, except: JobID) -> JobID? {
        guard var waiting = reclaimers[cohort] else { return nil }
        waiting = waiting.filter { jobs[$0]?.state == .queued && jobs[$0]?.hold == nil }
        reclaimers[cohort] = waiting.isEmpty ? nil : waiting
        return waiting.filter { $0 != except }.min()
    }

    /// What a request is for the caches of a pass (what did not fit, why it waits): its
    /// requests without the count (unless `keepCount`), and its account while some node is
    /// dedicated to accounts (then the account changes what fits).
    struct PlacementShape: Hashable {
        var wants: [AcceleratorRequest]
        var account: String?
    }

    func placementShape(_ wants: [AcceleratorRequest], account: String, keepCount: Bool = false) -> PlacementShape {
        PlacementShape(wants: keepCount ? wants : wants.map { var r = $0; r.count = 0; return r },
                       account: index.dedicatedNodeCount > 0 ? account : nil)
    }

    /// `frontier: reserve`: a request that accepts grade A and lower grades is kept below A when
    /// some node of a lower grade could ever run it as asked (NUMA and NVLink grouping included;
    /// it then waits for those); unchanged when only grade A (or ungraded devices) could.
    mutating func keepOffFrontier(_ want: AcceleratorRequest, account: String) -> AcceleratorRequest {
        guard want.count > 0, want.maxGrade == nil || want.maxGrade == .a, want.admits(grade: .b) else { return want }
        var lower = want
        lower.maxGrade = .b
        return index.couldEverFit(lower, account: account) ? lower : want
    }

    /// `frontier: borrow`: whether `deviceIDs` on `node` include a grade-A (frontier) device.
    func holdsFrontier(node: NodeID, deviceIDs: [String]) -> Bool {
        guard let slots = nodes[node]?.slots else { return false }
        return slots.contains { $0.grade == .a && deviceIDs.contains($0.id) }
    }

    /// `frontier: borrow`: whether run `a` of job `v` is on borrowed frontier devices (it holds
    /// grade A and its job accepts a lower grade), so work that needs grade A may take them back.
    func borrowsFrontier(_ a: AssignmentRecord, of v: JobRecord) -> Bool {
        settings.frontier == .borrow && holdsFrontier(node: a.node, deviceIDs: a.deviceIDs) && Self.acceptsLowerGrade(v.spec)
    }

    /// Whether a job accepts a grade below A (at some precision it allows).
    static func acceptsLowerGrade(_ spec: JobSpec) -> Bool {
        ModelFit.requests(for: spec).contains { $0.count > 0 && $0.admits(grade: .b) }
    }

    /// Whether a job can run only on grade A (`min_grade: A`, at every precision it allows).
    static func needsFrontier(_ spec: JobSpec) -> Bool {
        let wants = ModelFit.requests(for: spec)
        return !wants.isEmpty && wants.allSatisfy { $0.count > 0 && $0.admits(grade: .a) && !$0.admits(grade: .b) }
    }

    static let borrowingFrontier = " (borrowing frontier devices: stopped and queued again if work that needs grade A waits)"

    /// Whether any account has a limit (worked out once): without, placement skips the quota checks.
    let quotas: Bool

    /// The request with the grades in `excluding` taken off its ends (grade bounds are a
    /// range, A most capable); nil when nothing is left.
    static func narrow(_ r: AcceleratorRequest, excluding: Set<DeviceGrade>) -> AcceleratorRequest? {
        let order: [DeviceGrade] = [.a, .b, .c, .d]
        var allowed = order.filter { r.admits(grade: $0) }
        while let top = allowed.first, excluding.contains(top) { allowed.removeFirst() }
        while let bottom = allowed.last, excluding.contains(bottom) { allowed.removeLast() }
        guard let hi = allowed.first, let lo = allowed.last else { return nil }
        var out = r
        if hi != .a || r.maxGrade != nil { out.maxGrade = hi }
        if lo != .d || r.minGrade != nil { out.minGrade = lo }
        return out
    }

    /// A queued job that waits for a reason of its own (a quota): the reason is kept in its
    /// message (written only when it changes).
    mutating func wait(_ job: inout JobRecord, _ why: String) -> [ControllerDirective] {
        guard job.message != why else { return [] }
        job.message = why
        jobs[job.id] = job
        return [.persist(.job(job))]
    }

    /// Tables with an entry per active assignment can hold one per schedulable unit: sized
    /// for that as nodes join (capacity grows by doubling, so this reallocates rarely), so a
    /// burst of placements does not rehash every key of each several times on the way up.
    mutating func sizeTables(forUnits units: Int) {
        guard units > assignments.capacity else { return }
        assignments.reserveCapacity(units)
        charged.reserveCapacity(units)
        sentAt.reserveCapacity(units)
        if settings.confirmStarts {
            unconfirmed.reserveCapacity(units)
            awaitingConfirmation.reserveCapacity(units)
        }
    }

    /// One bounded placement pass over the queue. When the queue is longer than the budget the
    /// next turn continues where this one stopped, so heartbeats are served in between.
    mutating func place(now: Moment) -> [ControllerDirective] {
        var out: [ControllerDirective] = []
        place(now: now, into: &out)
        return out
    }

    /// One placement turn; its directives are appended to `out` (a turn that places 4,096 jobs
    /// makes ~20,000 of them: not copied from one array into another).
    mutating func place(now: Moment, into out: inout [ControllerDirective]) {
        placementDirty = false
        guard !queue.isEmpty else {
            queue.rewind()
            return
        }
        var placedIDs: Set<JobID> = []
        var blocked: [PlacementShape: (count: Int, why: String)] = [:]
        // Gangs that did not fit in this pass, by shape with its count: the fewest ranks that
        // did not fit (more ranks of the same shape cannot fit either).
        var blockedGangs: [PlacementShape: (ranks: Int, why: String)] = [:]
        let (turn, budgetHit) = queue.nextTurn(budget: settings.placementBudget)
        for jid in turn {
            guard var job = jobs[jid], job.state == .queued else {
                placedIDs.insert(jid)
                continue
            }
            let want = job.spec.accelerators
            let fit = ModelFit.options(for: job.spec)
            var wants = fit.isEmpty ? [want] : fit.map(\.request)
            let account = job.spec.accountName
            var quotaNote = ""
            if quotas {
                // Grades the account has no quota left for are taken out of the request.
                let exhausted = ledger.exhaustedGrades(account)
                if !exhausted.isEmpty {
                    let before = wants
                    wants = wants.compactMap { Self.narrow($0, excluding: exhausted) }
                    if wants != before {
                        quotaNote = "; quota: account \(account) has no grade-\(exhausted.map(\.rawValue).sorted().joined(separator: "/")) quota left"
                    }
                }
                if wants.isEmpty {
                    out += wait(&job, "account \(account) has no quota left for any grade this job accepts (\(exhausted.map(\.rawValue).sorted().joined(separator: ", ")))")
                    continue
                }
                // More than the account could ever hold: waits for a quota change, and neither
                // reserves devices nor preempts for it (found by the property harness: such a
                // gang held reservations on every node and kept placeable work waiting).
                if let least = wants.lazy.map(\.count).min(), least > 0,
                   let why = ledger.neverAdmits(account, ResourceUse(devices: least * max(1, job.spec.nodes))) {
                    if !reservedFor.isEmpty { reservedFor = reservedFor.filter { $0.value.job != jid } }
                    out += wait(&job, "quota: " + why + "; waits until the quota is raised")
                    continue
                }
            }
            let beforeFrontier = wants
            if settings.frontier != .share { wants = wants.map { keepOffFrontier($0, account: account) } }
            if job.spec.nodes > 1 {
                // Keyed by the request as kept off the frontier *and* as it was: two gangs kept to
                // the same lower grades differ when only one of them may fall back to frontier
                // nodes (found by the property harness under `frontier: reserve`).
                let gangShape = placementShape(wants + beforeFrontier, account: account, keepCount: true)
                if let b = blockedGangs[gangShape], job.spec.nodes >= b.ranks, !reservedFor.values.contains(where: { $0.job == jid }) {
                    out += wait(&job, b.why + quotaNote)
                    continue
                }
                let (more, outcome) = placeGang(&job, wants: wants, orFrontier: beforeFrontier, fit: fit, quotaNote: quotaNote, now: now)
                out += more
                switch outcome {
                case .placed: placedIDs.insert(jid)
                case .waits: break
                case .doesNotFit(let why):
                    if job.spec.nodes < blockedGangs[gangShape]?.ranks ?? .max { blockedGangs[gangShape] = (job.spec.nodes, why) }
                }
                continue
            }
            // Under `frontier: borrow` two requests kept to the same lower grades differ when
            // only one of them may borrow grade A: keyed by both (found by the property harness).
            let shape = placementShape(settings.frontier == .borrow && wants != beforeFrontier ? wants + beforeFrontier : wants, account: account)
            // A shape that did not fit at count k in this pass cannot fit at k or more.
            // A job devices are being freed for (by preemption) is examined even so.
            let keeps = !reservedFor.isEmpty && reservedFor.values.contains { $0.job == jid && $0.forPreemption }
            if want.count > 0, !keeps, let b = blocked[shape], want.count >= b.count {
                // Waits for the same reason as the job of its shape examined before it.
                out += wait(&job, b.why + quotaNote)
                continue
            }
            var (option, choice) = index.choose(among: wants, account: account)
            // `frontier: borrow`: kept off grade A and the lower grades are busy: an idle
            // frontier device may be borrowed (preempted when frontier work needs it).
            var onBorrowedFrontier = false
            if settings.frontier == .borrow, case .busy = choice, wants != beforeFrontier {
                let wider = index.choose(among: beforeFrontier, account: account)
                if case .placed(let nid, let ids) = wider.choice, holdsFrontier(node: nid, deviceIDs: ids) {
                    (option, choice) = wider
                    onBorrowedFrontier = true
                }
            }
            var borrowed = false
            var use = ResourceUse()
            if case .placed(let nodeID, _) = choice, let why = reservationKeeps(nodeID, from: job, now: now) {
                out += wait(&job, why)
                continue
            }
            if case .placed(let nodeID, let deviceIDs) = choice {
                if !reservedFor.isEmpty { reservedFor = reservedFor.filter { $0.value.job != jid } }
                // Every account is charged (usage, fair share); quotas are checked where set.
                use = index.resourceUse(node: nodeID, deviceIDs: deviceIDs)
                if quotas {
                    switch ledger.admit(account, use) {
                    case .within: break
                    case .borrowing:
                        if let cohort = settings.accounts.quota(for: account).cohort, let by = reclaiming(cohort, except: jid) {
                            out += wait(&job, "quota: account \(account) is past its own quota and cohort \(cohort) is taking back what it lent (for \(by))")
                            continue
                        }
                        borrowed = true
                    case .refused(let why):
                        out += wait(&job, "quota: " + why)
                        continue
                    }
                }
                if !deviceIDs.isEmpty { index.allocate(node: nodeID, deviceIDs: deviceIDs) }
            }
            switch choice {
            case .placed(let nodeID, let deviceIDs):
                guard let node = nodes[nodeID] else { continue }
                job.epoch += 1
                let aid = AssignmentID("\(job.id).\(job.epoch)")
                job.state = .assigned
                job.node = nodeID
                job.deviceIDs = deviceIDs
                // A node has a few devices: a scan beats building a dictionary per placement.
                let slots = deviceIDs.map { d in node.slots.first { $0.id == d } }
                job.deviceModels = slots.map { $0?.model ?? "?" }
                job.deviceGrades = slots.map { $0?.grade?.rawValue ?? "" }
                job.assignment = aid
                job.precision = fit.isEmpty ? nil : fit[option].precision
                job.message = "assigned to \(nodeID)" + (job.precision.map { " at \($0.rawValue)" } ?? "")
                let why = index.explain(node: nodeID, deviceIDs: deviceIDs)
                if !why.isEmpty { job.message += ": " + why }
                if let m = job.spec.model, let tps = m.tokensPerSecond, let gcu = ModelFit.computeGCU(m) {
                    job.message += String(format: "; needs ≥ %.0f GCU in all for %.0f tokens/s", gcu.rounded(.up), tps)
                }
                job.updatedAt = now.wall
                job.attempts.append(Attempt(number: job.attempts.filter { $0.endReason != .rejected }.count + 1,
                                            node: nodeID, assignment: aid, epoch: job.epoch))
                jobs[jid] = job
                let a = AssignmentRecord(id: aid, job: jid, node: nodeID, epoch: job.epoch, deviceIDs: deviceIDs,
                                         state: .pending, createdAt: now.wall)
                assignments[aid] = a
                ledger.charge(account, use, at: now.wall)
                charged[aid] = (account, use, borrowed)
                if borrowed {
                    job.message += " (borrowing from cohort \(settings.accounts.quota(for: account).cohort ?? "?"))"
                    jobs[jid] = job
                }
                if onBorrowedFrontier {
                    job.message += Self.borrowingFrontier
                    jobs[jid] = job
                }
                hold(aid, on: nodeID)
                placedIDs.insert(jid)
                counters.placements += 1
                // Drained by the shell each batch; bounded for instances driven without one.
                if placementWaits.count < 65_536 { placementWaits.append(max(0, now.wall.timeIntervalSince(job.submittedAt))) }
                out.append(.persist(.job(job)))
                out.append(.persist(.assignment(a, at: now.wall)))
                out.append(enqueueStatus(job, now: now))
                if settings.confirmStarts {
                    let uid = Self.updateID(region, job)
                    unconfirmed[aid] = uid
                    awaitingConfirmation[uid] = aid
                } else {
                    if let peer = node.route {
                        sentAt[aid] = (now.monotonicMs, 1)
                        out.append(assignmentMessage(a, job: job, to: peer))
                    }
                    timers.schedule(.resend(aid), at: now.monotonicMs + settings.retryIntervalMs)
                }
                var fields = ["job": "\(jid)", "node": "\(nodeID)", "devices": deviceIDs.joined(separator: ","), "epoch": "\(job.epoch)"]
                if let p = job.precision { fields["precision"] = p.rawValue }
                out.append(.log(LogEvent(.info, "job placed", fields)))
            case .busy(let reason), .impossible(let reason):
                let base = reason + "; " + diagnosis(wants[wants.count - 1], account: job.spec.accountName, now: now) + unfit(job.spec, fit)
                if want.count > 0, want.count < blocked[shape]?.count ?? Int.max { blocked[shape] = (want.count, base) }
                if case .busy = choice, settings.preemption, want.count > 0, preemptionsFor[jid] == nil,
                   (noVictimsUntil[jid] ?? 0) <= now.monotonicMs {
                    let stops = preempt(for: job, now: now)
                    // Nothing to stop now: look again in 5 s, not on every pass (a scan of up
                    // to `preemptionScanLimit` nodes).
                    if stops.isEmpty { noVictimsUntil[jid] = now.monotonicMs + 5000 } else { noVictimsUntil[jid] = nil }
                    if noVictimsUntil.count > 100_000 { noVictimsUntil = noVictimsUntil.filter { $0.value > now.monotonicMs } }
                    out += stops
                }
                if case .busy = choice, settings.reservations, want.count > 1, wants.count == 1, want.interconnect != .sameNUMA, want.interconnect?.needsPeers != true,
                   !reservedFor.values.contains(where: { $0.job == jid }), reservationsHeld(now) < settings.reservationDepth {
                    reserve(for: job, want, now: now)
                }
                let why = base + quotaNote + (reservedFor.first { $0.value.job == jid && !$0.value.forPreemption }.map { "; reserved: \($0.key)" } ?? "")
                if job.message != why {
                    job.message = why
                    jobs[jid] = job
                    out.append(.persist(.job(job)))
                }
            }
        }
        for id in placedIDs { queue.remove(id) }
        if budgetHit {
            // More to examine: continue on the next turn, after that turn's messages.
            placementDirty = true
        }
    }

    // MARK: summaries and retention

    func summaryValue(now: Moment) -> RegionSummary {
        let capacity = index.capacity.sorted { $0.key < $1.key }.map { key, c in
            var e = CapacityEntry(vendor: key.vendor, model: key.model, memoryTotalMiB: key.memoryMiB, total: c.total, free: c.free,
                                  healthy: c.usable, grade: key.grade, degraded: c.degraded)
            e.partition = key.partition
            return e
        }
        var ready = 0, lost = 0
        for n in nodes.values { if n.record.state == .ready { ready += 1 } else if n.record.state == .lost { lost += 1 } }
        // Assigned or running jobs are exactly those with an active assignment.
        let running = assignments.count
        var s = RegionSummary(region: region, nodesReady: ready, nodesLost: lost, queuedJobs: queue.count, runningJobs: running,
                              capacity: capacity, nodes: [], nodesTruncated: false, generatedAt: now.wall)
        s.confirmsStarts = settings.confirmStarts
        s.expectedWaitSeconds = expectedWait.seconds
        return s
    }

    /// Aggregates, not node lists: capacity by class, health counts, queue depth. A delta names
    /// only the classes that changed since the previous summary.
    mutating func summary(now: Moment) -> [ControllerDirective] {
        // The expected wait walks the queue: worked out every 5 s, not for every summary. So
        // are accounts' usage and the fair-share order.
        var out: [ControllerDirective] = []
        if expectedWait.atMs.map({ now.monotonicMs - $0 >= 5000 }) ?? true {
            expectedWait = (now.monotonicMs, expectedWaitSeconds(healthy: index.capacity.values.reduce(0) { $0 + $1.usable }))
            out += accrueUsage(now: now)
            orderByFairShare()
        }
        let changed = index.takeChangedCapacity()
        let full = wantFullSummary || summariesSinceFull + 1 >= settings.fullSummaryEvery
        let base = summarySequence
        summarySequence += 1
        var s = Wire.RegionSummary(summaryValue(now: now))
        s.sequence = summarySequence
        s.full = full
        s.baseSequence = base
        s.nodesTotal = Int32(clamping: nodes.count)
        s.gatewayURL = gatewayURL
        s.serviceLoads = gatewayLoads
        s.healthCounts = Dictionary(uniqueKeysWithValues: index.healthCounts.map { ($0.key.rawValue, Int32(clamping: $0.value)) })
        if !full {
            // A delta: only the classes that changed; a class with total 0 is gone.
            s.capacity = changed.sorted().map { key in
                let c = index.capacity[key] ?? CapacityCounts()
                var w = Wire.Capacity()
                w.vendor = key.vendor.rawValue
                w.model = key.model
                w.memoryTotalMib = Int64(key.memoryMiB)
                w.grade = key.grade?.rawValue ?? ""
                w.total = Int32(clamping: c.total)
                w.free = Int32(clamping: c.free)
                w.healthy = Int32(clamping: c.usable)
                w.degraded = Int32(clamping: c.degraded)
                w.partition = key.partition ?? ""
                return w
            }
        }
        if full {
            wantFullSummary = false
            summariesSinceFull = 0
        } else {
            summariesSinceFull += 1
        }
        return out + [.send(.regionSummary(s), to: .upstream)]
    }

    /// Every account this region knows (configured, holding, queued or with usage): its quota,
    /// what it holds and borrows, its usage and fair-share factor.
    public func accountStatuses() -> [Wire.AccountStatus] {
        var queued: [String: Int] = [:]
        for j in jobs.values where j.state == .queued { queued[j.spec.accountName, default: 0] += 1 }
        var borrowed: [String: Int] = [:]
        for c in charged.values where c.borrowed { borrowed[c.account, default: 0] += c.use.devices }
        let factors = ledger.fairShareFactors()
        let names = Set(settings.accounts.quotas.keys).union(ledger.inUse.keys).union(ledger.usage.keys).union(queued.keys)
        return names.sorted().map { name in
            let q = settings.accounts.quota(for: name)
            let held = ledger.inUse[name] ?? ResourceUse()
            let u = ledger.usage[name]
            var s = Wire.AccountStatus()
            s.account = name
            s.regionID = region.rawValue
            s.shares = q.shares
            s.cohort = q.cohort ?? ""
            s.quotaDevices = q.devices.map { Int32(clamping: $0) } ?? -1
            s.quotaDevicesByGrade = Dictionary(uniqueKeysWithValues: q.devicesByGrade.map { ($0.key.rawValue, Int32(clamping: $0.value)) })
            s.quotaGcu = q.gcu ?? -1
            s.devicesInUse = Int32(clamping: held.devices)
            s.devicesInUseByGrade = Dictionary(uniqueKeysWithValues: held.byGrade.map { ($0.key.rawValue, Int32(clamping: $0.value)) })
            s.gcuInUse = held.gcu
            s.borrowedDevices = Int32(clamping: borrowed[name] ?? 0)
            s.deviceHours = (u?.deviceSeconds ?? 0) / 3600
            s.gcuHours = (u?.gcuSeconds ?? 0) / 3600
            s.decayedDeviceHours = (u?.decayedDeviceSeconds ?? 0) / 3600
            s.decayedGcuHours = (u?.decayedGCUSeconds ?? 0) / 3600
            s.fairShare = factors[name] ?? 1
            s.queuedJobs = Int32(clamping: queued[name] ?? 0)
            return s
        }
    }

    /// Charges every account for what it held since the last time; writes the usage once a
    /// minute (one row per account that changed, in the turn's batch).
    mutating func accrueUsage(now: Moment) -> [ControllerDirective] {
        let changed = ledger.accrue(at: now.wall)
        guard now.monotonicMs - usageWrittenAtMs >= 60_000, !changed.isEmpty else { return [] }
        usageWrittenAtMs = now.monotonicMs
        return [.persist(.accountUsage(changed))]
    }

    /// Fair share: each priority's jobs in order of their account's fair-share factor (least
    /// recent use per share first), then arrival. Only when the queue holds several accounts.
    mutating func orderByFairShare() {
        guard settings.accounts.fairShare, queue.count > 1, let first = queue.first.flatMap({ jobs[$0]?.spec.accountName }),
              queue.contains(where: { jobs[$0]?.spec.accountName != first }) else { return }
        let factor = ledger.fairShareFactors()
        let byID = jobs
        // Equal keys (same factor, same arrival) keep their order in the queue.
        queue.sortWithinPriorities(key: { id -> (Double, Date) in
            guard let j = byID[id] else { return (1, .distantPast) }
            return (factor[j.spec.accountName] ?? 1, j.submittedAt)
        }, by: { a, b in a.0 != b.0 ? a.0 > b.0 : a.1 < b.1 })
    }

    mutating func prune(now: Moment) -> [ControllerDirective] {
        let horizon = now.monotonicMs - settings.historyRetentionMs
        while appliedHead < appliedOrder.count, appliedOrder[appliedHead].1 < horizon {
            let (id, at) = appliedOrder[appliedHead]
            if applied[id] == at { applied[id] = nil }
            appliedHead += 1
        }
        if appliedHead > 4096 && appliedHead * 2 > appliedOrder.count {
            appliedOrder.removeFirst(appliedHead)
            appliedHead = 0
        }
        let cutoff = now.wall.addingTimeInterval(-Double(settings.historyRetentionMs) / 1000)
        for (id, j) in jobs where j.state.isTerminal && j.updatedAt < cutoff { jobs[id] = nil }
        return [.persist(.prune(before: cutoff, terminalJobs: true))]
    }

    /// When the next timer is due (monotonic ms), for the shell's poll timeout.
    public var nextDueMs: Int64? { placementDirty ? lastTurnMs : timers.nextDue }

    // MARK: read-only views for tests and the shell

    public var queuedJobCount: Int { queue.count }
    public var activeAssignmentCount: Int { assignments.count }
    public var outboxCount: Int { outbox.count }
    /// Update ids waiting for the national scheduler's acknowledgement.
    public var pendingUpwardIDs: [String] { outbox.keys.sorted() }
    public func job(_ id: JobID) -> JobRecord? { jobs[id] }
    public func nodeState(_ id: NodeID) -> NodeState? { nodes[id]?.record.state }
    public var nodeCount: Int { nodes.count }
}
