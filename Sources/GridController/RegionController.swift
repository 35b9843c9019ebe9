import Foundation
import GridCore
import GridProtocol
import GridScheduler
import GridStore
import GridTransport
import Logging

/// The regional controller's logic: keeps the region's nodes and jobs, places queued jobs on
/// devices, pushes assignments, and reports upward. Runs on the socket loop's thread; it never
/// touches sockets (it returns `LoopOutput`s) and takes `now` from the caller, so tests drive
/// it with a fake clock and read what it would send.
///
/// Delivery rules (PROTOCOL.md): every change is committed to SQLite before it is acknowledged;
/// assignments carry (id, epoch) and are resent until acknowledged; status updates carry an
/// update id and duplicates are answered from the `applied_updates` table.
public final class RegionController: ControllerLogic {
    public let region: RegionID
    let config: ControllerConfig
    let store: GridStore
    let logger: Logger
    var messenger: Messenger

    /// Node id → the connection its messages arrive on. Learned from every message, so one
    /// connection may carry many nodes and a reconnecting agent is found again.
    var routes: [NodeID: Peer] = [:]
    var nodes: [NodeID: NodeRecord] = [:]
    var lastSeen: [NodeID: Date] = [:]
    var lastSeenFlushedAt: Date
    var assignmentSentAt: [AssignmentID: Date] = [:]
    var lastSummaryAt = Date.distantPast
    var lastOutboxAt = Date.distantPast
    var lastPlacementAt = Date.distantPast
    var lastResendAt = Date.distantPast
    var placementDirty = true
    /// Jobs the national scheduler asked to cancel while they run; the Cancel is resent until
    /// the agent reports a terminal state.
    var cancelRequested: Set<JobID> = []

    static let upstreamDestination = "national"
    var role: String { "region \(region)" }

    public init(config: ControllerConfig, store: GridStore, logger: Logger, now: Date) throws {
        self.region = RegionID(config.id)
        self.config = config
        self.store = store
        self.logger = logger
        self.messenger = Messenger(sender: config.id, maxFrameBytes: config.maxMessageBytes, logger: logger)
        self.lastSeenFlushedAt = now
        let stored = try store.read("load nodes") { try $0.nodes(region: region) }
        for n in stored {
            nodes[n.id] = n
            // After a restart every node gets a full grace period to show up again.
            lastSeen[n.id] = now
        }
    }

    /// One loop input in, the frames to send out. Runs on the socket loop's thread.
    public func handle(_ input: LoopInput<Never>, now: Date) -> [LoopOutput] { dispatch(input, now: now) }

    /// Rejected inbound frames by reason, for logs and tests.
    public var rejectedFrames: [String: Int] { messenger.rejected }

    func receive(_ message: Message, origin: Origin, now: Date) throws -> [LoopOutput] {
        switch message.body {
        case .register(let m): return try onRegister(m, origin: origin, now: now)
        case .heartbeat(let m): return try onHeartbeat(m, origin: origin, now: now)
        case .assignmentAck(let m): return try onAssignmentAck(m, now: now)
        case .statusUpdate(let m): return try onStatusUpdate(m, origin: origin, now: now)
        case .jobForward(let m): return try onJobForward(m, origin: origin, now: now)
        case .statusAck(let m):
            _ = try store.write("acknowledge \(m.updateID)") { try $0.acknowledge(key: m.updateID) }
            return []
        case .regionSummaryAck, .jobForwardAck:
            return []
        case .cancel(let m): return try onCancel(m, now: now)
        case .query(let m): return try onQuery(m, origin: origin, now: now)
        case .submit:
            return [messenger.error("unsupported", "submit jobs to the national scheduler, not to region \(region)", to: origin)]
        default:
            return [messenger.error("unsupported", "region \(region) does not accept \(message.body.type)", to: origin)]
        }
    }

    // MARK: nodes

    func onRegister(_ m: Wire.Register, origin: Origin, now: Date) throws -> [LoopOutput] {
        let id = NodeID(m.nodeID)
        let devices = m.devices.map(\.inventory)
        let record = NodeRecord(
            id: id, region: region, hostname: m.hostname, state: .ready, devices: devices,
            lastSeen: now, registeredAt: nodes[id]?.registeredAt ?? now)
        let held = Set(m.heldAssignments)
        var out: [LoopOutput] = []
        let pending: [AssignmentID] = try store.write("register \(id)") { tx in
            try tx.upsertNode(record)
            let mine = try tx.activeAssignments().filter { $0.node == id }
            // An agent that restarted lost the processes of assignments it no longer holds:
            // run those jobs again elsewhere rather than wait for results that cannot come.
            for a in mine where a.state == "accepted" && !held.contains(a.id.rawValue) {
                try requeue(a, reason: "node \(id) restarted without assignment \(a.id)", tx: tx, now: now)
            }
            return mine.filter { $0.state == "pending" }.map(\.id)
        }
        nodes[id] = record
        routes[id] = origin.peer
        lastSeen[id] = now
        placementDirty = true
        logger.info("node registered", metadata: ["node": "\(id)", "devices": "\(devices.count)", "from": "\(origin.peer.label)"])
        var ack = Wire.RegisterAck()
        ack.nodeID = id.rawValue
        ack.regionID = region.rawValue
        ack.heartbeatIntervalMs = UInt32(config.heartbeatIntervalMs)
        out.append(messenger.reply(.registerAck(ack), to: origin))
        // Anything still pending for this node goes out again on the next resend pass.
        for a in pending { assignmentSentAt[a] = nil }
        lastResendAt = .distantPast
        return out
    }

    func onHeartbeat(_ m: Wire.Heartbeat, origin: Origin, now: Date) throws -> [LoopOutput] {
        let id = NodeID(m.nodeID)
        var ack = Wire.HeartbeatAck()
        ack.nodeID = id.rawValue
        guard var node = nodes[id] else {
            ack.known = false
            return [messenger.reply(.heartbeatAck(ack), to: origin)]
        }
        routes[id] = origin.peer
        lastSeen[id] = now
        var changed = false
        if node.state == .lost {
            node.state = .ready
            changed = true
            logger.notice("node is back", metadata: ["node": "\(id)"])
        }
        if !m.devices.isEmpty {
            let devices = m.devices.map(\.inventory)
            if devices != node.devices {
                let before = Dictionary(node.devices.map { ($0.id, $0.health.state) }, uniquingKeysWith: { a, _ in a })
                for d in devices where before[d.id] != d.health.state {
                    logger.notice("device health changed", metadata: [
                        "node": "\(id)", "device": "\(d.id)", "from": "\(before[d.id]?.rawValue ?? "new")", "to": "\(d.health.state.rawValue)",
                        "reasons": "\(d.health.reasons.map(\.detail).joined(separator: "; "))",
                    ])
                }
                node.devices = devices
                changed = true
            }
        }
        if changed {
            node.lastSeen = now
            let record = node
            try store.write("heartbeat \(id)") { try $0.upsertNode(record) }
            nodes[id] = node
            placementDirty = true
        }
        ack.known = true
        var out = [messenger.reply(.heartbeatAck(ack), to: origin)]
        // Processes the agent still runs for assignments we revoked (node was lost, job went
        // elsewhere) must stop: their results would be rejected as stale anyway.
        if !m.runningAssignments.isEmpty {
            let active = try store.read("active assignments") { try $0.activeAssignments() }
            let current = Set(active.map(\.id.rawValue))
            for running in m.runningAssignments where !current.contains(running) {
                if let a = try store.read("assignment", { try $0.assignment(AssignmentID(running)) }) {
                    out.append(cancelOutput(a, to: origin.peer))
                }
            }
            for a in active where cancelRequested.contains(a.job) && m.runningAssignments.contains(a.id.rawValue) {
                out.append(cancelOutput(a, to: origin.peer))
            }
        }
        return out
    }

    func cancelOutput(_ a: AssignmentRecord, to peer: Peer) -> LoopOutput {
        var c = Wire.Cancel()
        c.jobID = a.job.rawValue
        c.assignmentID = a.id.rawValue
        c.epoch = UInt64(a.epoch)
        c.nodeID = a.node.rawValue
        return messenger.output(.cancel(c), to: peer)
    }

    // MARK: assignments and status

    func onAssignmentAck(_ m: Wire.AssignmentAck, now: Date) throws -> [LoopOutput] {
        let id = AssignmentID(m.assignmentID)
        assignmentSentAt[id] = nil
        try store.write("assignment ack \(id)") { tx in
            guard let a = try tx.assignment(id), a.epoch == Int(m.epoch), a.state == "pending" else { return }
            if m.accepted {
                try tx.setAssignmentState(id, "accepted")
            } else {
                try tx.setAssignmentState(id, "rejected")
                try requeue(a, reason: "node \(a.node) rejected assignment \(id): \(m.reason)", tx: tx, now: now, revoke: false)
            }
        }
        if !m.accepted {
            logger.warning("assignment rejected", metadata: ["assignment": "\(id)", "reason": "\(m.reason)"])
            placementDirty = true
        }
        return []
    }

    func onStatusUpdate(_ m: Wire.StatusUpdate, origin: Origin, now: Date) throws -> [LoopOutput] {
        var ack = Wire.StatusAck()
        ack.updateID = m.updateID
        let (applied, reason): (Bool, String) = try store.write("status \(m.updateID)") { tx in
            guard var job = try tx.job(JobID(m.jobID)) else {
                return (false, "job \(m.jobID) unknown in region \(region)")
            }
            let current = "assignment \(job.assignment?.rawValue ?? "none") epoch \(job.epoch)"
            guard job.assignment?.rawValue == m.assignmentID, UInt64(job.epoch) == m.epoch else {
                return (false, "stale: assignment \(m.assignmentID) epoch \(m.epoch) is not current (\(current))")
            }
            guard try tx.markApplied(m.updateID, at: now) else {
                return (true, "duplicate \(m.updateID), already applied")
            }
            guard let state = JobState(rawValue: m.state), state.progress >= job.state.progress, !job.state.isTerminal else {
                return (true, "ignored: job already \(job.state.rawValue)")
            }
            job.state = state
            job.exitCode = m.hasExitCode_p ? Int(m.exitCode) : nil
            if !m.message.isEmpty { job.message = m.message }
            if !m.outputTail.isEmpty { job.outputTail = m.outputTail }
            if !m.visibleDevices.isEmpty { job.visibleDevices = m.visibleDevices }
            job.updatedAt = now
            try tx.saveJob(job)
            if state.isTerminal, let a = job.assignment {
                try tx.setAssignmentState(a, "done")
            }
            try enqueueStatus(job, tx: tx, now: now)
            return (true, "")
        }
        ack.applied = applied
        ack.reason = reason
        if let state = JobState(rawValue: m.state), state.isTerminal, applied, reason.isEmpty {
            cancelRequested.remove(JobID(m.jobID))
            placementDirty = true
            logger.info("job finished", metadata: ["job": "\(m.jobID)", "state": "\(m.state)", "node": "\(m.nodeID)"])
        } else if !applied {
            logger.notice("status update not applied", metadata: ["update": "\(m.updateID)", "reason": "\(reason)"])
        }
        return [messenger.reply(.statusAck(ack), to: origin)]
    }

    /// Takes a job back from its node (lost, rejected, restarted) and queues it again. The
    /// next assignment gets a higher epoch, so late reports about this one are refused.
    func requeue(_ a: AssignmentRecord, reason: String, tx: StoreTransaction, now: Date, revoke: Bool = true) throws {
        if revoke { try tx.setAssignmentState(a.id, "revoked") }
        guard var job = try tx.job(a.job), job.assignment == a.id, !job.state.isTerminal else { return }
        job.state = .queued
        job.node = nil
        job.deviceIDs = []
        job.deviceModels = []
        job.assignment = nil
        job.visibleDevices = [:]
        job.message = reason
        job.updatedAt = now
        try tx.saveJob(job)
        try enqueueStatus(job, tx: tx, now: now)
        logger.warning("job re-queued", metadata: ["job": "\(job.id)", "reason": "\(reason)"])
    }

    /// Records an upward status change in the outbox, in the same transaction as the change.
    func enqueueStatus(_ job: JobRecord, tx: StoreTransaction, now: Date) throws {
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
        u.updateID = "\(region):\(job.id):\(job.epoch):\(job.state.rawValue)"
        try tx.enqueue(key: u.updateID, destination: Self.upstreamDestination, type: "status_update",
                       payload: Array(try u.serializedData()), at: now)
        lastOutboxAt = .distantPast
    }

    // MARK: from the national scheduler

    func onJobForward(_ m: Wire.JobForward, origin: Origin, now: Date) throws -> [LoopOutput] {
        var ack = Wire.JobForwardAck()
        ack.jobID = m.jobID
        do {
            let spec = try m.spec.spec()
            let problems = spec.problems()
            if !problems.isEmpty {
                ack.accepted = false
                ack.reason = problems.joined(separator: "; ")
            } else {
                let submitted = m.submittedUnixMs > 0 ? Date(unixMilliseconds: m.submittedUnixMs) : now
                let record = JobRecord(id: JobID(m.jobID), spec: spec, state: .queued, region: region,
                                       message: "queued in \(region)", submittedAt: submitted, updatedAt: now)
                let (_, inserted) = try store.write("accept job \(m.jobID)") { try $0.insertJobIfAbsent(record) }
                if inserted { logger.info("job accepted", metadata: ["job": "\(m.jobID)", "name": "\(spec.name)"]) }
                ack.accepted = true
                placementDirty = true
            }
        } catch let error as ProtocolError {
            ack.accepted = false
            ack.reason = error.description
        }
        return [messenger.reply(.jobForwardAck(ack), to: origin)]
    }

    func onCancel(_ m: Wire.Cancel, now: Date) throws -> [LoopOutput] {
        let id = JobID(m.jobID)
        var out: [LoopOutput] = []
        try store.write("cancel \(id)") { tx in
            guard var job = try tx.job(id), !job.state.isTerminal else { return }
            if job.state == .queued {
                job.state = .cancelled
                job.message = "cancelled before it was placed"
                job.updatedAt = now
                try tx.saveJob(job)
                try enqueueStatus(job, tx: tx, now: now)
            } else if let aid = job.assignment, let a = try tx.assignment(aid) {
                cancelRequested.insert(id)
                if let peer = routes[a.node] { out.append(cancelOutput(a, to: peer)) }
            }
        }
        return out
    }

    func onQuery(_ m: Wire.Query, origin: Origin, now: Date) throws -> [LoopOutput] {
        var reply = Wire.QueryReply()
        switch m.kind {
        case .jobs:
            reply.jobs = try store.read("jobs") { try $0.jobs() }.map(Wire.Job.init)
        case .job:
            guard let job = try store.read("job", { try $0.job(JobID(m.jobID)) }) else {
                return [messenger.error("not_found", "job \(m.jobID) is not known in region \(region)", to: origin)]
            }
            reply.jobs = [Wire.Job(job)]
        case .nodes:
            reply.nodes = try summary(now: now, nodeCap: Int.max).nodes.map(Wire.NodeBrief.init)
        case .regions:
            reply.regions = [Wire.RegionSummary(try summary(now: now, nodeCap: 0))]
        default:
            return [messenger.error("bad_request", "query kind \(m.kind) not supported", to: origin)]
        }
        return [messenger.reply(.queryReply(reply), to: origin)]
    }

    // MARK: timers

    func tick(now: Date) -> [LoopOutput] {
        var out: [LoopOutput] = []
        do {
            try detectLostNodes(now: now)
            if now.timeIntervalSince(lastSeenFlushedAt) >= 5 {
                let seen = lastSeen.filter { nodes[$0.key]?.state == .ready }
                try store.write("touch nodes") { try $0.touchNodes(seen) }
                lastSeenFlushedAt = now
            }
            if placementDirty || now.timeIntervalSince(lastPlacementAt) >= 1 {
                out += try place(now: now)
            }
            out += try resendAssignments(now: now)
            out += try flushOutbox(now: now)
            if now.timeIntervalSince(lastSummaryAt) * 1000 >= Double(config.summaryIntervalMs) {
                lastSummaryAt = now
                out.append(messenger.output(.regionSummary(Wire.RegionSummary(try summary(now: now, nodeCap: 1000))), to: .upstream))
            }
        } catch {
            logger.error("region tick failed (will retry): \(error)")
        }
        return out
    }

    func detectLostNodes(now: Date) throws {
        let limit = Double(config.nodeLostAfterMs) / 1000
        for (id, node) in nodes where node.state == .ready {
            let silent = now.timeIntervalSince(lastSeen[id] ?? .distantPast)
            guard silent > limit else { continue }
            try store.write("node lost \(id)") { tx in
                try tx.setNodeState(id, .lost)
                for a in try tx.activeAssignments() where a.node == id {
                    try requeue(a, reason: "node \(id) lost: no heartbeat for \(Int(silent))s", tx: tx, now: now)
                }
            }
            nodes[id]?.state = .lost
            placementDirty = true
            logger.warning("node lost", metadata: ["node": "\(id)", "silent_s": "\(Int(silent))"])
        }
    }

    func place(now: Date) throws -> [LoopOutput] {
        placementDirty = false
        lastPlacementAt = now
        let queued = try store.read("queued jobs") { try $0.jobs(states: [.queued], limit: 1000) }
        guard !queued.isEmpty else { return [] }
        let active = try store.read("active assignments") { try $0.activeAssignments() }
        var busy: [NodeID: Set<String>] = [:]
        for a in active { busy[a.node, default: []].formUnion(a.deviceIDs) }
        let ready = nodes.values.filter { $0.state == .ready && routes[$0.id] != nil }.sorted { $0.id < $1.id }
        let snapshot = RegionSnapshot(nodes: ready.map { .init(id: $0.id, devices: $0.devices, busyDeviceIDs: busy[$0.id] ?? []) })
        let requests = queued.map { PlacementRequest(job: $0.id, accelerators: $0.spec.accelerators) }
        let plan = RegionPlacement.plan(snapshot: snapshot, requests: requests, policy: config.placement)
        var out: [LoopOutput] = []
        var placed: [(AssignmentRecord, JobRecord)] = []
        let byID = Dictionary(queued.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        for p in plan.placements {
            guard var job = byID[p.job], let node = nodes[p.node] else { continue }
            job.epoch += 1
            let aid = AssignmentID("\(job.id).\(job.epoch)")
            let models = Dictionary(node.devices.map { ($0.id, $0.model) }, uniquingKeysWith: { a, _ in a })
            job.state = .assigned
            job.node = p.node
            job.deviceIDs = p.deviceIDs
            job.deviceModels = p.deviceIDs.map { models[$0] ?? "?" }
            job.assignment = aid
            job.message = "assigned to \(p.node)"
            job.updatedAt = now
            let record = AssignmentRecord(id: aid, job: job.id, node: p.node, epoch: job.epoch, deviceIDs: p.deviceIDs, state: "pending", createdAt: now)
            placed.append((record, job))
        }
        // Say why the others wait, once per change of reason.
        let waitingChanges = queued.filter { job in plan.waiting[job.id].map { $0 != job.message } ?? false }
        guard !placed.isEmpty || !waitingChanges.isEmpty else { return [] }
        // One transaction (one fsync) for the whole pass; assignments go out only once stored.
        try store.write("placement pass") { tx in
            for (record, job) in placed {
                try tx.saveJob(job)
                try tx.insertAssignment(record)
                try enqueueStatus(job, tx: tx, now: now)
            }
            for var job in waitingChanges {
                job.message = plan.waiting[job.id] ?? job.message
                try tx.saveJob(job)
            }
        }
        for (record, job) in placed {
            logger.info("job placed", metadata: ["job": "\(job.id)", "node": "\(record.node)", "devices": "\(record.deviceIDs.joined(separator: ","))", "epoch": "\(job.epoch)"])
            if let o = assignmentOutput(record, job: job) {
                out.append(o)
                assignmentSentAt[record.id] = now
            }
        }
        return out
    }

    func assignmentOutput(_ a: AssignmentRecord, job: JobRecord) -> LoopOutput? {
        guard let peer = routes[a.node] else { return nil }
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
        return messenger.output(.assignment(m), to: peer)
    }

    func resendAssignments(now: Date) throws -> [LoopOutput] {
        let retry = Double(config.retryIntervalMs) / 1000
        // Looking for due resends reads SQLite; a quarter of the retry interval is precise enough.
        guard now.timeIntervalSince(lastResendAt) >= retry / 4 else { return [] }
        lastResendAt = now
        let due = try store.read("pending assignments") { tx in
            try tx.activeAssignments().filter { a in
                a.state == "pending" && now.timeIntervalSince(assignmentSentAt[a.id] ?? .distantPast) >= retry
            }.compactMap { a in try tx.job(a.job).map { (a, $0) } }
        }
        var out: [LoopOutput] = []
        for (a, job) in due where nodes[a.node]?.state == .ready {
            if let o = assignmentOutput(a, job: job) {
                out.append(o)
                assignmentSentAt[a.id] = now
            }
        }
        return out
    }

    func flushOutbox(now: Date) throws -> [LoopOutput] {
        let retry = Double(config.retryIntervalMs) / 1000
        guard now.timeIntervalSince(lastOutboxAt) >= retry else { return [] }
        lastOutboxAt = now
        let items = try store.read("outbox") { try $0.outbox(destination: Self.upstreamDestination, limit: 500) }
        guard !items.isEmpty else { return [] }
        var out: [LoopOutput] = []
        for item in items {
            guard item.type == "status_update", let u = try? Wire.StatusUpdate(serializedBytes: item.payload) else {
                logger.error("dropping unreadable outbox item \(item.key) of type \(item.type)")
                _ = try store.write("drop outbox item") { try $0.acknowledge(key: item.key) }
                continue
            }
            out.append(messenger.output(.statusUpdate(u), to: .upstream))
        }
        try store.write("outbox attempts") { tx in for item in items { try tx.markAttempt(key: item.key, at: now) } }
        return out
    }

    /// The region as its parent and operators see it.
    func summary(now: Date, nodeCap: Int) throws -> RegionSummary {
        let active = try store.read("active assignments") { try $0.activeAssignments() }
        var busy: [NodeID: Set<String>] = [:]
        for a in active { busy[a.node, default: []].formUnion(a.deviceIDs) }
        struct Key: Hashable { var vendor: AcceleratorVendor; var model: String; var memory: Int }
        var capacity: [Key: CapacityEntry] = [:]
        var briefs: [NodeBrief] = []
        for node in nodes.values.sorted(by: { $0.id < $1.id }) {
            let nodeBusy = busy[node.id] ?? []
            if node.state == .ready {
                for d in node.devices {
                    let key = Key(vendor: d.vendor, model: d.model, memory: d.memoryTotalMiB ?? 0)
                    var e = capacity[key] ?? CapacityEntry(vendor: d.vendor, model: d.model, memoryTotalMiB: key.memory, total: 0, free: 0, healthy: 0)
                    e.total += 1
                    let usable = RegionPlacement.eligibleDevice(d, for: AcceleratorRequest(count: 1), policy: config.placement)
                    if usable { e.healthy += 1 }
                    if usable && !nodeBusy.contains(d.id) { e.free += 1 }
                    capacity[key] = e
                }
            }
            briefs.append(NodeBrief(
                node: node.id, region: region, hostname: node.hostname, state: node.state,
                deviceCount: node.devices.count, freeDevices: node.devices.filter { !nodeBusy.contains($0.id) }.count,
                models: Array(Set(node.devices.map(\.model))).sorted(),
                worstHealth: node.devices.map(\.health.state).max() ?? .healthy,
                lastSeen: lastSeen[node.id] ?? node.lastSeen))
        }
        let queued = try store.read("count") { try $0.countJobs(state: .queued) }
        let running = try store.read("count") { try $0.countJobs(state: .running) + $0.countJobs(state: .assigned) }
        return RegionSummary(
            region: region, nodesReady: nodes.values.filter { $0.state == .ready }.count,
            nodesLost: nodes.values.filter { $0.state == .lost }.count, queuedJobs: queued, runningJobs: running,
            capacity: capacity.values.sorted { ($0.vendor.rawValue, $0.model, $0.memoryTotalMiB) < ($1.vendor.rawValue, $1.model, $1.memoryTotalMiB) },
            nodes: Array(briefs.prefix(nodeCap)), nodesTruncated: briefs.count > nodeCap, generatedAt: now)
    }
}
