import Foundation
import GridCore
import GridStore
import GridTransport
import Logging
import ServiceLifecycle
import Synchronization
import GridProtocol

/// The I/O shell around a controller: owns the SQLite store and the socket loop thread, and
/// stops cleanly on graceful shutdown (SIGTERM/SIGINT through `ServiceGroup`) or cancellation.
public final class ControllerService: Service, @unchecked Sendable {
    /// The endpoint actually bound (ports from `tcp://host:*` resolved).
    public let endpoint: String
    public let config: ControllerConfig
    /// A region's service rotation and its gateway's measurements (SERVICES.md, "Gateway").
    public let gateway = GatewayTable()
    let loop: SocketLoop<ControllerCall>
    let logger: Logger
    /// Who may connect and say what (nil: plaintext, no authentication). Reloaded on SIGHUP.
    public let access: AccessControl?
    /// The role's logic with the clock applied. Touched only on the loop thread once `run` starts.
    private let handle: ([LoopInput<ControllerCall>], Bool) -> [LoopOutput]
    private let nextWake: () -> UInt64?

    public init(config: ControllerConfig, logger: Logger, clock: MomentClock = .system, metrics: ControllerMetrics = ControllerMetrics()) throws {
        self.config = config
        self.logger = logger
        let store = try GridStore(path: config.databasePath)
        var options = SocketLoopOptions(
            bind: config.bind, connect: config.role == .region ? config.national : nil, identity: config.id,
            maxMessageBytes: config.maxMessageBytes, highWaterMark: 100_000, tickMilliseconds: 200)
        // A small inbound bound (5,000) held floods back by TCP, but libzmq 4.3.4 (Debian 12)
        // then aborts in stream_engine_base.cpp:331 (`!_io_error`) when a peer's connection
        // fails while its input is stopped; keep the bound high until that libzmq is gone.
        options.receiveHighWaterMark = 100_000
        var signer: AssignmentSigner?
        if !config.keyFile.isEmpty {
            let pair: CurveKeyPair
            let list: AccessList
            do {
                pair = try CurveKeyFile.readPair(config.keyFile)
                // A region signs every assignment with the key file's Ed25519 key (agents verify it).
                if config.role == .region, let seed = try CurveKeyFile.readSigningSeed(config.keyFile) {
                    signer = try AssignmentSigner(seed: seed)
                }
            } catch { throw ConfigError(source: "key_file", problems: ["\(error)"]) }
            list = try AccessList.load(config.authorizedKeys)
            let access = AccessControl(list, logger: logger)
            self.access = access
            options.curveServerSecretKey = pair.secretKey
            options.authenticator = access
            if config.role == .region, !config.nationalKey.isEmpty {
                let server: String
                do { server = try CurveKeyFile.readPublic(config.nationalKey) } catch { throw ConfigError(source: "national_key", problems: ["\(error)"]) }
                options.curveClient = (server, pair.publicKey, pair.secretKey)
            }
            if signer != nil { logger.info("assignments signed (Ed25519) with key_file's signing key") }
            logger.info("CURVE on: only keys in authorized_keys may connect", metadata: [
                "public_key": "\(pair.publicKey)", "authorized_keys": "\(config.authorizedKeys)", "keys": "\(list.keys.count)"])
        } else {
            access = nil
        }
        do {
            loop = try SocketLoop<ControllerCall>(options: options)
        } catch {
            throw ConfigError(source: "bind/connect", problems: ["\(error) (is another controller already using \(config.bind)?)"])
        }
        endpoint = loop.boundEndpoint ?? config.bind
        switch config.role {
        case .region:
            let shell = try RegionShell(settings: RegionInstance.Settings(config: config), store: store,
                                        maxFrameBytes: config.maxMessageBytes, logger: logger, clock: clock, metrics: metrics,
                                        gateway: gateway, access: access, signer: signer)
            handle = { shell.handle($0, backlog: $1) }
            nextWake = { shell.nextWakeNanoseconds }
        case .national:
            let shell = try NationalShell(settings: NationalInstance.Settings(config: config), store: store,
                                          maxFrameBytes: config.maxMessageBytes, logger: logger, clock: clock, metrics: metrics,
                                          access: access)
            handle = { shell.handle($0, backlog: $1) }
            nextWake = { shell.nextWakeNanoseconds }
        }
    }

    /// Reads `authorized_keys` again and puts it in force (SIGHUP); a bad file keeps the old list.
    public func reloadAuthorizedKeys() throws {
        guard let access else { return }
        let list = try AccessList.load(config.authorizedKeys)
        access.replace(list)
        logger.notice("authorized_keys reloaded", metadata: ["keys": "\(list.keys.count)"])
    }

    /// Delivers `body` to the controller as a client's message and waits for its answer (an
    /// `ERROR_REPLY` when refused or unanswered). For the HTTP API; `caller` (the bearer
    /// token's principal) is held to that token's right and tenant and named in the audit log.
    public func ask(_ body: Body, caller: Principal? = nil) async -> Body {
        // The loop answers every ask (an error after `callTimeoutMs` at the latest); this bound
        // covers a loop that has stopped, so an HTTP request never waits forever.
        await OnceAnswer<Body>.awaiting(timeout: .milliseconds(RegionShell.callTimeoutMs + 5000), fallback: {
            var e = Wire.ErrorReply()
            e.code = "unavailable"
            e.message = "the controller did not answer (stopping?); retry"
            return .errorReply(e)
        }, post: { [loop] answer in loop.post(.ask(body, caller: caller, answer: answer)) })
    }

    /// The controller's counts and gauges now, from its loop thread; nil when the loop does not
    /// answer within `timeout` (it is stuck or stopping).
    public func observe(timeout: Duration = .seconds(5)) async -> ControllerObservation? {
        var value = await OnceAnswer<ControllerObservation?>.awaiting(timeout: timeout, fallback: { nil }) { [loop] answer in
            loop.post(.observe(reply: { answer($0) }))
        }
        value?.socket = loop.stats
        return value
    }

    public func run() async throws {
        logger.info("\(config.role.rawValue) controller \(config.id) serving", metadata: [
            "endpoint": "\(endpoint)", "database": "\(config.databasePath)",
        ])
        let loop = self.loop
        await withTaskCancellationOrGracefulShutdownHandler {
            await runOnDedicatedThread(name: "grid-\(config.role.rawValue)") {
                loop.runBatched(nextWake: self.nextWake) { self.handle($0, $1) }
            }
        } onCancelOrGracefulShutdown: {
            loop.stop()
        }
        logger.info("\(config.role.rawValue) controller \(config.id) stopped")
    }
}

