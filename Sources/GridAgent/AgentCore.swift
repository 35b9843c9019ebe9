import Foundation
import GridCore
import GridProtocol
import GridTransport
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

/// The agent's logic on the socket loop's thread: registration, heartbeats, running
/// assignments as child processes and reporting their status until the region acknowledges.
///
/// Assignments are idempotent by id: a resent assignment is acknowledged again and never
/// started twice. Status updates carry ids derived from (assignment, state) and are resent
/// until a StatusAck arrives, so a region restart or a lost reply loses nothing.
public final class AgentCore {
    struct Running {
        var assignment: Wire.Assignment
        var process: JobProcess
        var startedAt: Date
        var visible: [String: String]
        var deviceModels: [String]
        var stopReason: String?
        var termSentAt: Date?
    }

    let config: AgentConfig
    let node: NodeID
    let logger: Logger
    let post: @Sendable (AgentEvent) -> Void
    var messenger: AgentMessenger
    var devices: [DeviceInventory]
    var registered = false
    var lastRegisterAt = Date.distantPast
    var lastHeartbeatAt = Date.distantPast
    var heartbeatInterval: Double
    var devicesDirty = true
    var heartbeatCount = 0
    var sendAssignmentList = false
    var lastSentAssignments: [String] = []
    var running: [AssignmentID: Running] = [:]
    /// Assignments already finished here, so a resent one is not run again (bounded).
    var finished: [AssignmentID: JobState] = [:]
    var finishedOrder: [AssignmentID] = []
    var pendingStatus: [String: (update: Wire.StatusUpdate, sentAt: Date)] = [:]
    var pendingOrder: [String] = []

    public init(config: AgentConfig, initial: InventoryReport, logger: Logger, post: @escaping @Sendable (AgentEvent) -> Void) {
        self.config = config
        self.node = NodeID(config.nodeID)
        self.logger = logger
        self.post = post
        self.devices = initial.devices
        self.heartbeatInterval = Double(config.heartbeatIntervalMs) / 1000
        self.messenger = AgentMessenger(sender: config.nodeID, codec: EnvelopeCodec(maxFrameBytes: config.maxMessageBytes), logger: logger)
    }

    public var runningAssignments: [AssignmentID] { running.keys.sorted() }
    public var isRegistered: Bool { registered }

    public func handle(_ input: LoopInput<AgentEvent>, now: Date) -> [LoopOutput] {
        switch input {
        case .tick: return tick(now: now)
        case .badShape(let peer, let frames):
            logger.warning("ignored message with \(frames) frames from \(peer.label)")
            return []
        case .event(.inventory(let report)): return onInventory(report, now: now)
        case .event(.exited(let id, let end)): return onExit(id, end, now: now)
        case .frame(_, let payload, _):
            guard let message = messenger.decode(payload) else { return [] }
            switch message.body {
            case .registerAck(let m):
                if !registered { logger.info("registered", metadata: ["region": "\(m.regionID)", "node": "\(node)"]) }
                registered = true
                if m.heartbeatIntervalMs > 0 { heartbeatInterval = Double(m.heartbeatIntervalMs) / 1000 }
                return []
            case .heartbeatAck(let m):
                if m.sendAssignments { sendAssignmentList = true }
                if !m.known && m.nodeID == node.rawValue {
                    logger.notice("region does not know this node (region restarted or node declared lost); registering again")
                    registered = false
                    lastRegisterAt = .distantPast
                    return tick(now: now)
                }
                return []
            case .assignment(let m): return onAssignment(m, now: now)
            case .statusAck(let m):
                if pendingStatus.removeValue(forKey: m.updateID) != nil, !m.applied {
                    logger.notice("region did not apply status \(m.updateID): \(m.reason)")
                }
                pendingOrder.removeAll { $0 == m.updateID }
                return []
            case .cancel(let m):
                let id = AssignmentID(m.assignmentID)
                if running[id] != nil {
                    logger.info("cancelling assignment", metadata: ["assignment": "\(id)"])
                    stop(id, reason: "cancelled", now: now)
                }
                return []
            case .errorReply(let e):
                logger.warning("region answered with an error: \(e.code): \(e.message)")
                return []
            default:
                logger.warning("unexpected \(message.body.type) from the region; ignored")
                return []
            }
        }
    }

    // MARK: registration and heartbeats

    func tick(now: Date) -> [LoopOutput] {
        var out: [LoopOutput] = []
        if !registered {
            if now.timeIntervalSince(lastRegisterAt) >= max(1, heartbeatInterval) {
                lastRegisterAt = now
                var r = Wire.Register()
                r.nodeID = node.rawValue
                r.hostname = ProcessInfo.processInfo.hostName
                r.devices = devices.map(Wire.Device.init)
                r.agentVersion = AgentVersion.string
                r.heldAssignments = runningAssignments.map(\.rawValue)
                out.append(messenger.output(.register(r)))
                devicesDirty = false
            }
        } else if now.timeIntervalSince(lastHeartbeatAt) >= heartbeatInterval {
            lastHeartbeatAt = now
            heartbeatCount += 1
            var h = Wire.Heartbeat()
            h.nodeID = node.rawValue
            // Devices ride along when they changed (health changes go out on the next beat,
            // not the next full report) and every 30th beat as a resync.
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
            out.append(messenger.output(.heartbeat(h)))
        }
        for key in pendingOrder {
            guard let p = pendingStatus[key], now.timeIntervalSince(p.sentAt) >= 1 else { continue }
            pendingStatus[key]?.sentAt = now
            out.append(messenger.output(.statusUpdate(p.update)))
        }
        for (id, r) in running {
            if r.stopReason == nil, r.assignment.timeoutSeconds > 0,
               now.timeIntervalSince(r.startedAt) > Double(r.assignment.timeoutSeconds) {
                logger.warning("assignment exceeded its time limit", metadata: ["assignment": "\(id)", "limit_s": "\(r.assignment.timeoutSeconds)"])
                stop(id, reason: "timed out after \(r.assignment.timeoutSeconds)s", now: now)
            } else if let sent = r.termSentAt, now.timeIntervalSince(sent) > config.killGraceSeconds {
                r.process.signal(SIGKILL)
            }
        }
        return out
    }

    func onInventory(_ report: InventoryReport, now: Date) -> [LoopOutput] {
        for p in report.problems { logger.warning("probe: \(p)") }
        guard report.devices != devices else { return [] }
        let before = Dictionary(devices.map { ($0.id, $0.health.state) }, uniquingKeysWith: { a, _ in a })
        let healthChanged = report.devices.contains { before[$0.id] != $0.health.state } || report.devices.count != devices.count
        devices = report.devices
        devicesDirty = true
        // Health changes are sent at once rather than on the next beat.
        if healthChanged && registered {
            lastHeartbeatAt = .distantPast
            return tick(now: now)
        }
        return []
    }

    // MARK: assignments

    func onAssignment(_ m: Wire.Assignment, now: Date) -> [LoopOutput] {
        let id = AssignmentID(m.assignmentID)
        func ack(_ accepted: Bool, _ reason: String = "") -> LoopOutput {
            var a = Wire.AssignmentAck()
            a.assignmentID = m.assignmentID
            a.epoch = m.epoch
            a.nodeID = m.nodeID
            a.accepted = accepted
            a.reason = reason
            return messenger.output(.assignmentAck(a))
        }
        if running[id] != nil || finished[id] != nil { return [ack(true)] }  // a resend: already have it
        guard m.nodeID == node.rawValue else { return [ack(false, "this agent is node \(node), not \(m.nodeID)")] }
        let byID = Dictionary(devices.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        var chosen: [DeviceInventory] = []
        for d in m.deviceIds {
            guard let device = byID[d] else { return [ack(false, "device \(d) is not on node \(node)")] }
            if let other = running.first(where: { $0.value.assignment.deviceIds.contains(d) }) {
                return [ack(false, "device \(d) is busy with assignment \(other.key)")]
            }
            chosen.append(device)
        }
        let visible = Self.visibleDevices(chosen)
        var env = ProcessInfo.processInfo.environment.filter { ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER"].contains($0.key) }
        env.merge(config.jobEnvironment) { _, new in new }
        env.merge(m.env) { _, new in new }
        env.merge(visible) { _, new in new }
        env["GRID_JOB_ID"] = m.jobID
        env["GRID_ASSIGNMENT_ID"] = m.assignmentID
        env["GRID_NODE_ID"] = node.rawValue
        env["GRID_DEVICE_IDS"] = m.deviceIds.joined(separator: ",")
        let jobsDir = URL(fileURLWithPath: config.dataDir).appendingPathComponent("jobs")
        try? FileManager.default.createDirectory(at: jobsDir, withIntermediateDirectories: true)
        let output = jobsDir.appendingPathComponent("\(m.assignmentID).log").path
        let post = self.post
        var out = [ack(true)]
        do {
            let process = try JobProcess(command: m.command, args: m.args, environment: env, outputPath: output) { end in
                post(.exited(id, end))
            }
            running[id] = Running(assignment: m, process: process, startedAt: now, visible: visible,
                                  deviceModels: chosen.map(\.model))
            logger.info("started job", metadata: ["job": "\(m.jobID)", "assignment": "\(id)", "pid": "\(process.pid)",
                                                  "visible": "\(visible.map { "\($0.key)=\($0.value)" }.sorted().joined(separator: " "))"])
            out += status(for: m, state: .running, visible: visible, models: chosen.map(\.model), now: now)
        } catch {
            logger.error("job could not start: \(error)", metadata: ["job": "\(m.jobID)"])
            remember(id, .failed)
            out += status(for: m, state: .failed, message: error.description, visible: visible, models: chosen.map(\.model), now: now)
        }
        return out
    }

    func onExit(_ id: AssignmentID, _ end: ProcessEnd, now: Date) -> [LoopOutput] {
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
        let tail = JobProcess.tail(of: r.process.outputPath, limit: config.outputTailBytes)
        logger.info("job ended", metadata: ["assignment": "\(id)", "state": "\(state.rawValue)", "detail": "\(message)"])
        return status(for: r.assignment, state: state, exit: end.exitCode, message: message, tail: tail,
                      visible: r.visible, models: r.deviceModels, now: now)
    }

    func stop(_ id: AssignmentID, reason: String, now: Date) {
        guard var r = running[id], r.stopReason == nil else { return }
        r.stopReason = reason
        r.termSentAt = now
        r.process.signal(SIGTERM)
        running[id] = r
    }

    /// Signals every job's process group; used on shutdown so no child outlives the agent.
    public func terminateAll(grace: Double) {
        for r in running.values { r.process.signal(SIGTERM) }
        let deadline = Date().addingTimeInterval(grace)
        while Date() < deadline && running.values.contains(where: { kill($0.process.pid, 0) == 0 && !Self.isZombie($0.process.pid) }) {
            usleep(50_000)
        }
        for r in running.values { r.process.signal(SIGKILL) }
    }

    static func isZombie(_ pid: pid_t) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return true }
        return stat[stat.index(close, offsetBy: 2)...].hasPrefix("Z")
    }

    func remember(_ id: AssignmentID, _ state: JobState) {
        finished[id] = state
        finishedOrder.append(id)
        if finishedOrder.count > 10_000 {
            finished[finishedOrder.removeFirst()] = nil
        }
    }

    func status(for m: Wire.Assignment, state: JobState, exit: Int32? = nil, message: String = "", tail: String = "",
                visible: [String: String], models: [String], now: Date) -> [LoopOutput] {
        var u = Wire.StatusUpdate()
        u.jobID = m.jobID
        u.assignmentID = m.assignmentID
        u.epoch = m.epoch
        u.nodeID = node.rawValue
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
        pendingStatus[u.updateID] = (u, now)
        pendingOrder.append(u.updateID)
        return [messenger.output(.statusUpdate(u))]
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

/// The agent's side of the envelope: everything goes upstream to its region.
struct AgentMessenger {
    let sender: String
    let codec: EnvelopeCodec
    let logger: Logger
    var sequence: UInt64 = 0
    var rejected = 0

    mutating func output(_ body: Body) -> LoopOutput {
        sequence &+= 1
        return LoopOutput(to: .upstream, payload: codec.encode(Message(sender: sender, sequence: sequence, body: body)))
    }

    mutating func decode(_ payload: [UInt8]) -> Message? {
        do { return try codec.decode(payload) } catch {
            rejected += 1
            logger.warning("rejected frame from region: \(error)", metadata: ["rejected_total": "\(rejected)"])
            return nil
        }
    }
}

public enum AgentVersion {
    public static let string = "0.1.0"
}
