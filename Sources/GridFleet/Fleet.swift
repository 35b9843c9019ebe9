import Foundation
import GridCatalog
import GridCore
import GridProbe
import GridProtocol
import GridTransport
import Synchronization

/// Host shapes for simulated nodes: real captured vendor outputs, parsed and graded as an agent
/// would, so a simulated fleet has the models, memory sizes, grades and health the network sees.
public enum FleetInventories {
    /// Captures used, each an 8-, 4- or 2-device host.
    public static let captures = [
        "nvidia-smi-q-x_tesla-v100s-8gpu_v11.xml", "hl-smi_gaudi2-hl225-8aip_1.21.1.txt",
        "rocm-smi-json_mi100_rocm602.json", "npu-smi-info_910b2c-2npu_23.0.2.1.txt",
        "nvidia-smi-q-x_a100-sxm4-80gb-mig_v12.xml", "nvidia-smi-q-x_tesla-t4_v11.xml",
    ]

    /// Parses and grades each capture found in `directory`; skips what it cannot read. With
    /// `devicesPerNode`, each host shape is cut or filled (repeating its devices with new
    /// indexes) to exactly that many devices.
    public static func load(directory: String, healthyOnly: Bool = false, devicesPerNode: Int? = nil,
                            captures: [String] = captures) -> [[DeviceInventory]] {
        let prober = Prober(settings: ProbeSettings())
        var out: [[DeviceInventory]] = []
        for name in captures {
            guard let text = try? String(contentsOfFile: directory + "/" + name, encoding: .utf8) else { continue }
            var devices = Grader.graded(prober.simulate(captures: [(name, text)]).devices, catalog: .bundled, currentYear: 2026)
            if healthyOnly {
                for i in devices.indices { devices[i].health = .healthy; if devices[i].grade == .r { devices[i].grade = .c } }
            }
            if let n = devicesPerNode, !devices.isEmpty {
                devices = (0..<n).map { k in
                    var d = devices[k % devices.count]
                    d.index = k
                    d.rename("\(d.id)-\(k)")
                    return d
                }
            }
            if !devices.isEmpty { out.append(devices) }
        }
        return out
    }

    /// A uniform 8-GPU host, for when no capture is at hand.
    public static let synthetic: [[DeviceInventory]] = [
        (0..<8).map { DeviceInventory(id: "g\($0)", index: $0, vendor: .nvidia, model: "NVIDIA A100-SXM4-80GB",
                                       memoryTotalMiB: 81920, health: .healthy, grade: .b) },
    ]
}

/// Settings of a simulated fleet.
public struct FleetOptions: Sendable {
    /// The region controller's ROUTER endpoint.
    public var endpoint: String
    public var nodes: Int
    /// DEALER connections the nodes are spread over (one connection carries many nodes).
    public var connections: Int = 8
    public var heartbeatIntervalMs: Int64 = 1000
    /// How long a simulated job runs before it reports success.
    public var jobDurationMs: Int64 = 0
    /// Registrations per second while the fleet comes up.
    public var registerRate: Int = 20_000
    /// Delay before an assignment is acknowledged (a slow agent).
    public var ackDelayMs: Int64 = 0
    /// Send a `running` status before the terminal one.
    public var reportRunning: Bool = false
    public var nodePrefix: String = "sim"
    public var inventories: [[DeviceInventory]] = FleetInventories.synthetic
    public init(endpoint: String, nodes: Int) {
        self.endpoint = endpoint
        self.nodes = nodes
    }
}

/// What a fleet counted. Latencies are nanoseconds from a job's submission (its `SUBMIT_NS`
/// variable, monotonic clock of this machine) to the assignment reaching its node.
public struct FleetStats: Sendable {
    public var registered = 0
    public var heartbeatsSent = 0
    public var heartbeatAcks = 0
    /// Heartbeat acks that said the region does not know the node.
    public var unknownAcks = 0
    public var assignments = 0
    /// An assignment id the node already had (a resend).
    public var repeatedAssignments = 0
    /// A job assigned to a live node while another live node still ran it.
    public var concurrentRuns = 0
    public var completions = 0
    public var statusAcks = 0
    /// From a status's first send to its acknowledgement, ms.
    public var statusAckLatenciesMs: [Int64] = []
    /// Statuses sent again for want of an acknowledgement.
    public var statusResends = 0
    public var cancels = 0
    /// Cancels (or re-placements) of work held by a node that was never silenced: a live node
    /// declared lost.
    public var liveNodesRevoked = 0
    public var sendsDropped = 0
    /// Jobs whose assignment arrived with an epoch > 1, with the time since their old node was
    /// silenced (ns), for failover measurements.
    public var requeueLatencies: [Int64] = []
    public var latencies: [Int64] = []
    /// Since `markRestart()`: distinct nodes that got an answer, when the first and the last did.
    public var nodesHeardSinceMark = 0
    public var firstAckSinceMarkNs: UInt64 = 0
    public var allHeardSinceMarkNs: UInt64 = 0
}

/// Plays many logical nodes over a few DEALER connections against a real region controller:
/// registers them, heartbeats every node on its interval (spread evenly), acknowledges and
/// completes assignments, resends unacknowledged statuses, and injects faults on request
/// (silent nodes, slow acks, device failures, reconnect storms). One thread; `run` blocks.
public final class Fleet: @unchecked Sendable {
    struct Node {
        var id: String
        var devices: [DeviceInventory]
        var registered = false
        var registerSentMs: Int64 = .min
        /// Register retries back off (5 s doubling to 60 s, with jitter), as agents do, so a
        /// slow region is not buried under repeated registrations.
        var registerAttempts = 0
        var heartbeat: [UInt8] = []
        var dirty = true
        var held: [String: Int64] = [:]  // assignment id -> completion due (ms)
        var silent = false
        var silencedAtNs: UInt64 = 0
        var sendDevices = false
        var heardSinceMark = false
        /// Send times of heartbeats not yet answered, oldest first (the region answers them in
        /// order), and the send time of the latest one answered: a status sent after
        /// `reachedMs` is still on its way (or the region is not answering), not lost, and is
        /// not resent (as agents do; `AgentInstance.onTick`).
        var beatsInFlight: [Int64] = []
        var reachedMs: Int64 = .min
    }

    struct Pending {
        var node: Int
        var frame: [UInt8]
        var sentMs: Int64
        var firstSentMs: Int64
    }

    public let options: FleetOptions
    let context: ZMQContext
    var sockets: [ZMQSocket] = []
    var nodes: [Node] = []
    var index: [String: Int] = [:]
    let codec = EnvelopeCodec(maxFrameBytes: 16 << 20)
    var stats = FleetStats()
    let shared = Mutex(FleetStats())
    let control = Mutex(Control())
    var pendingStatus: [String: Pending] = [:]
    var delayedAcks: [(dueMs: Int64, node: Int, frame: [UInt8])] = []
    var completionsDue: [(dueMs: Int64, node: Int, assignment: Wire.Assignment)] = []
    /// job id -> (node, epoch) of the assignment seen last.
    var jobHolder: [String: (node: Int, epoch: UInt64)] = [:]
    var seq: UInt64 = 0
    var markActive = false
    var registerQueue: [Int] = []
    /// Assignments this fleet finished, so a late resend is not run again.
    var finished: Set<String> = []
    var registerHead = 0

    func heard(_ i: Int) {
        guard markActive, !nodes[i].heardSinceMark else { return }
        nodes[i].heardSinceMark = true
        stats.nodesHeardSinceMark += 1
        let now = Self.nowNs()
        if stats.nodesHeardSinceMark == 1 { stats.firstAckSinceMarkNs = now }
        if stats.nodesHeardSinceMark == nodes.count { stats.allHeardSinceMarkNs = now }
    }

    struct Control {
        var stop = false
        var silence: [Int] = []
        var failDevices: [Int] = []
        var reconnect = false
        var mark = false
        var silenceHolding = 0
    }

    public init(options: FleetOptions) throws {
        self.options = options
        context = try ZMQContext(ioThreads: 1)
        let templates = options.inventories.isEmpty ? FleetInventories.synthetic : options.inventories
        for i in 0..<options.nodes {
            let id = options.nodePrefix + "-" + String(format: "%06d", i)
            let devices = templates[i % templates.count].enumerated().map { k, d -> DeviceInventory in
                var d = d
                d.rename("\(id)-\(k)")
                return d
            }
            nodes.append(Node(id: id, devices: devices))
            index[id] = i
        }
        try connect()
    }

    deinit {
        for s in sockets { s.close() }
        context.terminate()
    }

    func connect() throws {
        for s in sockets { s.close() }
        sockets = []
        for c in 0..<max(1, options.connections) {
            let s = try ZMQSocket(context, .dealer)
            try s.setRoutingID(Array("\(options.nodePrefix)-conn-\(c)-\(UInt32.random(in: 0...UInt32.max))".utf8))
            try s.setSendHighWaterMark(1_000_000)
            try s.setReceiveHighWaterMark(1_000_000)
            try s.setMaxMessageSize(16 << 20)
            try s.connect(options.endpoint)
            sockets.append(s)
        }
    }

    // MARK: control, from any thread

    public func stop() { control.withLock { $0.stop = true } }
    /// Nodes (by index) that stop sending anything from now on, as a crashed host does.
    public func silence(_ nodes: [Int]) { control.withLock { $0.silence += nodes } }
    /// Silences `count` nodes that hold work, spread over the fleet.
    public func silenceNodesHoldingWork(_ count: Int) { control.withLock { $0.silenceHolding += count } }
    /// Marks the first device of each node unhealthy (reported on its next heartbeat).
    public func failDevice(on nodes: [Int]) { control.withLock { $0.failDevices += nodes } }
    /// Drops every connection and registers every node again.
    public func reconnectStorm() { control.withLock { $0.reconnect = true } }
    /// Starts counting which nodes hear from the region again (after a restart of it).
    public func markRestart() { control.withLock { $0.mark = true } }
    public var snapshot: FleetStats { shared.withLock { $0 } }
    public func nodeID(_ i: Int) -> String { nodes[i].id }

    // MARK: the loop

    static func nowNs() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    public func run() {
        let start = Self.nowNs()
        var beatsDue = 0
        var registerBudget = 0.0
        var lastRegisterNs = start
        var lastPublish = start
        registerQueue = Array(nodes.indices)
        registerHead = 0
        var lastRetryScanNs = start
        var lastStatusScanNs = start
        let items = { self.sockets.map(\.pollItem) }
        var pollItems = items()
        while true {
            let c = control.withLock { c -> Control in
                let copy = c
                c.silence = []
                c.failDevices = []
                c.reconnect = false
                c.mark = false
                c.silenceHolding = 0
                return copy
            }
            if c.stop { break }
            if c.silenceHolding > 0 {
                let holding = nodes.indices.filter { !nodes[$0].held.isEmpty && !nodes[$0].silent }
                let step = max(1, holding.count / c.silenceHolding)
                for i in stride(from: 0, to: holding.count, by: step).prefix(c.silenceHolding) {
                    nodes[holding[i]].silent = true
                    nodes[holding[i]].silencedAtNs = Self.nowNs()
                }
            }
            for i in c.silence where i < nodes.count {
                nodes[i].silent = true
                nodes[i].silencedAtNs = Self.nowNs()
            }
            for i in c.failDevices where i < nodes.count && !nodes[i].devices.isEmpty {
                nodes[i].devices[0].health = DeviceHealth(state: .unhealthy, reasons: [HealthReason(.eccUncorrectable, "simulated failure")])
                nodes[i].sendDevices = true
                nodes[i].dirty = true
            }
            if c.mark {
                markActive = true
                for i in nodes.indices { nodes[i].heardSinceMark = false }
                stats.nodesHeardSinceMark = 0
                stats.firstAckSinceMarkNs = 0
                stats.allHeardSinceMarkNs = 0
            }
            if c.reconnect {
                try? connect()
                pollItems = items()
                for i in nodes.indices { nodes[i].registered = false; nodes[i].registerSentMs = .min }
                stats.registered = 0
                registerQueue = Array(nodes.indices)
                registerHead = 0
            }
            let nowNs = Self.nowNs()
            let nowMs = Int64(nowNs / 1_000_000)
            // Registrations, rate-limited.
            registerBudget = min(Double(options.registerRate), registerBudget + Double(nowNs - lastRegisterNs) / 1e9 * Double(options.registerRate))
            lastRegisterNs = nowNs
            if nowNs - lastRetryScanNs > 3_000_000_000 {
                // Registrations not answered within 3 s go out again; nodes the region forgot too.
                lastRetryScanNs = nowNs
                for i in nodes.indices where !nodes[i].registered && !nodes[i].silent
                    && nodes[i].registerSentMs != .min
                    && nowMs - nodes[i].registerSentMs >= min(60_000, 5000 << min(nodes[i].registerAttempts, 4)) + Int64(i % 1000) {
                    registerQueue.append(i)
                }
            }
            while registerBudget >= 1 && registerHead < registerQueue.count {
                let i = registerQueue[registerHead]
                registerHead += 1
                if registerHead == registerQueue.count {
                    registerQueue.removeAll(keepingCapacity: true)
                    registerHead = 0
                }
                guard !nodes[i].registered, !nodes[i].silent else { continue }
                nodes[i].registerSentMs = nowMs
                nodes[i].registerAttempts += 1
                var r = Wire.Register()
                r.nodeID = nodes[i].id
                r.hostname = nodes[i].id
                r.devices = nodes[i].devices.map(Wire.Device.init)
                r.agentVersion = "fleet"
                r.heldAssignments = nodes[i].held.keys.sorted()
                send(i, .register(r))
                registerBudget -= 1
            }
            // Heartbeats: node k of N beats at phase k/N of each interval.
            let elapsed = nowNs - start
            let target = Int(Double(elapsed) / 1e6 / Double(options.heartbeatIntervalMs) * Double(nodes.count))
            while beatsDue < target {
                let i = beatsDue % nodes.count
                beatsDue += 1
                guard nodes[i].registered, !nodes[i].silent else { continue }
                if nodes[i].dirty { encodeHeartbeat(i) }
                sendFrame(i, nodes[i].heartbeat)
                nodes[i].beatsInFlight.append(nowMs)
                if nodes[i].beatsInFlight.count > 120 { nodes[i].beatsInFlight.removeFirst() }
                stats.heartbeatsSent += 1
                if nodes[i].sendDevices {
                    nodes[i].sendDevices = false
                    nodes[i].dirty = true
                }
            }
            // Delayed acks, completions, status resends.
            if !delayedAcks.isEmpty {
                let due = delayedAcks.filter { $0.dueMs <= nowMs }
                delayedAcks.removeAll { $0.dueMs <= nowMs }
                for d in due where !nodes[d.node].silent { sendFrame(d.node, d.frame) }
            }
            if !completionsDue.isEmpty {
                let due = completionsDue.filter { $0.dueMs <= nowMs }
                completionsDue.removeAll { $0.dueMs <= nowMs }
                for d in due { complete(d.node, d.assignment, nowMs: nowMs) }
            }
            // Inbound.
            let ready = (try? poll(pollItems, timeoutMs: 1)) ?? []
            var unread = false
            for (k, r) in ready.enumerated() where r {
                var read = 0
                while read < 4096, let frames = try? sockets[k].receive(dontWait: true) {
                    read += 1
                    guard let payload = frames.last, let message = try? codec.decode(payload) else { continue }
                    handle(message, nowMs: Int64(Self.nowNs() / 1_000_000))
                }
                if read == 4096 { unread = true }
            }
            // Status resends, judged after the answers that came were read (not while some wait
            // unread here: the region's answer may be among them).
            if !unread, !pendingStatus.isEmpty, nowNs - lastStatusScanNs > 100_000_000 {
                lastStatusScanNs = nowNs
                let nowMs = Int64(Self.nowNs() / 1_000_000)
                for (key, p) in pendingStatus where nowMs - p.sentMs >= 2000 {
                    let n = nodes[p.node]
                    guard !n.silent, p.sentMs <= n.reachedMs else { continue }
                    stats.statusResends += 1
                    pendingStatus[key]?.sentMs = nowMs
                    sendFrame(p.node, p.frame)
                }
            }
            if Self.nowNs() - lastPublish > 50_000_000 {
                lastPublish = Self.nowNs()
                publish()
            }
        }
        publish()
    }

    func publish() {
        let s = stats
        shared.withLock { $0 = s }
    }

    func encodeHeartbeat(_ i: Int) {
        var h = Wire.Heartbeat()
        h.nodeID = nodes[i].id
        let held = nodes[i].held.keys.sorted()
        h.assignmentDigest = AssignmentDigest.of(held)
        h.assignmentCount = UInt32(held.count)
        if nodes[i].sendDevices { h.devices = nodes[i].devices.map(Wire.Device.init) }
        seq &+= 1
        nodes[i].heartbeat = codec.encode(Message(sender: nodes[i].id, sequence: seq, body: .heartbeat(h)))
        nodes[i].dirty = false
    }

    func send(_ i: Int, _ body: Body) {
        seq &+= 1
        sendFrame(i, codec.encode(Message(sender: nodes[i].id, sequence: seq, body: body)))
    }

    func sendFrame(_ i: Int, _ frame: [UInt8]) {
        let s = sockets[i % sockets.count]
        if (try? s.send([frame], dontWait: true)) != true { stats.sendsDropped += 1 }
    }

    func handle(_ message: Message, nowMs: Int64) {
        switch message.body {
        case .registerAck(let m):
            guard let i = index[m.nodeID] else { return }
            if !nodes[i].registered { stats.registered += 1 }
            nodes[i].registered = true
            nodes[i].reachedMs = max(nodes[i].reachedMs, nodes[i].registerSentMs)
            nodes[i].beatsInFlight = []
            heard(i)
            nodes[i].dirty = true
        case .heartbeatAck(let m):
            stats.heartbeatAcks += 1
            guard let i = index[m.nodeID] else { return }
            if !nodes[i].beatsInFlight.isEmpty { nodes[i].reachedMs = max(nodes[i].reachedMs, nodes[i].beatsInFlight.removeFirst()) }
            if m.known { heard(i) }
            if !m.known {
                stats.unknownAcks += 1
                if nodes[i].registered { stats.registered -= 1 }
                nodes[i].registered = false
                nodes[i].registerSentMs = .min
                registerQueue.append(i)
            }
            if m.sendAssignments {
                var h = Wire.Heartbeat()
                h.nodeID = nodes[i].id
                let held = nodes[i].held.keys.sorted()
                h.runningAssignments = held
                h.assignmentDigest = AssignmentDigest.of(held)
                h.assignmentCount = UInt32(held.count)
                if !nodes[i].silent { send(i, .heartbeat(h)) }
            }
        case .assignment(let a):
            guard let i = index[a.nodeID], !nodes[i].silent else { return }
            stats.assignments += 1
            var ack = Wire.AssignmentAck()
            ack.assignmentID = a.assignmentID
            ack.epoch = a.epoch
            ack.nodeID = a.nodeID
            ack.accepted = true
            seq &+= 1
            let frame = codec.encode(Message(sender: a.nodeID, sequence: seq, body: .assignmentAck(ack)))
            if options.ackDelayMs > 0 {
                delayedAcks.append((nowMs + options.ackDelayMs, i, frame))
            } else {
                sendFrame(i, frame)
            }
            if nodes[i].held[a.assignmentID] != nil || finished.contains(a.assignmentID) {
                // A resend of one it has or had: acknowledged again, never run twice (as an agent does).
                stats.repeatedAssignments += 1
                return
            }
            if let ns = a.env["SUBMIT_NS"].flatMap(UInt64.init) {
                stats.latencies.append(Int64(Self.nowNs()) - Int64(ns))
            }
            if let previous = jobHolder[a.jobID], previous.epoch < a.epoch {
                let old = nodes[previous.node]
                if old.silent {
                    stats.requeueLatencies.append(Int64(Self.nowNs() - old.silencedAtNs))
                } else if old.held.keys.contains(where: { $0.hasPrefix(a.jobID + ".") }) {
                    stats.liveNodesRevoked += 1
                    stats.concurrentRuns += 1
                }
            }
            jobHolder[a.jobID] = (i, a.epoch)
            nodes[i].held[a.assignmentID] = nowMs + options.jobDurationMs
            nodes[i].dirty = true
            if options.reportRunning { status(i, a, .running, nowMs: nowMs) }
            completionsDue.append((nowMs + options.jobDurationMs, i, a))
        case .statusAck(let m):
            if let p = pendingStatus.removeValue(forKey: m.updateID) {
                stats.statusAcks += 1
                stats.statusAckLatenciesMs.append(nowMs - p.firstSentMs)
            }
        case .cancel(let c):
            stats.cancels += 1
            guard let i = index[c.nodeID], nodes[i].held.removeValue(forKey: c.assignmentID) != nil else { return }
            nodes[i].dirty = true
            if !nodes[i].silent { stats.liveNodesRevoked += 1 }
        default:
            break
        }
    }

    func complete(_ i: Int, _ a: Wire.Assignment, nowMs: Int64) {
        guard !nodes[i].silent, nodes[i].held.removeValue(forKey: a.assignmentID) != nil else { return }
        finished.insert(a.assignmentID)
        nodes[i].dirty = true
        stats.completions += 1
        status(i, a, .succeeded, nowMs: nowMs)
    }

    func status(_ i: Int, _ a: Wire.Assignment, _ state: JobState, nowMs: Int64) {
        var u = Wire.StatusUpdate()
        u.jobID = a.jobID
        u.assignmentID = a.assignmentID
        u.epoch = a.epoch
        u.nodeID = a.nodeID
        u.state = state.rawValue
        if state.isTerminal {
            u.exitCode = 0
            u.hasExitCode_p = true
        }
        u.deviceIds = a.deviceIds
        u.updateID = "\(a.assignmentID):\(state.rawValue)"
        seq &+= 1
        let frame = codec.encode(Message(sender: a.nodeID, sequence: seq, body: .statusUpdate(u)))
        pendingStatus[u.updateID] = Pending(node: i, frame: frame, sentMs: nowMs, firstSentMs: nowMs)
        sendFrame(i, frame)
    }
}

extension DeviceInventory {
    /// Gives a copied device its own id, and its partitions ids under it, so every unit of a
    /// simulated node has a distinct name (PROTOCOL.md, "Resource names").
    public mutating func rename(_ newID: String) {
        for j in partitions.indices {
            let p = partitions[j].id
            // A copy's partitions may carry another device's prefix: keep only the last segment.
            let local = ResourceName.partitionSegment(p, of: id).split(separator: "/").last.map(String.init) ?? p
            partitions[j].id = newID + "/" + local
        }
        id = newID
    }
}
