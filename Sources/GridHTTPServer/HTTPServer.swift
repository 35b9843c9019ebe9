import Foundation
import GridCore
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle
import Synchronization

/// A daemon's HTTP listener as a swift-service-lifecycle `Service`: Hummingbird on the given
/// address, stopped with the rest of the daemon on SIGTERM/SIGINT. `onListening` gets the bound
/// address (`host:port`, the real port when 0 was asked for). With `tls` it speaks HTTPS only.
public struct HTTPServer<Context: RequestContext>: Service where Context.Source == ApplicationRequestContextSource {
    let responder: RouterResponder<Context>
    let host: String
    let port: Int
    let logger: Logger
    let onListening: @Sendable (String) -> Void
    let stopping: ShutdownFlag
    let tls: HTTPSConfiguration?

    /// `stopping` is raised when the daemon begins to shut down: long answers (the event stream)
    /// end then, so the server's graceful shutdown does not wait on them.
    public init(router: Router<Context>, host: String, port: Int, logger: Logger, stopping: ShutdownFlag = ShutdownFlag(),
                tls: HTTPSConfiguration? = nil, onListening: @escaping @Sendable (String) -> Void) {
        self.stopping = stopping
        self.tls = tls
        self.responder = router.buildResponder()
        self.host = host
        self.port = port
        self.logger = logger
        self.onListening = onListening
    }

    public func run() async throws {
        let host = self.host
        let onListening = self.onListening
        var quiet = logger
        // Hummingbird's own lines (one per request at info) stay out of the daemon's log.
        quiet.logLevel = max(logger.logLevel, .warning)
        let server: HTTPServerBuilder
        do { server = try tls.map { try .tls(.http1(), tlsConfiguration: $0.tls) } ?? .http1() } catch {
            logger.error("the HTTP listener on \(host):\(port) cannot set up TLS: \(error); the daemon goes on without it")
            return
        }
        let app = Application(
            responder: responder,
            server: server,
            configuration: .init(address: .hostname(host, port: port), serverName: "computegrid"),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? 0
                onListening(host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)")
            },
            logger: quiet)
        do {
            let stopping = self.stopping
            try await withGracefulShutdownHandler {
                try await app.run()
            } onGracefulShutdown: {
                stopping.raise()
            }
        } catch {
            // The scheduler matters more than its window: a listener that cannot bind is logged
            // (and its absence shows in monitoring), the daemon goes on.
            logger.error("the HTTP listener on \(host):\(port) failed: \(error); the daemon goes on without it (set 'http' to a free port, or off)")
        }
    }
}

/// The TLS of an HTTPS listener (TLS 1.2 or later), with a certificate that can be replaced
/// while the listener runs: `reload()` reads the files again (SIGHUP, after cert-manager or
/// certbot renewed them) and every handshake from then on presents the new chain; connections
/// already open keep theirs. A reload that cannot read or parse the files, or whose key does not
/// match the certificate, throws and leaves the current identity in force.
///
/// With `clientCA`, a client must present a certificate that CA signed (mutual TLS) before any
/// request is read; one without, or signed by another, fails the handshake.
public final class HTTPSConfiguration: Sendable {
    public let certificatePath: String
    public let keyPath: String
    public let clientCAPath: String?
    private let identity: Mutex<HTTPSIdentity>
    private let clientCAs: [NIOSSLCertificate]

    /// From a PEM certificate chain (the server's certificate first) and its PEM private key,
    /// and optionally the PEM certificates of the CAs whose client certificates are accepted.
    /// Throws, naming the file, when one cannot be read or parsed.
    public init(certificateChain certPath: String, privateKey keyPath: String, clientCA: String? = nil) throws {
        certificatePath = certPath
        self.keyPath = keyPath
        identity = Mutex(try HTTPSIdentity(certificateChain: certPath, privateKey: keyPath))
        clientCAPath = clientCA
        if let clientCA {
            do { clientCAs = try NIOSSLCertificate.fromPEMFile(clientCA) } catch {
                throw ConfigError(source: clientCA, problems: ["http_tls_client_ca: not a PEM certificate file (\(error))"])
            }
            if clientCAs.isEmpty { throw ConfigError(source: clientCA, problems: ["http_tls_client_ca: no certificate in the file"]) }
        } else {
            clientCAs = []
        }
    }

    /// Reads the files again; returns the new leaf certificate's serial number (hex). Throws, and
    /// keeps serving the current certificate, when they are not a valid pair.
    @discardableResult
    public func reload() throws -> String {
        let fresh = try HTTPSIdentity(certificateChain: certificatePath, privateKey: keyPath)
        identity.withLock { $0 = fresh }
        return fresh.serial
    }

    /// The serial number (hex) of the leaf certificate handshakes present now.
    public var serial: String { identity.withLock { $0.serial } }

    /// The listener's configuration from a config's `http_tls_*` files; nil when it names none.
    public static func from(_ files: HTTPTLSFiles) throws -> HTTPSConfiguration? {
        guard files.enabled else { return nil }
        return try HTTPSConfiguration(certificateChain: files.cert, privateKey: files.key,
                                      clientCA: files.clientCA.isEmpty ? nil : files.clientCA)
    }

    /// `reload()` as a SIGHUP report names it: "http_tls_cert (serial S)", ", unchanged" when
    /// the files held the certificate already in force.
    public func renew() throws -> String {
        let before = serial
        let now = try reload()
        return "http_tls_cert (serial \(now)\(now == before ? ", unchanged" : ""))"
    }

    /// The listener's configuration: the identity at start, replaced per handshake by the
    /// current one (BoringSSL's certificate callback, through NIOSSL's context callback).
    var tls: TLSConfiguration {
        var c = identity.withLock { $0.configuration }
        if !clientCAs.isEmpty {
            // A client's certificate is checked against these CAs (not against a host name).
            c.certificateVerification = .noHostnameVerification
            c.trustRoots = .certificates(clientCAs)
        }
        c.sslContextCallback = { [self] _, promise in
            var changes = NIOSSLContextConfigurationOverride()
            identity.withLock { current in
                changes.certificateChain = current.chain.map { .certificate($0) }
                changes.privateKey = .privateKey(current.key)
            }
            promise.succeed(changes)
        }
        return c
    }
}

/// One certificate chain and its key, checked to belong together.
struct HTTPSIdentity: Sendable {
    let chain: [NIOSSLCertificate]
    let key: NIOSSLPrivateKey
    let serial: String

    init(certificateChain certPath: String, privateKey keyPath: String) throws {
        do { chain = try NIOSSLCertificate.fromPEMFile(certPath) } catch {
            throw ConfigError(source: certPath, problems: ["http_tls_cert: not a PEM certificate chain (\(error))"])
        }
        guard let leaf = chain.first else { throw ConfigError(source: certPath, problems: ["http_tls_cert: no certificate in the file"]) }
        do { key = try NIOSSLPrivateKey(file: keyPath, format: .pem) } catch {
            throw ConfigError(source: keyPath, problems: ["http_tls_key: not a PEM private key (\(error))"])
        }
        serial = leaf.serialNumber.map { String(format: "%02x", $0) }.joined()
        // BoringSSL refuses a key that does not belong to the leaf certificate here, not at the
        // first handshake.
        do { _ = try NIOSSLContext(configuration: configuration) } catch {
            throw ConfigError(source: keyPath, problems: ["http_tls_key: does not match the certificate in \(certPath) (\(error))"])
        }
    }

    var configuration: TLSConfiguration {
        var c = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        c.minimumTLSVersion = .tlsv12
        return c
    }
}

/// Set once when the daemon starts to shut down; read by long-running answers.
public final class ShutdownFlag: Sendable {
    private let flag = Mutex(false)
    public init() {}
    public func raise() { flag.withLock { $0 = true } }
    public var isRaised: Bool { flag.withLock { $0 } }
}
