import Foundation
import Synchronization
import Testing
@testable import GridTransport

/// ZAP on real sockets (issue 11, item 2): a loop with an authenticator lets in the CURVE keys
/// it allows and nothing else (NULL, PLAIN, unknown keys), every frame names the key's user id,
/// and a socket that enforces its domain with no handler running lets nobody in.
@Suite struct ZAPTests {
    /// Allows the keys it holds; remembers every request it saw.
    final class Allow: ZAPAuthenticator, @unchecked Sendable {
        let users: Mutex<[String: String]>
        let seen = Mutex<[ZAPRequest]>([])
        let failures = Mutex<[HandshakeFailure]>([])
        init(_ users: [String: String]) { self.users = Mutex(users) }
        func handshakeFailed(_ failure: HandshakeFailure) { failures.withLock { $0.append(failure) } }
        func authenticate(_ request: ZAPRequest) -> ZAPDecision {
            seen.withLock { $0.append(request) }
            guard request.mechanism == "CURVE", let k = request.clientKey, let user = users.withLock({ $0[k] }) else {
                return .deny(reason: "not allowed")
            }
            return .allow(userID: user)
        }
    }

    enum Nothing: Sendable {}

    /// A server loop with `auth`; runs `body` with its endpoint; returns what arrived as "payload|user".
    func serve(_ server: CurveKeyPair, _ auth: Allow, _ body: (String, () -> [String]) throws -> Void) throws -> [String] {
        let loop = try SocketLoop<Nothing>(options: SocketLoopOptions(
            bind: "tcp://127.0.0.1:*", tickMilliseconds: 10, curveServerSecretKey: server.secretKey, authenticator: auth))
        let endpoint = try #require(loop.boundEndpoint)
        let got = Mutex<[String]>([])
        let done = LoopThread(name: "zap-server") {
            loop.run { input in
                if case .frame(_, let payload, _, let user) = input {
                    got.withLock { $0.append("\(String(decoding: payload, as: UTF8.self))|\(user ?? "nil")") }
                }
                return []
            }
        }
        try body(endpoint, { got.withLock { $0 } })
        loop.stop()
        done.join()
        return got.withLock { $0 }
    }

    /// Sends `text` from a fresh DEALER set up by `setUp`, retrying for `seconds`, until `arrived`.
    func send(_ text: String, to endpoint: String, seconds: Double, until arrived: () -> Bool = { false },
              _ setUp: (ZMQSocket) throws -> Void) throws {
        let ctx = try ZMQContext()
        defer { ctx.terminate() }
        let d = try ZMQSocket(ctx, .dealer)
        defer { d.close() }
        try setUp(d)
        try d.connect(endpoint)
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline && !arrived() {
            _ = try? d.send([Array(text.utf8)], dontWait: true)
            Thread.sleep(forTimeInterval: 0.05)
        }
    }

    @Test func anAllowedKeyGetsInWithItsUserIDAndNothingElseDoes() throws {
        let server = try CurveKeyPair.generate()
        let good = try CurveKeyPair.generate()
        let unknown = try CurveKeyPair.generate()
        let auth = Allow([good.publicKey: "agent-a"])
        var bound = ""
        let got = try serve(server, auth) { endpoint, arrived in
            bound = endpoint
            try send("null", to: endpoint, seconds: 1) { _ in }
            try send("plain", to: endpoint, seconds: 1) { try $0.setPlainClient(username: "admin", password: "admin") }
            try send("unknown", to: endpoint, seconds: 1) {
                try $0.setCurveClient(serverKey: server.publicKey, publicKey: unknown.publicKey, secretKey: unknown.secretKey)
            }
            try send("good", to: endpoint, seconds: 10, until: { !arrived().isEmpty }) {
                try $0.setCurveClient(serverKey: server.publicKey, publicKey: good.publicKey, secretKey: good.secretKey)
            }
        }
        #expect(Set(got) == ["good|agent-a"], "only the allowed key's frames arrive, with its user id: \(got)")
        let seen = auth.seen.withLock { $0 }
        #expect(seen.contains { $0.mechanism == "CURVE" && $0.clientKey == unknown.publicKey }, "the unknown key was asked about and refused")
        #expect(seen.contains { $0.mechanism == "CURVE" && $0.clientKey == good.publicKey && $0.domain == "computegrid" && $0.address == "127.0.0.1" })
        // NULL and PLAIN never reach ZAP (the mechanisms differ at the ZMTP greeting); the
        // socket's monitor reports them, so they are counted all the same.
        #expect(!seen.contains { $0.mechanism != "CURVE" })
        let failures = auth.failures.withLock { $0 }
        // libzmq names the mismatch (protocol error 0x11000002) or reports the failure without
        // detail, depending on which side of the greeting notices first: each client's is there.
        #expect(failures.count >= 2, "NULL and PLAIN seen by the monitor: \(failures)")
        // Each names the server's own endpoint (the monitor watches the bound socket only).
        #expect(failures.allSatisfy { $0.endpoint == bound }, "\(failures) at \(bound)")
    }

    @Test func aSocketThatEnforcesItsDomainLetsNobodyInWithoutAHandler() throws {
        let server = try CurveKeyPair.generate()
        let client = try CurveKeyPair.generate()
        let ctx = try ZMQContext()
        defer { ctx.terminate() }
        let router = try ZMQSocket(ctx, .router)
        defer { router.close() }
        try router.setCurveServer(secretKey: server.secretKey)
        try router.setZAPDomain("computegrid")
        try router.setZAPEnforceDomain(true)
        try router.bind("tcp://127.0.0.1:*")
        let endpoint = try router.lastEndpoint()
        try send("x", to: endpoint, seconds: 1) {
            try $0.setCurveClient(serverKey: server.publicKey, publicKey: client.publicKey, secretKey: client.secretKey)
        }
        #expect(try poll([router.pollItem], timeoutMs: 300) == [false], "no ZAP handler: the handshake fails, nothing arrives")
        // The same socket without enforcement lets the key in (libzmq's default): enforcement is what refuses.
        let open = try ZMQSocket(ctx, .router)
        defer { open.close() }
        try open.setCurveServer(secretKey: server.secretKey)
        try open.bind("tcp://127.0.0.1:*")
        let openEndpoint = try open.lastEndpoint()
        try send("x", to: openEndpoint, seconds: 1) {
            try $0.setCurveClient(serverKey: server.publicKey, publicKey: client.publicKey, secretKey: client.secretKey)
        }
        #expect(try poll([open.pollItem], timeoutMs: 300) == [true])
    }

    @Test func keyTextRoundTripsAndRejectsWhatIsNotAKey() throws {
        let pair = try CurveKeyPair.generate()
        #expect(CurveKeyPair(secretKey: pair.secretKey) == pair, "the public half is derived from the secret")
        let bytes = try #require(Z85.decode(pair.publicKey))
        #expect(bytes.count == 32 && Z85.encode(bytes) == pair.publicKey)
        #expect(Z85.decode("shor") == nil && Z85.decode(String(repeating: "~", count: 40)) == nil)
        #expect(CurveKeyPair(secretKey: "not a key") == nil)
    }

    @Test func keyFilesAreWrittenPrivateReadBackAndRefusedWhenOthersCanReadThem() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("keys-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let made = try CurveKeyFile.generate(name: "node-1", directory: dir)
        var st = stat()
        #expect(stat(made.secretPath, &st) == 0 && st.st_mode & 0o777 == 0o600)
        #expect(try CurveKeyFile.readPair(made.secretPath) == made.pair)
        #expect(try CurveKeyFile.readPublic(made.publicPath) == made.pair.publicKey)
        #expect(try CurveKeyFile.readPublic(made.pair.publicKey) == made.pair.publicKey)
        #expect(throws: KeyFileError.self) { try CurveKeyFile.generate(name: "node-1", directory: dir) }
        chmod(made.secretPath, 0o644)
        #expect {
            _ = try CurveKeyFile.readPair(made.secretPath)
        } throws: { "\($0)".contains("readable by group or others (mode 644): chmod 600 it") }
        // Group-readable only when root owns it (a Kubernetes Secret with fsGroup, mode 0440).
        chmod(made.secretPath, 0o640)
        if geteuid() == 0 {
            chown(made.secretPath, 0, 10001)
            #expect(try CurveKeyFile.readPair(made.secretPath) == made.pair)
            chmod(made.secretPath, 0o660)
            #expect(throws: KeyFileError.self) { _ = try CurveKeyFile.readPair(made.secretPath) }
            chmod(made.secretPath, 0o640)
            chown(made.secretPath, 10001, 10001)
        }
        // Owned by someone other than root (the test's own user when not root): 0640 is refused.
        #expect {
            _ = try CurveKeyFile.readPair(made.secretPath)
        } throws: { "\($0)".contains("(mode 640): chmod 600 it (0640 only when root owns it)") }
        #expect {
            _ = try CurveKeyFile.readPublic(dir + "/missing.pub")
        } throws: { "\($0)".contains("neither a public key") }
    }
}
