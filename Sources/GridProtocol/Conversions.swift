import Foundation
import GridCore

// Conversions between domain values and wire messages. Absent optionals use the sentinels the
// .proto documents (0, -1, "" ...), so other languages see the same rules.

extension Date {
    public var unixMilliseconds: Int64 { Int64((timeIntervalSince1970 * 1000).rounded()) }
    public init(unixMilliseconds ms: Int64) { self.init(timeIntervalSince1970: Double(ms) / 1000) }
}

extension Wire.Device {
    public init(_ d: DeviceInventory) {
        self.init()
        id = d.id
        index = Int32(clamping: d.index)
        vendor = d.vendor.rawValue
        model = d.model
        memoryTotalMib = Int64(d.memoryTotalMiB ?? 0)
        memoryUsedMib = Int64(d.memoryUsedMiB ?? 0)
        pciBusID = d.pciBusID ?? ""
        pciDeviceID = d.pciDeviceID ?? ""
        architecture = d.architecture ?? ""
        computeCapability = d.computeCapability ?? ""
        driverVersion = d.driverVersion ?? ""
        firmwareVersion = d.firmwareVersion ?? ""
        serial = d.serial ?? ""
        numaNode = Int32(clamping: d.numaNode ?? -1)
        interconnects = d.interconnects
        powerLimitW = d.powerLimitW ?? 0
        powerDrawW = d.powerDrawW ?? 0
        temperatureC = d.temperatureC ?? -1000
        utilizationPercent = d.utilizationPercent ?? -1
        partitions = d.partitions.map { p in
            var w = Wire.Partition()
            w.id = p.id
            w.profile = p.profile ?? ""
            w.memoryTotalMib = Int64(p.memoryTotalMiB ?? 0)
            w.computeFraction = p.computeFraction ?? 0
            return w
        }
        healthState = d.health.state.rawValue
        healthReasons = d.health.reasons.map { r in
            var w = Wire.HealthReason()
            w.kind = r.kind.rawValue
            w.detail = r.detail
            return w
        }
        grade = d.grade?.rawValue ?? ""
        gradeReason = d.gradeReason ?? ""
        computeUnits = d.computeUnits ?? 0
        foreignProcesses = UInt32(clamping: d.foreignProcesses ?? 0)
        nvlinkPeers = (d.nvlinkPeers ?? []).map { UInt32(clamping: $0) }
    }

    /// Back to the domain type. Unknown vendor/health spellings from newer peers degrade to
    /// `unknown`, never to `healthy`.
    public var inventory: DeviceInventory {
        func opt(_ s: String) -> String? { s.isEmpty ? nil : s }
        func optInt(_ v: Int64) -> Int? { v > 0 ? Int(exactly: v) : nil }
        func optPos(_ v: Double) -> Double? { v > 0 && v.isFinite ? v : nil }
        var d = DeviceInventory(
            id: id, index: Int(index), vendor: AcceleratorVendor(rawValue: vendor) ?? .unknown, model: model,
            memoryTotalMiB: optInt(memoryTotalMib), memoryUsedMiB: memoryUsedMib >= 0 ? Int(exactly: memoryUsedMib) : nil,
            pciBusID: opt(pciBusID), pciDeviceID: opt(pciDeviceID), architecture: opt(architecture),
            computeCapability: opt(computeCapability), serial: opt(serial), driverVersion: opt(driverVersion),
            firmwareVersion: opt(firmwareVersion), numaNode: numaNode >= 0 ? Int(numaNode) : nil,
            interconnects: interconnects, powerLimitW: optPos(powerLimitW), powerDrawW: optPos(powerDrawW),
            temperatureC: temperatureC > -1000 && temperatureC.isFinite ? temperatureC : nil,
            utilizationPercent: utilizationPercent >= 0 && utilizationPercent.isFinite ? utilizationPercent : nil,
            partitions: partitions.map {
                DevicePartition(id: $0.id, profile: opt($0.profile), memoryTotalMiB: optInt($0.memoryTotalMib),
                                computeFraction: $0.computeFraction > 0 ? $0.computeFraction : nil)
            },
            health: DeviceHealth(
                state: HealthState(rawValue: healthState) ?? .unknown,
                reasons: healthReasons.map { HealthReason(HealthReasonKind(rawValue: $0.kind) ?? .other, $0.detail) }
            ),
            grade: DeviceGrade(rawValue: grade), gradeReason: opt(gradeReason),
            computeUnits: optPos(computeUnits)
        )
        d.foreignProcesses = foreignProcesses > 0 ? Int(foreignProcesses) : nil
        d.nvlinkPeers = nvlinkPeers.isEmpty ? nil : nvlinkPeers.compactMap { Int(exactly: $0) }
        return d
    }
}

extension Wire.JobSpec {
    public init(_ s: JobSpec) {
        self.init()
        name = s.name
        command = s.command
        args = s.args
        env = s.env
        var a = Wire.AcceleratorRequest()
        a.count = Int32(clamping: s.accelerators.count)
        a.vendor = s.accelerators.vendor?.rawValue ?? ""
        a.model = s.accelerators.model ?? ""
        a.minMemoryMib = Int64(s.accelerators.minMemoryMiB ?? 0)
        a.minGrade = s.accelerators.minGrade?.rawValue ?? ""
        a.maxGrade = s.accelerators.maxGrade?.rawValue ?? ""
        a.partition = s.accelerators.partition ?? ""
        a.minGcu = s.accelerators.minGCU ?? 0
        a.minTotalGcu = s.accelerators.minTotalGCU ?? 0
        a.interconnect = s.accelerators.interconnect?.rawValue ?? ""
        accelerators = a
        if let m = s.model { model = Wire.ModelRequirement(m) }
        account = s.account
        timeoutSeconds = UInt32(clamping: s.timeoutSeconds ?? 0)
        allowedRegions = s.allowedRegions.map(\.rawValue)
        // Defaults travel as 0 so specs from before retry policies read the same.
        let d = RetryPolicy()
        maxAttempts = s.retry.maxAttempts == d.maxAttempts ? 0 : UInt32(clamping: s.retry.maxAttempts)
        if s.retry.backoffSeconds != d.backoffSeconds { retryBackoffSeconds = UInt32(clamping: s.retry.backoffSeconds) }
        requeueNever = s.retry.requeueNever
        keepOnLeaseLoss = s.retry.keepOnLeaseLoss
        let r = s.routing
        originRegion = r.origin?.rawValue ?? ""
        dataGb = r.dataGB
        jurisdictions = r.jurisdictions
        if let l = r.latencySLOMs { latencySloMs = l }
        switch r.objective {
        case .cost: objective = ""
        case .weights(let e, let c, let t, let w):
            objective = "weights"
            var ow = Wire.ObjectiveWeights()
            ow.energy = e
            ow.carbon = c
            ow.transfer = t
            ow.wait = w
            objectiveWeights = ow
        default: objective = r.objective.description
        }
        deadlineUnixMs = r.deadline?.unixMilliseconds ?? 0
        runSeconds = UInt32(clamping: r.runSeconds ?? 0)
        if let k = r.kwPerDevice { kwPerDevice = k }
        priority = Int32(clamping: s.priority)
        ports = UInt32(clamping: s.ports)
        if let r = s.replica { replica = Wire.ReplicaOf(r) }
        nodes = s.nodes > 1 ? UInt32(clamping: s.nodes) : 0
    }

    func routing() throws(ProtocolError) -> RoutingRequest {
        var r = RoutingRequest()
        r.origin = originRegion.isEmpty ? nil : RegionID(originRegion)
        r.dataGB = dataGb
        r.jurisdictions = jurisdictions
        r.latencySLOMs = hasLatencySloMs ? latencySloMs : nil
        switch objective {
        case "", "cost": r.objective = .cost
        case "weights":
            let w = objectiveWeights
            r.objective = .weights(energy: w.energy, carbon: w.carbon, transfer: w.transfer, wait: w.wait)
        default:
            guard let o = RoutingObjective(name: objective) else {
                throw .invalidField(type: "JobSpec", field: "objective",
                                    reason: "'\(objective)' is not one of \((RoutingObjective.names + ["weights"]).joined(separator: ", "))")
            }
            r.objective = o
        }
        // Beyond ±2^53 ms a Date cannot hold the value exactly; problems() rejects it anyway.
        r.deadline = deadlineUnixMs == 0 ? nil : Date(timeIntervalSince1970: Double(deadlineUnixMs) / 1000)
        r.runSeconds = runSeconds == 0 ? nil : Int(runSeconds)
        r.kwPerDevice = hasKwPerDevice ? kwPerDevice : nil
        return r
    }

    /// Throws when a field cannot be represented in the domain (e.g. an unknown vendor name).
    public func spec() throws(ProtocolError) -> JobSpec {
        // One copy of the request, not one per field read.
        let acc = accelerators
        var vendor: AcceleratorVendor?
        if !acc.vendor.isEmpty {
            guard let v = AcceleratorVendor(rawValue: acc.vendor) else {
                throw .invalidField(type: "JobSpec", field: "accelerators.vendor", reason: "unknown vendor '\(acc.vendor)'")
            }
            vendor = v
        }
        func grade(_ text: String, _ field: String) throws(ProtocolError) -> DeviceGrade? {
            guard !text.isEmpty else { return nil }
            guard let g = DeviceGrade(rawValue: text) else {
                throw .invalidField(type: "JobSpec", field: "accelerators.\(field)", reason: "unknown grade '\(text)' (A, B, C or D)")
            }
            return g
        }
        var interconnect: InterconnectRequirement?
        if !acc.interconnect.isEmpty {
            guard let i = InterconnectRequirement(rawValue: acc.interconnect) else {
                throw .invalidField(type: "JobSpec", field: "accelerators.interconnect",
                                    reason: "'\(acc.interconnect)' is not one of any, same_numa, nvlink, xgmi")
            }
            interconnect = i
        }
        var s = JobSpec(
            name: name, command: command, args: args, env: env,
            accelerators: AcceleratorRequest(
                count: Int(acc.count), vendor: vendor,
                model: acc.model.isEmpty ? nil : acc.model,
                minMemoryMiB: acc.minMemoryMib > 0 ? Int(exactly: acc.minMemoryMib) : nil,
                minGrade: try grade(acc.minGrade, "min_grade"), maxGrade: try grade(acc.maxGrade, "max_grade"),
                partition: acc.partition.isEmpty ? nil : acc.partition,
                minGCU: acc.minGcu != 0 ? acc.minGcu : nil,
                minTotalGCU: acc.minTotalGcu != 0 ? acc.minTotalGcu : nil),
            timeoutSeconds: timeoutSeconds > 0 ? Int(timeoutSeconds) : nil,
            allowedRegions: allowedRegions.map(RegionID.init),
            retry: RetryPolicy(
                maxAttempts: maxAttempts == 0 ? RetryPolicy().maxAttempts : Int(maxAttempts),
                backoffSeconds: hasRetryBackoffSeconds ? Int(retryBackoffSeconds) : RetryPolicy().backoffSeconds,
                requeueNever: requeueNever, keepOnLeaseLoss: keepOnLeaseLoss),
            routing: try routing(),
            priority: Int(priority),
            model: hasModel ? try model.requirement() : nil,
            account: account
        )
        s.accelerators.interconnect = interconnect
        s.ports = Int(ports)
        s.replica = hasReplica ? replica.replica : nil
        s.nodes = max(1, Int(nodes))
        if let first = s.problems().first {
            throw .invalidField(type: "JobSpec", field: String(first.prefix(while: { $0 != ":" })), reason: first)
        }
        return s
    }
}

extension Wire.ModelRequirement {
    public init(_ m: ModelRequirement) {
        self.init()
        name = m.name ?? ""
        parameters = m.parameters
        precisions = m.precisions.map(\.rawValue)
        workload = m.workload.rawValue
        contextTokens = UInt32(clamping: m.contextTokens)
        batchSize = UInt32(clamping: m.batchSize)
        layers = UInt32(clamping: m.layers ?? 0)
        hiddenSize = UInt32(clamping: m.hiddenSize ?? 0)
        attentionHeads = UInt32(clamping: m.attentionHeads ?? 0)
        kvHeads = UInt32(clamping: m.kvHeads ?? 0)
        activationCheckpointing = m.activationCheckpointing
        tokensPerSecond = m.tokensPerSecond ?? 0
    }

    /// Throws on an unknown precision or workload name; ranges are checked by `JobSpec.problems()`.
    public func requirement() throws(ProtocolError) -> ModelRequirement {
        var ps: [Precision] = []
        for text in precisions {
            guard let p = Precision(rawValue: text) else {
                throw .invalidField(type: "JobSpec", field: "model.precisions",
                                    reason: "'\(text)' is not one of \(Precision.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            ps.append(p)
        }
        var w = ModelWorkload.inference
        if !workload.isEmpty {
            guard let v = ModelWorkload(rawValue: workload) else {
                throw .invalidField(type: "JobSpec", field: "model.workload", reason: "'\(workload)' is not inference or training")
            }
            w = v
        }
        func opt(_ v: UInt32) -> Int? { v == 0 ? nil : Int(v) }
        return ModelRequirement(
            name: name.isEmpty ? nil : name, parameters: parameters, precisions: ps.isEmpty ? [.bf16] : ps, workload: w,
            contextTokens: contextTokens == 0 ? 4096 : Int(contextTokens), batchSize: batchSize == 0 ? 1 : Int(batchSize),
            layers: opt(layers), hiddenSize: opt(hiddenSize), attentionHeads: opt(attentionHeads), kvHeads: opt(kvHeads),
            activationCheckpointing: activationCheckpointing, tokensPerSecond: tokensPerSecond > 0 ? tokensPerSecond : nil)
    }
}

extension Wire.Job {
    public init(_ r: JobRecord) { self.init(r, withSpec: true) }

    /// `withSpec: false` leaves the spec out (a store keeps it apart: it never changes).
    public init(_ r: JobRecord, withSpec: Bool) {
        self.init()
        jobID = r.id.rawValue
        if withSpec { spec = Wire.JobSpec(r.spec) }
        state = r.state.rawValue
        regionID = r.region?.rawValue ?? ""
        nodeID = r.node?.rawValue ?? ""
        deviceIds = r.deviceIDs
        deviceModels = r.deviceModels
        deviceGrades = r.deviceGrades
        assignmentID = r.assignment?.rawValue ?? ""
        epoch = UInt64(max(0, r.epoch))
        if let code = r.exitCode {
            exitCode = Int32(clamping: code)
            hasExitCode_p = true
        }
        message = r.message
        outputTail = r.outputTail
        visibleDevices = r.visibleDevices
        submittedUnixMs = r.submittedAt.unixMilliseconds
        updatedUnixMs = r.updatedAt.unixMilliseconds
        attempts = r.attempts.map(Wire.Attempt.init)
        if let e = r.route { route = Wire.RouteDecision(e) }
        precision = r.precision?.rawValue ?? ""
        holdReason = r.hold?.reason ?? ""
        endpoint = r.endpoint ?? ""
        ready = r.ready
        gang = r.gang.map(Wire.GangRank.init)
    }

    public func record() throws(ProtocolError) -> JobRecord {
        guard let st = JobState(rawValue: state) else {
            throw .invalidField(type: "Job", field: "state", reason: "unknown state '\(state)'")
        }
        var r = JobRecord(
            id: JobID(jobID), spec: try spec.spec(), state: st,
            region: regionID.isEmpty ? nil : RegionID(regionID), node: nodeID.isEmpty ? nil : NodeID(nodeID),
            deviceIDs: deviceIds, deviceModels: deviceModels,
            assignment: assignmentID.isEmpty ? nil : AssignmentID(assignmentID), epoch: Int(clamping: epoch),
            exitCode: hasExitCode_p ? Int(exitCode) : nil, message: message, outputTail: outputTail,
            visibleDevices: visibleDevices, submittedAt: Date(unixMilliseconds: submittedUnixMs),
            updatedAt: Date(unixMilliseconds: updatedUnixMs),
            attempts: attempts.map(\.attempt),
            route: hasRoute ? route.explanation : nil
        )
        r.precision = Precision(rawValue: precision)
        r.hold = holdReason.isEmpty ? nil : JobHold(reason: holdReason, since: Date(unixMilliseconds: updatedUnixMs))
        r.endpoint = endpoint.isEmpty ? nil : endpoint
        r.ready = ready
        r.deviceGrades = deviceGrades
        var members: [GangMember] = []
        for g in gang { members.append(try g.member()) }
        r.gang = members
        return r
    }
}

extension Wire.GangRank {
    public init(_ m: GangMember) {
        self.init()
        rank = UInt32(clamping: m.rank)
        nodeID = m.node.rawValue
        assignmentID = m.assignment.rawValue
        deviceIds = m.deviceIDs
        deviceModels = m.deviceModels
        state = m.state.rawValue
        if let c = m.exitCode {
            exitCode = Int32(clamping: c)
            hasExitCode_p = true
        }
    }

    public func member() throws(ProtocolError) -> GangMember {
        guard let st = JobState(rawValue: state) else {
            throw .invalidField(type: "GangRank", field: "state", reason: "unknown state '\(state)'")
        }
        return GangMember(rank: Int(rank), node: NodeID(nodeID), assignment: AssignmentID(assignmentID), deviceIDs: deviceIds,
                          deviceModels: deviceModels, state: st, exitCode: hasExitCode_p ? Int(exitCode) : nil)
    }
}

extension Wire.EndReason {
    public init(_ r: EndReason?) {
        switch r {
        case nil: self = .unspecified
        case .exited: self = .exited
        case .cancelled: self = .cancelled
        case .timedOut: self = .timedOut
        case .fenced: self = .fenced
        case .agentStopped: self = .agentStopped
        case .endedWhileAgentDown: self = .endedWhileAgentDown
        case .startFailed: self = .startFailed
        case .nodeLost: self = .nodeLost
        case .nodeRestarted: self = .nodeRestarted
        case .rejected: self = .rejected
        case .preempted: self = .preempted
        case .requeued: self = .requeued
        case .unhealthy: self = .unhealthy
        }
    }

    /// nil for UNSPECIFIED and for values this version does not know.
    public var reason: EndReason? {
        switch self {
        case .exited: return .exited
        case .cancelled: return .cancelled
        case .timedOut: return .timedOut
        case .fenced: return .fenced
        case .agentStopped: return .agentStopped
        case .endedWhileAgentDown: return .endedWhileAgentDown
        case .startFailed: return .startFailed
        case .nodeLost: return .nodeLost
        case .nodeRestarted: return .nodeRestarted
        case .unhealthy: return .unhealthy
        case .rejected: return .rejected
        case .preempted: return .preempted
        case .requeued: return .requeued
        case .unspecified, .UNRECOGNIZED: return nil
        }
    }
}

extension Wire.Attempt {
    public init(_ a: Attempt) {
        self.init()
        number = UInt32(clamping: a.number)
        nodeID = a.node.rawValue
        assignmentID = a.assignment.rawValue
        epoch = UInt64(max(0, a.epoch))
        startedUnixMs = a.startedAt?.unixMilliseconds ?? 0
        endedUnixMs = a.endedAt?.unixMilliseconds ?? 0
        endReason = Wire.EndReason(a.endReason)
        message = a.message
    }

    public var attempt: Attempt {
        Attempt(number: Int(number), node: NodeID(nodeID), assignment: AssignmentID(assignmentID), epoch: Int(clamping: epoch),
                startedAt: startedUnixMs == 0 ? nil : Date(unixMilliseconds: startedUnixMs),
                endedAt: endedUnixMs == 0 ? nil : Date(unixMilliseconds: endedUnixMs),
                endReason: endReason.reason, message: message)
    }
}

extension Wire.NodeBrief {
    public init(_ b: NodeBrief) {
        self.init()
        nodeID = b.node.rawValue
        regionID = b.region.rawValue
        resource = ResourceName(region: b.region, node: b.node).description
        hostname = b.hostname
        state = b.state.rawValue
        deviceCount = Int32(clamping: b.deviceCount)
        freeDevices = Int32(clamping: b.freeDevices)
        models = b.models
        worstHealth = b.worstHealth.rawValue
        lastSeenUnixMs = b.lastSeen.unixMilliseconds
        healthCounts = Dictionary(uniqueKeysWithValues: (b.healthCounts ?? [:]).map { ($0.key.rawValue, Int32(clamping: $0.value)) })
        accounts = b.accounts
        if let c = b.cordon {
            cordoned = true
            cordonReason = c.reason
            cordonDrain = c.drain
            cordonSinceUnixMs = c.since.unixMilliseconds
        }
    }

    public var brief: NodeBrief {
        var b = NodeBrief(
            node: NodeID(nodeID), region: RegionID(regionID), hostname: hostname,
            state: NodeState(rawValue: state) ?? .lost, deviceCount: Int(deviceCount),
            freeDevices: Int(freeDevices), models: models,
            worstHealth: HealthState(rawValue: worstHealth) ?? .unknown,
            lastSeen: Date(unixMilliseconds: lastSeenUnixMs))
        if cordoned {
            b.cordon = NodeCordon(reason: cordonReason, drain: cordonDrain, since: Date(unixMilliseconds: cordonSinceUnixMs))
        }
        b.accounts = accounts
        if !healthCounts.isEmpty {
            b.healthCounts = Dictionary(healthCounts.compactMap { k, v in HealthState(rawValue: k).map { ($0, Int(v)) } }, uniquingKeysWith: +)
        }
        return b
    }
}

extension Wire.RegionSummary {
    public init(_ s: RegionSummary) {
        self.init()
        regionID = s.region.rawValue
        nodesReady = Int32(clamping: s.nodesReady)
        nodesLost = Int32(clamping: s.nodesLost)
        queuedJobs = Int32(clamping: s.queuedJobs)
        runningJobs = Int32(clamping: s.runningJobs)
        capacity = s.capacity.map { c in
            var w = Wire.Capacity()
            w.vendor = c.vendor.rawValue
            w.model = c.model
            w.memoryTotalMib = Int64(c.memoryTotalMiB)
            w.total = Int32(clamping: c.total)
            w.free = Int32(clamping: c.free)
            w.healthy = Int32(clamping: c.healthy)
            w.grade = c.grade?.rawValue ?? ""
            w.degraded = Int32(clamping: c.degraded)
            w.partition = c.partition ?? ""
            return w
        }
        nodes = s.nodes.map(Wire.NodeBrief.init)
        nodesTruncated = s.nodesTruncated
        generatedUnixMs = s.generatedAt.unixMilliseconds
        confirmsStarts = s.confirmsStarts
        expectedWaitS = UInt32(clamping: s.expectedWaitSeconds)
        stale = s.stale
    }

    public var summary: RegionSummary {
        var s = RegionSummary(
            region: RegionID(regionID), nodesReady: Int(nodesReady), nodesLost: Int(nodesLost),
            queuedJobs: Int(queuedJobs), runningJobs: Int(runningJobs),
            capacity: capacity.map {
                CapacityEntry(vendor: AcceleratorVendor(rawValue: $0.vendor) ?? .unknown, model: $0.model,
                              memoryTotalMiB: Int(clamping: $0.memoryTotalMib), total: Int($0.total),
                              free: Int($0.free), healthy: Int($0.healthy),
                              grade: DeviceGrade(rawValue: $0.grade), degraded: Int($0.degraded))
                    .with(partition: $0.partition.isEmpty ? nil : $0.partition)
            },
            nodes: nodes.map(\.brief), nodesTruncated: nodesTruncated,
            generatedAt: Date(unixMilliseconds: generatedUnixMs))
        s.confirmsStarts = confirmsStarts
        s.expectedWaitSeconds = Int(expectedWaitS)
        s.stale = stale
        return s
    }
}

/// FNV-1a 64 over sorted ids, each followed by a 0 byte: the assignment digest a heartbeat
/// carries (PROTOCOL.md). 0 for none.
/// The digest of a set of assignment ids a heartbeat carries (PROTOCOL.md "Assignment digest"):
/// the XOR of each id's FNV-1a 64, so it is independent of order and a holder keeps it up to
/// date in O(1) per id added or removed (`digest ^= AssignmentDigest.of(id:)` both ways).
public enum AssignmentDigest {
    /// FNV-1a 64 of one id's UTF-8 bytes.
    public static func of(id: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in id.utf8 {
            h ^= UInt64(b)
            h = h &* 0x100_0000_01b3
        }
        return h
    }

    /// Of a set of ids (each id once); 0 for none.
    public static func of<S: Sequence>(_ ids: S) -> UInt64 where S.Element == String {
        ids.reduce(0) { $0 ^ of(id: $1) }
    }
}

extension Wire.RouteDecision {
    public init(_ e: RouteExplanation) {
        self.init()
        decidedUnixMs = e.decidedAt.unixMilliseconds
        objective = e.objective
        currency = e.currency
        regionID = e.region?.rawValue ?? ""
        startUnixMs = e.start?.unixMilliseconds ?? 0
        note = e.note
        refusedBy = e.refusedBy.map(\.rawValue)
        candidates = e.candidates.map { c in
            var w = Wire.RouteCandidate()
            w.regionID = c.region.rawValue
            w.reason = c.reason ?? ""
            w.startUnixMs = c.start?.unixMilliseconds ?? 0
            w.energy = c.energy
            w.carbon = c.carbon
            w.transfer = c.transfer
            w.wait = c.wait
            w.total = c.total
            w.score = c.score
            w.kwh = c.kWh
            w.operationalG = c.operationalG
            w.embodiedG = c.embodiedG
            w.rttMs = c.rttMs
            return w
        }
    }

    public var explanation: RouteExplanation {
        RouteExplanation(
            decidedAt: Date(unixMilliseconds: decidedUnixMs), objective: objective, currency: currency,
            region: regionID.isEmpty ? nil : RegionID(regionID), start: startUnixMs == 0 ? nil : Date(unixMilliseconds: startUnixMs),
            note: note, refusedBy: refusedBy.map(RegionID.init),
            candidates: candidates.map { w in
                var c = RouteExplanation.Candidate(region: RegionID(w.regionID), reason: w.reason.isEmpty ? nil : w.reason)
                c.start = w.startUnixMs == 0 ? nil : Date(unixMilliseconds: w.startUnixMs)
                c.energy = w.energy
                c.carbon = w.carbon
                c.transfer = w.transfer
                c.wait = w.wait
                c.total = w.total
                c.score = w.score
                c.kWh = w.kwh
                c.operationalG = w.operationalG
                c.embodiedG = w.embodiedG
                c.rttMs = w.rttMs
                return c
            })
    }
}

extension CapacityEntry {
    func with(partition: String?) -> CapacityEntry {
        var c = self
        c.partition = partition
        return c
    }
}
