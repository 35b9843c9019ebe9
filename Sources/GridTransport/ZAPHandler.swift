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
}

/// The ZAP handler of one context: a REP socket at `inproc://zeromq.zap.01` answered by its own
/// thread. Sockets of the context that set a ZAP domain (and enforce it) accept a peer only when
/// this handler says 200; when it is not running, nobody is let in.
final class ZAPHandler: @unchecked Sendable {
    static let endpoint = "inproc://zeromq.zap.01"
    private let socket: ZMQSocket
    private let authenticator: any ZAPAuthenticator
    private let stopFlag = Atomic<Bool>(false)
    private let done = DispatchSemaphore(value: 0)
    private var started = false

    /// Binds the handler's socket now (before any socket of the context binds, so the first
    /// connection already meets it); `start` runs it.
    init(context: ZMQContext, authenticator: any ZAPAuthenticator) throws(ZMQError) {
        socket = try ZMQSocket(context, .rep)
        try socket.bind(Self.endpoint)
        self.authenticator = authenticator
    }

    func start() {
        started = true
        let thread = Thread { [self] in
            serve()
            socket.close()
            done.signal()
        }
        thread.name = "zap"
        thread.start()
    }

    /// Stops the thread and closes the socket (which the context's termination waits for).
    func stop() {
        stopFlag.store(true, ordering: .releasing)
        if started { done.wait() } else { socket.close() }
        started = false
    }

    private func serve() {
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
            guard let frames else { continue }
            _ = try? socket.send(Self.reply(to: frames, authenticator))
        }
    }

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
