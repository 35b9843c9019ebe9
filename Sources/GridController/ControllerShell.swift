import Foundation
import GridCore
import GridProtocol
import GridStore
import GridTransport
import Logging
import Metrics

/// The clock a shell reads: monotonic milliseconds for timers and liveness, wall time for records.
public struct MomentClock: Sendable {
    public let now: @Sendable () -> Moment
    public init(now: @escaping @Sendable () -> Moment) { self.now = now }

    public static let system = MomentClock {
        Moment(monotonicMs: Int64(DispatchTime.now().uptimeNanoseconds / 1_000_000), wall: Date())
    }
}

/// A controller's logic as a value: decoded messages and turns in, directives out.
public protocol ControllerInstance: Sendable {
    associatedtype Settings: Sendable
    /// Rebuilds the instance from the durable log.
    static func recover(settings: Settings, store: GridStore, now: Moment) throws -> Self
    static func name(_ settings: Settings) -> String
    mutating func receive(_ message: Message, origin: Origin, now: Moment) -> [ControllerDirective]
    mutating func onTick(now: Moment, backlog: Bool) -> [ControllerDirective]
    /// When the instance wants its next turn (monotonic ms); nil = no hurry.
    var nextDueMs: Int64? { get }
    /// Counts and gauges for /metrics, /readyz and the dashboard (worked out when asked).
    func observe(now: Moment) -> ControllerObservation
    /// Seconds from submission to placement of the jobs placed since the last call (region).
    mutating func takePlacementWaits() -> [Double]
    /// The gateway's address and the load through it (a region's; others ignore it).
    mutating func onGateway(url: String, loads: [Wire.ServiceLoad])
}

extension ControllerInstance {
    public mutating func onGateway(url: String, loads: [Wire.ServiceLoad]) {}
}

/// A request to a controller's loop thread from inside its process (the HTTP API): it is
/// performed between batches, on the thread that owns the state, so reads are consistent and
/// writes follow the same path as a peer's message (validated, persisted before answered).
public enum ControllerCall: Sendable {
    /// Deliver `body` as if a client had sent it; `answer` gets the reply (an `ERROR_REPLY`
    /// when refused, or when no answer came within `ControllerShell.callTimeoutMs`). A relayed
    /// request (a region's nodes asked of the national scheduler) is answered when the region
    /// answers.
    case ask(Body, caller: Principal?, answer: @Sendable (Body) -> Void)
    /// Hand an observation to `reply`.
    case observe(reply: @Sendable (ControllerObservation) -> Void)
}

/// The identity in-process asks appear under: "\0http" and an 8-byte call number. ZeroMQ
/// never gives a peer an identity that starts with a zero byte and is 13 bytes long (its
/// generated ones are 5), so no real peer can be mistaken for one.
let localCallPrefix: [UInt8] = [0, 0x68, 0x74, 0x74, 0x70]

/// Histograms a shell records while it works, through swift-metrics (a `MetricsFactory` such
/// as swift-prometheus's, injected; by default nothing is recorded).
public struct ControllerMetrics: Sendable {
    let commitSeconds: Metrics.Timer
    let commitMutations: Recorder
    let batchSeconds: Metrics.Timer
    let placementWaitSeconds: Metrics.Timer

    public static let commitSecondsLabel = "grid_store_commit_seconds"
    public static let commitMutationsLabel = "grid_store_commit_batch_mutations"
    public static let batchSecondsLabel = "grid_controller_batch_seconds"
    public static let placementWaitLabel = "grid_region_placement_wait_seconds"

    public init(factory: any MetricsFactory = NOOPMetricsHandler.instance) {
        commitSeconds = Metrics.Timer(label: Self.commitSecondsLabel, factory: factory)
        commitMutations = Recorder(label: Self.commitMutationsLabel, aggregate: true, factory: factory)
        batchSeconds = Metrics.Timer(label: Self.batchSecondsLabel, factory: factory)
        placementWaitSeconds = Metrics.Timer(label: Self.placementWaitLabel, factory: factory)
    }
}

/// Performs what a controller instance decides, one batch at a time:
/// decode every frame of the batch and apply it to the instance, let the instance's timers run,
/// commit every `.persist` of the batch in one transaction (one fsync), and only then hand back
/// the frames to send. If the commit fails (disk full, I/O error) nothing of the batch is sent —
/// no acknowledgement of an unstored change leaves — and the instance is rebuilt from the store,
/// so memory never runs ahead of the log; peers retry what went unanswered.
public final class ControllerShell<Instance: ControllerInstance> {
    public private(set) var instance: Instance
    let settings: Instance.Settings
    let store: GridStore
    let logger: Logger
    let clock: MomentClock
    var messenger: Messenger
    public private(set) var commits = 0
    public private(set) var failedCommits = 0
    let metrics: ControllerMetrics
    /// Messages received, by type (indexed by the wire type number; the validated types are all
    /// below 64), since start. An array, not a dictionary: it is bumped for every message.
    var receivedByType = [Int](repeating: 0, count: 64)
    /// In-process asks waiting for their answer, by call number.
    var calls: [UInt64: (answer: @Sendable (Body) -> Void, deadlineMs: Int64)] = [:]
    var lastCall: UInt64 = 0
    /// How long an in-process ask may wait for its answer.
    public static var callTimeoutMs: Int64 { 30_000 }
    /// The region's service rotation and its gateway's measurements (unused by the national scheduler).
    public let gateway: GatewayTable
    var lastGatewayReportMs: Int64 = .min
    /// Who may say what (CURVE keys); nil: the socket is not authenticated (loopback demo).
    public let access: AccessControl?
    /// A region's assignment signer (docs/security.md): every assignment sent is signed afresh.
    let signer: AssignmentSigner?

    public init(settings: Instance.Settings, store: GridStore, maxFrameBytes: Int, logger: Logger, clock: MomentClock,
                metrics: ControllerMetrics = ControllerMetrics(), gateway: GatewayTable = GatewayTable(),
                access: AccessControl? = nil, signer: AssignmentSigner? = nil) throws {
        self.gateway = gateway
        self.access = access
        self.signer = signer
        if let access { access.setEnrolled(try store.read("read enrolled keys") { try $0.enrolledKeys() }) }
        self.settings = settings
        self.store = store
        self.logger = logger
        self.clock = clock
        self.metrics = metrics
        self.messenger = Messenger(sender: Instance.name(settings), maxFrameBytes: maxFrameBytes, logger: logger)
        instance = try Instance.recover(settings: settings, store: store, now: clock.now())
    }

    /// Rejected inbound frames by reason, for logs and tests.
    public var rejectedFrames: [String: Int] { messenger.rejected }

    /// One batch in, the frames to send out. Runs on the socket loop's thread.
    public func handle(_ inputs: [LoopInput<ControllerCall>], backlog: Bool) -> [LoopOutput] {
        let started = DispatchTime.now().uptimeNanoseconds
        let now = clock.now()
        var directives: [ControllerDirective] = []
        var errors: [LoopOutput] = []
        var observers: [@Sendable (ControllerObservation) -> Void] = []
        for input in inputs {
            switch input {
            case .tick: continue
            case .badShape(let peer, let frames): messenger.countBadShape(from: peer, frames: frames)
            case .frame(let peer, let payload, let delimited, let user):
                guard let message = messenger.decode(payload, from: peer, delimited: delimited, nowMs: now.monotonicMs, reply: &errors) else { continue }
                var principal: Principal?
                if let access {
                    switch access.admit(message.body, user: user) {
                    case .success(let p): principal = p
                    case .failure(let why):
                        if message.body.type != .errorReply {
                            errors.append(messenger.output(Self.errorBody("forbidden", why.message), to: peer, replyTo: message.sequence, delimited: delimited))
                        }
                        continue
                    }
                }
                countReceived(message.body.type)
                let origin = Origin(peer: peer, sequence: message.sequence, delimited: delimited, principal: principal)
                if Self.answeredByShell(message.body) {
                    if let answer = shellAnswer(message, origin: origin, now: now, into: &directives) {
                        errors.append(messenger.output(answer, to: peer, replyTo: message.sequence, delimited: delimited))
                    }
                    continue
                }
                if let record = Self.auditRecord(message.body, who: Self.who(principal, peer: peer, sender: message.sender), now: now) {
                    directives.append(.persist(.audit(record)))
                }
                directives += instance.receive(message, origin: origin, now: now)
            case .event(.observe(let reply)):
                observers.append(reply)
            case .event(.ask(let body, let caller, let answer)):
                directives += ask(body, caller: caller, answer: answer, now: now)
            }
        }
        // The gateway's address and load, once a second, for the region's summaries.
        if lastGatewayReportMs == .min || now.monotonicMs - lastGatewayReportMs >= 1000 {
            lastGatewayReportMs = now.monotonicMs
            instance.onGateway(url: gateway.url, loads: gateway.loads())
        }
        directives += instance.onTick(now: now, backlog: backlog)
        expireCalls(now)
        // Error replies change nothing stored: they need not wait for the batch's commit.
        let out = errors + perform(directives)
        for wait in instance.takePlacementWaits() { metrics.placementWaitSeconds.recordSeconds(wait) }
        if !observers.isEmpty {
            let o = observation(now: now)
            for reply in observers { reply(o) }
        }
        returnFreedMemory(now)
        metrics.batchSeconds.recordNanoseconds(Int64(DispatchTime.now().uptimeNanoseconds - started))
        return out
    }

    /// An in-process ask: validated exactly as a frame from a peer would be (encoded and decoded
    /// again), then given to the instance under the call's own identity.
    /// `caller`: the HTTP token's principal (checked by the same rules as a ZeroMQ key's, and
    /// the tenant it is bound to applies); nil = the controller's own ask, unrestricted.
    func ask(_ body: Body, caller: Principal? = nil, answer: @escaping @Sendable (Body) -> Void, now: Moment) -> [ControllerDirective] {
        lastCall &+= 1
        let n = lastCall
        let message: Message
        do {
            message = try messenger.codec.decode(messenger.codec.encode(Message(sender: "http", sequence: n, body: body)))
        } catch {
            var e = Wire.ErrorReply()
            e.code = "bad_request"
            e.message = "\(error)"
            answer(.errorReply(e))
            return []
        }
        var identity = localCallPrefix
        withUnsafeBytes(of: n.bigEndian) { identity.append(contentsOf: $0) }
        countReceived(message.body.type)
        let origin = Origin(peer: .downstream(identity: identity), sequence: n, principal: caller)
        var out: [ControllerDirective] = []
        if case .keyControl = message.body {
            answer(Self.errorBody("unsupported", "keys are enrolled over ZeroMQ with an admin key (gridctl keys enroll), not over HTTP"))
            return []
        }
        if let caller, let why = AccessControl.check(message.body, caller) {
            answer(Self.errorBody("forbidden", "http token \(caller.operatorName ?? caller.label): \(why)"))
            return []
        }
        if Self.answeredByShell(message.body), let reply = shellAnswer(message, origin: origin, now: now, into: &out) {
            answer(reply)
            return out
        }
        calls[n] = (answer, now.monotonicMs + Self.callTimeoutMs)
        if let record = Self.auditRecord(message.body, who: caller.map { "http \($0.operatorName ?? $0.label)" } ?? "http API", now: now) { out.append(.persist(.audit(record))) }
        return out + instance.receive(message, origin: origin, now: now)
    }

    /// Messages the shell answers itself (it keeps what they ask about): COUNTERS, AUDIT and
    /// KEY_CONTROL. Nil for the instance's messages. A KEY_CONTROL change goes into `directives`
    /// (stored, with its audit record) and its answer is sent after the commit, as a reply.
    func shellAnswer(_ message: Message, origin: Origin, now: Moment, into directives: inout [ControllerDirective]) -> Body? {
        switch message.body {
        case .query(let q) where q.kind == .counters:
            return .queryReply(countersReply())
        case .query(let q) where q.kind == .audit:
            var r = Wire.QueryReply()
            do {
                let limit = q.limit == 0 ? 100 : Int(min(q.limit, 10_000))
                r.audit = try store.read("read the audit log") { try $0.audit(limit: limit) }.map { a in
                    var e = Wire.AuditEntry()
                    e.atMs = UInt64(clamping: a.at.unixMilliseconds)
                    e.who = a.who
                    e.action = a.action
                    e.target = a.target
                    e.detail = a.detail
                    return e
                }
            } catch {
                return Self.errorBody("internal", "cannot read the audit log: \(error)")
            }
            return .queryReply(r)
        case .keyControl(let k):
            guard let access else {
                return Self.errorBody("unsupported", "keys are enrolled at a controller with CURVE on (key_file and authorized_keys; docs/security.md)")
            }
            let who = Self.who(origin.principal, peer: origin.peer, sender: message.sender)
            var r = Wire.QueryReply()
            switch k.action {
            case .enroll:
                guard Z85.isCurveKey(k.publicKey) else {
                    return Self.errorBody("bad_request", "KeyControl.public_key: '\(k.publicKey.prefix(48))' is not a CURVE public key (40 Z85 characters)")
                }
                if access.current.keys[k.publicKey] != nil {
                    return Self.errorBody("bad_request", "key \(k.publicKey.prefix(8))… is listed in authorized_keys: change it there and reload (SIGHUP)")
                }
                let p: Principal
                switch AccessList.principal(role: k.role, name: k.name, right: k.right.isEmpty ? nil : k.right, tenant: k.tenant) {
                case .success(let x): p = x
                case .failure(let e): return Self.errorBody("bad_request", "KeyControl: \(e.message)")
                }
                let record = EnrolledKey(publicKey: k.publicKey, role: k.role, name: k.name, right: k.right, enrolledAt: now.wall,
                                         enrolledBy: origin.principal.map(\.label) ?? who, tenant: p.tenant ?? "")
                access.enroll(record, as: p)
                directives.append(.persist(.keyEnrolled(record)))
                directives.append(.persist(.audit(AuditRecord(at: now.wall, who: who, action: "key_control", target: String(k.publicKey.prefix(8)) + "…",
                                                              detail: "enroll \(p.label)"))))
                directives.append(.log(LogEvent(.notice, "key enrolled", ["key": String(k.publicKey.prefix(8)), "as": p.label, "by": who])))
            case .revoke:
                if access.current.keys[k.publicKey] != nil {
                    return Self.errorBody("bad_request", "key \(k.publicKey.prefix(8))… is listed in authorized_keys: take it out there and reload (SIGHUP)")
                }
                guard let old = access.enrolled(k.publicKey) else {
                    return Self.errorBody("not_found", "key \(k.publicKey.prefix(8))… is not enrolled here")
                }
                access.revokeEnrolled(k.publicKey)
                directives.append(.persist(.keyRevoked(publicKey: k.publicKey)))
                directives.append(.persist(.audit(AuditRecord(at: now.wall, who: who, action: "key_control", target: String(k.publicKey.prefix(8)) + "…",
                                                              detail: "revoke \(old.role) \(old.name)"))))
                directives.append(.log(LogEvent(.notice, "key revoked", ["key": String(k.publicKey.prefix(8)), "by": who])))
            case .list, .unspecified, .UNRECOGNIZED:
                break
            }
            r.keys = access.entries()
            if k.action == .list { return .queryReply(r) }
            // Sent after the batch's commit, like every reply that acknowledges a change.
            directives.append(.send(.queryReply(r), to: origin.peer, replyTo: origin.sequence, delimited: origin.delimited))
            return nil
        default:
            return nil
        }
    }

    static func answeredByShell(_ body: Body) -> Bool {
        switch body {
        case .keyControl: return true
        case .query(let q): return q.kind == .counters || q.kind == .audit
        default: return false
        }
    }

    static func errorBody(_ code: String, _ message: String) -> Body {
        var e = Wire.ErrorReply()
        e.code = code
        e.message = message
        return .errorReply(e)
    }

    /// Who sent a message, for the audit log.
    static func who(_ principal: Principal?, peer: Peer, sender: String) -> String {
        if let p = principal { return p.label }
        return "unauthenticated \(peer.label) (sender '\(sender.prefix(64))')"
    }

    /// The audit record of an operator action (nil for the rest): who, what, on what.
    /// `who` is worked out only for an audited message (never for heartbeats and the like).
    static func auditRecord(_ body: Body, who: @autoclosure () -> String, now: Moment) -> AuditRecord? {
        func r(_ target: String, _ detail: String) -> AuditRecord {
            AuditRecord(at: now.wall, who: who(), action: "\(body.type)", target: target, detail: detail)
        }
        switch body {
        case .submit(let m):
            let n = m.items.isEmpty ? 1 : m.items.reduce(0) { $0 + Int(max(1, $1.count)) }
            let ids = m.items.isEmpty ? m.jobID : m.items.map(\.jobID).joined(separator: ",")
            return r(ids.isEmpty ? "(ids generated)" : String(ids.prefix(512)), "submit \(n) job(s)")
        case .cancel(let m): return r(m.jobID, "cancel")
        case .jobControl(let m): return r(m.jobID, "\(m.action)" + (m.reason.isEmpty ? "" : ": \(m.reason.prefix(256))"))
        case .nodeCommand(let m): return r(m.regionID.isEmpty ? m.nodeID : "\(m.regionID)/\(m.nodeID)", "\(m.action)" + (m.reason.isEmpty ? "" : ": \(m.reason.prefix(256))"))
        case .regionControl(let m): return r(m.regionID, "\(m.action)")
        case .deploy(let m): return r(m.spec.name, "deploy \(m.spec.model.version)")
        case .serviceControl(let m): return r(m.name, "\(m.action)" + (m.version.isEmpty ? "" : " \(m.version)") + (m.action == .scale ? " \(m.replicas)" : ""))
        default: return nil
        }
    }

    /// This controller's own counts (Query COUNTERS): received by type, rejected frames and
    /// refused keys by reason, commits. Answered by the shell, which keeps them.
    func countersReply() -> Wire.QueryReply {
        var r = Wire.QueryReply()
        for (type, n) in receivedByType.enumerated() where n > 0 {
            r.counters["received." + (Wire.MessageType(rawValue: type).map { "\($0)" } ?? "\(type)")] = UInt64(n)
        }
        for (reason, n) in messenger.rejected { r.counters["rejected.\(reason)"] = UInt64(n) }
        for (reason, n) in access?.refused ?? [:] { r.counters["refused.\(reason)"] = UInt64(n) }
        r.counters["commits"] = UInt64(commits)
        r.counters["failed_commits"] = UInt64(failedCommits)
        return r
    }

    func countReceived(_ type: Wire.MessageType) {
        let i = type.rawValue
        if i >= 0 && i < receivedByType.count { receivedByType[i] += 1 }
    }

    /// The call an identity names, if it is an in-process ask's.
    static func callNumber(_ identity: [UInt8]) -> UInt64? {
        guard identity.count == 13, identity[0] == 0, identity[1] == 0x68, identity.starts(with: localCallPrefix) else { return nil }
        return identity[5...].reduce(0) { $0 << 8 | UInt64($1) }
    }

    func expireCalls(_ now: Moment) {
        guard !calls.isEmpty else { return }
        for (n, call) in calls where call.deadlineMs <= now.monotonicMs {
            calls[n] = nil
            var e = Wire.ErrorReply()
            e.code = "unavailable"
            e.message = "no answer within \(Self.callTimeoutMs / 1000) s (a region did not answer, or the change could not be stored); retry"
            call.answer(.errorReply(e))
        }
    }

    /// The instance's observation with the shell's own counts.
    public func observation(now: Moment) -> ControllerObservation {
        var o = instance.observe(now: now)
        for (type, n) in receivedByType.enumerated() where n > 0 {
            o.receivedByType[Wire.MessageType(rawValue: type).map { "\($0)" } ?? "\(type)", default: 0] += n
        }
        o.rejectedFrames = messenger.rejected
        for (reason, n) in access?.refused ?? [:] { o.rejectedFrames["refused_\(reason)"] = n }
        o.commits = commits
        o.failedCommits = failedCommits
        o.pendingCalls = calls.count
        return o
    }

    var lastTrimMs: Int64 = 0

    /// Bursts (100,000 registrations, a large submit) leave freed memory in glibc's arenas;
    /// hand it back to the system every 10 s so the resident size follows the live state.
    func returnFreedMemory(_ now: Moment) {
        #if os(Linux)
        guard now.monotonicMs - lastTrimMs >= 10_000 else { return }
        lastTrimMs = now.monotonicMs
        _ = glibcMallocTrim(0)
        #endif
    }

    /// Commits, logs, then encodes the sends.
    public func perform(_ directives: [ControllerDirective]) -> [LoopOutput] {
        var batch: [StoreMutation] = []
        for d in directives { if case .persist(let m) = d { batch.append(m) } }
        if !batch.isEmpty {
            do {
                let started = DispatchTime.now().uptimeNanoseconds
                try store.commit(batch)
                metrics.commitSeconds.recordNanoseconds(Int64(DispatchTime.now().uptimeNanoseconds - started))
                metrics.commitMutations.record(batch.count)
                commits += 1
            } catch {
                failedCommits += 1
                logger.error("could not store a batch of \(batch.count) change(s); nothing of it is acknowledged, state is reloaded from \(store.path): \(error)")
                reload()
                return []
            }
        }
        var out: [LoopOutput] = []
        out.reserveCapacity(directives.count)
        for d in directives {
            switch d {
            case .send(let body, let peer, let replyTo, let delimited):
                if case .downstream(let identity) = peer, let n = Self.callNumber(identity) {
                    calls.removeValue(forKey: n)?.answer(body)
                    continue
                }
                var body = body
                if let signer, case .assignment(let a) = body {
                    do {
                        body = .assignment(try signer.signed(a, nowMs: UInt64(clamping: clock.now().wall.unixMilliseconds)))
                    } catch {
                        logger.error("cannot sign assignment \(a.assignmentID): \(error); not sent (resent later)")
                        continue
                    }
                }
                out.append(messenger.output(body, to: peer, replyTo: replyTo, delimited: delimited))
            case .log(let e):
                logger.log(level: e.level, "\(e.message)", metadata: e.metadata.mapValues { .string($0) })
            case .persist:
                continue
            case .routes(let service, let routes):
                gateway.setRoutes(service, routes)
            }
        }
        return out
    }

    /// Rebuilds the instance from the store (after a failed commit).
    func reload() {
        do {
            if let access { access.setEnrolled(try store.read("read enrolled keys") { try $0.enrolledKeys() }) }
            instance = try Instance.recover(settings: settings, store: store, now: clock.now())
        } catch {
            logger.critical("could not reload state from \(store.path): \(error); keeping the in-memory state")
        }
    }

    /// When the instance wants its next turn (monotonic ns), for the loop's poll timeout.
    public var nextWakeNanoseconds: UInt64? {
        guard let ms = instance.nextDueMs else { return nil }
        return UInt64(max(0, ms)) * 1_000_000
    }
}

public typealias RegionShell = ControllerShell<RegionInstance>

extension RegionInstance: ControllerInstance {
    public static func recover(settings: Settings, store: GridStore, now: Moment) throws -> RegionInstance {
        let recovered = try RegionRecovery.load(from: store, region: settings.region,
                                                retention: Double(settings.historyRetentionMs) / 1000, now: now.wall)
        return RegionInstance(settings: settings, recovered: recovered, now: now)
    }

    public static func name(_ settings: Settings) -> String { settings.region.rawValue }

    public mutating func takePlacementWaits() -> [Double] {
        defer { placementWaits.removeAll(keepingCapacity: true) }
        return placementWaits
    }
}

extension RegionInstance.Settings {
    public init(config: ControllerConfig) {
        self.init(region: RegionID(config.id))
        heartbeatIntervalMs = Int64(config.heartbeatIntervalMs)
        nodeLostAfterMs = Int64(config.nodeLostAfterMs)
        leaseMs = Int64(config.effectiveLeaseMs)
        leaseMarginMs = Int64(config.effectiveLeaseMarginMs)
        summaryIntervalMs = Int64(config.summaryIntervalMs)
        retryIntervalMs = Int64(config.retryIntervalMs)
        placementBudget = config.placementBudget
        historyRetentionMs = Int64(config.historyRetentionHours * 3_600_000)
        placement = .init(allowDegraded: config.placement.allowDegraded)
        frontier = config.placement.frontier
        confirmStarts = config.confirmStarts
        draining = config.drain
        preemption = config.preemption
        accounts = config.accounts
        reservations = config.reservations
        reservationDepth = config.reservationDepth
    }
}

#if os(Linux)
/// glibc's `int malloc_trim(size_t pad)`, which the Glibc module does not export.
@_silgen_name("malloc_trim")
func glibcMallocTrim(_ pad: Int) -> Int32
#endif
