import Foundation
import GridCore
import GridProtocol
import GridTransport

/// Why a request to a controller did not get an answer.
public struct ClientError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A synchronous request/reply client over a DEALER socket, for `gridctl` and tests.
public final class GridClient {
    let context: ZMQContext
    let socket: ZMQSocket
    let codec = EnvelopeCodec()
    let endpoint: String
    var sequence: UInt64 = 0
    let sender: String

    /// With CURVE: the controller's public key (pinned: nobody else can answer) and this
    /// client's own pair (the controller lets it in only if it is in its authorized_keys).
    let curve: Bool

    public init(endpoint: String, sender: String = "gridctl", curve: (serverKey: String, pair: CurveKeyPair)? = nil) throws {
        self.endpoint = endpoint
        self.sender = sender
        self.curve = curve != nil
        do {
            context = try ZMQContext()
            socket = try ZMQSocket(context, .dealer)
            if let curve {
                try socket.setCurveClient(serverKey: curve.serverKey, publicKey: curve.pair.publicKey, secretKey: curve.pair.secretKey)
            }
            try socket.connect(endpoint)
        } catch {
            throw ClientError("cannot connect to \(endpoint): \(error)")
        }
    }

    deinit {
        socket.close()
        context.terminate()
    }

    /// Sends `body` and waits up to `timeout` seconds for the reply to it. With `resendEvery`,
    /// the same message is sent again at that interval until answered (only for requests the
    /// controller deduplicates, e.g. a submit that names its job ids): a lost reply or a
    /// controller restarted between the request and its answer then costs nothing.
    public func request(_ body: Body, timeout: Double = 5, resendEvery: Double? = nil) throws -> Body {
        guard timeout.isFinite, timeout > 0 else { throw ClientError("timeout must be a positive number of seconds, got \(timeout)") }
        sequence += 1
        let seq = sequence
        let frame = codec.encode(Message(sender: sender, sequence: seq, body: body))
        do { try socket.send([frame]) } catch { throw ClientError("cannot send to \(endpoint): \(error)") }
        let deadline = Date().addingTimeInterval(timeout)
        var nextSend = resendEvery.map { Date().addingTimeInterval($0) } ?? .distantFuture
        while true {
            if let every = resendEvery, Date() >= nextSend {
                _ = try? socket.send([frame], dontWait: true)
                nextSend = Date().addingTimeInterval(every)
            }
            let left = min(deadline.timeIntervalSinceNow, max(0.001, nextSend.timeIntervalSinceNow))
            if deadline.timeIntervalSinceNow <= 0 {
                throw ClientError("no answer from \(endpoint) within \(Int(timeout))s; is the controller running? (set --controller or GRID_CONTROLLER)"
                                  + (curve ? "; with CURVE, a key the controller does not list, or the wrong --server-key, also gets no answer"
                                           : "; a controller with CURVE on answers only clients with --key and --server-key"))
            }
            let ready = (try? poll([socket.pollItem], timeoutMs: Int(min(left, 3600) * 1000) + 1)) ?? [false]
            guard ready[0], let frames = try? socket.receive(dontWait: true), let payload = frames.last else { continue }
            let message: Message
            do { message = try codec.decode(payload) } catch {
                throw ClientError("unreadable answer from \(endpoint): \(error)")
            }
            guard message.replyTo == seq else { continue }  // a late answer to an earlier request
            if case .errorReply(let e) = message.body {
                throw ClientError("\(endpoint) answered \(e.code): \(e.message)")
            }
            return message.body
        }
    }

    public func submit(_ spec: JobSpec, id: JobID? = nil, timeout: Double = 5) throws -> Wire.SubmitReply {
        var s = Wire.Submit()
        s.spec = Wire.JobSpec(spec)
        s.jobID = id?.rawValue ?? ""
        guard case .submitReply(let r) = try request(.submit(s), timeout: timeout) else {
            throw ClientError("\(endpoint) answered a submit with something else")
        }
        return r
    }

    public func query(_ kind: Wire.Query.Kind, job: String = "", timeout: Double = 5) throws -> Wire.QueryReply {
        var q = Wire.Query()
        q.kind = kind
        q.jobID = job
        guard case .queryReply(let r) = try request(.query(q), timeout: timeout) else {
            throw ClientError("\(endpoint) answered a query with something else")
        }
        return r
    }

    /// Asks the national scheduler to cancel a job; returns the job as it now stands (`cancelled`,
    /// or still running with "cancel requested" while its region stops it).
    public func cancel(_ job: String, timeout: Double = 5) throws -> JobRecord {
        var c = Wire.Cancel()
        c.jobID = job
        guard case .queryReply(let r) = try request(.cancel(c), timeout: timeout), let j = r.jobs.first else {
            throw ClientError("\(endpoint) answered a cancel with something else")
        }
        do { return try j.record() } catch { throw ClientError("unreadable job in the answer: \(error)") }
    }

    /// Cordons, uncordons or drains a node; returns it as its region now reports it.
    public func nodeCommand(_ action: Wire.NodeCommand.Action, node: String, region: String?, reason: String,
                            timeout: Double = 5) throws -> NodeBrief {
        var c = Wire.NodeCommand()
        c.nodeID = node
        c.regionID = region ?? ""
        c.action = action
        c.reason = reason
        guard case .queryReply(let r) = try request(.nodeCommand(c), timeout: timeout), let b = r.nodes.first else {
            throw ClientError("\(endpoint) answered a node command with something else")
        }
        return b.brief
    }

    /// A region's accounts (quotas, what each holds, usage, fair share).
    public func accounts(region: String?, timeout: Double = 5) throws -> [Wire.AccountStatus] {
        var q = Wire.Query()
        q.kind = .accounts
        q.regionID = region ?? ""
        guard case .queryReply(let r) = try request(.query(q), timeout: timeout) else {
            throw ClientError("\(endpoint) answered an accounts query with something else")
        }
        return r.accounts
    }

    /// Holds, releases or requeues a job (at the national scheduler, or relayed to its region);
    /// returns the job as it now stands.
    public func jobControl(_ action: Wire.JobControl.Action, job: String, reason: String, timeout: Double = 5) throws -> JobRecord {
        var c = Wire.JobControl()
        c.jobID = job
        c.action = action
        c.reason = reason
        guard case .queryReply(let r) = try request(.jobControl(c), timeout: timeout), let j = r.jobs.first else {
            throw ClientError("\(endpoint) answered a job control with something else")
        }
        do { return try j.record() } catch { throw ClientError("\(endpoint) sent an unreadable job: \(error)") }
    }

    /// One request for many jobs: the national scheduler accepts them in one transaction.
    public func submitBatch(_ items: [(spec: JobSpec, count: Int, id: JobID?)], timeout: Double = 30) throws -> Wire.SubmitReply {
        var s = Wire.Submit()
        s.items = items.map { item in
            var w = Wire.SubmitItem()
            w.spec = Wire.JobSpec(item.spec)
            w.count = UInt32(clamping: item.count)
            w.jobID = item.id?.rawValue ?? ""
            return w
        }
        // Every job named: sending again is safe (the scheduler answers a known id from what it stored).
        let resend = items.allSatisfy { $0.id != nil } ? min(1, timeout / 3) : nil
        guard case .submitReply(let r) = try request(.submit(s), timeout: timeout, resendEvery: resend) else {
            throw ClientError("\(endpoint) answered a submit with something else")
        }
        return r
    }

    /// A job id made by the client (`j-<ms, base 36>-<30 random bits, base 36>`): time-ordered
    /// like the scheduler's own and unique without asking it, so a submit can be sent again.
    public static func newJobID(now: Date = Date()) -> JobID {
        var rng = SystemRandomNumberGenerator()
        let random = String(UInt32.random(in: 0..<(1 << 30), using: &rng), radix: 36)
        return JobID("j-" + String(UInt64(clamping: now.unixMilliseconds), radix: 36) + "-" + random)
    }

    /// Every node of a region (all regions when nil), page by page: nothing is cut off.
    public func allNodes(region: String? = nil, pageSize: UInt32 = 1000, timeout: Double = 5) throws -> [Wire.NodeBrief] {
        let regions: [String]
        if let region { regions = [region] } else {
            regions = try query(.regions, timeout: timeout).regions.map(\.regionID)
        }
        return try regions.flatMap { r in
            try pages(.nodes, region: r, pageSize: pageSize, timeout: timeout).flatMap(\.nodes)
        }
    }

    /// Every job the controller knows, page by page (10,000 a page): nothing is cut off.
    public func jobs(timeout: Double = 5, pageSize: UInt32 = 10_000) throws -> [JobRecord] {
        try pages(.jobs, pageSize: pageSize, timeout: timeout).flatMap(\.jobs).map { try $0.record() }
    }

    /// Asks for page after page until the reply says it was the last (`next_offset` 0).
    func pages(_ kind: Wire.Query.Kind, region: String = "", pageSize: UInt32, timeout: Double) throws -> [Wire.QueryReply] {
        var out: [Wire.QueryReply] = []
        var offset: UInt64 = 0
        repeat {
            var q = Wire.Query()
            q.kind = kind
            q.regionID = region
            q.offset = offset
            q.limit = pageSize
            guard case .queryReply(let page) = try request(.query(q), timeout: timeout) else {
                throw ClientError("\(endpoint) answered a \(kind) query with something else")
            }
            out.append(page)
            offset = page.nextOffset
        } while offset != 0
        return out
    }
}

// MARK: services (SERVICES.md)

extension GridClient {
    /// Deploys a service (or a changed spec of one); answered with the service as it now stands.
    public func deploy(_ spec: ServiceSpec, timeout: Double = 5) throws -> Wire.ServiceStatus {
        var d = Wire.Deploy()
        d.spec = Wire.ServiceSpec(spec)
        return try service(from: request(.deploy(d), timeout: timeout))
    }

    /// Every service (`name` nil) or the one named.
    /// `origin`: the region the caller is in (endpoints nearest it first).
    public func services(_ name: String? = nil, origin: String? = nil, timeout: Double = 5) throws -> [Wire.ServiceStatus] {
        var q = Wire.Query()
        q.kind = .services
        q.service = name ?? ""
        q.regionID = origin ?? ""
        guard case .queryReply(let r) = try request(.query(q), timeout: timeout) else {
            throw ClientError("unexpected answer to a services query from \(endpoint)")
        }
        return r.services
    }

    public func serviceControl(_ action: Wire.ServiceControl.Action, name: String, replicas: Int = 0, version: String = "",
                               timeout: Double = 5) throws -> Wire.ServiceStatus {
        var c = Wire.ServiceControl()
        c.name = name
        c.action = action
        c.replicas = UInt32(clamping: replicas)
        c.version = version
        return try service(from: request(.serviceControl(c), timeout: timeout))
    }

    func service(from body: Body) throws -> Wire.ServiceStatus {
        guard case .queryReply(let r) = body, let s = r.services.first else {
            throw ClientError("unexpected answer from \(endpoint) (no service in it)")
        }
        return s
    }
}
