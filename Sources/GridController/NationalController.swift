import Foundation
import GridCore
import GridProtocol
import GridScheduler
import GridStore
import GridTransport
import Logging

/// The national scheduler's logic: accepts submissions, picks a region with
/// `NationalRouting`, forwards the job until the region acknowledges it, and keeps the job's
/// state as regions report it. Like `RegionController`, it never touches sockets and takes
/// `now` from the caller.
public final class NationalController: ControllerLogic {
    let config: ControllerConfig
    let store: GridStore
    let logger: Logger
    var messenger: Messenger
    /// Region id → connection, learned from each region's summaries.
    var routes: [RegionID: Peer] = [:]
    var lastOutboxAt = Date.distantPast
    var lastRoutingAt = Date.distantPast
    var routingDirty = true
    let makeJobID: () -> JobID
    var role: String { "the national scheduler" }

    /// `makeJobID` is injected so tests and replays get predictable ids.
    public init(config: ControllerConfig, store: GridStore, logger: Logger, makeJobID: @escaping () -> JobID) {
        self.config = config
        self.store = store
        self.logger = logger
        self.messenger = Messenger(sender: config.id, maxFrameBytes: config.maxMessageBytes, logger: logger)
        self.makeJobID = makeJobID
    }


    /// One loop input in, the frames to send out. Runs on the socket loop's thread.
    public func handle(_ input: LoopInput<Never>, now: Date) -> [LoopOutput] { dispatch(input, now: now) }

    /// Rejected inbound frames by reason, for logs and tests.
    public var rejectedFrames: [String: Int] { messenger.rejected }

    func receive(_ message: Message, origin: Origin, now: Date) throws -> [LoopOutput] {
        switch message.body {
        case .submit(let m): return try onSubmit(m, origin: origin, now: now)
        case .regionSummary(let m): return try onRegionSummary(m, origin: origin, now: now)
        case .jobForwardAck(let m): return try onJobForwardAck(m, now: now)
        case .statusUpdate(let m): return try onStatusUpdate(m, origin: origin, now: now)
        case .query(let m): return try onQuery(m, origin: origin, now: now)
        default:
            return [messenger.error("unsupported", "the national scheduler does not accept \(message.body.type)", to: origin)]
        }
    }

    func onSubmit(_ m: Wire.Submit, origin: Origin, now: Date) throws -> [LoopOutput] {
        var reply = Wire.SubmitReply()
        let spec: JobSpec
        do { spec = try m.spec.spec() } catch {
            reply.accepted = false
            reply.reason = error.description
            return [messenger.reply(.submitReply(reply), to: origin)]
        }
        let problems = spec.problems()
        if !problems.isEmpty {
            reply.accepted = false
            reply.reason = problems.joined(separator: "; ")
            return [messenger.reply(.submitReply(reply), to: origin)]
        }
        let id = m.jobID.isEmpty ? makeJobID() : JobID(m.jobID)
        let decision = NationalRouting.choose(candidates: try candidates(now: now), spec: spec, policy: config.routing)
        let stored: JobRecord = try store.write("submit \(id)") { tx in
            if let existing = try tx.job(id) { return existing }  // a retried submit: answer from storage
            var job = JobRecord(id: id, spec: spec, state: .pending, submittedAt: now, updatedAt: now)
            if let region = decision.region {
                job.state = .forwarded
                job.region = region
                job.message = "forwarded to \(region)"
                try enqueueForward(job, to: region, tx: tx, now: now)
            } else {
                job.message = "no region can take it yet: " + decision.terms.joined(separator: "; ")
            }
            _ = try tx.insertJobIfAbsent(job)
            return job
        }
        logger.info("job submitted", metadata: ["job": "\(id)", "name": "\(spec.name)", "region": "\(stored.region?.rawValue ?? "-")", "why": "\(decision.terms.joined(separator: "; "))"])
        reply.jobID = id.rawValue
        reply.accepted = true
        reply.regionID = stored.region?.rawValue ?? ""
        reply.reason = stored.message
        return [messenger.reply(.submitReply(reply), to: origin)] + (try flushOutbox(now: now, force: true))
    }

    func enqueueForward(_ job: JobRecord, to region: RegionID, tx: StoreTransaction, now: Date) throws {
        var f = Wire.JobForward()
        f.jobID = job.id.rawValue
        f.spec = Wire.JobSpec(job.spec)
        f.submittedUnixMs = job.submittedAt.unixMilliseconds
        try tx.enqueue(key: "forward:\(job.id)", destination: region.rawValue, type: "job_forward",
                       payload: Array(try f.serializedData()), at: now)
    }

    func candidates(now: Date) throws -> [RegionCandidate] {
        try store.read("regions") { try $0.regions() }.map {
            RegionCandidate(summary: $0.summary, ageSeconds: now.timeIntervalSince($0.lastSeen))
        }
    }

    func onRegionSummary(_ m: Wire.RegionSummary, origin: Origin, now: Date) throws -> [LoopOutput] {
        let summary = m.summary
        let isNew = routes[summary.region] == nil
        routes[summary.region] = origin.peer
        try store.write("region summary \(summary.region)") { try $0.upsertRegion(summary, seen: now) }
        if isNew {
            logger.info("region connected", metadata: ["region": "\(summary.region)", "nodes_ready": "\(summary.nodesReady)"])
            lastOutboxAt = .distantPast
            routingDirty = true
        }
        var ack = Wire.RegionSummaryAck()
        ack.regionID = m.regionID
        return [messenger.reply(.regionSummaryAck(ack), to: origin)]
    }

    func onJobForwardAck(_ m: Wire.JobForwardAck, now: Date) throws -> [LoopOutput] {
        try store.write("forward ack \(m.jobID)") { tx in
            guard try tx.acknowledge(key: "forward:\(m.jobID)") else { return }
            guard var job = try tx.job(JobID(m.jobID)) else { return }
            if m.accepted {
                if job.state.progress < JobState.queued.progress {
                    job.state = .queued
                    job.message = "queued in \(job.region?.rawValue ?? "?")"
                }
            } else {
                job.state = .failed
                job.message = "region \(job.region?.rawValue ?? "?") refused the job: \(m.reason)"
            }
            job.updatedAt = now
            try tx.saveJob(job)
        }
        return []
    }

    func onStatusUpdate(_ m: Wire.StatusUpdate, origin: Origin, now: Date) throws -> [LoopOutput] {
        var ack = Wire.StatusAck()
        ack.updateID = m.updateID
        ack.applied = try store.write("status \(m.updateID)") { tx in
            guard var job = try tx.job(JobID(m.jobID)) else { return false }
            guard try tx.markApplied(m.updateID, at: now) else { return true }
            guard let state = JobState(rawValue: m.state), !job.state.isTerminal else { return true }
            // A newer epoch (the region re-placed the job) wins; within one epoch states only
            // move forward.
            let newer = Int(m.epoch) > job.epoch || (Int(m.epoch) == job.epoch && state.progress >= job.state.progress)
            guard newer else { return true }
            job.state = state
            job.epoch = Int(m.epoch)
            job.region = m.regionID.isEmpty ? job.region : RegionID(m.regionID)
            job.node = m.nodeID.isEmpty ? nil : NodeID(m.nodeID)
            job.assignment = m.assignmentID.isEmpty ? nil : AssignmentID(m.assignmentID)
            job.deviceIDs = m.deviceIds
            job.deviceModels = m.deviceModels
            job.exitCode = m.hasExitCode_p ? Int(m.exitCode) : nil
            job.message = m.message
            job.outputTail = m.outputTail
            job.visibleDevices = m.visibleDevices
            job.updatedAt = now
            try tx.saveJob(job)
            return true
        }
        if !ack.applied { ack.reason = "job \(m.jobID) unknown to the national scheduler" }
        return [messenger.reply(.statusAck(ack), to: origin)]
    }

    func onQuery(_ m: Wire.Query, origin: Origin, now: Date) throws -> [LoopOutput] {
        var reply = Wire.QueryReply()
        switch m.kind {
        case .jobs:
            reply.jobs = try store.read("jobs") { try $0.jobs() }.map(Wire.Job.init)
        case .job:
            guard let job = try store.read("job", { try $0.job(JobID(m.jobID)) }) else {
                return [messenger.error("not_found", "job \(m.jobID) is not known to the national scheduler", to: origin)]
            }
            reply.jobs = [Wire.Job(job)]
        case .nodes:
            reply.nodes = try store.read("regions") { try $0.regions() }.flatMap { $0.summary.nodes }.map(Wire.NodeBrief.init)
        case .regions:
            reply.regions = try store.read("regions") { try $0.regions() }.map {
                var s = $0.summary
                s.nodes = []
                s.generatedAt = $0.lastSeen
                return Wire.RegionSummary(s)
            }
        default:
            return [messenger.error("bad_request", "query kind \(m.kind) not supported", to: origin)]
        }
        return [messenger.reply(.queryReply(reply), to: origin)]
    }

    // MARK: timers

    func tick(now: Date) -> [LoopOutput] {
        var out: [LoopOutput] = []
        do {
            if routingDirty || now.timeIntervalSince(lastRoutingAt) >= 1 {
                try routePending(now: now)
            }
            out += try flushOutbox(now: now, force: false)
        } catch {
            logger.error("national tick failed (will retry): \(error)")
        }
        return out
    }

    /// Jobs no region could take at submit time are tried again as summaries arrive.
    func routePending(now: Date) throws {
        routingDirty = false
        lastRoutingAt = now
        let pending = try store.read("pending jobs") { try $0.jobs(states: [.pending], limit: 1000) }
        guard !pending.isEmpty else { return }
        let candidates = try candidates(now: now)
        try store.write("route pending") { tx in
            for var job in pending {
                let decision = NationalRouting.choose(candidates: candidates, spec: job.spec, policy: config.routing)
                if let region = decision.region {
                    job.state = .forwarded
                    job.region = region
                    job.message = "forwarded to \(region)"
                    try enqueueForward(job, to: region, tx: tx, now: now)
                    lastOutboxAt = .distantPast
                } else {
                    let message = "no region can take it yet: " + decision.terms.joined(separator: "; ")
                    if message == job.message { continue }
                    job.message = message
                }
                job.updatedAt = now
                try tx.saveJob(job)
            }
        }
    }

    func flushOutbox(now: Date, force: Bool) throws -> [LoopOutput] {
        let retry = Double(config.retryIntervalMs) / 1000
        guard force || now.timeIntervalSince(lastOutboxAt) >= retry else { return [] }
        if !force { lastOutboxAt = now }
        let items = try store.read("outbox") { try $0.outbox(limit: 1000) }
        var out: [LoopOutput] = []
        var attempted: [String] = []
        for item in items {
            if force && item.lastAttemptAt != nil { continue }
            guard let peer = routes[RegionID(item.destination)] else { continue }
            guard item.type == "job_forward", let f = try? Wire.JobForward(serializedBytes: item.payload) else {
                logger.error("dropping unreadable outbox item \(item.key) of type \(item.type)")
                _ = try store.write("drop outbox item") { try $0.acknowledge(key: item.key) }
                continue
            }
            out.append(messenger.output(.jobForward(f), to: peer))
            attempted.append(item.key)
        }
        if !attempted.isEmpty {
            try store.write("outbox attempts") { tx in for key in attempted { try tx.markAttempt(key: key, at: now) } }
        }
        return out
    }
}
