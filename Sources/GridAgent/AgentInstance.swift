import Foundation
import GridCore
import GridProtocol
import Logging

/// What the agent learned about its devices in one probe.
public struct InventoryReport: Sendable {
    public var devices: [DeviceInventory]
    /// Problems met while probing (tool timeouts, unreadable files...), for logs.
    public var problems: [String]
    public init(devices: [DeviceInventory], problems: [String] = []) {
        self.devices = devices
        self.problems = problems
    }
}

/// Where the agent's inventory comes from: the real probe or captured outputs.
public protocol InventorySource: Sendable {
    func collect() async -> InventoryReport
}

/// Things that happen off the loop thread and are handed to it.
public enum AgentEvent: Sendable {
    case inventory(InventoryReport)
    case exited(AssignmentID, ProcessEnd)
}

/// What the agent instance asks its shell to do.
public enum AgentDirective: Sendable, Equatable {
    /// Send a message to the region.
    case send(Body)
    /// Start a job's process in its own process group, output to `outputPath`. The shell answers
    /// with `onProcessStarted` or `onProcessFailed`.
    case start(AssignmentID, command: String, args: [String], environment: [String: String], outputPath: String)
    /// Signal a job's process group.
    case signal(AssignmentID, Int32)
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
        /// Where job output files go (`<dir>/<assignment>.log`).
        public var jobsDirectory: String
        /// Variables every job starts with (PATH, HOME, LANG... of the agent, then the config's).
        public var baseEnvironment: [String: String]
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
        var stopReason: String?
        var termSentMs: Int64?
    }

    struct PendingStatus: Sendable {
        var update: Wire.StatusUpdate
        var sentMs: Int64
    }

    public let settings: Settings
    var devices: [DeviceInventory]
    public private(set) var registered = false
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

    public init(settings: Settings, devices: [DeviceInventory]) {
        self.settings = settings
        self.devices = devices
        self.heartbeatIntervalMs = settings.heartbeatIntervalMs
    }

    public var runningAssignments: [AssignmentID] { running.keys.sorted() }

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
            registerAttempts = 0
            if m.heartbeatIntervalMs > 0 { heartbeatIntervalMs = Int64(m.heartbeatIntervalMs) }
            return out
        case .heartbeatAck(let m):
            if m.sendAssignments { sendAssignmentList = true }
            if !m.known && m.nodeID == settings.node.rawValue {
                registered = false
                lastRegisterMs = .min
                return [.log(.notice, "region does not know this node (region restarted or node declared lost); registering again")]
                    + onTick(now: now)
            }
            return []
        case .assignment(let m): return onAssignment(m, now: now)
        case .statusAck(let m):
            var out: [AgentDirective] = []
            if pending.removeValue(forKey: m.updateID) != nil {
                pendingOrder.removeAll { $0 == m.updateID }
                if !m.applied { out.append(.log(.notice, "region did not apply status \(m.updateID): \(m.reason)")) }
            }
            return out
        case .cancel(let m):
            let id = AssignmentID(m.assignmentID)
            guard running[id] != nil else { return [] }
            return [.log(.info, "cancelling assignment \(id)")] + stop(id, reason: "cancelled", now: now)
        case .errorReply(let e):
            return [.log(.warning, "region answered with an error: \(e.code): \(e.message)")]
        default:
            return [.log(.warning, "unexpected \(message.body.type) from the region; ignored")]
        }
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
                r.heldAssignments = runningAssignments.map(\.rawValue)
                out.append(.send(.register(r)))
                devicesDirty = false
                lastSentAssignments = nil
            }
        } else if lastHeartbeatMs == .min || now - lastHeartbeatMs >= heartbeatIntervalMs {
            lastHeartbeatMs = now
            heartbeatCount += 1
            var h = Wire.Heartbeat()
            h.nodeID = settings.node.rawValue
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
        for key in pendingOrder {
            guard let p = pending[key], now - p.sentMs >= settings.statusRetryMs else { continue }
            pending[key]?.sentMs = now
            out.append(.send(.statusUpdate(p.update)))
        }
        for id in running.keys.sorted() {
            guard let r = running[id], r.started else { continue }
            let limit = Int64(r.assignment.timeoutSeconds) * 1000
            if r.stopReason == nil, limit > 0, now - r.startedMs > limit {
                out.append(.log(.warning, "assignment \(id) exceeded its time limit of \(r.assignment.timeoutSeconds)s"))
                out += stop(id, reason: "timed out after \(r.assignment.timeoutSeconds)s", now: now)
            } else if let sent = r.termSentMs, now - sent > settings.killGraceMs {
                out.append(.signal(id, SIGKILL))
            }
        }
        return out
    }

    public mutating func onInventory(_ report: InventoryReport, now: Int64) -> [AgentDirective] {
        var out: [AgentDirective] = report.problems.map { .log(.warning, "probe: \($0)") }
        guard report.devices != devices else { return out }
        let before = Dictionary(devices.map { ($0.id, $0.health.state) }, uniquingKeysWith: { a, _ in a })
        let healthChanged = report.devices.contains { before[$0.id] != $0.health.state } || report.devices.count != devices.count
        devices = report.devices
        devicesDirty = true
        // Health changes are sent at once rather than on the next beat.
        if healthChanged && registered {
            lastHeartbeatMs = .min
            out += onTick(now: now)
        }
        return out
    }

    // MARK: assignments

    public mutating func onAssignment(_ m: Wire.Assignment, now: Int64) -> [AgentDirective] {
        let id = AssignmentID(m.assignmentID)
        func ack(_ accepted: Bool, _ reason: String = "") -> AgentDirective {
            var a = Wire.AssignmentAck()
            a.assignmentID = m.assignmentID
            a.epoch = m.epoch
            a.nodeID = m.nodeID
            a.accepted = accepted
            a.reason = reason
            return .send(.assignmentAck(a))
        }
        if running[id] != nil || finished[id] != nil { return [ack(true)] }  // a resend: already have it
        guard m.nodeID == settings.node.rawValue else { return [ack(false, "this agent is node \(settings.node), not \(m.nodeID)")] }
        let byID = Dictionary(devices.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        var chosen: [DeviceInventory] = []
        for d in m.deviceIds {
            guard let device = byID[d] else { return [ack(false, "device \(d) is not on node \(settings.node)")] }
            if let other = running.first(where: { $0.value.assignment.deviceIds.contains(d) }) {
                return [ack(false, "device \(d) is busy with assignment \(other.key)")]
            }
            chosen.append(device)
        }
        let visible = Self.visibleDevices(chosen)
        var env = settings.baseEnvironment
        env.merge(m.env) { _, new in new }
        env.merge(visible) { _, new in new }
        env["GRID_JOB_ID"] = m.jobID
        env["GRID_ASSIGNMENT_ID"] = m.assignmentID
        env["GRID_EPOCH"] = String(m.epoch)
        env["GRID_NODE_ID"] = settings.node.rawValue
        env["GRID_DEVICE_IDS"] = m.deviceIds.joined(separator: ",")
        let output = settings.jobsDirectory + "/" + m.assignmentID + ".log"
        running[id] = Running(assignment: m, startedMs: now, visible: visible, deviceModels: chosen.map(\.model), started: false)
        return [ack(true), .start(id, command: m.command, args: m.args, environment: env, outputPath: output)]
    }

    /// The shell started the process.
    public mutating func onProcessStarted(_ id: AssignmentID, pid: Int32, now: Int64) -> [AgentDirective] {
        guard var r = running[id] else { return [] }
        r.started = true
        r.startedMs = now
        running[id] = r
        let vis = r.visible.map { "\($0.key)=\($0.value)" }.sorted().joined(separator: " ")
        return [.log(.info, "started job \(r.assignment.jobID) assignment \(id) pid \(pid) \(vis)")]
            + status(for: r.assignment, state: .running, visible: r.visible, models: r.deviceModels, now: now)
    }

    /// The shell could not start the process.
    public mutating func onProcessFailed(_ id: AssignmentID, reason: String, now: Int64) -> [AgentDirective] {
        guard let r = running.removeValue(forKey: id) else { return [] }
        remember(id, .failed)
        return [.log(.error, "job \(r.assignment.jobID) could not start: \(reason)")]
            + status(for: r.assignment, state: .failed, message: reason, visible: r.visible, models: r.deviceModels, now: now)
    }

    /// The job's process ended; `tail` is the end of its output file.
    public mutating func onProcessExited(_ id: AssignmentID, _ end: ProcessEnd, tail: String, now: Int64) -> [AgentDirective] {
        guard let r = running.removeValue(forKey: id) else { return [] }
        let state: JobState
        var message: String
        switch end {
        case .exited(let code): message = "exited with status \(code)"
        case .signaled(let sig): message = "killed by signal \(sig)"
        }
        if let reason = r.stopReason {
            state = reason == "cancelled" ? .cancelled : .failed
            message = "\(reason); \(message)"
        } else {
            state = end.succeeded ? .succeeded : .failed
        }
        remember(id, state)
        return [.log(.info, "job ended: assignment \(id) \(state.rawValue): \(message)")]
            + status(for: r.assignment, state: state, exit: end.exitCode, message: message, tail: tail,
                     visible: r.visible, models: r.deviceModels, now: now)
    }

    mutating func stop(_ id: AssignmentID, reason: String, now: Int64) -> [AgentDirective] {
        guard var r = running[id], r.stopReason == nil else { return [] }
        r.stopReason = reason
        r.termSentMs = now
        running[id] = r
        return [.signal(id, SIGTERM)]
    }

    mutating func remember(_ id: AssignmentID, _ state: JobState) {
        finished[id] = state
        finishedOrder.append(id)
        if finishedOrder.count > 10_000 {
            finished[finishedOrder.removeFirst()] = nil
        }
    }

    mutating func status(for m: Wire.Assignment, state: JobState, exit: Int32? = nil, message: String = "", tail: String = "",
                         visible: [String: String], models: [String], now: Int64) -> [AgentDirective] {
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
        u.updateID = "\(m.assignmentID):\(state.rawValue)"
        if pending[u.updateID] == nil { pendingOrder.append(u.updateID) }
        pending[u.updateID] = PendingStatus(update: u, sentMs: now)
        return [.send(.statusUpdate(u))]
    }

    /// The variables that pin a process to its devices, per vendor runtime: the runtime
    /// indexes, comma-separated, in the order assigned.
    public static func visibleDevices(_ devices: [DeviceInventory]) -> [String: String] {
        var byVendor: [AcceleratorVendor: [Int]] = [:]
        var order: [AcceleratorVendor] = []
        for d in devices {
            if byVendor[d.vendor] == nil { order.append(d.vendor) }
            byVendor[d.vendor, default: []].append(d.index)
        }
        var env: [String: String] = [:]
        for vendor in order {
            let list = byVendor[vendor, default: []].map(String.init).joined(separator: ",")
            for variable in vendor.visibleDevicesVariables { env[variable] = list }
        }
        return env
    }
}

public enum AgentVersion {
    public static let string = "0.2.0"
}
