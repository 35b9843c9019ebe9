import Foundation
import GridCore
import SwiftProtobuf

/// Names for the generated protobuf types, so call sites read `Wire.Register`.
public enum Wire {
    public typealias Envelope = Computegrid_V1_Envelope
    public typealias MessageType = Computegrid_V1_MessageType
    public typealias Device = Computegrid_V1_Device
    public typealias Partition = Computegrid_V1_Partition
    public typealias HealthReason = Computegrid_V1_HealthReason
    public typealias Register = Computegrid_V1_Register
    public typealias RegisterAck = Computegrid_V1_RegisterAck
    public typealias Heartbeat = Computegrid_V1_Heartbeat
    public typealias HeartbeatAck = Computegrid_V1_HeartbeatAck
    public typealias Assignment = Computegrid_V1_Assignment
    public typealias AssignmentAck = Computegrid_V1_AssignmentAck
    public typealias StatusUpdate = Computegrid_V1_StatusUpdate
    public typealias StatusAck = Computegrid_V1_StatusAck
    public typealias StatusBatch = Computegrid_V1_StatusBatch
    public typealias StatusBatchAck = Computegrid_V1_StatusBatchAck
    public typealias Cancel = Computegrid_V1_Cancel
    public typealias Capacity = Computegrid_V1_Capacity
    public typealias NodeBrief = Computegrid_V1_NodeBrief
    public typealias RegionSummary = Computegrid_V1_RegionSummary
    public typealias RegionSummaryAck = Computegrid_V1_RegionSummaryAck
    public typealias AcceleratorRequest = Computegrid_V1_AcceleratorRequest
    public typealias ModelRequirement = Computegrid_V1_ModelRequirement
    public typealias JobControl = Computegrid_V1_JobControl
    public typealias RegionControl = Computegrid_V1_RegionControl
    public typealias UnitBrief = Computegrid_V1_UnitBrief
    public typealias JobSpec = Computegrid_V1_JobSpec
    public typealias JobForward = Computegrid_V1_JobForward
    public typealias JobForwardAck = Computegrid_V1_JobForwardAck
    public typealias Submit = Computegrid_V1_Submit
    public typealias SubmitReply = Computegrid_V1_SubmitReply
    public typealias SubmitItem = Computegrid_V1_SubmitItem
    public typealias DeviceList = Computegrid_V1_DeviceList
    public typealias SubmitResult = Computegrid_V1_SubmitResult
    public typealias Query = Computegrid_V1_Query
    public typealias QueryReply = Computegrid_V1_QueryReply
    public typealias AccountStatus = Computegrid_V1_AccountStatus
    public typealias Job = Computegrid_V1_Job
    public typealias NodeCommand = Computegrid_V1_NodeCommand
    public typealias ObjectiveWeights = Computegrid_V1_ObjectiveWeights
    public typealias RouteDecision = Computegrid_V1_RouteDecision
    public typealias RouteCandidate = Computegrid_V1_RouteCandidate
    public typealias Attempt = Computegrid_V1_Attempt
    public typealias GangRank = Computegrid_V1_GangRank
    public typealias EndReason = Computegrid_V1_EndReason
    public typealias ErrorReply = Computegrid_V1_ErrorReply
    public typealias ProbeSpec = Computegrid_V1_ProbeSpec
    public typealias ReplicaOf = Computegrid_V1_ReplicaOf
    public typealias ServiceSpec = Computegrid_V1_ServiceSpec
    public typealias ServedModel = Computegrid_V1_ServedModel
    public typealias Autoscale = Computegrid_V1_Autoscale
    public typealias Deploy = Computegrid_V1_Deploy
    public typealias ServiceControl = Computegrid_V1_ServiceControl
    public typealias KeyControl = Computegrid_V1_KeyControl
    public typealias KeyEntry = Computegrid_V1_KeyEntry
    public typealias AuditEntry = Computegrid_V1_AuditEntry
    public typealias ServiceStatus = Computegrid_V1_ServiceStatus
    public typealias Replica = Computegrid_V1_Replica
    public typealias ServiceLoad = Computegrid_V1_ServiceLoad

    /// The protocol version this build speaks.
    public static let version: UInt32 = 1
    /// The envelope's free-text `sender` is for logs: at most this many bytes.
    public static let maxSenderBytes = 256
    /// Default cap on one frame; sockets also set MAXMSGSIZE to this.
    public static let defaultMaxFrameBytes = 4 << 20
}

/// A decoded message body, one case per message type.
public enum Body: Sendable, Equatable {
    case register(Wire.Register)
    case registerAck(Wire.RegisterAck)
    case heartbeat(Wire.Heartbeat)
    case heartbeatAck(Wire.HeartbeatAck)
    case assignment(Wire.Assignment)
    case assignmentAck(Wire.AssignmentAck)
    case statusUpdate(Wire.StatusUpdate)
    case statusAck(Wire.StatusAck)
    case cancel(Wire.Cancel)
    case regionSummary(Wire.RegionSummary)
    case regionSummaryAck(Wire.RegionSummaryAck)
    case jobForward(Wire.JobForward)
    case jobForwardAck(Wire.JobForwardAck)
    case submit(Wire.Submit)
    case submitReply(Wire.SubmitReply)
    case query(Wire.Query)
    case queryReply(Wire.QueryReply)
    case errorReply(Wire.ErrorReply)
    case nodeCommand(Wire.NodeCommand)
    case jobControl(Wire.JobControl)
    case regionControl(Wire.RegionControl)
    case deploy(Wire.Deploy)
    case serviceControl(Wire.ServiceControl)
    case keyControl(Wire.KeyControl)
    case statusBatch(Wire.StatusBatch)
    case statusBatchAck(Wire.StatusBatchAck)

    public var type: Wire.MessageType {
        switch self {
        case .register: return .register
        case .registerAck: return .registerAck
        case .heartbeat: return .heartbeat
        case .heartbeatAck: return .heartbeatAck
        case .assignment: return .assignment
        case .assignmentAck: return .assignmentAck
        case .statusUpdate: return .statusUpdate
        case .statusAck: return .statusAck
        case .cancel: return .cancel
        case .regionSummary: return .regionSummary
        case .regionSummaryAck: return .regionSummaryAck
        case .jobForward: return .jobForward
        case .jobForwardAck: return .jobForwardAck
        case .submit: return .submit
        case .submitReply: return .submitReply
        case .query: return .query
        case .queryReply: return .queryReply
        case .errorReply: return .errorReply
        case .nodeCommand: return .nodeCommand
        case .jobControl: return .jobControl
        case .regionControl: return .regionControl
        case .deploy: return .deploy
        case .serviceControl: return .serviceControl
        case .keyControl: return .keyControl
        case .statusBatch: return .statusBatch
        case .statusBatchAck: return .statusBatchAck
        }
    }

    /// The payload message, for serialisation and logging.
    public var message: any SwiftProtobuf.Message {
        switch self {
        case .register(let m): return m
        case .registerAck(let m): return m
        case .heartbeat(let m): return m
        case .heartbeatAck(let m): return m
        case .assignment(let m): return m
        case .assignmentAck(let m): return m
        case .statusUpdate(let m): return m
        case .statusAck(let m): return m
        case .cancel(let m): return m
        case .regionSummary(let m): return m
        case .regionSummaryAck(let m): return m
        case .jobForward(let m): return m
        case .jobForwardAck(let m): return m
        case .submit(let m): return m
        case .submitReply(let m): return m
        case .query(let m): return m
        case .queryReply(let m): return m
        case .errorReply(let m): return m
        case .nodeCommand(let m): return m
        case .jobControl(let m): return m
        case .regionControl(let m): return m
        case .deploy(let m): return m
        case .serviceControl(let m): return m
        case .keyControl(let m): return m
        case .statusBatch(let m): return m
        case .statusBatchAck(let m): return m
        }
    }
}

/// A message as received: envelope fields plus the decoded body.
public struct Message: Sendable {
    public var version: UInt32
    public var sender: String
    public var sequence: UInt64
    public var replyTo: UInt64
    public var body: Body
    public init(version: UInt32 = Wire.version, sender: String, sequence: UInt64, replyTo: UInt64 = 0, body: Body) {
        self.version = version
        self.sender = sender
        self.sequence = sequence
        self.replyTo = replyTo
        self.body = body
    }
}

/// Why an inbound frame was rejected. Each case is counted and logged by the shells; none of
/// them stops the receiver.
public enum ProtocolError: Error, CustomStringConvertible, Sendable, Equatable {
    case emptyFrame
    case oversized(bytes: Int, limit: Int)
    case malformedEnvelope(String)
    case unsupportedVersion(UInt32)
    case unknownType(Int)
    case malformedPayload(type: String, reason: String)
    case invalidField(type: String, field: String, reason: String)

    public var description: String {
        switch self {
        case .emptyFrame: return "empty frame"
        case .oversized(let b, let l): return "frame of \(b) bytes exceeds limit \(l)"
        case .malformedEnvelope(let r): return "not a ComputeGrid envelope: \(r)"
        case .unsupportedVersion(let v): return "protocol version \(v) not supported (this build speaks \(Wire.version))"
        case .unknownType(let t): return "unknown message type \(t)"
        case .malformedPayload(let t, let r): return "\(t) payload does not decode: \(r)"
        case .invalidField(let t, let f, let r): return "\(t).\(f): \(r)"
        }
    }

    /// Short stable label for counters.
    public var counterLabel: String {
        switch self {
        case .emptyFrame: return "empty_frame"
        case .oversized: return "oversized"
        case .malformedEnvelope: return "malformed_envelope"
        case .unsupportedVersion: return "unsupported_version"
        case .unknownType: return "unknown_type"
        case .malformedPayload: return "malformed_payload"
        case .invalidField: return "invalid_field"
        }
    }
}

/// Encodes and decodes envelopes. Pure; shells own the sockets.
public struct EnvelopeCodec: Sendable {
    public var maxFrameBytes: Int
    /// FieldBounds on every decoded message (always, except to measure what they cost: grid-bench micro).
    public var checksFieldBounds = true

    public init(maxFrameBytes: Int = Wire.defaultMaxFrameBytes) {
        self.maxFrameBytes = maxFrameBytes
    }

    public func encode(_ message: Message) -> [UInt8] {
        var env = Wire.Envelope()
        env.version = message.version
        env.type = message.body.type
        env.sender = message.sender
        env.sequence = message.sequence
        env.replyTo = message.replyTo
        // Serialising a fully-initialised proto3 message cannot fail.
        env.payload = (try? message.body.message.serializedData()) ?? Data()
        return Array((try? env.serializedData()) ?? Data())
    }

    public func decode(_ frame: [UInt8]) throws(ProtocolError) -> Message {
        if frame.isEmpty { throw .emptyFrame }
        if frame.count > maxFrameBytes { throw .oversized(bytes: frame.count, limit: maxFrameBytes) }
        let env: Wire.Envelope
        do {
            env = try Wire.Envelope(serializedBytes: frame)
        } catch {
            throw .malformedEnvelope(String(describing: error))
        }
        if env.version == 0 { throw .malformedEnvelope("version field missing") }
        if env.version != Wire.version { throw .unsupportedVersion(env.version) }
        if env.sender.utf8.count > Wire.maxSenderBytes {
            throw .malformedEnvelope("sender is \(env.sender.utf8.count) bytes; at most \(Wire.maxSenderBytes)")
        }
        let body = try Self.decodeBody(type: env.type, payload: env.payload, checkBounds: checksFieldBounds)
        try Validation.check(body)
        return Message(version: env.version, sender: env.sender, sequence: env.sequence, replyTo: env.replyTo, body: body)
    }

    static func decodeBody(type: Wire.MessageType, payload: Data, checkBounds: Bool = true) throws(ProtocolError) -> Body {
        func d<M: SwiftProtobuf.Message>(_: M.Type) throws(ProtocolError) -> M {
            let m: M
            do { m = try M(serializedBytes: payload) } catch {
                throw .malformedPayload(type: "\(type)", reason: String(describing: error))
            }
            // Generic here, so the bounds visitor is specialised for each message type.
            if checkBounds { try FieldBounds.check(m) }
            return m
        }
        switch type {
        case .register: return .register(try d(Wire.Register.self))
        case .registerAck: return .registerAck(try d(Wire.RegisterAck.self))
        case .heartbeat: return .heartbeat(try d(Wire.Heartbeat.self))
        case .heartbeatAck: return .heartbeatAck(try d(Wire.HeartbeatAck.self))
        case .assignment: return .assignment(try d(Wire.Assignment.self))
        case .assignmentAck: return .assignmentAck(try d(Wire.AssignmentAck.self))
        case .statusUpdate: return .statusUpdate(try d(Wire.StatusUpdate.self))
        case .statusAck: return .statusAck(try d(Wire.StatusAck.self))
        case .cancel: return .cancel(try d(Wire.Cancel.self))
        case .regionSummary: return .regionSummary(try d(Wire.RegionSummary.self))
        case .regionSummaryAck: return .regionSummaryAck(try d(Wire.RegionSummaryAck.self))
        case .jobForward: return .jobForward(try d(Wire.JobForward.self))
        case .jobForwardAck: return .jobForwardAck(try d(Wire.JobForwardAck.self))
        case .submit: return .submit(try d(Wire.Submit.self))
        case .submitReply: return .submitReply(try d(Wire.SubmitReply.self))
        case .query: return .query(try d(Wire.Query.self))
        case .queryReply: return .queryReply(try d(Wire.QueryReply.self))
        case .errorReply: return .errorReply(try d(Wire.ErrorReply.self))
        case .nodeCommand: return .nodeCommand(try d(Wire.NodeCommand.self))
        case .jobControl: return .jobControl(try d(Wire.JobControl.self))
        case .regionControl: return .regionControl(try d(Wire.RegionControl.self))
        case .deploy: return .deploy(try d(Wire.Deploy.self))
        case .serviceControl: return .serviceControl(try d(Wire.ServiceControl.self))
        case .keyControl: return .keyControl(try d(Wire.KeyControl.self))
        case .statusBatch: return .statusBatch(try d(Wire.StatusBatch.self))
        case .statusBatchAck: return .statusBatchAck(try d(Wire.StatusBatchAck.self))
        case .unspecified: throw .unknownType(0)
        case .UNRECOGNIZED(let raw): throw .unknownType(raw)
        }
    }
}

/// Field checks that must hold before any handler sees a message: ids that key storage are
/// present and well-formed.
enum Validation {
    static func id(_ value: String, _ type: String, _ field: String) throws(ProtocolError) {
        if let problem = IdentifierRules.problem(with: value) {
            throw .invalidField(type: type, field: field, reason: problem)
        }
    }

    /// Device and partition ids become resource-name segments (`cg://r/n/<device>/<partition>`),
    /// so they follow the identifier rules and are unique on a node.
    static func devices(_ devices: [Wire.Device], _ type: String) throws(ProtocolError) {
        var seen = Set<String>()
        seen.reserveCapacity(devices.count)
        for (i, d) in devices.enumerated() {
            if let problem = IdentifierRules.problem(with: d.id) {
                throw .invalidField(type: type, field: "devices[\(i)].id", reason: problem)
            }
            if !seen.insert(d.id).inserted {
                throw .invalidField(type: type, field: "devices[\(i)].id", reason: "'\(d.id)' is reported twice")
            }
            for (j, p) in d.partitions.enumerated() {
                let local = ResourceName.partitionSegment(p.id, of: d.id)
                if let problem = IdentifierRules.problem(with: local) {
                    throw .invalidField(type: type, field: "devices[\(i)].partitions[\(j)].id",
                                        reason: "'\(local)' \(problem) (a partition id is '<id>' or '<device id>/<id>')")
                }
                if !seen.insert(p.id).inserted {
                    throw .invalidField(type: type, field: "devices[\(i)].partitions[\(j)].id", reason: "'\(p.id)' is reported twice")
                }
            }
        }
    }

    static func statusUpdate(_ m: Wire.StatusUpdate, _ type: String, _ path: String) throws(ProtocolError) {
        try id(m.jobID, type, path + "job_id")
        try id(m.updateID, type, path + "update_id")
        if JobState(rawValue: m.state) == nil {
            throw .invalidField(type: type, field: path + "state", reason: "unknown state '\(m.state)'")
        }
    }

    static func check(_ body: Body) throws(ProtocolError) {
        switch body {
        case .register(let m):
            try id(m.nodeID, "Register", "node_id")
            try devices(m.devices, "Register")
        case .heartbeat(let m):
            try id(m.nodeID, "Heartbeat", "node_id")
            try devices(m.devices, "Heartbeat")
        case .assignment(let m):
            try id(m.assignmentID, "Assignment", "assignment_id")
            try id(m.jobID, "Assignment", "job_id")
            try id(m.nodeID, "Assignment", "node_id")
        case .assignmentAck(let m):
            try id(m.assignmentID, "AssignmentAck", "assignment_id")
            try id(m.nodeID, "AssignmentAck", "node_id")
        case .statusUpdate(let m): try statusUpdate(m, "StatusUpdate", "")
        case .statusBatch(let m):
            for (i, u) in m.updates.enumerated() { try statusUpdate(u, "StatusBatch", "updates[\(i)].") }
        case .regionSummary(let m): try id(m.regionID, "RegionSummary", "region_id")
        case .jobForward(let m):
            try id(m.jobID, "JobForward", "job_id")
            if !m.hasSpec { throw .invalidField(type: "JobForward", field: "spec", reason: "missing") }
        case .jobForwardAck(let m): try id(m.jobID, "JobForwardAck", "job_id")
        case .submit(let m):
            if m.items.isEmpty {
                if !m.hasSpec { throw .invalidField(type: "Submit", field: "spec", reason: "missing (and no items)") }
                if !m.jobID.isEmpty { try id(m.jobID, "Submit", "job_id") }
            }
            for (i, item) in m.items.enumerated() {
                if !item.hasSpec { throw .invalidField(type: "Submit", field: "items[\(i)].spec", reason: "missing") }
                if !item.jobID.isEmpty { try id(item.jobID, "Submit", "items[\(i)].job_id") }
            }
        case .cancel(let m): try id(m.jobID, "Cancel", "job_id")
        case .query(let m):
            if !m.resource.isEmpty {
                do { _ = try ResourceName(parsing: m.resource) } catch {
                    throw .invalidField(type: "Query", field: "resource", reason: error.description)
                }
            }
            if !m.service.isEmpty { try id(m.service, "Query", "service") }
        case .nodeCommand(let m):
            try id(m.nodeID, "NodeCommand", "node_id")
            if m.reason.utf8.count > 1024 { throw .invalidField(type: "NodeCommand", field: "reason", reason: "at most 1024 bytes") }
        case .jobControl(let m):
            try id(m.jobID, "JobControl", "job_id")
            if m.reason.utf8.count > 1024 { throw .invalidField(type: "JobControl", field: "reason", reason: "at most 1024 bytes") }
            if case .UNRECOGNIZED(let raw) = m.action { throw .invalidField(type: "JobControl", field: "action", reason: "unknown action \(raw)") }
            if m.action == .unspecified { throw .invalidField(type: "JobControl", field: "action", reason: "missing (hold, release or requeue)") }
        case .regionControl(let m):
            try id(m.regionID, "RegionControl", "region_id")
            if case .UNRECOGNIZED(let raw) = m.action { throw .invalidField(type: "RegionControl", field: "action", reason: "unknown action \(raw)") }
            if m.action == .unspecified { throw .invalidField(type: "RegionControl", field: "action", reason: "missing (remove)") }
        case .deploy(let m):
            if !m.hasSpec { throw .invalidField(type: "Deploy", field: "spec", reason: "missing") }
            try id(m.spec.name, "Deploy", "spec.name")
        case .serviceControl(let m):
            try id(m.name, "ServiceControl", "name")
            if case .UNRECOGNIZED(let raw) = m.action { throw .invalidField(type: "ServiceControl", field: "action", reason: "unknown action \(raw)") }
            if m.action == .unspecified { throw .invalidField(type: "ServiceControl", field: "action", reason: "missing (scale, rollout or undeploy)") }
        case .keyControl(let m):
            if case .UNRECOGNIZED(let raw) = m.action { throw .invalidField(type: "KeyControl", field: "action", reason: "unknown action \(raw)") }
            if m.action == .unspecified { throw .invalidField(type: "KeyControl", field: "action", reason: "missing (enroll, revoke or list)") }
            for (field, v) in [("public_key", m.publicKey), ("role", m.role), ("name", m.name), ("right", m.right)] where v.utf8.count > 1024 {
                throw .invalidField(type: "KeyControl", field: field, reason: "at most 1024 bytes")
            }
        default: break
        }
    }
}
