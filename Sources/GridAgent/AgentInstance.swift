import Foundation
import GridCore
import GridProbe
import GridProtocol
import Logging

/// What the agent learned about its devices in one probe.
public struct InventoryReport: Sendable {
    public var devices: [DeviceInventory]
    /// Problems met while probing (tool timeouts, unreadable files...), for logs.
    public var problems: [String]
    /// Where the probe looked and what each source said.
    public var sources: [ProbeSource]
    public var durationSeconds: Double
    public init(devices: [DeviceInventory], problems: [String] = [], sources: [ProbeSource] = [], durationSeconds: Double = 0) {
        self.devices = devices
        self.problems = problems
        self.sources = sources
        self.durationSeconds = durationSeconds
    }
}

/// Where the agent's inventory comes from: the real probe or captured outputs.
public protocol InventorySource: Sendable {
    func collect() async -> InventoryReport
}

/// How a job's run ended as the shell saw it: the status (nil when nobody could wait for it,
/// i.e. it ended while the agent was down and left no exit record) and whether the shim fenced it.
public struct ProcessOutcome: Sendable, Equatable {
    public var end: ProcessEnd?
    public var fenced: Bool
    public init(end: ProcessEnd?, fenced: Bool = false) {
        self.end = end
        self.fenced = fenced
    }
    public static func exited(_ code: Int32) -> ProcessOutcome { ProcessOutcome(end: .exited(code)) }
    public static func signaled(_ sig: Int32) -> ProcessOutcome { ProcessOutcome(end: .signaled(sig)) }
}

/// What the shell found of a journalled run when the agent started.
public enum RecoveredProcess: Sendable, Equatable {
    /// Still running: the shim with this pid and start time.
    case alive(pid: Int32, startTicks: UInt64?)
    /// Ended while the agent was down; the shim's exit record or nothing (`end` nil).
    case ended(ProcessOutcome)
    /// Accepted, but no process was ever started for it. It is not started now: the agent may
    /// have been down past its lease and the region may have placed it elsewhere. It is
    /// reported stopped by the agent, and the region's retry policy decides.
    case neverStarted
}

/// Things that happen off the loop thread and are handed to it.
public enum AgentEvent: Sendable {
    case inventory(InventoryReport)
    case exited(AssignmentID, ProcessOutcome)
    /// Graceful stop (SIGTERM, `grid-agent drain`): stop the jobs, report them, then exit.
    case shutdown
    /// Hand the agent's counts and gauges to `reply` (for /metrics, /readyz).
    case observe(reply: @Sendable (AgentObservation) -> Void)
    /// A replica probe answered (`ok`: a 2xx or 3xx in time) or failed (`detail` says how).
    case probed(AssignmentID, ProbeKind, ok: Bool, detail: String)
}

/// Which of a replica's probes (SERVICES.md): health stops it after repeated failures;
/// readiness puts it in or out of the gateway's rotation.
public enum ProbeKind: String, Sendable, Equatable {
    case health, readiness
}

/// What an agent is like now, worked out on its loop thread when asked.
public struct AgentObservation: Sendable {
    public var node: String
    /// Registered with its region (readiness).
    public var registered: Bool
    public var stopping: Bool
    public var heartbeatsSent: Int
    public var runningJobs: Int
    public var unacknowledgedStatuses: Int
    /// ms left on the lease (negative: lapsed); nil before the first one.
    public var leaseRemainingMs: Int64?
    public var devices: [DeviceInventory]
    public var rejectedFrames: Int
    public var journalFailures: Int
    /// When the loop made it (orders concurrent scrapes).
    public var observedAt = Date()
    public init(node: String, registered: Bool, stopping: Bool, heartbeatsSent: Int, runningJobs: Int, unacknowledgedStatuses: Int,
                leaseRemainingMs: Int64?, devices: [DeviceInventory], rejectedFrames: Int, journalFailures: Int) {
        self.node = node
        self.registered = registered
        self.stopping = stopping
        self.heartbeatsSent = heartbeatsSent
        self.runningJobs = runningJobs
        self.unacknowledgedStatuses = unacknowledgedStatuses
        self.leaseRemainingMs = leaseRemainingMs
        self.devices = devices
        self.rejectedFrames = rejectedFrames
        self.journalFailures = journalFailures
    }
}

/// What the agent instance asks its shell to do.
public enum AgentDirective: Sendable, Equatable {
    /// Send a message to the region.
    case send(Body)
    /// Start a job's process (under its shim, in its own process group), output to
    /// `outputPath`; as `runAs` in its own work directory when the node maps accounts to users.
    /// The shell answers with `onProcessStarted` or `onProcessFailed`.
    case start(AssignmentID, command: String, args: [String], environment: [String: String], outputPath: String, keepOnLeaseLoss: Bool,
               runAs: RunIdentity? = nil)
    /// Signal a job's process group.
    case signal(AssignmentID, Int32)
    /// Append to the journal. The shell makes every journal record durable (one fsync per turn)
    /// before it performs a later `send` or `start` of the same turn.
    case journal(JournalRecord)
    /// Jobs may run until this time (agent monotonic ms); the shell writes it to the lease file
    /// the shims read, so they fence on their own when the agent is dead or frozen.
    case lease(untilMs: Int64, graceMs: Int64)
    /// Watch a reattached run (not the shell's child) until it ends.
    case watch(AssignmentID, pid: Int32)
    /// GET `url` within `timeoutMs`; the shell answers with `onProbeResult`.
    case probe(AssignmentID, ProbeKind, url: String, timeoutMs: Int64)
    /// Graceful stop finished (or ran out of time): the shell stops the loop.
    case exit
    case log(Logger.Level, String)
}

/// The node agent's logic as a value: registration, heartbeats with an assignment digest,
/// assignments (idempotent by id), job time limits and cancellation, and status updates resent
/// until the region acknowledges them. No sockets, processes, files or clocks in here: the shell
/// (`AgentService`) performs the directives and feeds back what happened.
public struct AgentInstance: Sendable {
    public struct Settings: Sendable {
        public var node: NodeID
        public var hostname: String
        public var heartbeatIntervalMs: Int64 = 1000
        public var statusRetryMs: Int64 = 1000
        public var killGraceMs: Int64 = 5000
        /// Lease and margin until the region's RegisterAck says (PROTOCOL.md, "Leases").
        public var leaseMs: Int64 = 10_000
        public var leaseMarginMs: Int64 = 2000
        /// A lapsed lease stops a job with SIGTERM this long before the deadline, SIGKILL at it.
        public var fenceGraceMs: Int64 = 2000
        /// How long a graceful stop waits for the region to acknowledge the final statuses.
        public var shutdownReportMs: Int64 = 5000
        /// Where job output files go (`<dir>/<assignment>.log`).
        public var jobsDirectory: String
        /// Variables every job starts with (PATH, HOME, LANG... of the agent, then the config's).
        public var baseEnvironment: [String: String]
        /// Ports handed to runs that ask for them (`Assignment.ports`: GRID_PORT, GRID_PORT_1, …).
        public var portRange: ClosedRange<Int> = 20000...20999
        /// The address runs serve on (GRID_HOST) and that their endpoint names: reachable from
        /// the region's gateway.
        public var advertiseHost = "127.0.0.1"
        /// Which user runs each account's jobs (`run_as`); empty = the agent's own.
        public var runAs = RunAsTable()
        /// A run's private work directory when it runs as a `run_as` user (its cwd, HOME and TMPDIR).
        public func workDirectory(_ id: AssignmentID) -> String { jobsDirectory + "/work/" + id.rawValue }
        public init(node: NodeID, hostname: String, jobsDirectory: String, baseEnvironment: [String: String]) {
            self.node = node
            self.hostname = hostname
            self.jobsDirectory = jobsDirectory
            self.baseEnvironment = baseEnvironment
        }
    }

    struct Running: Sendable {
        var assignment: Wire.Assignment
        var startedMs: Int64
        var visible: [String: String]
        var deviceModels: [String]
        var started: Bool
        var stopReason: EndReason?
        var termSentMs: Int64?
        var pid: Int32?
        var startTicks: UInt64?
        /// Passes its readiness probe (or has none): in the gateway's rotation.
        var ready = false
        var healthFailures = 0
        var readyFailures = 0
        var nextHealthMs: Int64 = 0
        var nextReadyMs: Int64 = 0
        var healthInFlight = false
        var readyInFlight = false
    }

    struct PendingStatus: Sendable {
        var update: Wire.StatusUpdate
        var sentMs: Int64
    }

    public let settings: Settings
    var devices: [DeviceInventory]
    public private(set) var registered = false
    /// The region that acknowledged the last registration (for resource names).
    public private(set) var region: RegionID?
    var lastRegisterMs: Int64 = .min
    /// Registers sent without an answer: the wait between them doubles (1 s to 30 s), plus a
    /// per-node offset, so a region coming back is not met by every agent at once.
    var registerAttempts = 0
    var lastHeartbeatMs: Int64 = .min
    var heartbeatIntervalMs: Int64
    var devicesDirty = true
    var heartbeatCount = 0
    var running: [AssignmentID: Running] = [:]
    /// Assignments already finished here, so a resent one is not run again (bounded).
    var finished: [AssignmentID: JobState] = [:]
    var finishedOrder: [AssignmentID] = []
    var pending: [String: PendingStatus] = [:]
    var pendingOrder: [String] = []
    var sendAssignmentList = false
    var lastSentAssignments: [String]? = nil
    /// Where the next port search starts (ports are handed out round the range, so a port a
    /// run just gave up is not handed out again at once).
    var portCursor = 0
    /// When the last acknowledged heartbeat (or register) was sent: the lease runs from there.
    public private(set) var renewedMs: Int64?
    /// Jobs may run until then; nil before any lease was granted or recovered.
    public private(set) var leaseDeadlineMs: Int64?
    var leaseMs: Int64
    var leaseMarginMs: Int64
    var leaseLapsedLogged = false
    /// Graceful stop in progress: no new work; exit once jobs ended and statuses were acknowledged.
    public private(set) var stopping = false
    var stopDeadlineMs: Int64 = .max
    var exitSent = false

    public init(settings: Settings, devices: [DeviceInventory]) {
        self.settings = settings
        self.devices = devices
        self.heartbeatIntervalMs = settings.heartbeatIntervalMs
        self.leaseMs = settings.leaseMs
        self.leaseMarginMs = settings.leaseMarginMs
        self.devices = markingForeign(devices, ownedPIDs: [])
    }

    public var runningAssignments: [AssignmentID] { running.keys.sorted() }
    public var heartbeatsSent: Int { heartbeatCount }
    public var currentDevices: [DeviceInventory] { devices }

    /// Runs whose final status the region has not acknowledged: still "held" in a register, so
    /// a region does not run again a job whose result is on its way.
    var reportedNotAcknowledged: [String] {
        pendingOrder.compactMap { key in
            guard let u = pending[key]?.update, let st = JobState(rawValue: u.state), st.isTerminal else { return nil }
            return u.assignmentID
        }
    }

    // MARK: recovery

    /// Rebuilds the agent from its journal and what the shell found of each journalled run.
    /// `leaseUntilMs` is the deadline left in the lease file (converted to this clock), so a
    /// restarted agent keeps fencing on the old lease until the region renews it.
    public mutating func recover(_ journal: JournalState, found: [AssignmentID: RecoveredProcess], leaseUntilMs: Int64?,
                                 now: Int64) -> [AgentDirective] {
        var out: [AgentDirective] = []
        if journal.unreadable > 0 {
            out.append(.log(.warning, "journal: \(journal.unreadable) unreadable line(s) skipped (a write torn by a crash)"))
        }
        leaseDeadlineMs = leaseUntilMs
        for (id, state) in journal.finished { remember(id, state) }
        for u in journal.pending {
            if pending[u.updateID] == nil { pendingOrder.append(u.updateID) }
            pending[u.updateID] = PendingStatus(update: u, sentMs: .min)
        }
        for job in journal.jobs {
            let m = job.assignment
            let id = AssignmentID(m.assignmentID)
            let units = Self.units(devices)
            let chosen = m.deviceIds.compactMap { units[$0] }
            let visible = Self.visibleDevices(chosen)
            var r = Running(assignment: m, startedMs: now, visible: visible, deviceModels: chosen.map(\.unitName), started: true,
                            stopReason: job.stopReason, pid: job.pid, startTicks: job.startTicks)
            // The time limit counts from the real start (same boot, same monotonic clock).
            if let at = job.startedAtMs, at <= now { r.startedMs = at }
            switch found[id] ?? .ended(ProcessOutcome(end: nil)) {
            case .alive(let pid, let ticks):
                r.pid = pid
                r.startTicks = ticks
                if r.stopReason != nil { r.termSentMs = now }
                running[id] = r
                out.append(.watch(id, pid: pid))
                out.append(.log(.info, "reattached to job \(m.jobID) assignment \(id) pid \(pid)"))
                if r.stopReason != nil { out.append(.signal(id, SIGTERM)) }
            case .ended(let outcome):
                running[id] = r
                out += onProcessExited(id, outcome, tail: "", now: now, whileDown: true)
            case .neverStarted:
                r.stopReason = .agentStopped
                running[id] = r
                out.append(.log(.notice, "job \(m.jobID) assignment \(id) was accepted but not started before the agent stopped; reported, not started"))
                out += onProcessExited(id, ProcessOutcome(end: nil), tail: "", now: now, whileDown: true)
            }
        }
        return out
    }

    var registerBackoffMs: Int64 {
        let base = max(1000, heartbeatIntervalMs)
        let spread = Int64(settings.node.rawValue.utf8.reduce(0) { ($0 &* 31 &+ Int($1)) & 0xFFFF } % 1000)
        return min(30_000, base << Int64(min(max(0, registerAttempts - 1), 5))) + (registerAttempts > 1 ? spread : 0)
    }
    public var unacknowledgedStatuses: Int { pending.count }

    // MARK: from the region

    public mutating func receive(_ message: Message, now: Int64) -> [AgentDirective] {
        switch message.body {
        case .registerAck(let m):
            var out: [AgentDirective] = []
            if !registered { out.append(.log(.info, "registered with region \(m.regionID) as \(settings.node)")) }
            registered = true
            if !m.regionID.isEmpty { region = RegionID(m.regionID) }
            registerAttempts = 0
            if m.heartbeatIntervalMs > 0 { heartbeatIntervalMs = Int64(m.heartbeatIntervalMs) }
            return out + renew(sentAt: m.echoSentMs, leaseMs: m.leaseMs, marginMs: m.leaseMarginMs, now: now)
        case .heartbeatAck(let m):
            if m.sendAssignments { sendAssignmentList = true }
            if !m.known && m.nodeID == settings.node.rawValue {
                registered = false
                lastRegisterMs = .min
                return [.log(.notice, "region does not know this node (region restarted or node declared lost); registering again")]
                    + onTick(now: now)
            }
            return renew(sentAt: m.echoSentMs, leaseMs: m.leaseMs, marginMs: m.leaseMarginMs, now: now)
        case .assignment(let m): return onAssignment(m, now: now)
        case .statusAck(let m):
            var out: [AgentDirective] = []
            if pending.removeValue(forKey: m.updateID) != nil {
                pendingOrder.removeAll { $0 == m.updateID }
                out.append(.journal(JournalRecord(kind: .acked, updateID: m.updateID)))
                if !m.applied { out.append(.log(.notice, "region did not apply status \(m.updateID): \(m.reason)")) }
            }
            return out + exitIfDone(now: now)
        case .cancel(let m):
            let id = AssignmentID(m.assignmentID)
            guard running[id] != nil else { return [] }
            return [.log(.info, "cancelling assignment \(id)")] + stop(id, .cancelled, now: now)
        case .errorReply(let e):
            return [.log(.warning, "region answered with an error: \(e.code): \(e.message)")]
        default:
            return [.log(.warning, "unexpected \(message.body.type) from the region; ignored")]
        }
    }

    /// The journal's content for this state, to compact it while running.
    public func journalSnapshot() -> JournalState {
        var s = JournalState()
        s.finished = finishedOrder.compactMap { id in finished[id].map { (id, $0) } }
        s.jobs = running.keys.sorted().compactMap { id in
            running[id].map { JournalState.Job(assignment: $0.assignment, pid: $0.pid, startTicks: $0.startTicks, stopReason: $0.stopReason,
                                               startedAtMs: $0.started ? $0.startedMs : nil) }
        }
        s.pending = pendingOrder.compactMap { pending[$0]?.update }
        return s
    }

    // MARK: lease

    /// An acknowledgement of a heartbeat or register sent at `sentAt` (this agent's clock,
    /// echoed back): the lease runs from the sending, never from the region's clock.
    mutating func renew(sentAt: Int64, leaseMs lease: UInt32, marginMs margin: UInt32, now: Int64) -> [AgentDirective] {
        if lease > 0 { leaseMs = Int64(lease) }
        if margin > 0 || lease > 0 { leaseMarginMs = Int64(margin) }
        guard sentAt > 0, sentAt <= now, sentAt > (renewedMs ?? .min) else { return [] }
        renewedMs = sentAt
        let deadline = sentAt + leaseMs - leaseMarginMs
        var out: [AgentDirective] = []
        if leaseLapsedLogged {
            leaseLapsedLogged = false
            out.append(.log(.notice, "lease renewed: the region answers again"))
        }
        if deadline != leaseDeadlineMs {
            leaseDeadlineMs = deadline
            out.append(.lease(untilMs: deadline, graceMs: fenceGraceMs))
        }
        return out
    }

    /// Stops the runs that may not outlive the lease: SIGTERM from deadline − grace, SIGKILL
    /// at the deadline (the shims do the same on their own).
    mutating func fence(now: Int64) -> [AgentDirective] {
        guard let deadline = leaseDeadlineMs, now >= deadline - fenceGraceMs, !running.isEmpty else { return [] }
        var out: [AgentDirective] = []
        for id in running.keys.sorted() {
            guard let r = running[id], r.started, !r.assignment.keepOnLeaseLoss else { continue }
            if r.stopReason == nil {
                if !leaseLapsedLogged {
                    leaseLapsedLogged = true
                    out.append(.log(.warning, "lease lapses: no word from the region for \((now - (renewedMs ?? now)) / 1000)s; stopping its jobs"))
                }
                out += stop(id, .fenced, now: now)
            } else if now >= deadline, r.stopReason == .fenced {
                out.append(.signal(id, SIGKILL))
            }
        }
        return out
    }

    /// The configured grace, but never more than half of lease − margin, so a short lease from
    /// the region does not stop jobs between two heartbeats.
    var fenceGraceMs: Int64 { min(settings.fenceGraceMs, max(0, (leaseMs - leaseMarginMs) / 2)) }

    // MARK: graceful stop

    /// SIGTERM or `grid-agent drain`: refuse new work, stop every job (reported as stopped by
    /// the agent, so the region runs it again per its retry policy), wait for the region to
    /// acknowledge, then exit.
    public mutating func onShutdown(now: Int64) -> [AgentDirective] {
        guard !stopping else { return [] }
        stopping = true
        stopDeadlineMs = now + settings.killGraceMs + settings.shutdownReportMs
        var out: [AgentDirective] = [.log(.notice, "stopping: \(running.count) job(s) to stop and report")]
        // Tell the region first (a heartbeat that says draining), so the jobs it takes back are
        // not placed here again; the connection keeps the order.
        if registered {
            lastHeartbeatMs = .min
            out += onTick(now: now)
        }
        for id in running.keys.sorted() { out += stop(id, .agentStopped, now: now) }
        return out + exitIfDone(now: now)
    }

    mutating func exitIfDone(now: Int64) -> [AgentDirective] {
        guard stopping, !exitSent else { return [] }
        if running.isEmpty && pending.isEmpty {
            exitSent = true
            return [.log(.info, "every job stopped and reported"), .exit]
        }
        if now >= stopDeadlineMs && (running.isEmpty || now >= stopDeadlineMs + settings.killGraceMs) {
            exitSent = true
            if !running.isEmpty {
                return [.log(.error, "\(running.count) job(s) did not end after SIGKILL (uninterruptible?); exiting anyway, the journal keeps them"), .exit]
            }
            return [.log(.warning, "\(pending.count) status update(s) not acknowledged by the region; kept in the journal for the next start"), .exit]
        }
        return []
    }

    // MARK: time

    public mutating func onTick(now: Int64) -> [AgentDirective] {
        var out: [AgentDirective] = []
        if !registered {
            if lastRegisterMs == .min || now - lastRegisterMs >= registerBackoffMs {
                lastRegisterMs = now
                registerAttempts += 1
                var r = Wire.Register()
                r.nodeID = settings.node.rawValue
                r.hostname = settings.hostname
                r.devices = devices.map(Wire.Device.init)
                r.agentVersion = AgentVersion.string
                r.heldAssignments = runningAssignments.map(\.rawValue) + reportedNotAcknowledged
                r.sentMs = now
                r.accounts = settings.runAs.dedicatedTo
                out.append(.send(.register(r)))
                devicesDirty = false
                lastSentAssignments = nil
            }
        } else if lastHeartbeatMs == .min || now - lastHeartbeatMs >= heartbeatIntervalMs {
            lastHeartbeatMs = now
            heartbeatCount += 1
            var h = Wire.Heartbeat()
            h.nodeID = settings.node.rawValue
            h.sentMs = now
            h.draining = stopping
            // Devices ride along when they changed and every 30th beat as a resync.
            if devicesDirty || heartbeatCount % 30 == 0 {
                h.devices = devices.map(Wire.Device.init)
                devicesDirty = false
            }
            // A digest on every beat; the list itself only when it changed or the region asked.
            let held = runningAssignments.map(\.rawValue)
            h.assignmentDigest = AssignmentDigest.of(held)
            h.assignmentCount = UInt32(held.count)
            if sendAssignmentList || held != lastSentAssignments {
                h.runningAssignments = held
                lastSentAssignments = held
                sendAssignmentList = false
            }
            out.append(.send(.heartbeat(h)))
        }
        // A status not acknowledged within the retry interval is sent again only once the
        // region has answered a heartbeat (or register) sent after it: it reads one connection
        // in order, so until then the status is still on its way (a region behind under load)
        // or the region is not answering at all, and either way a resend would only be one
        // more frame for it to read — thousands of agents resending make a busy region busier.
        // Once it has read past the status without answering it, the status was lost.
        let reached = renewedMs ?? .min
        for key in pendingOrder {
            guard let p = pending[key], p.sentMs == .min || (now - p.sentMs >= settings.statusRetryMs && p.sentMs <= reached) else { continue }
            pending[key]?.sentMs = now
            out.append(.send(.statusUpdate(p.update)))
        }
        for id in running.keys.sorted() {
            guard let r = running[id], r.started else { continue }
            let limit = Int64(r.assignment.timeoutSeconds) * 1000
            if r.stopReason == nil, limit > 0, now - r.startedMs > limit {
                out.append(.log(.warning, "assignment \(id) exceeded its time limit of \(r.assignment.timeoutSeconds)s"))
                out += stop(id, .timedOut, now: now)
            } else if let sent = r.termSentMs, now - sent > (r.stopReason == .fenced ? fenceGraceMs : settings.killGraceMs) {
                out.append(.signal(id, SIGKILL))
            }
        }
        for id in running.keys.sorted() { out += probes(id, now: now) }
        out += fence(now: now)
        out += exitIfDone(now: now)
        return out
    }

    // MARK: replicas: ports and probes

    /// `n` ports of the range no run holds, searched from the cursor round the range.
    mutating func allocatePorts(_ n: Int) -> [Int]? {
        let range = settings.portRange
        let held = Set(running.values.flatMap { Self.ports($0.assignment) })
        guard range.count - held.count >= n else { return nil }
        var out: [Int] = []
        var i = 0
        while out.count < n && i < range.count {
            let p = range.lowerBound + (portCursor + i) % range.count
            if !held.contains(p) { out.append(p) }
            i += 1
        }
        guard out.count == n else { return nil }
        portCursor = (portCursor + i) % range.count
        return out
    }

    /// The ports a run was given (from its environment, where the journal keeps them).
    static func ports(_ m: Wire.Assignment) -> [Int] {
        guard m.ports > 0 else { return [] }
        return (0..<Int(m.ports)).compactMap { i in m.env[i == 0 ? "GRID_PORT" : "GRID_PORT_\(i)"].flatMap { Int($0) } }
    }

    /// host:port the run serves on; nil when it asked for no port.
    func endpoint(_ m: Wire.Assignment) -> String? {
        guard let port = Self.ports(m).first else { return nil }
        let host = settings.advertiseHost
        return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// Probes due for one run (one of each kind in flight at a time).
    mutating func probes(_ id: AssignmentID, now: Int64) -> [AgentDirective] {
        guard var r = running[id], r.started, r.stopReason == nil, let base = endpoint(r.assignment) else { return [] }
        var out: [AgentDirective] = []
        if r.assignment.hasHealth, !r.healthInFlight, now >= r.nextHealthMs {
            let p = r.assignment.health
            r.healthInFlight = true
            r.nextHealthMs = now + Int64(max(100, p.intervalMs))
            out.append(.probe(id, .health, url: "http://\(base)\(p.path)", timeoutMs: Int64(max(10, p.timeoutMs))))
        }
        if r.assignment.hasReadiness, !r.readyInFlight, now >= r.nextReadyMs {
            let p = r.assignment.readiness
            r.readyInFlight = true
            r.nextReadyMs = now + Int64(max(100, p.intervalMs))
            out.append(.probe(id, .readiness, url: "http://\(base)\(p.path)", timeoutMs: Int64(max(10, p.timeoutMs))))
        }
        running[id] = r
        return out
    }

    /// A probe's answer. Health: `failure_threshold` failures in a row stop the run (it ends
    /// `failed`, reason `unhealthy`; the service controller replaces it). Readiness: a pass puts
    /// the run in rotation, `failure_threshold` failures in a row take it out; each change is
    /// reported as a running status of its own.
    public mutating func onProbeResult(_ id: AssignmentID, _ kind: ProbeKind, ok: Bool, detail: String, now: Int64) -> [AgentDirective] {
        guard var r = running[id], r.started, r.stopReason == nil else {
            if kind == .health { running[id]?.healthInFlight = false } else { running[id]?.readyInFlight = false }
            return []
        }
        switch kind {
        case .health:
            r.healthInFlight = false
            r.healthFailures = ok ? 0 : r.healthFailures + 1
            running[id] = r
            if !ok, r.healthFailures >= max(1, Int(r.assignment.health.failureThreshold)) {
                return [.log(.warning, "assignment \(id): health probe \(r.assignment.health.path) failed \(r.healthFailures) time(s) in a row (\(detail)); stopping it")]
                    + stop(id, .unhealthy, now: now)
            }
            return []
        case .readiness:
            r.readyInFlight = false
            r.readyFailures = ok ? 0 : r.readyFailures + 1
            let ready = ok ? true : (r.readyFailures >= max(1, Int(r.assignment.readiness.failureThreshold)) ? false : r.ready)
            guard ready != r.ready else {
                running[id] = r
                return []
            }
            r.ready = ready
            running[id] = r
            return [.log(.info, "assignment \(id) is \(ready ? "ready" : "not ready")\(ready ? "" : ": " + detail)")]
                + status(for: r.assignment, state: .running, visible: r.visible, models: r.deviceModels, ready: ready,
                         change: now, now: now)
        }
    }

    /// Counts, per device, the compute processes the vendor tool lists that are not this agent's
    /// jobs (`ownedPIDs`: the processes of its jobs' process groups, from the shell). A device
    /// one of our runs holds counts none: in a container the tool may show host pids we cannot
    /// match, and the device is busy anyway.
    func markingForeign(_ list: [DeviceInventory], ownedPIDs: Set<Int32>) -> [DeviceInventory] {
        let held = Set(running.values.flatMap(\.assignment.deviceIds))
        return list.map { d in
            var d = d
            guard let procs = d.processes else {
                d.foreignProcesses = nil
                return d
            }
            let foreign = held.contains(d.id) ? 0 : procs.filter { $0.kind == .compute && !ownedPIDs.contains(Int32(clamping: $0.pid)) }.count
            d.foreignProcesses = foreign
            return d
        }
    }

    /// "python (pid 5762), ..." for the compute processes on a device.
    static func holders(_ d: DeviceInventory) -> String {
        (d.processes ?? []).filter { $0.kind == .compute }.map { "\($0.name) (pid \($0.pid))" }.joined(separator: ", ")
    }

    /// A fresh probe. `ownedPIDs`: every process of this agent's jobs at the time.
    public mutating func onInventory(_ report: InventoryReport, ownedPIDs: Set<Int32> = [], now: Int64) -> [AgentDirective] {
        var out: [AgentDirective] = report.problems.map { .log(.warning, "probe: \($0)") }
        let fresh = markingForeign(report.devices, ownedPIDs: ownedPIDs)
        guard fresh != devices else { return out }
        let before = Dictionary(devices.map { ($0.id, $0.health.state) }, uniquingKeysWith: { a, _ in a })
        let wasForeign = Dictionary(devices.map { ($0.id, $0.foreignProcesses ?? 0) }, uniquingKeysWith: { a, _ in a })
        for d in fresh where (d.foreignProcesses ?? 0) != (wasForeign[d.id] ?? 0) {
            out.append((d.foreignProcesses ?? 0) > 0
                ? .log(.warning, "device \(d.id) is held by a process this agent does not run: \(Self.holders(d)); reported busy")
                : .log(.notice, "device \(d.id) is free of foreign processes again"))
        }
        let healthChanged = fresh.contains { before[$0.id] != $0.health.state || (wasForeign[$0.id] ?? 0 > 0) != (($0.foreignProcesses ?? 0) > 0) }
            || fresh.count != devices.count
        devices = fresh
        devicesDirty = true
        // Health changes are sent at once rather than on the next beat.
        if healthChanged && registered {
            lastHeartbeatMs = .min
            out += onTick(now: now)
        }
        return out
    }

    // MARK: assignments

    /// The answer to an assignment: taken, or refused with the reason (the region places the
    /// job again, never counting it as an attempt).
    public static func ack(_ m: Wire.Assignment, _ accepted: Bool, _ reason: String = "") -> AgentDirective {
        var a = Wire.AssignmentAck()
        a.assignmentID = m.assignmentID
        a.epoch = m.epoch
        a.nodeID = m.nodeID
        a.accepted = accepted
        a.reason = reason
        return .send(.assignmentAck(a))
    }

    public mutating func onAssignment(_ m: Wire.Assignment, now: Int64) -> [AgentDirective] {
        let id = AssignmentID(m.assignmentID)
        func ack(_ accepted: Bool, _ reason: String = "") -> AgentDirective { Self.ack(m, accepted, reason) }
        if running[id] != nil || finished[id] != nil { return [ack(true)] }  // a resend: already have it
        guard m.nodeID == settings.node.rawValue else { return [ack(false, "this agent is node \(settings.node), not \(m.nodeID)")] }
        guard !stopping else { return [ack(false, "agent on \(settings.node) is stopping")] }
        if !settings.runAs.isEmpty, settings.runAs.identity(for: m.account) == nil {
            let account = m.account.isEmpty ? "default" : m.account
            return [ack(false, "account '\(account)' has no run_as user on node \(settings.node) (agent config run_as); its jobs do not run here")]
        }
        if m.gangSize > 1 || m.gangRank > 0 || !m.gangHosts.isEmpty {
            // A gang rank: what the job is told of its gang must be whole and small.
            guard m.gangSize > 1, m.gangSize <= UInt32(JobSpec.maxNodes), m.gangRank < m.gangSize, m.gangHosts.count == Int(m.gangSize),
                  m.gangHosts.allSatisfy({ !$0.isEmpty && $0.utf8.count <= 255 && !$0.contains(",") && !$0.contains("\0") }) else {
                return [ack(false, "gang rank \(m.gangRank) of \(m.gangSize) with \(m.gangHosts.count) host(s): want 2…\(JobSpec.maxNodes) ranks, rank < size, one host name (1…255 bytes, no comma) per rank")]
            }
        }
        let byID = Self.units(devices)
        var chosen: [DeviceInventory] = []
        for d in m.deviceIds {
            guard let device = byID[d] else { return [ack(false, "device \(d) is not on node \(settings.node)")] }
            if let other = running.first(where: { $0.value.assignment.deviceIds.contains(d) }) {
                return [ack(false, "device \(d) is busy with assignment \(other.key)")]
            }
            if (device.foreignProcesses ?? 0) > 0 {
                return [ack(false, "device \(d) is held by a process this agent does not run: \(Self.holders(device))")]
            }
            if !device.partitions.isEmpty && device.slice == nil {
                return [ack(false, "device \(d) is partitioned (MIG): only its slices can be assigned")]
            }
            chosen.append(device)
        }
        var m = m
        if m.ports > 0 {
            guard let ports = allocatePorts(Int(m.ports)) else {
                return [ack(false, "no \(m.ports) free port(s) left in the agent's port range \(settings.portRange.lowerBound)-\(settings.portRange.upperBound)")]
            }
            // Kept in the run's environment, so the journal keeps them across agent restarts.
            for (i, p) in ports.enumerated() { m.env[i == 0 ? "GRID_PORT" : "GRID_PORT_\(i)"] = String(p) }
        }
        let visible = Self.visibleDevices(chosen)
        running[id] = Running(assignment: m, startedMs: now, visible: visible, deviceModels: chosen.map(\.unitName), started: false)
        // Journalled before the ack leaves: an agent that crashes after acknowledging finds it.
        return [.journal(.accepted(m)), ack(true)] + startDirectives(id, m, visible: visible)
    }

    func startDirectives(_ id: AssignmentID, _ m: Wire.Assignment, visible: [String: String]) -> [AgentDirective] {
        var env = settings.baseEnvironment
        env.merge(m.env) { _, new in new }
        env.merge(visible) { _, new in new }
        env["GRID_JOB_ID"] = m.jobID
        env["GRID_ASSIGNMENT_ID"] = m.assignmentID
        env["GRID_EPOCH"] = String(m.epoch)
        env["GRID_ATTEMPT"] = String(max(1, m.attempt))
        env["GRID_NODE_ID"] = settings.node.rawValue
        env["GRID_DEVICE_IDS"] = m.deviceIds.joined(separator: ",")
        if let region {
            // The names PROTOCOL.md ("Resource names") gives the node and the units the job holds.
            env["GRID_RESOURCE"] = ResourceName(region: region, node: settings.node).description
            env["GRID_DEVICE_RESOURCES"] = m.deviceIds.map { unit in
                let parent = devices.first { d in d.partitions.contains { $0.id == unit } }
                return ResourceName(region: region, node: settings.node, device: parent?.id ?? unit,
                                    partition: parent == nil ? nil : unit).description
            }.joined(separator: ",")
        }
        if !m.precision.isEmpty { env["GRID_PRECISION"] = m.precision }
        if m.gangSize > 1 {
            // A gang's rank (PROTOCOL.md, "Gangs"): e.g. torchrun --nnodes=$GRID_GANG_SIZE
            // --node_rank=$GRID_GANG_RANK --master_addr=$GRID_GANG_LEADER.
            env["GRID_GANG_RANK"] = String(m.gangRank)
            env["GRID_GANG_SIZE"] = String(m.gangSize)
            env["GRID_GANG_HOSTS"] = m.gangHosts.joined(separator: ",")
            env["GRID_GANG_LEADER"] = m.gangHosts.first ?? ""
        }
        if m.ports > 0 { env["GRID_HOST"] = settings.advertiseHost }
        let output = settings.jobsDirectory + "/" + m.assignmentID + ".log"
        let runAs = settings.runAs.isEmpty ? nil : settings.runAs.identity(for: m.account)
        if let runAs {
            // Nothing of the agent's home or temp: the run's own directory, removed when it ends.
            let dir = settings.workDirectory(id)
            env["HOME"] = dir
            env["TMPDIR"] = dir
            env["GRID_WORK_DIR"] = dir
            env["USER"] = runAs.name
            env["LOGNAME"] = runAs.name
        }
        return [.start(id, command: m.command, args: m.args, environment: env, outputPath: output, keepOnLeaseLoss: m.keepOnLeaseLoss,
                       runAs: runAs)]
    }

    /// The shell started the process (`startTicks`: its start time, for the journal).
    public mutating func onProcessStarted(_ id: AssignmentID, pid: Int32, startTicks: UInt64? = nil, now: Int64) -> [AgentDirective] {
        guard var r = running[id] else { return [] }
        r.started = true
        r.startedMs = now
        r.pid = pid
        r.startTicks = startTicks
        // A server with no readiness probe is ready once started; one with a probe once it passes.
        r.ready = r.assignment.ports > 0 && !r.assignment.hasReadiness
        if r.assignment.hasHealth { r.nextHealthMs = now + Int64(r.assignment.health.initialDelayMs) }
        if r.assignment.hasReadiness { r.nextReadyMs = now + Int64(r.assignment.readiness.initialDelayMs) }
        running[id] = r
        let vis = r.visible.map { "\($0.key)=\($0.value)" }.sorted().joined(separator: " ")
        var out: [AgentDirective] = [
            .journal(JournalRecord(kind: .started, assignment: id.rawValue, pid: pid, startTicks: startTicks, atMs: now)),
            .log(.info, "started job \(r.assignment.jobID) assignment \(id) pid \(pid) \(vis)"),
        ]
        out += status(for: r.assignment, state: .running, visible: r.visible, models: r.deviceModels, ready: r.ready, now: now)
        // Stopped while it was being started (drain, lease lapse).
        if stopping { out += stop(id, .agentStopped, now: now) }
        return out
    }

    /// The shell could not start the process.
    public mutating func onProcessFailed(_ id: AssignmentID, reason: String, now: Int64) -> [AgentDirective] {
        guard let r = running.removeValue(forKey: id) else { return [] }
        remember(id, .failed)
        return [.log(.error, "job \(r.assignment.jobID) could not start: \(reason)"),
                .journal(JournalRecord(kind: .ended, assignment: id.rawValue, state: .failed))]
            + status(for: r.assignment, state: .failed, message: reason, reason: .startFailed,
                     visible: r.visible, models: r.deviceModels, now: now)
            + exitIfDone(now: now)
    }

    static func describe(_ reason: EndReason, _ m: Wire.Assignment) -> String {
        switch reason {
        case .cancelled: return "cancelled"
        case .timedOut: return "timed out after \(m.timeoutSeconds)s"
        case .fenced: return "stopped: the agent's lease lapsed (no word from the region)"
        case .unhealthy:
            let h = m.health
            return "stopped: health probe \(h.path) failed \(h.failureThreshold) time(s) in a row"
        case .agentStopped: return "stopped: the agent was stopped"
        default: return reason.rawValue
        }
    }

    /// The job's run ended; `tail` is the end of its output file. `whileDown`: found ended when
    /// the agent started.
    public mutating func onProcessExited(_ id: AssignmentID, _ outcome: ProcessOutcome, tail: String, now: Int64,
                                         whileDown: Bool = false) -> [AgentDirective] {
        guard let r = running.removeValue(forKey: id) else { return [] }
        var state: JobState
        var message: String
        var reason: EndReason = .exited
        switch outcome.end {
        case .exited(let code)?: message = "exited with status \(code)"
        case .signaled(let sig)?: message = "killed by signal \(sig)"
        case nil: message = "exit status unknown"
        }
        if outcome.fenced && r.stopReason == nil && !r.assignment.keepOnLeaseLoss {
            reason = .fenced
            message = "\(Self.describe(.fenced, r.assignment)); \(message)"
            state = .failed
        } else if let stopped = r.stopReason {
            reason = stopped
            message = "\(Self.describe(stopped, r.assignment)); \(message)"
            state = stopped == .cancelled ? .cancelled : .failed
        } else if let end = outcome.end {
            state = end.succeeded ? .succeeded : .failed
        } else {
            reason = .endedWhileAgentDown
            message = "ended while the agent was down; exit status unknown"
            state = .failed
        }
        if whileDown && outcome.end != nil { message += " (ended while the agent was down)" }
        remember(id, state)
        return [.log(.info, "job ended: assignment \(id) \(state.rawValue): \(message)"),
                .journal(JournalRecord(kind: .ended, assignment: id.rawValue, state: state))]
            + status(for: r.assignment, state: state, exit: outcome.end?.exitCode, message: message, tail: tail, reason: reason,
                     visible: r.visible, models: r.deviceModels, now: now)
            + exitIfDone(now: now)
    }

    mutating func stop(_ id: AssignmentID, _ reason: EndReason, now: Int64) -> [AgentDirective] {
        guard var r = running[id], r.stopReason == nil else { return [] }
        r.stopReason = reason
        r.termSentMs = now
        running[id] = r
        return [.journal(JournalRecord(kind: .stopping, assignment: id.rawValue, reason: reason)), .signal(id, SIGTERM)]
    }

    mutating func remember(_ id: AssignmentID, _ state: JobState) {
        finished[id] = state
        finishedOrder.append(id)
        if finishedOrder.count > 10_000 {
            finished[finishedOrder.removeFirst()] = nil
        }
    }

    mutating func status(for m: Wire.Assignment, state: JobState, exit: Int32? = nil, message: String = "", tail: String = "",
                         reason: EndReason? = nil, visible: [String: String], models: [String], ready: Bool = false,
                         change: Int64 = 0, now: Int64) -> [AgentDirective] {
        var u = Wire.StatusUpdate()
        u.jobID = m.jobID
        u.assignmentID = m.assignmentID
        u.epoch = m.epoch
        u.nodeID = settings.node.rawValue
        u.state = state.rawValue
        if let exit {
            u.exitCode = exit
            u.hasExitCode_p = true
        }
        u.message = message
        u.outputTail = tail
        u.visibleDevices = visible
        u.deviceIds = m.deviceIds
        u.deviceModels = models
        u.endReason = Wire.EndReason(reason)
        u.endpoint = endpoint(m) ?? ""
        u.ready = state == .running && ready
        u.updateID = "\(m.assignmentID):\(state.rawValue)" + (change > 0 ? ":\(change)" : "")
        if pending[u.updateID] == nil { pendingOrder.append(u.updateID) }
        pending[u.updateID] = PendingStatus(update: u, sentMs: now)
        return [.journal(.status(u)), .send(.statusUpdate(u))]
    }

    /// Devices and their slices by id (a partitioned device is there too, to be refused by name).
    public static func units(_ devices: [DeviceInventory]) -> [String: DeviceInventory] {
        Dictionary((devices + devices.flatMap(\.slices)).map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
    }

    /// The variables that pin a process to its devices, per vendor runtime: the runtime
    /// indexes (a slice: its MIG id), comma-separated, in the order assigned.
    public static func visibleDevices(_ devices: [DeviceInventory]) -> [String: String] {
        var byVendor: [AcceleratorVendor: [String]] = [:]
        var order: [AcceleratorVendor] = []
        for d in devices {
            if byVendor[d.vendor] == nil { order.append(d.vendor) }
            if let p = d.slice {
                byVendor[d.vendor, default: []].append(p.visibleID)
            } else {
                byVendor[d.vendor, default: []].append(String(d.index))
            }
        }
        var env: [String: String] = [:]
        for vendor in order {
            let list = byVendor[vendor, default: []].joined(separator: ",")
            for variable in vendor.visibleDevicesVariables { env[variable] = list }
        }
        return env
    }
}

public enum AgentVersion {
    public static let string = "0.2.0"
}
