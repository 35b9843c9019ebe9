import Foundation

/// What accelerators a job needs. All constraints must hold on each chosen device.
public struct AcceleratorRequest: Codable, Sendable, Hashable {
    /// Number of devices on one node (0 = CPU-only job).
    public var count: Int
    public var vendor: AcceleratorVendor?
    /// Case-insensitive substring of the device model, e.g. "A100".
    public var model: String?
    public var minMemoryMiB: Int?
    /// The least capable grade the job accepts: `C` takes A, B or C devices. nil = any.
    /// Ungraded devices do not meet a minimum grade.
    public var minGrade: DeviceGrade?
    /// The most capable grade the job may use: `B` keeps it off frontier (A) devices. nil = any.
    public var maxGrade: DeviceGrade?
    /// A slice of a partitioned device (NVIDIA MIG) instead of whole devices: a profile name
    /// ("1g.10gb", case-insensitive) or "any". nil = whole devices only (never a partitioned one).
    public var partition: String?
    /// Least compute per device, in GCU (1 GCU = 1 dense FP16 TFLOPS, derated by health).
    public var minGCU: Double?
    /// How the devices must be connected to each other; nil = any.
    public var interconnect: InterconnectRequirement?
    /// Least compute over all the job's devices, in GCU: each device needs this ÷ count.
    public var minTotalGCU: Double?
    public init(count: Int = 1, vendor: AcceleratorVendor? = nil, model: String? = nil, minMemoryMiB: Int? = nil,
                minGrade: DeviceGrade? = nil, maxGrade: DeviceGrade? = nil, partition: String? = nil,
                minGCU: Double? = nil, minTotalGCU: Double? = nil, interconnect: InterconnectRequirement? = nil) {
        self.partition = partition
        self.interconnect = interconnect
        self.minGCU = minGCU
        self.minTotalGCU = minTotalGCU
        self.count = count
        self.vendor = vendor
        self.model = model
        self.minMemoryMiB = minMemoryMiB
        self.minGrade = minGrade
        self.maxGrade = maxGrade
    }

    /// Whether a unit that is a partition with `profile` (nil: a whole device) is what the job asks for.
    public func admits(partition profile: String?) -> Bool {
        guard let want = partition else { return profile == nil }
        guard let profile else { return false }
        return want.lowercased() == "any" || want.lowercased() == profile.lowercased()
    }

    /// The compute each chosen unit must have: `min_gcu`, or the device's share of
    /// `min_total_gcu`, whichever is more; 0 = no bound.
    public var perDeviceGCU: Double {
        max(minGCU ?? 0, count > 0 ? (minTotalGCU ?? 0) / Double(count) : 0)
    }

    /// Whether a device class of `grade` meets the grade bounds.
    public func admits(grade: DeviceGrade?) -> Bool {
        if let lo = minGrade {
            guard let g = grade, g <= lo else { return false }
        }
        if let hi = maxGrade, let g = grade, g < hi { return false }
        if grade == .r { return false }
        return true
    }
}

/// How a multi-device job's devices must be connected.
public enum InterconnectRequirement: String, Codable, Sendable, Hashable, CaseIterable {
    /// No constraint.
    case any
    /// All devices on one NUMA node of the host (devices whose NUMA node is unknown count as
    /// one node: a host without NUMA reports none).
    case sameNUMA = "same_numa"
    /// All devices NVLink peers of each other (each has a direct NVLink to every other, as
    /// `nvidia-smi topo -m` reports them). NVIDIA devices only; devices whose links are
    /// unknown never qualify.
    case nvlink
    /// All devices xGMI (AMD Infinity Fabric) peers of each other, as `rocm-smi` reports the
    /// link type between each pair. AMD devices only.
    case xgmi

    /// Whether every device must be a direct fabric peer of every other (`nvlink`, `xgmi`).
    public var needsPeers: Bool { self == .nvlink || self == .xgmi }
    /// How people call the links: "NVLink", "xGMI" ("" otherwise).
    public var fabricName: String {
        switch self {
        case .nvlink: return "NVLink"
        case .xgmi: return "xGMI"
        case .any, .sameNUMA: return ""
        }
    }
    /// The vendor whose fabric the value names (a request without a vendor gets it).
    public var fabricVendor: AcceleratorVendor? {
        switch self {
        case .nvlink: return .nvidia
        case .xgmi: return .amd
        case .any, .sameNUMA: return nil
        }
    }
}

/// A job as submitted: what to run and what it needs.
public struct JobSpec: Codable, Sendable, Hashable {
    public var name: String
    public var command: String
    public var args: [String]
    public var env: [String: String]
    public var accelerators: AcceleratorRequest
    /// Wall-clock limit for the process; the agent kills it after this.
    public var timeoutSeconds: Int?
    /// Regions the job may run in (empty = any).
    public var allowedRegions: [RegionID]
    /// What happens when a run is lost to a fault (node lost, agent restarted or stopped, lease
    /// lapsed): run again up to `retry.maxAttempts` runs, or end `lost`.
    public var retry: RetryPolicy
    /// Where the job's data is, where it may go, its deadline and objective: the national
    /// scheduler's inputs for choosing a region and an hour.
    public var routing: RoutingRequest {
        get { _routing.value }
        set { _routing = Indirect(newValue) }
    }
    private var _routing: Indirect<RoutingRequest>
    /// Higher first: a region's queue is ordered by priority, then by arrival. −1000…1000,
    /// default 0 (`low` −100, `normal` 0, `high` 100, `critical` 1000 in job files).
    public var priority: Int
    /// The account (team, tenant) the job's use is charged to: quotas and fair share are per
    /// account. "" = the `default` account.
    public var account: String
    /// The model the job runs, when the scheduler should fit it to devices and choose its
    /// precision (GRID_PRECISION); nil = the accelerator request alone decides.
    public var model: ModelRequirement? {
        get { _model?.value }
        set { _model = newValue.map(Indirect.init) }
    }
    private var _model: Indirect<ModelRequirement>?
    /// Ports the agent assigns to each run from its range (`GRID_PORT`, `GRID_PORT_1`, …); the
    /// run's endpoint is `GRID_HOST:GRID_PORT`. 0…`maxPorts`.
    public var ports: Int = 0
    /// Set on a service's replicas by the national scheduler: which service and version, its
    /// probes, and how long the gateway drains it before it is stopped.
    public var replica: ReplicaOf? {
        get { _replica?.value }
        set { _replica = newValue.map(Indirect.init) }
    }
    private var _replica: Indirect<ReplicaOf>? = nil
    /// Gang: the job runs on this many distinct nodes at once, `accelerators` on each, all
    /// placed together or not at all (1 = an ordinary one-node job). 1…`maxNodes`.
    public var nodes: Int = 1
    public static let maxNodes = 1024
    public static let maxPorts = 16
    /// Bounds on what reaches the process (`problems()`).
    public static let maxNameBytes = 256
    public static let maxCommandBytes = 4096
    public static let maxArgs = 4096
    public static let maxEnv = 4096
    public static let maxExecBytes = 1 << 20

    public init(
        name: String, command: String, args: [String] = [], env: [String: String] = [:],
        accelerators: AcceleratorRequest = AcceleratorRequest(), timeoutSeconds: Int? = nil,
        allowedRegions: [RegionID] = [], retry: RetryPolicy = RetryPolicy(), routing: RoutingRequest = RoutingRequest(),
        priority: Int = 0, model: ModelRequirement? = nil, account: String = ""
    ) {
        _model = model.map(Indirect.init)
        self.account = account
        _routing = Indirect(routing)
        self.priority = priority
        self.name = name
        self.command = command
        self.args = args
        self.env = env
        self.accelerators = accelerators
        self.timeoutSeconds = timeoutSeconds
        self.allowedRegions = allowedRegions
        self.retry = retry
    }

    enum CodingKeys: String, CodingKey {
        case name, command, args, env, accelerators, timeoutSeconds, allowedRegions, retry, routing, priority, model, account, ports, replica, nodes
    }
    public static let priorityRange = -1000...1000

    /// Specs stored before retry policies existed still decode (with the default policy).
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        command = try c.decode(String.self, forKey: .command)
        args = try c.decode([String].self, forKey: .args)
        env = try c.decode([String: String].self, forKey: .env)
        accelerators = try c.decode(AcceleratorRequest.self, forKey: .accelerators)
        timeoutSeconds = try c.decodeIfPresent(Int.self, forKey: .timeoutSeconds)
        allowedRegions = try c.decode([RegionID].self, forKey: .allowedRegions)
        retry = try c.decodeIfPresent(RetryPolicy.self, forKey: .retry) ?? RetryPolicy()
        _routing = Indirect(try c.decodeIfPresent(RoutingRequest.self, forKey: .routing) ?? RoutingRequest())
        priority = try c.decodeIfPresent(Int.self, forKey: .priority) ?? 0
        _model = try c.decodeIfPresent(ModelRequirement.self, forKey: .model).map(Indirect.init)
        account = try c.decodeIfPresent(String.self, forKey: .account) ?? ""
        ports = try c.decodeIfPresent(Int.self, forKey: .ports) ?? 0
        _replica = try c.decodeIfPresent(ReplicaOf.self, forKey: .replica).map(Indirect.init)
        nodes = try c.decodeIfPresent(Int.self, forKey: .nodes) ?? 1
    }

    /// As the synthesized encoder would (optionals left out when nil), through the boxed parts.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name)
        try c.encode(command, forKey: .command)
        try c.encode(args, forKey: .args)
        try c.encode(env, forKey: .env)
        try c.encode(accelerators, forKey: .accelerators)
        try c.encodeIfPresent(timeoutSeconds, forKey: .timeoutSeconds)
        try c.encode(allowedRegions, forKey: .allowedRegions)
        try c.encode(retry, forKey: .retry)
        try c.encode(routing, forKey: .routing)
        try c.encode(priority, forKey: .priority)
        try c.encodeIfPresent(model, forKey: .model)
        try c.encode(account, forKey: .account)
        try c.encode(ports, forKey: .ports)
        try c.encodeIfPresent(replica, forKey: .replica)
        try c.encode(nodes, forKey: .nodes)
    }

    /// Devices the job holds while it runs: `accelerators.count` on each of its `nodes`.
    public var totalDevices: Int { max(0, accelerators.count) * max(1, nodes) }

    /// The account charged: `account`, or `default`.
    public var accountName: String { account.isEmpty ? "default" : account }

    /// How long a run is expected to take: `run_time`, else the timeout, else an hour.
    public var expectedRunSeconds: Int { routing.runSeconds ?? timeoutSeconds ?? 3600 }
    /// The whole hours a run occupies (at least one), as the national decision plans them.
    public var expectedRunHours: Int { max(1, Int((Double(expectedRunSeconds) / 3600).rounded(.up))) }

    /// Returns every problem with the spec, each naming the field, or [] when it is valid.
    public func problems() -> [String] {
        var out: [String] = []
        if name.isEmpty { out.append("name: must not be empty") }
        if command.isEmpty { out.append("command: must not be empty") }
        if accelerators.count < 0 { out.append("accelerators.count: must be >= 0, got \(accelerators.count)") }
        if accelerators.count > 64 { out.append("accelerators.count: at most 64 devices per node, got \(accelerators.count)") }
        if let m = accelerators.minMemoryMiB, m < 0 { out.append("accelerators.min_memory: must be >= 0") }
        if let p = accelerators.partition, p.isEmpty || p.count > 64 || p.contains(where: { $0.isWhitespace }) {
            out.append("accelerators.partition: a profile name like 1g.10gb, or any (1…64 characters, no spaces)")
        }
        if accelerators.minGrade == .r || accelerators.maxGrade == .r { out.append("accelerators.min_grade/max_grade: A, B, C or D (R devices are retired)") }
        if let lo = accelerators.minGrade, let hi = accelerators.maxGrade, lo < hi {
            out.append("accelerators.max_grade: \(hi.rawValue) is less capable than min_grade \(lo.rawValue); no grade meets both")
        }
        for (key, v) in [("min_gcu", accelerators.minGCU), ("min_total_gcu", accelerators.minTotalGCU)] {
            if let v, !(v.isFinite && v >= 0 && v <= 1e9) { out.append("accelerators.\(key): 0…1e9 GCU, got \(v)") }
        }
        if let m = model {
            out += m.problems()
            if accelerators.count == 0 { out.append("model: a model job needs accelerators (count ≥ 1)") }
        }
        if let t = timeoutSeconds, t <= 0 { out.append("timeout_seconds: must be > 0, got \(t)") }
        if !(1...RetryPolicy.maxAttemptsLimit).contains(retry.maxAttempts) {
            out.append("max_attempts: must be 1...\(RetryPolicy.maxAttemptsLimit), got \(retry.maxAttempts)")
        }
        if !(0...RetryPolicy.maxBackoffSeconds).contains(retry.backoffSeconds) {
            out.append("retry_backoff_seconds: must be 0...\(RetryPolicy.maxBackoffSeconds), got \(retry.backoffSeconds)")
        }
        // Bytes, not Foundation's `contains(String)` (an NSString search per call, a tenth of a
        // region's intake of forwarded jobs).
        for key in env.keys where key.isEmpty || key.utf8.contains(UInt8(ascii: "=")) || key.utf8.contains(0) {
            out.append("env: invalid variable name '\(key)'")
        }
        // What reaches execve: bounded (Linux refuses more than ~2 MiB of arguments and
        // environment with E2BIG), and without NUL, which would cut a string short.
        if name.utf8.count > Self.maxNameBytes { out.append("name: at most \(Self.maxNameBytes) bytes, got \(name.utf8.count)") }
        if command.utf8.count > Self.maxCommandBytes { out.append("command: at most \(Self.maxCommandBytes) bytes (PATH_MAX), got \(command.utf8.count)") }
        if command.utf8.contains(0) || args.contains(where: { $0.utf8.contains(0) }) || env.values.contains(where: { $0.utf8.contains(0) }) {
            out.append("command/args/env: a NUL character cannot reach the process")
        }
        if args.count > Self.maxArgs { out.append("args: at most \(Self.maxArgs), got \(args.count)") }
        if env.count > Self.maxEnv { out.append("env: at most \(Self.maxEnv) variables, got \(env.count)") }
        let execBytes = args.reduce(command.utf8.count + 1) { $0 + $1.utf8.count + 1 } + env.reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count + 2 }
        if execBytes > Self.maxExecBytes {
            out.append("args/env: \(execBytes) bytes in all, at most \(Self.maxExecBytes) (the agent adds its own GRID_* variables)")
        }
        if !account.isEmpty, let p = IdentifierRules.problem(with: account) { out.append("account: '\(account)' \(p)") }
        if !Self.priorityRange.contains(priority) { out.append("priority: −1000…1000, got \(priority)") }
        if !(0...Self.maxPorts).contains(ports) { out.append("ports: 0…\(Self.maxPorts), got \(ports)") }
        if let r = replica {
            out += r.problems()
            if ports < 1 { out.append("ports: a service replica needs at least one port (its endpoint)") }
        }
        if !(1...Self.maxNodes).contains(nodes) { out.append("nodes: 1…\(Self.maxNodes) nodes (a gang), got \(nodes)") }
        if nodes > 1 {
            if replica != nil { out.append("nodes: a service replica runs on one node") }
            if ports > 0 { out.append("ports: a gang (nodes > 1) cannot ask for ports; its ranks find each other by GRID_GANG_HOSTS") }
        }
        out += routing.problems()
        return out
    }
}

/// An operator's hold on a job (`gridctl hold JOB --reason ...`).
public struct JobHold: Codable, Sendable, Hashable {
    public var reason: String
    public var since: Date
    public init(reason: String, since: Date) {
        self.reason = reason
        self.since = since
    }
}

/// What a job may do when one of its runs is lost to a fault around it (not to its own exit).
public struct RetryPolicy: Codable, Sendable, Hashable {
    public static let maxAttemptsLimit = 100
    public static let maxBackoffSeconds = 3600
    /// Runs in all, the first included. Default 3.
    public var maxAttempts: Int
    /// Wait before the second run; doubles for each later one, at most 300 s. Default 5.
    public var backoffSeconds: Int
    /// `requeue: never`: a lost run ends the job `lost` (for work that must not run twice).
    public var requeueNever: Bool
    /// `on_lease_loss: keep`: the job is safe to run twice, so an agent that lost its lease
    /// lets it go on instead of stopping it.
    public var keepOnLeaseLoss: Bool

    public init(maxAttempts: Int = 3, backoffSeconds: Int = 5, requeueNever: Bool = false, keepOnLeaseLoss: Bool = false) {
        self.maxAttempts = maxAttempts
        self.backoffSeconds = backoffSeconds
        self.requeueNever = requeueNever
        self.keepOnLeaseLoss = keepOnLeaseLoss
    }

    /// Wait before run `attempt` (2 = the first retry).
    public func backoffMs(beforeAttempt attempt: Int) -> Int64 {
        guard attempt > 1, backoffSeconds > 0 else { return 0 }
        let doublings = min(attempt - 2, 16)
        return min(Int64(backoffSeconds) * 1000 << Int64(doublings), max(300_000, Int64(backoffSeconds) * 1000))
    }
}

/// Why a run ended: the job's own doing (exited, timed out, cancelled) or a fault around it.
public enum EndReason: String, Codable, Sendable, CaseIterable {
    case exited
    case cancelled
    case timedOut = "timed_out"
    /// The agent's lease lapsed (no word from the region) and it stopped the run.
    case fenced
    /// The agent was stopped or drained on purpose and stopped the run.
    case agentStopped = "agent_stopped"
    /// The run ended while the agent was down; its exit status is unknown.
    case endedWhileAgentDown = "ended_while_agent_down"
    case startFailed = "start_failed"
    /// The node went silent past lease + margin.
    case nodeLost = "node_lost"
    /// The agent came back without the assignment.
    case nodeRestarted = "node_restarted"
    /// The node refused the assignment (never ran).
    case rejected
    /// Stopped to make room for a higher-priority job; queued again (not counted against
    /// `max_attempts`).
    case preempted
    /// Stopped by an operator (`gridctl requeue`) and queued again; does not use up attempts.
    case requeued
    /// The agent stopped it: its health probe failed `failure_threshold` times in a row.
    case unhealthy

    /// A fault around the job rather than the job's own outcome: the run may be retried.
    public var isFault: Bool {
        switch self {
        case .fenced, .agentStopped, .nodeLost, .nodeRestarted, .rejected, .preempted, .requeued: return true
        case .exited, .cancelled, .timedOut, .endedWhileAgentDown, .startFailed, .unhealthy: return false
        }
    }
}

/// One run of a job, as `gridctl job ID` shows it.
public struct Attempt: Codable, Sendable, Hashable {
    public var number: Int
    public var node: NodeID
    public var assignment: AssignmentID
    public var epoch: Int
    public var startedAt: Date?
    public var endedAt: Date?
    public var endReason: EndReason?
    public var message: String
    public init(number: Int, node: NodeID, assignment: AssignmentID, epoch: Int, startedAt: Date? = nil,
                endedAt: Date? = nil, endReason: EndReason? = nil, message: String = "") {
        self.number = number
        self.node = node
        self.assignment = assignment
        self.epoch = epoch
        self.startedAt = startedAt
        self.endedAt = endedAt
        self.endReason = endReason
        self.message = message
    }
}

/// Job lifecycle. Terminal states never change again.
public enum JobState: String, Codable, Sendable, CaseIterable {
    /// Accepted by the national scheduler, no region chosen yet.
    case pending
    /// Sent to a region, not yet acknowledged by it.
    case forwarded
    /// Held by a region, waiting for devices.
    case queued
    /// Pushed to a node, not yet started.
    case assigned
    case running
    case succeeded
    case failed
    case cancelled
    /// A run was lost to a fault and the job may not run again (`requeue: never`, or its
    /// attempts are used up).
    case lost

    public var isTerminal: Bool { self == .succeeded || self == .failed || self == .cancelled || self == .lost }

    /// Order used to ignore status updates that would move a job backwards.
    public var progress: Int {
        switch self {
        case .pending: return 0
        case .forwarded: return 1
        case .queued: return 2
        case .assigned: return 3
        case .running: return 4
        case .succeeded, .failed, .cancelled, .lost: return 5
        }
    }
}

/// Where a job runs and how it ended, as stored and shown by `gridctl jobs`.
public struct JobRecord: Codable, Sendable, Hashable {
    public var id: JobID
    public var spec: JobSpec
    public var state: JobState
    public var region: RegionID?
    public var node: NodeID?
    public var deviceIDs: [String]
    public var deviceModels: [String]
    /// Their grades ("A"…"D", "" = ungraded), in the same order (as the region placed them).
    public var deviceGrades: [String] = []
    public var assignment: AssignmentID?
    public var epoch: Int
    public var exitCode: Int?
    public var message: String
    public var outputTail: String
    /// Variables the agent set to pin the process to its devices, e.g. CUDA_VISIBLE_DEVICES=0,1.
    public var visibleDevices: [String: String]
    public var submittedAt: Date
    public var updatedAt: Date
    /// Every run so far, oldest first.
    public var attempts: [Attempt]
    /// The national scheduler's latest decision for the job (kept by the national scheduler).
    public var route: RouteExplanation?
    /// The precision the scheduler chose for a `model` job's current run (GRID_PRECISION).
    public var precision: Precision?
    /// Held by an operator (`gridctl hold`): placed nowhere until released; a running job runs on.
    public var hold: JobHold?
    /// "host:port" the current run serves on (`JobSpec.ports` > 0), as its agent reported.
    public var endpoint: String?
    /// The current run passes its readiness probe (a service replica in the gateway's rotation).
    public var ready: Bool = false
    /// A gang's current run (`spec.nodes` > 1): one member per rank, rank 0 first; `node`,
    /// `deviceIDs` and `assignment` above are rank 0's. Empty for a one-node job or while queued.
    public var gang: [GangMember] = []

    public init(
        id: JobID, spec: JobSpec, state: JobState, region: RegionID? = nil, node: NodeID? = nil,
        deviceIDs: [String] = [], deviceModels: [String] = [], assignment: AssignmentID? = nil,
        epoch: Int = 0, exitCode: Int? = nil, message: String = "", outputTail: String = "",
        visibleDevices: [String: String] = [:], submittedAt: Date, updatedAt: Date, attempts: [Attempt] = [],
        route: RouteExplanation? = nil
    ) {
        self.route = route
        self.attempts = attempts
        self.id = id
        self.spec = spec
        self.state = state
        self.region = region
        self.node = node
        self.deviceIDs = deviceIDs
        self.deviceModels = deviceModels
        self.assignment = assignment
        self.epoch = epoch
        self.exitCode = exitCode
        self.message = message
        self.outputTail = outputTail
        self.visibleDevices = visibleDevices
        self.submittedAt = submittedAt
        self.updatedAt = updatedAt
    }
}

extension JobRecord {
    enum CodingKeys: String, CodingKey {
        case id, spec, state, region, node, deviceIDs, deviceModels, assignment, epoch, exitCode, message, outputTail
        case visibleDevices, submittedAt, updatedAt, attempts, route, precision, hold, endpoint, ready, deviceGrades, gang
    }

    /// Records stored before attempts existed still decode.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            id: try c.decode(JobID.self, forKey: .id), spec: try c.decode(JobSpec.self, forKey: .spec),
            state: try c.decode(JobState.self, forKey: .state), region: try c.decodeIfPresent(RegionID.self, forKey: .region),
            node: try c.decodeIfPresent(NodeID.self, forKey: .node), deviceIDs: try c.decode([String].self, forKey: .deviceIDs),
            deviceModels: try c.decode([String].self, forKey: .deviceModels),
            assignment: try c.decodeIfPresent(AssignmentID.self, forKey: .assignment), epoch: try c.decode(Int.self, forKey: .epoch),
            exitCode: try c.decodeIfPresent(Int.self, forKey: .exitCode), message: try c.decode(String.self, forKey: .message),
            outputTail: try c.decode(String.self, forKey: .outputTail),
            visibleDevices: try c.decode([String: String].self, forKey: .visibleDevices),
            submittedAt: try c.decode(Date.self, forKey: .submittedAt), updatedAt: try c.decode(Date.self, forKey: .updatedAt),
            attempts: try c.decodeIfPresent([Attempt].self, forKey: .attempts) ?? [],
            route: try c.decodeIfPresent(RouteExplanation.self, forKey: .route))
        precision = try c.decodeIfPresent(Precision.self, forKey: .precision)
        hold = try c.decodeIfPresent(JobHold.self, forKey: .hold)
        endpoint = try c.decodeIfPresent(String.self, forKey: .endpoint)
        ready = try c.decodeIfPresent(Bool.self, forKey: .ready) ?? false
        deviceGrades = try c.decodeIfPresent([String].self, forKey: .deviceGrades) ?? []
        gang = try c.decodeIfPresent([GangMember].self, forKey: .gang) ?? []
    }

    /// Whether `aid` is one of the current run's assignments (rank 0's or another rank's).
    public func holds(_ aid: AssignmentID) -> Bool {
        assignment == aid || gang.contains { $0.assignment == aid }
    }

    /// The current run's assignments: rank 0's, then the other ranks' (one for a one-node job).
    public var currentAssignments: [AssignmentID] {
        gang.isEmpty ? (assignment.map { [$0] } ?? []) : gang.map(\.assignment)
    }
}

/// One rank of a gang's run: where it runs, on which devices, and how far it has got.
public struct GangMember: Codable, Sendable, Hashable {
    public var rank: Int
    public var node: NodeID
    public var assignment: AssignmentID
    public var deviceIDs: [String]
    public var deviceModels: [String]
    /// `assigned` until its agent reports; then the rank's own state (`running`, `succeeded`, ...).
    public var state: JobState
    public var exitCode: Int?

    public init(rank: Int, node: NodeID, assignment: AssignmentID, deviceIDs: [String], deviceModels: [String] = [],
                state: JobState = .assigned, exitCode: Int? = nil) {
        self.rank = rank
        self.node = node
        self.assignment = assignment
        self.deviceIDs = deviceIDs
        self.deviceModels = deviceModels
        self.state = state
        self.exitCode = exitCode
    }

    /// A gang's assignment ids: rank 0 `<job>.<epoch>` (as a one-node job's), rank k `<job>.<epoch>-r<k>`.
    public static func assignmentID(job: JobID, epoch: Int, rank: Int) -> AssignmentID {
        AssignmentID(rank == 0 ? "\(job).\(epoch)" : "\(job).\(epoch)-r\(rank)")
    }
}

/// Node liveness as the region sees it.
public enum NodeState: String, Codable, Sendable, CaseIterable {
    case ready, lost, draining
}

/// An operator's cordon on a node: no new work there until it is lifted. `drain`: the node is
/// being emptied (its running work finishes; shown draining, then drained).
public struct NodeCordon: Codable, Sendable, Hashable {
    public var reason: String
    public var drain: Bool
    public var since: Date
    public init(reason: String, drain: Bool, since: Date) {
        self.reason = reason
        self.drain = drain
        self.since = since
    }
}

/// A node as a region stores it and reports it upward.
public struct NodeRecord: Codable, Sendable, Hashable {
    public var id: NodeID
    public var region: RegionID
    public var hostname: String
    public var state: NodeState
    public var devices: [DeviceInventory]
    /// Device ids currently held by assignments.
    public var busyDeviceIDs: [String]
    public var lastSeen: Date
    public var registeredAt: Date
    public var cordon: NodeCordon? = nil
    /// The accounts the node runs jobs for (its agent's `run_as` without `*`); empty = any.
    public var accounts: [String] = []

    public init(
        id: NodeID, region: RegionID, hostname: String, state: NodeState, devices: [DeviceInventory],
        busyDeviceIDs: [String] = [], lastSeen: Date, registeredAt: Date
    ) {
        self.id = id
        self.region = region
        self.hostname = hostname
        self.state = state
        self.devices = devices
        self.busyDeviceIDs = busyDeviceIDs
        self.lastSeen = lastSeen
        self.registeredAt = registeredAt
    }
}

/// Capacity of one kind of device in a region, the unit of a region summary.
public struct CapacityEntry: Codable, Sendable, Hashable {
    public var vendor: AcceleratorVendor
    public var model: String
    public var memoryTotalMiB: Int
    public var total: Int
    public var free: Int
    public var healthy: Int
    /// Grade of the class; nil when the devices are not graded.
    public var grade: DeviceGrade?
    /// Of `healthy` (schedulable), how many are degraded.
    public var degraded: Int
    /// The partition profile when the class is slices of partitioned devices; nil = whole devices.
    public var partition: String? = nil
    public init(vendor: AcceleratorVendor, model: String, memoryTotalMiB: Int, total: Int, free: Int, healthy: Int,
                grade: DeviceGrade? = nil, degraded: Int = 0) {
        self.vendor = vendor
        self.model = model
        self.memoryTotalMiB = memoryTotalMiB
        self.total = total
        self.free = free
        self.healthy = healthy
        self.grade = grade
        self.degraded = degraded
    }

    enum CodingKeys: String, CodingKey { case vendor, model, memoryTotalMiB, total, free, healthy, grade, degraded, partition }

    /// Summaries stored before grade and degraded existed still decode.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        vendor = try c.decode(AcceleratorVendor.self, forKey: .vendor)
        model = try c.decode(String.self, forKey: .model)
        memoryTotalMiB = try c.decode(Int.self, forKey: .memoryTotalMiB)
        total = try c.decode(Int.self, forKey: .total)
        free = try c.decode(Int.self, forKey: .free)
        healthy = try c.decode(Int.self, forKey: .healthy)
        grade = try c.decodeIfPresent(DeviceGrade.self, forKey: .grade)
        degraded = try c.decodeIfPresent(Int.self, forKey: .degraded) ?? 0
        partition = try c.decodeIfPresent(String.self, forKey: .partition)
    }
}

/// What a region tells the national scheduler about itself.
public struct RegionSummary: Codable, Sendable, Hashable {
    public var region: RegionID
    public var nodesReady: Int
    public var nodesLost: Int
    public var queuedJobs: Int
    public var runningJobs: Int
    public var capacity: [CapacityEntry]
    /// Per-node brief, capped; `nodesTruncated` says when the cap was hit.
    public var nodes: [NodeBrief]
    public var nodesTruncated: Bool
    public var generatedAt: Date
    /// The region starts forwarded jobs only once the national scheduler has recorded the
    /// placement, so its queued jobs may be re-routed when it falls silent.
    public var confirmsStarts: Bool = false
    /// Seconds the region's queue would take to drain on its healthy devices (0 = empty).
    public var expectedWaitSeconds: Int = 0
    /// National view: silent past the region lease.
    public var stale: Bool = false

    public init(
        region: RegionID, nodesReady: Int, nodesLost: Int, queuedJobs: Int, runningJobs: Int,
        capacity: [CapacityEntry], nodes: [NodeBrief], nodesTruncated: Bool, generatedAt: Date
    ) {
        self.region = region
        self.nodesReady = nodesReady
        self.nodesLost = nodesLost
        self.queuedJobs = queuedJobs
        self.runningJobs = runningJobs
        self.capacity = capacity
        self.nodes = nodes
        self.nodesTruncated = nodesTruncated
        self.generatedAt = generatedAt
    }

    enum CodingKeys: String, CodingKey {
        case region, nodesReady, nodesLost, queuedJobs, runningJobs, capacity, nodes, nodesTruncated, generatedAt, confirmsStarts
        case expectedWaitSeconds
        case stale
    }

    /// Summaries stored before `confirmsStarts` existed still decode.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(region: try c.decode(RegionID.self, forKey: .region), nodesReady: try c.decode(Int.self, forKey: .nodesReady),
                  nodesLost: try c.decode(Int.self, forKey: .nodesLost), queuedJobs: try c.decode(Int.self, forKey: .queuedJobs),
                  runningJobs: try c.decode(Int.self, forKey: .runningJobs), capacity: try c.decode([CapacityEntry].self, forKey: .capacity),
                  nodes: try c.decode([NodeBrief].self, forKey: .nodes), nodesTruncated: try c.decode(Bool.self, forKey: .nodesTruncated),
                  generatedAt: try c.decode(Date.self, forKey: .generatedAt))
        confirmsStarts = try c.decodeIfPresent(Bool.self, forKey: .confirmsStarts) ?? false
        expectedWaitSeconds = try c.decodeIfPresent(Int.self, forKey: .expectedWaitSeconds) ?? 0
        stale = try c.decodeIfPresent(Bool.self, forKey: .stale) ?? false
    }
}

/// One line per node for `gridctl nodes`.
public struct NodeBrief: Codable, Sendable, Hashable {
    public var node: NodeID
    public var region: RegionID
    public var hostname: String
    public var state: NodeState
    public var deviceCount: Int
    public var freeDevices: Int
    public var models: [String]
    public var worstHealth: HealthState
    public var lastSeen: Date
    public var cordon: NodeCordon? = nil
    /// The accounts the node is dedicated to; empty = any.
    public var accounts: [String] = []
    /// Units by health; nil from a peer (or a stored record) that does not carry them.
    public var healthCounts: [HealthState: Int]? = nil
    public init(
        node: NodeID, region: RegionID, hostname: String, state: NodeState, deviceCount: Int,
        freeDevices: Int, models: [String], worstHealth: HealthState, lastSeen: Date
    ) {
        self.node = node
        self.region = region
        self.hostname = hostname
        self.state = state
        self.deviceCount = deviceCount
        self.freeDevices = freeDevices
        self.models = models
        self.worstHealth = worstHealth
        self.lastSeen = lastSeen
    }
}

/// An assignment's life at the region. Only `pending` and `accepted` hold devices.
public enum AssignmentState: String, Codable, Sendable, CaseIterable {
    /// Sent to the node, not yet acknowledged.
    case pending
    /// The node acknowledged it and runs (or ran) the job.
    case accepted
    /// The job reached a terminal state.
    case done
    /// The node refused it (device busy, not its id...).
    case rejected
    /// Taken back: the node was lost or restarted without it.
    case revoked

    public var holdsDevices: Bool { self == .pending || self == .accepted }
}

/// When something happens, as a controller's logic sees it: a monotonic reading for timers and
/// liveness (never compared across hosts) and the wall clock for records people read.
public struct Moment: Sendable, Hashable {
    public var monotonicMs: Int64
    public var wall: Date
    public init(monotonicMs: Int64, wall: Date) {
        self.monotonicMs = monotonicMs
        self.wall = wall
    }
    public func adding(ms: Int64) -> Moment {
        Moment(monotonicMs: monotonicMs + ms, wall: wall.addingTimeInterval(Double(ms) / 1000))
    }
}

/// What an account has used in one region: all-time totals (for accounting) and totals halved
/// every half-life (for fair share), in device-seconds and GCU-seconds.
public struct AccountUsage: Codable, Sendable, Hashable {
    public var account: String
    public var deviceSeconds: Double
    public var gcuSeconds: Double
    public var decayedDeviceSeconds: Double
    public var decayedGCUSeconds: Double
    public var updatedAt: Date
    public init(account: String, deviceSeconds: Double = 0, gcuSeconds: Double = 0, decayedDeviceSeconds: Double = 0,
                decayedGCUSeconds: Double = 0, updatedAt: Date) {
        self.account = account
        self.deviceSeconds = deviceSeconds
        self.gcuSeconds = gcuSeconds
        self.decayedDeviceSeconds = decayedDeviceSeconds
        self.decayedGCUSeconds = decayedGCUSeconds
        self.updatedAt = updatedAt
    }
}
