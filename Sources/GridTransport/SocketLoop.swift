import CZeroMQ
import Foundation
import Synchronization

/// Where a frame came from or goes to: a peer of the bound ROUTER (by its routing identity) or
/// the single upstream DEALER connection.
public enum Peer: Hashable, Sendable {
    case downstream(identity: [UInt8])
    case upstream

    /// Printable form for logs (identities are usually ASCII, otherwise hex).
    public var label: String {
        switch self {
        case .upstream: return "upstream"
        case .downstream(let id):
            if let s = String(bytes: id, encoding: .utf8), s.allSatisfy({ $0.isASCII && !$0.isNewline && $0 != "\0" }) {
                return "peer '\(s)'"
            }
            return "peer 0x" + id.map { String(format: "%02x", $0) }.joined()
        }
    }
}

/// What the loop hands the role's handler.
public enum LoopInput<Event: Sendable> {
    /// One payload frame from a peer. `delimited` is true when the peer used a REQ-style empty
    /// delimiter frame, so the reply must carry one too. `user` is the id the ZAP authenticator
    /// gave the peer's connection (nil on a socket without authentication).
    case frame(from: Peer, payload: [UInt8], delimited: Bool, user: String? = nil)
    /// A ROUTER message that did not have the shape [identity, (empty,) payload].
    case badShape(from: Peer, frames: Int)
    /// Posted from another thread with `SocketLoop.post`.
    case event(Event)
    /// Periodic timer, every `tickMilliseconds`.
    case tick
}

/// A frame for the loop to send.
public struct LoopOutput: Sendable {
    public var to: Peer
    public var payload: [UInt8]
    public var delimited: Bool
    public init(to: Peer, payload: [UInt8], delimited: Bool = false) {
        self.to = to
        self.payload = payload
        self.delimited = delimited
    }
}

/// Socket settings shared by every role. Defaults suit a LAN/WAN control plane.
public struct SocketLoopOptions: Sendable {
    /// Endpoint the ROUTER binds (agents, child regions and `gridctl` connect here); nil = none.
    public var bind: String?
    /// Endpoint the DEALER connects to (the parent controller); nil = none.
    public var connect: String?
    /// Routing identity of the DEALER, so the parent can address replies across reconnects.
    public var identity: String?
    /// Largest inbound message libzmq accepts; bigger ones drop the connection before we see them.
    public var maxMessageBytes: Int
    public var highWaterMark: Int32
    /// Inbound queue bound per connection (nil = `highWaterMark`). Past it libzmq stops reading
    /// the connection, so a flood is held back by TCP instead of growing this process's memory.
    public var receiveHighWaterMark: Int32?
    public var tickMilliseconds: Int
    /// ZMTP heartbeats detect dead TCP peers that never send FIN.
    public var heartbeatIntervalMs: Int32
    public var heartbeatTimeoutMs: Int32
    public var reconnectIntervalMs: Int32
    public var reconnectIntervalMaxMs: Int32
    /// CURVE: server secret key for the ROUTER (nil = plaintext).
    public var curveServerSecretKey: String?
    /// CURVE: (server public key, own public key, own secret key) for the DEALER.
    public var curveClient: (serverKey: String, publicKey: String, secretKey: String)?
    /// Who may connect to the ROUTER (a ZAP handler of the loop's context runs it). With it
    /// the ROUTER enforces its ZAP domain: a peer is let in only when the authenticator says
    /// so, and every frame carries the user id it gave.
    public var authenticator: (any ZAPAuthenticator)?
    public var zapDomain: String
    /// The DEALER dials its endpoint again when nothing came from it for this long (nil =
    /// never). libzmq does not reconnect after a refused handshake (a CURVE key the server does
    /// not list yet): without this, an agent enrolled after it started would never get in.
    public var redialAfterSilenceMs: Int?

    public init(
        bind: String? = nil, connect: String? = nil, identity: String? = nil,
        maxMessageBytes: Int = 4 << 20, highWaterMark: Int32 = 10_000, tickMilliseconds: Int = 100,
        heartbeatIntervalMs: Int32 = 2_000, heartbeatTimeoutMs: Int32 = 6_000,
        reconnectIntervalMs: Int32 = 100, reconnectIntervalMaxMs: Int32 = 5_000,
        curveServerSecretKey: String? = nil,
        curveClient: (serverKey: String, publicKey: String, secretKey: String)? = nil,
        authenticator: (any ZAPAuthenticator)? = nil, zapDomain: String = "computegrid"
    ) {
        self.bind = bind
        self.connect = connect
        self.identity = identity
        self.maxMessageBytes = maxMessageBytes
        self.highWaterMark = highWaterMark
        self.tickMilliseconds = tickMilliseconds
        self.heartbeatIntervalMs = heartbeatIntervalMs
        self.heartbeatTimeoutMs = heartbeatTimeoutMs
        self.reconnectIntervalMs = reconnectIntervalMs
        self.reconnectIntervalMaxMs = reconnectIntervalMaxMs
        self.curveServerSecretKey = curveServerSecretKey
        self.curveClient = curveClient
        self.authenticator = authenticator
        self.zapDomain = zapDomain
        self.redialAfterSilenceMs = 15_000
    }
}

/// Counters a loop keeps about what it could not deliver.
public struct SocketLoopStats: Sendable, Equatable {
    public var received = 0
    public var sent = 0
    /// ROUTER sends to an identity that is not connected (EHOSTUNREACH); callers retry later.
    public var unroutable = 0
    /// Sends dropped because the peer's queue was full.
    public var wouldBlock = 0
    /// Times the DEALER dialled its endpoint again after a silence.
    public var redials = 0
    public init() {}
}

/// One thread that owns a ROUTER (bound) and/or a DEALER (connected), a mailbox and a timer,
/// and feeds everything to a synchronous handler. Roles keep all socket I/O here, so their
/// logic never touches libzmq and stays testable without sockets.
public final class SocketLoop<Event: Sendable>: @unchecked Sendable {
    // Sockets are touched only by the loop thread after `init` returns (thread start is a
    // full memory barrier, which libzmq requires for migrating sockets between threads).
    private let context: ZMQContext
    private let router: ZMQSocket?
    private let dealer: ZMQSocket?
    private let mailbox: Mailbox<Event?>
    private let stopFlag = Atomic<Bool>(false)
    private let tickMs: Int
    private let statsBox = Mutex(SocketLoopStats())
    private let zap: ZAPHandler?
    private let handshakes: HandshakeMonitor?
    /// Frames from the ROUTER carry the ZAP user id.
    private let authenticated: Bool
    private let upstreamEndpoint: String?
    private let redialAfterNs: UInt64?
    /// Last time something came from upstream (or the DEALER was dialled), monotonic ns.
    private var upstreamHeardNs = DispatchTime.now().uptimeNanoseconds

    /// The endpoint the ROUTER actually bound (resolves `tcp://127.0.0.1:*`).
    public let boundEndpoint: String?

    public init(options: SocketLoopOptions) throws(ZMQError) {
        context = try ZMQContext()
        mailbox = try Mailbox<Event?>()
        tickMs = max(1, options.tickMilliseconds)
        if let a = options.authenticator, options.bind != nil {
            zap = try ZAPHandler(context: context, authenticator: a)
            authenticated = true
        } else {
            zap = nil
            authenticated = false
        }
        if let bind = options.bind {
            let r = try ZMQSocket(context, .router)
            try r.setRouterMandatory(true)
            try r.setMaxMessageSize(Int64(options.maxMessageBytes))
            try r.setSendHighWaterMark(options.highWaterMark)
            try r.setReceiveHighWaterMark(options.receiveHighWaterMark ?? options.highWaterMark)
            try r.setHeartbeat(intervalMs: options.heartbeatIntervalMs, timeoutMs: options.heartbeatTimeoutMs, ttlMs: options.heartbeatTimeoutMs)
            if let secret = options.curveServerSecretKey { try r.setCurveServer(secretKey: secret) }
            if zap != nil {
                try r.setZAPDomain(options.zapDomain)
                try r.setZAPEnforceDomain(true)
            }
            // Failed handshakes before ZAP (NULL and PLAIN clients) are counted by the authenticator.
            if let a = options.authenticator {
                handshakes = try HandshakeMonitor(context: context, watching: r, authenticator: a)
            } else {
                handshakes = nil
            }
            try r.bind(bind)
            router = r
            boundEndpoint = try r.lastEndpoint()
        } else {
            router = nil
            boundEndpoint = nil
            handshakes = nil
        }
        if let connect = options.connect {
            let d = try ZMQSocket(context, .dealer)
            if let id = options.identity { try d.setRoutingID(Array(id.utf8)) }
            try d.setMaxMessageSize(Int64(options.maxMessageBytes))
            try d.setSendHighWaterMark(options.highWaterMark)
            try d.setReceiveHighWaterMark(options.highWaterMark)
            try d.setHeartbeat(intervalMs: options.heartbeatIntervalMs, timeoutMs: options.heartbeatTimeoutMs, ttlMs: options.heartbeatTimeoutMs)
            try d.setReconnectInterval(milliseconds: options.reconnectIntervalMs, max: options.reconnectIntervalMaxMs)
            // Queue only to completed connections: a message for a parent that is down stays
            // in our outbox (and is retried) instead of piling up inside libzmq.
            try d.setImmediate(true)
            if let c = options.curveClient {
                try d.setCurveClient(serverKey: c.serverKey, publicKey: c.publicKey, secretKey: c.secretKey)
            }
            try d.connect(connect)
            dealer = d
        } else {
            dealer = nil
        }
        upstreamEndpoint = options.connect
        redialAfterNs = options.redialAfterSilenceMs.map { UInt64(max(1000, $0)) * 1_000_000 }
        zap?.start()
        handshakes?.start()
    }

    deinit {
        router?.close()
        dealer?.close()
        zap?.stop()
        handshakes?.stop()
        context.terminate()
    }

    public var stats: SocketLoopStats { statsBox.withLock { $0 } }

    /// Hands an event to the loop thread. Safe from any thread.
    public func post(_ event: Event) { mailbox.post(event) }

    /// Asks the loop to return after the current iteration. Safe from any thread.
    public func stop() {
        stopFlag.store(true, ordering: .releasing)
        mailbox.post(nil)
    }

    /// Runs until `stop()`. Blocks the calling thread: call from `runOnDedicatedThread`.
    public func run(_ handler: (LoopInput<Event>) -> [LoopOutput]) {
        var items: [PollItem] = [mailbox.pollItem]
        if let router { items.append(router.pollItem) }
        if let dealer { items.append(dealer.pollItem) }
        var nextTick = DispatchTime.now().uptimeNanoseconds
        while !stopFlag.load(ordering: .acquiring) {
            let now = DispatchTime.now().uptimeNanoseconds
            if now >= nextTick {
                send(handler(.tick))
                nextTick = now + UInt64(tickMs) * 1_000_000
            }
            // Round up: rounding down made the last sub-millisecond before each tick a busy
            // spin of poll(0).
            let waitMs = Self.waitMilliseconds(until: nextTick, now: DispatchTime.now().uptimeNanoseconds)
            let ready: [Bool]
            do { ready = try poll(items, timeoutMs: max(0, waitMs)) } catch {
                if error.contextTerminated { return }
                continue
            }
            if ready[0] {
                for event in mailbox.drain() {
                    guard let event else { continue }
                    send(handler(.event(event)))
                }
            }
            var index = 1
            if let router {
                if ready[index] { drain(router, handler, upstream: false, user: authenticated) }
                index += 1
            }
            if let dealer, ready[index] { drain(dealer, handler, upstream: true, user: false) }
            redialIfSilent()
        }
    }

    /// Milliseconds to wait for a deadline, rounded up so a loop never spins on poll(0) while
    /// the deadline is less than a millisecond away.
    public static func waitMilliseconds(until deadline: UInt64, now: UInt64) -> Int {
        guard deadline > now else { return 0 }
        return Int((deadline - now + 999_999) / 1_000_000)
    }

    /// Runs until `stop()`, handing the handler whole batches: every frame readable now (up to
    /// `maxBatch`), every posted event, and a `.tick` when one is due, in that order. `backlog`
    /// is true when the batch filled up before the sockets were drained. The handler returns
    /// what to send once the batch is done, which lets a role commit a batch's changes in one
    /// transaction before anything they acknowledge leaves. `nextWake` (monotonic ns, nil =
    /// the next tick) lets the handler ask to be called sooner than the tick.
    public func runBatched(maxBatch: Int = 4096, nextWake: () -> UInt64? = { nil },
                           _ handler: ([LoopInput<Event>], _ backlog: Bool) -> [LoopOutput]) {
        var items: [PollItem] = [mailbox.pollItem]
        if let router { items.append(router.pollItem) }
        if let dealer { items.append(dealer.pollItem) }
        var nextTick = DispatchTime.now().uptimeNanoseconds
        var batch: [LoopInput<Event>] = []
        batch.reserveCapacity(maxBatch + 1)
        var backlog = false
        while !stopFlag.load(ordering: .acquiring) {
            let wake = min(nextTick, nextWake() ?? nextTick)
            let timeout = backlog ? 0 : Self.waitMilliseconds(until: wake, now: DispatchTime.now().uptimeNanoseconds)
            let ready: [Bool]
            do { ready = try poll(items, timeoutMs: timeout) } catch {
                if error.contextTerminated { return }
                continue
            }
            batch.removeAll(keepingCapacity: true)
            if ready[0] {
                for event in mailbox.drain() {
                    guard let event else { continue }
                    batch.append(.event(event))
                }
            }
            var full = false
            let routerReady = router != nil && ready[1]
            let dealerReady = dealer != nil && ready[router != nil ? 2 : 1]
            // The parent's frames first, up to half the batch when both sockets have some, then
            // the children's, then the parent's again if room is left. Reading the ROUTER first
            // up to the whole batch let a flood from the nodes (tens of thousands of status
            // reports) hold back the national scheduler's acknowledgements and confirmations,
            // on which every job start waits (grid-bench e2e: assignments in waves, 2 s apart).
            if let dealer, dealerReady {
                full = collect(dealer, upstream: true, user: false, into: &batch, limit: routerReady ? maxBatch / 2 : maxBatch) || full
            }
            if let router, routerReady { full = collect(router, upstream: false, user: authenticated, into: &batch, limit: maxBatch) || full }
            if let dealer, dealerReady, routerReady, batch.count < maxBatch {
                full = collect(dealer, upstream: true, user: false, into: &batch, limit: maxBatch) || full
            }
            redialIfSilent()
            backlog = full
            let now = DispatchTime.now().uptimeNanoseconds
            if now >= nextTick {
                batch.append(.tick)
                nextTick = now + UInt64(tickMs) * 1_000_000
            }
            if batch.isEmpty && now < wake { continue }
            send(handler(batch, backlog))
        }
    }

    /// Dials the upstream endpoint again after `redialAfterSilenceMs` of silence (see the option).
    private func redialIfSilent() {
        guard let dealer, let endpoint = upstreamEndpoint, let after = redialAfterNs else { return }
        let now = DispatchTime.now().uptimeNanoseconds
        guard now > upstreamHeardNs, now - upstreamHeardNs >= after else { return }
        upstreamHeardNs = now
        try? dealer.disconnect(endpoint)
        try? dealer.connect(endpoint)
        statsBox.withLock { $0.redials += 1 }
    }

    /// Reads frames until none is left or the batch holds `limit`; true when it stopped at the limit.
    private func collect(_ socket: ZMQSocket, upstream: Bool, user: Bool, into batch: inout [LoopInput<Event>], limit: Int) -> Bool {
        while batch.count < limit {
            let got: (frames: [[UInt8]], user: String?)?
            do { got = try socket.receiveWithUser(dontWait: true, wantUser: user) } catch { return false }
            guard let got else { return false }
            statsBox.withLock { $0.received += 1 }
            if upstream { upstreamHeardNs = DispatchTime.now().uptimeNanoseconds }
            batch.append(Self.input(got.frames, upstream: upstream, user: got.user))
        }
        return true
    }

    static func input(_ frames: [[UInt8]], upstream: Bool, user: String? = nil) -> LoopInput<Event> {
        if upstream {
            if frames.count == 1 { return .frame(from: .upstream, payload: frames[0], delimited: false, user: user) }
            if frames.count == 2, frames[0].isEmpty { return .frame(from: .upstream, payload: frames[1], delimited: true, user: user) }
            return .badShape(from: .upstream, frames: frames.count)
        }
        let peer = Peer.downstream(identity: frames[0])
        if frames.count == 2 { return .frame(from: peer, payload: frames[1], delimited: false, user: user) }
        if frames.count == 3, frames[1].isEmpty { return .frame(from: peer, payload: frames[2], delimited: true, user: user) }
        return .badShape(from: peer, frames: frames.count)
    }

    private func drain(_ socket: ZMQSocket, _ handler: (LoopInput<Event>) -> [LoopOutput], upstream: Bool, user: Bool) {
        // Bounded batch so one busy socket cannot starve timers and the mailbox.
        for _ in 0..<256 {
            let got: (frames: [[UInt8]], user: String?)?
            do { got = try socket.receiveWithUser(dontWait: true, wantUser: user) } catch { return }
            guard let got else { return }
            statsBox.withLock { $0.received += 1 }
            if upstream { upstreamHeardNs = DispatchTime.now().uptimeNanoseconds }
            send(handler(Self.input(got.frames, upstream: upstream, user: got.user)))
        }
    }

    private func send(_ outputs: [LoopOutput]) {
        for out in outputs {
            var frames: [[UInt8]] = []
            let socket: ZMQSocket?
            switch out.to {
            case .upstream:
                socket = dealer
            case .downstream(let identity):
                socket = router
                frames.append(identity)
            }
            guard let socket else { continue }
            if out.delimited { frames.append([]) }
            frames.append(out.payload)
            do {
                if try socket.send(frames, dontWait: true) {
                    statsBox.withLock { $0.sent += 1 }
                } else {
                    statsBox.withLock { $0.wouldBlock += 1 }
                }
            } catch {
                statsBox.withLock { $0.unroutable += 1 }
            }
        }
    }
}
