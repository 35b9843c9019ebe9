import Foundation
import GridCore
import GridProtocol
import GridStore
import GridTransport
import Logging
import Synchronization

/// What an operator key (or an HTTP token) may do (docs/security.md). `admin` includes
/// `operate`, which includes `submit`, which includes `read`; every operator may read (queries).
public enum OperatorRight: String, Sendable, Hashable, CaseIterable, Comparable {
    case read, submit, operate, admin
    public static func < (a: Self, b: Self) -> Bool { allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)! }
}

/// Who an authenticated key speaks for.
public enum Principal: Sendable, Hashable {
    /// A node agent: the nodes it may register, heartbeat and report for.
    case agent(nodes: Set<NodeID>)
    /// A region controller (at the national scheduler): its summaries and reports.
    case region(RegionID)
    /// A person or tool using gridctl or the API over ZeroMQ. With a `tenant` (an account), the
    /// key acts for that account only: it submits jobs and services charged to it, sees and
    /// controls only those, and may not touch the fleet (nodes, regions, keys).
    case `operator`(name: String, right: OperatorRight, tenant: String? = nil)

    /// The account an operator key is bound to; nil for every other key and an unbound operator.
    public var tenant: String? {
        if case .operator(_, _, let t) = self { return t }
        return nil
    }

    /// An operator key's (or HTTP token's) name; nil for agents and regions.
    public var operatorName: String? {
        if case .operator(let name, _, _) = self { return name }
        return nil
    }

    public var label: String {
        switch self {
        case .agent(let nodes): return "agent " + nodes.map(\.rawValue).sorted().joined(separator: ",")
        case .region(let r): return "region \(r)"
        case .operator(let name, let right, let tenant):
            return "operator \(name) (\(right.rawValue)\(tenant.map { ", tenant \($0)" } ?? ""))"
        }
    }
}

/// The keys a controller lets in, from its `authorized_keys` file: one key per line,
///
///     <public key, Z85>  agent     <node id>[,<node id>...]
///     <public key, Z85>  region    <region id>
///     <public key, Z85>  operator  <name>  read|submit|operate|admin  [tenant=<account>]
///
/// A field starting with `#` starts a comment (a key holds `#` only inside). Every mistake is
/// reported with its line.
public struct AccessList: Sendable, Equatable {
    public var keys: [String: Principal]

    public init(keys: [String: Principal] = [:]) { self.keys = keys }

    public static func parse(_ text: String, source: String) throws(ConfigError) -> AccessList {
        var keys: [String: Principal] = [:]
        var problems: [String] = []
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            // '#' is a Z85 character inside a key, but no key starts with it (`Z85.isCurveKey`): a
            // field starting with '#' begins a comment (names and rights never hold one).
            var f = raw.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" }).map(String.init)
            if let c = f.firstIndex(where: { $0.hasPrefix("#") }) { f = Array(f[..<c]) }
            guard !f.isEmpty else { continue }
            let at = "line \(n + 1)"
            guard f.count >= 3 else { problems.append("\(at): want '<key> agent|region|operator <name> [right]', got \(f.count) field(s)"); continue }
            let key = f[0]
            guard Z85.isCurveKey(key) else {
                problems.append("\(at): '\(key.prefix(48))' is not a CURVE public key (40 Z85 characters, as gridctl keys generate writes)")
                continue
            }
            if keys[key] != nil { problems.append("\(at): key \(key.prefix(8))… is listed twice"); continue }
            var tenant: String? = nil
            if f.count >= 4, let last = f.last, last.hasPrefix("tenant=") {
                tenant = String(last.dropFirst("tenant=".count))
                f.removeLast()
            }
            switch principal(role: f[1], name: f[2], right: f.count > 3 ? f[3] : nil, tenant: tenant, extra: f.count > 4) {
            case .success(let p): keys[key] = p
            case .failure(let e): problems.append("\(at): \(e.message)")
            }
        }
        if !problems.isEmpty { throw ConfigError(source: source, problems: problems) }
        return AccessList(keys: keys)
    }

    public struct Problem: Error, Sendable { public var message: String }

    /// The principal of a role, name and right (as in the file and in KEY_CONTROL), or what is wrong.
    /// `tenant` (operators only; nil or "" = none) binds the key to one account.
    public static func principal(role: String, name: String, right: String?, tenant: String? = nil, extra: Bool = false) -> Result<Principal, Problem> {
        func bad(_ m: String) -> Result<Principal, Problem> { .failure(Problem(message: m)) }
        let tenant = tenant.flatMap { $0.isEmpty ? nil : $0 }
        if let tenant, role != "operator" { return bad("tenant=\(tenant): only an operator key is bound to a tenant") }
        switch role {
        case "agent":
            let nodes = name.split(separator: ",").map(String.init)
            guard right == nil || right == "", !extra, !nodes.isEmpty else { return bad("an agent line is '<key> agent <node id>[,<node id>...]'") }
            for n in nodes { if let p = IdentifierRules.problem(with: n) { return bad("node id '\(n)' \(p)") } }
            return .success(.agent(nodes: Set(nodes.map(NodeID.init))))
        case "region":
            guard right == nil || right == "", !extra else { return bad("a region line is '<key> region <region id>'") }
            if let p = IdentifierRules.problem(with: name) { return bad("region id '\(name)' \(p)") }
            return .success(.region(RegionID(name)))
        case "operator":
            guard !extra, let r = right.flatMap(OperatorRight.init(rawValue:)) else {
                return bad("an operator line is '<key> operator <name> read|submit|operate|admin [tenant=<account>]'")
            }
            if let p = IdentifierRules.problem(with: name) { return bad("operator name '\(name)' \(p)") }
            if let tenant {
                if let p = IdentifierRules.problem(with: tenant) { return bad("tenant '\(tenant)' \(p)") }
                if r == .admin { return bad("tenant=\(tenant): an admin key acts for the whole controller; bind read, submit or operate keys to a tenant") }
            }
            return .success(.operator(name: name, right: r, tenant: tenant))
        default:
            return bad("role '\(role)' is not one of agent, region, operator")
        }
    }

    public static func load(_ path: String) throws(ConfigError) -> AccessList {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw ConfigError(source: path, problems: ["cannot read it: \(error.localizedDescription)"])
        }
        return try parse(text, source: path)
    }
}

/// The controller's gate: the ZAP authenticator (who may connect at all) and the check of every
/// message against what its key may say (`authorize`). The list is swapped whole on reload
/// (SIGHUP), so a revoked key is refused from its next message on, connected or not.
public final class AccessControl: ZAPAuthenticator, @unchecked Sendable {
    private let list: Mutex<AccessList>
    private let logger: Logger
    /// Refused handshakes and messages by reason (for `gridctl status` and metrics).
    private let refusals = Mutex<[String: Int]>([:])
    private let warned = Mutex<[String: (minute: Int64, count: Int)]>([:])
    /// Warnings per reason per minute before they are only counted.
    static let warningsPerMinute = 5

    /// Keys enrolled over the wire (KEY_CONTROL, stored in SQLite), beside the file's.
    private let enrolledKeys = Mutex<[String: (principal: Principal, record: EnrolledKey)]>([:])

    public init(_ list: AccessList, logger: Logger) {
        self.list = Mutex(list)
        self.logger = logger
    }

    /// The file's list (SIGHUP).
    public func replace(_ new: AccessList) { list.withLock { $0 = new } }
    /// The file's list.
    public var current: AccessList { list.withLock { $0 } }
    public var refused: [String: Int] { refusals.withLock { $0 } }

    /// The enrolled keys as stored (start, or a failed commit).
    public func setEnrolled(_ keys: [EnrolledKey]) {
        var map: [String: (Principal, EnrolledKey)] = [:]
        for k in keys {
            guard case .success(let p) = AccessList.principal(role: k.role, name: k.name, right: k.right, tenant: k.tenant) else {
                logger.error("enrolled key \(k.publicKey.prefix(8))… has a role the rules refuse; ignored", metadata: ["role": "\(k.role)", "name": "\(k.name)"])
                continue
            }
            map[k.publicKey] = (p, k)
        }
        enrolledKeys.withLock { $0 = map }
    }

    public func enroll(_ k: EnrolledKey, as p: Principal) { enrolledKeys.withLock { $0[k.publicKey] = (p, k) } }
    public func revokeEnrolled(_ key: String) { _ = enrolledKeys.withLock { $0.removeValue(forKey: key) } }
    public func enrolled(_ key: String) -> EnrolledKey? { enrolledKeys.withLock { $0[key]?.record } }

    /// Every key in force: the file's, then the enrolled ones.
    public func entries() -> [Wire.KeyEntry] {
        func entry(_ key: String, _ p: Principal) -> Wire.KeyEntry {
            var e = Wire.KeyEntry()
            e.publicKey = key
            switch p {
            case .agent(let nodes): e.role = "agent"; e.name = nodes.map(\.rawValue).sorted().joined(separator: ",")
            case .region(let r): e.role = "region"; e.name = r.rawValue
            case .operator(let name, let right, let tenant):
                e.role = "operator"; e.name = name; e.right = right.rawValue; e.tenant = tenant ?? ""
            }
            return e
        }
        let file = current.keys.sorted { $0.key < $1.key }.map { k, p in var e = entry(k, p); e.source = "file"; return e }
        let enrolled = enrolledKeys.withLock { $0 }.sorted { $0.value.record.enrolledAt < $1.value.record.enrolledAt }.map { k, v in
            var e = entry(k, v.principal)
            e.source = "enrolled"
            e.enrolledAtMs = UInt64(clamping: v.record.enrolledAt.unixMilliseconds)
            e.enrolledBy = v.record.enrolledBy
            return e
        }
        return file + enrolled
    }

    public func principal(forKey key: String) -> Principal? {
        list.withLock { $0.keys[key] } ?? enrolledKeys.withLock { $0[key]?.principal }
    }

    public func authenticate(_ request: ZAPRequest) -> ZAPDecision {
        guard request.mechanism == "CURVE", let key = request.clientKey else {
            return refuse("mechanism", "\(request.mechanism) connection from \(request.address) refused: this controller accepts CURVE only")
        }
        guard principal(forKey: key) != nil else {
            return refuse("unknown_key", "unknown key \(key.prefix(8))… from \(request.address) refused: add it to authorized_keys (docs/security.md)")
        }
        return .allow(userID: key)
    }

    /// Nil when the key behind `user` may send `body`; else why not (the reply and the log say it).
    /// `user` nil: the socket has no authentication (a loopback controller without CURVE).
    public func authorize(_ body: Body, user: String?) -> String? {
        if case .failure(let why) = admit(body, user: user) { return why.message }
        return nil
    }

    /// Whom `user`'s key speaks for, when it may send `body` (one lookup: the shell's path for
    /// every message); else the counted, logged refusal.
    public func admit(_ body: Body, user: String?) -> Result<Principal?, AccessList.Problem> {
        guard let user else { return .success(nil) }
        guard let who = principal(forKey: user) else {
            return .failure(AccessList.Problem(message: note("revoked", "key \(user.prefix(8))… is no longer authorized")))
        }
        if let why = Self.check(body, who) { return .failure(AccessList.Problem(message: note("forbidden", "\(who.label): \(why)"))) }
        return .success(who)
    }

    /// What `who` may send: the whole rule set, pure.
    public static func check(_ body: Body, _ who: Principal) -> String? {
        switch who {
        case .agent(let nodes):
            func own(_ id: String, _ field: String) -> String? {
                nodes.contains(NodeID(id)) ? nil : "may not speak for node '\(id)' (\(field))"
            }
            switch body {
            case .register(let m): return own(m.nodeID, "Register.node_id")
            case .heartbeat(let m): return own(m.nodeID, "Heartbeat.node_id")
            case .assignmentAck(let m): return own(m.nodeID, "AssignmentAck.node_id")
            case .statusUpdate(let m): return own(m.nodeID, "StatusUpdate.node_id")
            case .errorReply: return nil
            default: return "an agent key may not send \(body.type)"
            }
        case .region(let id):
            func own(_ r: String, _ field: String) -> String? { r == id.rawValue ? nil : "may not speak for region '\(r)' (\(field))" }
            switch body {
            case .regionSummary(let m): return own(m.regionID, "RegionSummary.region_id")
            case .statusUpdate(let m): return own(m.regionID, "StatusUpdate.region_id")
            case .statusBatch(let m):
                for (i, u) in m.updates.enumerated() {
                    if let why = own(u.regionID, "StatusBatch.updates[\(i)].region_id") { return why }
                }
                return nil
            case .jobForwardAck, .queryReply, .errorReply, .statusAck, .submitReply: return nil
            default: return "a region key may not send \(body.type)"
            }
        case .operator(_, let right, let tenant):
            if let tenant {
                // A tenant's key sees and changes its own account's work only; the instance checks
                // each job and service it names. The fleet is not its business.
                switch body {
                case .nodeCommand, .regionControl, .keyControl:
                    return "a key bound to tenant '\(tenant)' may not send \(body.type) (the fleet is the operators' business)"
                case .query(let q) where ![.jobs, .job, .regions, .services].contains(q.kind):
                    return "a key bound to tenant '\(tenant)' may query jobs, job, regions and services only, not \(q.kind)"
                default: break
                }
            }
            let need: OperatorRight?
            switch body {
            case .query: need = nil
            case .submit: need = .submit
            case .jobControl, .cancel, .nodeCommand, .regionControl, .deploy, .serviceControl: need = .operate
            case .keyControl: need = .admin
            default: return "an operator key may not send \(body.type)"
            }
            if let need, right < need { return "\(body.type) needs the '\(need.rawValue)' right (this key has '\(right.rawValue)')" }
            return nil
        }
    }

    /// A NULL or PLAIN client (or a broken handshake) at the CURVE socket, seen by its monitor:
    /// counted and logged with the ZAP refusals (`refused.mechanism`, `refused.handshake`).
    public func handshakeFailed(_ failure: HandshakeFailure) {
        switch failure.reason {
        case .mechanism:
            _ = note("mechanism", "a connection to \(failure.endpoint) spoke another security mechanism (NULL or PLAIN) and was refused at the handshake: this controller accepts CURVE only")
        case .handshake:
            _ = note("handshake", "a connection to \(failure.endpoint) failed its CURVE handshake (protocol error 0x\(String(failure.code, radix: 16)))")
        }
    }

    private func refuse(_ reason: String, _ text: String) -> ZAPDecision {
        _ = note(reason, text)
        return .deny(reason: text)
    }

    /// Counts the refusal and logs it, at most `warningsPerMinute` lines per reason a minute.
    private func note(_ reason: String, _ text: String) -> String {
        refusals.withLock { $0[reason, default: 0] += 1 }
        let minute = Int64(Date().timeIntervalSince1970 / 60)
        let log = warned.withLock { w -> Bool in
            var e = w[reason] ?? (minute, 0)
            if e.minute != minute { e = (minute, 0) }
            e.count += 1
            w[reason] = e
            return e.count <= Self.warningsPerMinute
        }
        if log { logger.warning("refused", metadata: ["reason": "\(reason)", "detail": "\(text)"]) }
        return text
    }
}
