import CZeroMQ
import Foundation

/// A libzmq call failed. Carries errno and libzmq's text so logs say what went wrong and where.
public struct ZMQError: Error, CustomStringConvertible, Sendable, Equatable {
    public let operation: String
    public let errno: Int32
    public let endpoint: String?

    public init(_ operation: String, errno: Int32 = zmq_errno(), endpoint: String? = nil) {
        self.operation = operation
        self.errno = errno
        self.endpoint = endpoint
    }

    public var message: String { String(cString: zmq_strerror(errno)) }

    public var description: String {
        if let endpoint { return "zmq \(operation) \(endpoint): \(message) (errno \(errno))" }
        return "zmq \(operation): \(message) (errno \(errno))"
    }

    /// True when the call would have blocked (EAGAIN) — not a failure for non-blocking I/O.
    public var wouldBlock: Bool { errno == EAGAIN }
    /// True when the context was terminated underneath the socket.
    public var contextTerminated: Bool { errno == ETERM }
}

/// The libzmq version the process linked against, e.g. "4.3.4".
public func zmqVersion() -> String {
    var major: Int32 = 0, minor: Int32 = 0, patch: Int32 = 0
    zmq_version(&major, &minor, &patch)
    return "\(major).\(minor).\(patch)"
}

/// One per process (or per test). Sockets must be closed before the context is terminated.
public final class ZMQContext: @unchecked Sendable {
    let handle: UnsafeMutableRawPointer
    private let lock = NSLock()
    private var terminated = false

    public init(ioThreads: Int32 = 1) throws(ZMQError) {
        guard let ctx = zmq_ctx_new() else { throw ZMQError("ctx_new") }
        handle = ctx
        if zmq_ctx_set(ctx, ZMQ_IO_THREADS, ioThreads) != 0 { throw ZMQError("ctx_set(IO_THREADS)") }
    }

    /// Makes blocking calls on all sockets return ETERM; sockets must still be closed.
    public func shutdown() { _ = zmq_ctx_shutdown(handle) }

    /// Terminates the context; blocks until every socket of it is closed and lingering is done.
    public func terminate() {
        lock.lock()
        defer { lock.unlock() }
        guard !terminated else { return }
        terminated = true
        while zmq_ctx_term(handle) != 0 && zmq_errno() == EINTR {}
    }

    deinit { terminate() }
}

public enum ZMQSocketType: Sendable {
    case router, dealer, pair, push, pull, pub, sub, req, rep

    var raw: Int32 {
        switch self {
        case .router: return ZMQ_ROUTER
        case .dealer: return ZMQ_DEALER
        case .pair: return ZMQ_PAIR
        case .push: return ZMQ_PUSH
        case .pull: return ZMQ_PULL
        case .pub: return ZMQ_PUB
        case .sub: return ZMQ_SUB
        case .req: return ZMQ_REQ
        case .rep: return ZMQ_REP
        }
    }
}

/// A ZeroMQ socket. Not thread-safe (libzmq sockets are not): use it from one thread only.
public final class ZMQSocket {
    private var handle: UnsafeMutableRawPointer?
    public let type: ZMQSocketType

    /// Creates a socket with LINGER 0 so closing never blocks shutdown; set `linger` to change.
    public init(_ context: ZMQContext, _ type: ZMQSocketType) throws(ZMQError) {
        guard let s = zmq_socket(context.handle, type.raw) else { throw ZMQError("socket") }
        handle = s
        self.type = type
        try setInt(ZMQ_LINGER, 0, name: "LINGER")
    }

    deinit { close() }

    public var isClosed: Bool { handle == nil }

    public func close() {
        if let h = handle {
            _ = zmq_close(h)
            handle = nil
        }
    }

    func raw(_ op: String) throws(ZMQError) -> UnsafeMutableRawPointer {
        guard let h = handle else { throw ZMQError(op, errno: ENOTSOCK) }
        return h
    }

    // MARK: endpoints

    public func bind(_ endpoint: String) throws(ZMQError) {
        let h = try raw("bind")
        if zmq_bind(h, endpoint) != 0 { throw ZMQError("bind", endpoint: endpoint) }
    }

    public func connect(_ endpoint: String) throws(ZMQError) {
        let h = try raw("connect")
        if zmq_connect(h, endpoint) != 0 { throw ZMQError("connect", endpoint: endpoint) }
    }

    public func disconnect(_ endpoint: String) throws(ZMQError) {
        let h = try raw("disconnect")
        if zmq_disconnect(h, endpoint) != 0 { throw ZMQError("disconnect", endpoint: endpoint) }
    }

    /// The endpoint actually bound, e.g. "tcp://127.0.0.1:41234" after binding "tcp://127.0.0.1:*".
    public func lastEndpoint() throws(ZMQError) -> String {
        let h = try raw("getsockopt(LAST_ENDPOINT)")
        var buffer = [CChar](repeating: 0, count: 1024)
        var size = buffer.count
        if zmq_getsockopt(h, ZMQ_LAST_ENDPOINT, &buffer, &size) != 0 {
            throw ZMQError("getsockopt(LAST_ENDPOINT)")
        }
        return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    // MARK: options

    public func setInt(_ option: Int32, _ value: Int32, name: String) throws(ZMQError) {
        let h = try raw("setsockopt(\(name))")
        var v = value
        if zmq_setsockopt(h, option, &v, MemoryLayout<Int32>.size) != 0 { throw ZMQError("setsockopt(\(name))") }
    }

    public func setInt64(_ option: Int32, _ value: Int64, name: String) throws(ZMQError) {
        let h = try raw("setsockopt(\(name))")
        var v = value
        if zmq_setsockopt(h, option, &v, MemoryLayout<Int64>.size) != 0 { throw ZMQError("setsockopt(\(name))") }
    }

    public func setBytes(_ option: Int32, _ value: [UInt8], name: String) throws(ZMQError) {
        let h = try raw("setsockopt(\(name))")
        let rc = value.withUnsafeBytes { zmq_setsockopt(h, option, $0.baseAddress, $0.count) }
        if rc != 0 { throw ZMQError("setsockopt(\(name))") }
    }

    public func getInt(_ option: Int32, name: String) throws(ZMQError) -> Int32 {
        let h = try raw("getsockopt(\(name))")
        var v: Int32 = 0
        var size = MemoryLayout<Int32>.size
        if zmq_getsockopt(h, option, &v, &size) != 0 { throw ZMQError("getsockopt(\(name))") }
        return v
    }

    /// Largest inbound message accepted; a peer sending more is disconnected by libzmq.
    public func setMaxMessageSize(_ bytes: Int64) throws(ZMQError) { try setInt64(ZMQ_MAXMSGSIZE, bytes, name: "MAXMSGSIZE") }
    /// ROUTER: fail with EHOSTUNREACH instead of silently dropping a message to an unknown peer.
    public func setRouterMandatory(_ on: Bool) throws(ZMQError) { try setInt(ZMQ_ROUTER_MANDATORY, on ? 1 : 0, name: "ROUTER_MANDATORY") }
    public func setSendHighWaterMark(_ messages: Int32) throws(ZMQError) { try setInt(ZMQ_SNDHWM, messages, name: "SNDHWM") }
    public func sendHighWaterMark() throws(ZMQError) -> Int32 { try getInt(ZMQ_SNDHWM, name: "SNDHWM") }
    public func setReceiveHighWaterMark(_ messages: Int32) throws(ZMQError) { try setInt(ZMQ_RCVHWM, messages, name: "RCVHWM") }
    public func setLinger(milliseconds: Int32) throws(ZMQError) { try setInt(ZMQ_LINGER, milliseconds, name: "LINGER") }
    /// Queue only to completed connections, so messages are not stranded on a dead peer's pipe.
    public func setImmediate(_ on: Bool) throws(ZMQError) { try setInt(ZMQ_IMMEDIATE, on ? 1 : 0, name: "IMMEDIATE") }
    /// ZMTP heartbeats: detect a dead TCP peer without application traffic.
    public func setHeartbeat(intervalMs: Int32, timeoutMs: Int32, ttlMs: Int32) throws(ZMQError) {
        try setInt(ZMQ_HEARTBEAT_IVL, intervalMs, name: "HEARTBEAT_IVL")
        try setInt(ZMQ_HEARTBEAT_TIMEOUT, timeoutMs, name: "HEARTBEAT_TIMEOUT")
        try setInt(ZMQ_HEARTBEAT_TTL, ttlMs, name: "HEARTBEAT_TTL")
    }
    public func setSendTimeout(milliseconds: Int32) throws(ZMQError) { try setInt(ZMQ_SNDTIMEO, milliseconds, name: "SNDTIMEO") }
    public func setReceiveTimeout(milliseconds: Int32) throws(ZMQError) { try setInt(ZMQ_RCVTIMEO, milliseconds, name: "RCVTIMEO") }
    public func setReconnectInterval(milliseconds: Int32, max: Int32) throws(ZMQError) {
        try setInt(ZMQ_RECONNECT_IVL, milliseconds, name: "RECONNECT_IVL")
        try setInt(ZMQ_RECONNECT_IVL_MAX, max, name: "RECONNECT_IVL_MAX")
    }
    /// DEALER/ROUTER identity this socket presents to a ROUTER peer.
    public func setRoutingID(_ id: [UInt8]) throws(ZMQError) { try setBytes(ZMQ_ROUTING_ID, id, name: "ROUTING_ID") }
    public func subscribe(_ prefix: [UInt8]) throws(ZMQError) { try setBytes(ZMQ_SUBSCRIBE, prefix, name: "SUBSCRIBE") }

    /// Makes this socket a CURVE server holding `secretKey` (Z85, 40 chars).
    public func setCurveServer(secretKey: String) throws(ZMQError) {
        try setInt(ZMQ_CURVE_SERVER, 1, name: "CURVE_SERVER")
        try setBytes(ZMQ_CURVE_SECRETKEY, Array(secretKey.utf8), name: "CURVE_SECRETKEY")
    }
    /// The ZAP domain the socket's peers are authenticated in (RFC 27).
    public func setZAPDomain(_ domain: String) throws(ZMQError) { try setBytes(ZMQ_ZAP_DOMAIN, Array(domain.utf8), name: "ZAP_DOMAIN") }

    /// With `on`, a connection is refused when no ZAP handler answers (libzmq ≥ 4.3's
    /// ZMQ_ZAP_ENFORCE_DOMAIN, 93, a draft option the Debian library accepts): a controller
    /// whose authenticator is not running lets nobody in, rather than everybody.
    public func setZAPEnforceDomain(_ on: Bool) throws(ZMQError) { try setInt(93, on ? 1 : 0, name: "ZAP_ENFORCE_DOMAIN") }

    /// Publishes the socket's `events` (ZMQ_EVENT_* bits) on a PAIR socket bound at `endpoint`
    /// (an inproc address), which a monitor connects to (zmq_socket_monitor).
    public func monitor(_ endpoint: String, events: Int32) throws(ZMQError) {
        guard let h = handle, zmq_socket_monitor(h, endpoint, events) == 0 else { throw ZMQError("socket_monitor", endpoint: endpoint) }
    }

    /// Makes this socket a PLAIN client (user name and password in clear): only tests use it,
    /// to show that a controller refuses the mechanism.
    public func setPlainClient(username: String, password: String) throws(ZMQError) {
        try setBytes(ZMQ_PLAIN_USERNAME, Array(username.utf8), name: "PLAIN_USERNAME")
        try setBytes(ZMQ_PLAIN_PASSWORD, Array(password.utf8), name: "PLAIN_PASSWORD")
    }

    /// Makes this socket a CURVE client of the server whose public key is `serverKey`.
    public func setCurveClient(serverKey: String, publicKey: String, secretKey: String) throws(ZMQError) {
        try setBytes(ZMQ_CURVE_SERVERKEY, Array(serverKey.utf8), name: "CURVE_SERVERKEY")
        try setBytes(ZMQ_CURVE_PUBLICKEY, Array(publicKey.utf8), name: "CURVE_PUBLICKEY")
        try setBytes(ZMQ_CURVE_SECRETKEY, Array(secretKey.utf8), name: "CURVE_SECRETKEY")
    }

    // MARK: messages

    /// Sends all frames as one multipart message. Returns false if it would block with
    /// `dontWait`; throws on real errors (EHOSTUNREACH for an unknown ROUTER peer, ...).
    @discardableResult
    public func send(_ frames: [[UInt8]], dontWait: Bool = false) throws(ZMQError) -> Bool {
        let h = try raw("send")
        precondition(!frames.isEmpty, "a ZeroMQ message has at least one frame")
        for (i, frame) in frames.enumerated() {
            var flags: Int32 = dontWait ? ZMQ_DONTWAIT : 0
            if i < frames.count - 1 { flags |= ZMQ_SNDMORE }
            while true {
                let rc = frame.withUnsafeBytes { zmq_send(h, $0.baseAddress, $0.count, flags) }
                if rc >= 0 { break }
                let e = zmq_errno()
                if e == EINTR { continue }
                if e == EAGAIN && i == 0 { return false }
                throw ZMQError("send", errno: e)
            }
        }
        return true
    }

    /// Receives one whole multipart message, or nil when `dontWait` and nothing is queued.
    public func receive(dontWait: Bool = false) throws(ZMQError) -> [[UInt8]]? {
        try receiveWithUser(dontWait: dontWait, wantUser: false)?.frames
    }

    /// Receives one whole message and, with `wantUser`, the user id the ZAP handler gave its
    /// connection (the "User-Id" metadata property; nil without authentication).
    public func receiveWithUser(dontWait: Bool = false, wantUser: Bool = true) throws(ZMQError) -> (frames: [[UInt8]], user: String?)? {
        let h = try raw("recv")
        var frames: [[UInt8]] = []
        var user: String?
        while true {
            var msg = zmq_msg_t()
            zmq_msg_init(&msg)
            defer { zmq_msg_close(&msg) }
            var rc: Int32
            repeat {
                rc = zmq_msg_recv(&msg, h, (dontWait && frames.isEmpty) ? ZMQ_DONTWAIT : 0)
            } while rc < 0 && zmq_errno() == EINTR
            if rc < 0 {
                let e = zmq_errno()
                if e == EAGAIN && frames.isEmpty { return nil }
                throw ZMQError("recv", errno: e)
            }
            // A ROUTER's identity frame is made locally and has no metadata: read it from the peer's frames.
            if wantUser && user == nil, let u = zmq_msg_gets(&msg, "User-Id") { user = String(cString: u) }
            let size = zmq_msg_size(&msg)
            if size > 0, let data = zmq_msg_data(&msg) {
                frames.append(Array(UnsafeRawBufferPointer(start: data, count: size)))
            } else {
                frames.append([])
            }
            if zmq_msg_more(&msg) == 0 { break }
        }
        return (frames, user)
    }

    /// Poll handle for this socket, readable when a message is queued.
    public var pollItem: PollItem { PollItem(socket: handle, fd: -1) }
}

/// Something `poll` can wait on: a ZeroMQ socket or a plain file descriptor.
public struct PollItem {
    let socket: UnsafeMutableRawPointer?
    let fd: Int32
    public static func fileDescriptor(_ fd: Int32) -> PollItem { PollItem(socket: nil, fd: fd) }
}

/// Waits until any item is readable or `timeoutMs` passes (-1 = forever). Returns one flag per
/// item. EINTR is reported as "nothing ready" so callers re-check their stop flag.
public func poll(_ items: [PollItem], timeoutMs: Int) throws(ZMQError) -> [Bool] {
    var raw = items.map { item in
        zmq_pollitem_t(socket: item.socket, fd: item.fd, events: Int16(ZMQ_POLLIN), revents: 0)
    }
    let rc = raw.withUnsafeMutableBufferPointer { zmq_poll($0.baseAddress, Int32($0.count), timeoutMs) }
    if rc < 0 {
        let e = zmq_errno()
        if e == EINTR { return Array(repeating: false, count: items.count) }
        throw ZMQError("poll", errno: e)
    }
    return raw.map { ($0.revents & Int16(ZMQ_POLLIN)) != 0 }
}

/// A CURVE key pair in Z85 text (40 characters each).
public struct CurveKeyPair: Sendable, Equatable {
    public let publicKey: String
    public let secretKey: String

    public static func generate() throws(ZMQError) -> CurveKeyPair {
        var pub = [CChar](repeating: 0, count: 41)
        var sec = [CChar](repeating: 0, count: 41)
        if zmq_curve_keypair(&pub, &sec) != 0 { throw ZMQError("curve_keypair") }
        func text(_ b: [CChar]) -> String {
            String(decoding: b.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        return CurveKeyPair(publicKey: text(pub), secretKey: text(sec))
    }

    public init(publicKey: String, secretKey: String) {
        self.publicKey = publicKey
        self.secretKey = secretKey
    }

    /// The pair of a secret key (Z85), its public half derived; nil when it is not a key.
    public init?(secretKey: String) {
        guard Z85.decode(secretKey)?.count == 32 else { return nil }
        var pub = [CChar](repeating: 0, count: 41)
        guard zmq_curve_public(&pub, secretKey) == 0 else { return nil }
        self.publicKey = String(decoding: pub.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        self.secretKey = secretKey
    }
}

/// ZeroMQ's Z85 text encoding (RFC 32) of binary keys.
public enum Z85 {
    /// Text of `bytes` (a multiple of 4 long), nil otherwise.
    public static func encode(_ bytes: [UInt8]) -> String? {
        guard !bytes.isEmpty, bytes.count % 4 == 0 else { return nil }
        var out = [CChar](repeating: 0, count: bytes.count * 5 / 4 + 1)
        guard bytes.withUnsafeBufferPointer({ zmq_z85_encode(&out, $0.baseAddress, $0.count) }) != nil else { return nil }
        return String(decoding: out.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Bytes of `text` (a multiple of 5 characters of the Z85 alphabet), nil otherwise.
    public static func decode(_ text: String) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard !chars.isEmpty, chars.count % 5 == 0, chars.allSatisfy({ alphabet.contains($0) }) else { return nil }
        var out = [UInt8](repeating: 0, count: chars.count * 4 / 5)
        guard zmq_z85_decode(&out, text) != nil else { return nil }
        return out
    }

    /// True for a CURVE key as text: 40 Z85 characters that decode to 32 bytes. No such key
    /// starts with '#': a 5-character group whose first character is '#' (value 84) exceeds
    /// 2^32, so a line starting with '#' is always a comment in key files.
    public static func isCurveKey(_ text: String) -> Bool { text.utf8.count == 40 && decode(text)?.count == 32 }

    static let alphabet = Set("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#".utf8)
}
