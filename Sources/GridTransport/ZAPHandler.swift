import CZeroMQ
import Foundation
import Synchronization

/// One connection asking to be let in (ZAP, ZeroMQ RFC 27), as libzmq hands it over after the
/// security handshake and before any message of the peer reaches the application.
public struct ZAPRequest: Sendable, Equatable {
    public var domain: String
    /// The peer's IP address (no port).
    public var address: String
    /// "NULL", "PLAIN" or "CURVE".
    public var mechanism: String
    /// CURVE: the client's long-term public key, Z85 (40 characters); nil for other mechanisms.
    public var clientKey: String?

    public init(domain: String, address: String, mechanism: String, clientKey: String? = nil) {
        self.domain = domain
        self.address = address
        self.mechanism = mechanism
        self.clientKey = clientKey
    }
}

public enum ZAPDecision: Sendable, Equatable {
    /// Let the connection in; every message it sends carries `userID` ("User-Id").
    case allow(userID: String)
    /// Refuse the handshake; the peer sees an authentication failure, the application nothing.
    case deny(reason: String)
}

/// Decides who may connect. Called on the ZAP thread, so it must be thread-safe.
public protocol ZAPAuthenticator: Sendable {
    func authenticate(_ request: ZAPRequest) -> ZAPDecision
    /// A handshake failed before any ZAP request (`HandshakeFailure`): called on the monitor's
    /// thread. The default does nothing.
    func handshakeFailed(_ failure: HandshakeFailure)
}

extension ZAPAuthenticator {
    public func handshakeFailed(_ failure: HandshakeFailure) {}
}

/// A connection a CURVE socket refused before ZAP saw it, from the socket's monitor.
public struct HandshakeFailure: Sendable, Equatable {
    public enum Reason: String, Sendable {
        /// The peer spoke another security mechanism (NULL or PLAIN at a CURVE socket): refused
        /// at the ZMTP greeting.
        case mechanism
        /// Any other ZMTP or CURVE protocol error in the handshake (a bad or forged hello).
        case handshake
    }
    public var reason: Reason
    /// libzmq's protocol error code (ZMQ_PROTOCOL_ERROR_*), 0 when none.
    public var code: UInt32
    /// The socket's own endpoint the connection came to.
    public var endpoint: String
    public init(reason: Reason, code: UInt32, endpoint: String) {
        self.reason = reason
        self.code = code
        self.endpoint = endpoint
    }

    /// The failure a monitor event means; nil for events that are not failed handshakes before
    /// ZAP (an authentication failure is ZAP's own refusal, counted there).
    static func from(event: UInt16, value: UInt32, endpoint: String) -> HandshakeFailure? {
        switch Int32(event) {
        case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
            return HandshakeFailure(reason: value == UInt32(ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH) ? .mechanism : .handshake,
                                    code: value, endpoint: endpoint)
        case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            return HandshakeFailure(reason: .handshake, code: 0, endpoint: endpoint)
        default:
            return nil
        }
    }
}

/// The ZAP handler of one context: a REP socket at `inproc://zeromq.zap.01` answered by its own
/// thread. Sockets of the context that set a ZAP domain (and enforce it) accept a peer only when
/// this handler says 200; when it is not running, nobody is let in.
final class ZAPHandler: @unchecked Sendable {
    static let endpoint = "inproc://zeromq.zap.01"
    private let thread: SocketThread
    private let authenticator: any ZAPAuthenticator

    /// Binds the handler's socket now (before any socket of the context binds, so the first
    /// connection already meets it); `start` runs it.
    init(context: ZMQContext, authenticator: any ZAPAuthenticator) throws(ZMQError) {
        let socket = try ZMQSocket(context, .rep)
        try socket.bind(Self.endpoint)
        thread = SocketThread(socket, name: "zap")
        self.authenticator = authenticator
    }

    func start() {
        thread.start { [authenticator] socket, frames in _ = try? socket.send(Self.reply(to: frames, authenticator)) }
    }

    /// Stops the thread and closes the socket (which the context's termination waits for).
    func stop() { thread.stop() }

    /// The reply to one ZAP request: [version, request id, status code, status text, user id, metadata].
    static func reply(to frames: [[UInt8]], _ authenticator: any ZAPAuthenticator) -> [[UInt8]] {
        func text(_ i: Int) -> String { i < frames.count ? String(decoding: frames[i], as: UTF8.self) : "" }
        let requestID = frames.count > 1 ? frames[1] : []
        func answer(_ code: String, _ status: String, _ user: String = "") -> [[UInt8]] {
            [Array("1.0".utf8), requestID, Array(code.utf8), Array(status.utf8.prefix(255)), Array(user.utf8), []]
        }
        guard frames.count >= 6, text(0) == "1.0" else { return answer("500", "malformed ZAP request") }
        let mechanism = text(5)
        var key: String?
        if mechanism == "CURVE" {
            guard frames.count >= 7, frames[6].count == 32, let k = Z85.encode(frames[6]) else { return answer("400", "bad CURVE credentials") }
            key = k
        }
        let request = ZAPRequest(domain: text(2), address: text(3), mechanism: mechanism, clientKey: key)
        switch authenticator.authenticate(request) {
        case .allow(let user): return answer("200", "OK", user)
        case .deny(let reason): return answer("400", reason)
        }
    }
}

/// Watches one socket's failed handshakes (zmq_socket_monitor) on its own thread and hands each
/// to the authenticator: a NULL or PLAIN client fails at the ZMTP greeting, before ZAP, so only
/// the monitor sees it.
final class HandshakeMonitor: @unchecked Sendable {
    static let endpoint = "inproc://computegrid.handshake-monitor"
    private let thread: SocketThread
    private let authenticator: any ZAPAuthenticator

    init(context: ZMQContext, watching watched: ZMQSocket, authenticator: any ZAPAuthenticator) throws(ZMQError) {
        try watched.monitor(Self.endpoint, events: ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        let socket = try ZMQSocket(context, .pair)
        try socket.connect(Self.endpoint)
        thread = SocketThread(socket, name: "handshake-monitor")
        self.authenticator = authenticator
    }

    func start() {
        thread.start { [authenticator] _, frames in
            // Frame 1: the event (16 bits) and its value (32 bits), native byte order; frame 2: the endpoint.
            guard frames.count >= 2, frames[0].count >= 6 else { return }
            let event = frames[0].withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 0, as: UInt16.self) }
            let value = frames[0].withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 2, as: UInt32.self) }
            if let failure = HandshakeFailure.from(event: event, value: value, endpoint: String(decoding: frames[1], as: UTF8.self)) {
                authenticator.handshakeFailed(failure)
            }
        }
    }

    func stop() { thread.stop() }
}

/// A socket served on its own thread: each message goes to the handler; a poll every 100 ms
/// notices `stop`, after which the thread closes the socket (the context's termination waits
/// for it).
final class SocketThread: @unchecked Sendable {
    private let socket: ZMQSocket
    private let name: String
    private let stopFlag = Atomic<Bool>(false)
    private let done = DispatchSemaphore(value: 0)
    private var started = false

    init(_ socket: ZMQSocket, name: String) {
        self.socket = socket
        self.name = name
    }

    func start(_ handle: @escaping @Sendable (ZMQSocket, [[UInt8]]) -> Void) {
        started = true
        let thread = Thread { [self] in
            serve(handle)
            socket.close()
            done.signal()
        }
        thread.name = name
        thread.start()
    }

    func stop() {
        stopFlag.store(true, ordering: .releasing)
        if started { done.wait() } else { socket.close() }
        started = false
    }

    private func serve(_ handle: (ZMQSocket, [[UInt8]]) -> Void) {
        while !stopFlag.load(ordering: .acquiring) {
            let ready: [Bool]
            do { ready = try poll([socket.pollItem], timeoutMs: 100) } catch {
                if error.contextTerminated { return }
                continue
            }
            guard ready[0] else { continue }
            let frames: [[UInt8]]?
            do { frames = try socket.receive(dontWait: true) } catch {
                if error.contextTerminated { return }
                continue
            }
            if let frames { handle(socket, frames) }
        }
    }
}
