import Foundation
import GridCore
import GridStore
import GridTransport
import Logging
import ServiceLifecycle

/// The I/O shell around a controller: owns the SQLite store and the socket loop thread, and
/// stops cleanly on graceful shutdown (SIGTERM/SIGINT through `ServiceGroup`) or cancellation.
public final class ControllerService: Service, @unchecked Sendable {
    /// The endpoint actually bound (ports from `tcp://host:*` resolved).
    public let endpoint: String
    public let config: ControllerConfig
    let loop: SocketLoop<Never>
    let logger: Logger
    /// The role's logic with the clock applied. Touched only on the loop thread once `run` starts.
    private let handle: (LoopInput<Never>) -> [LoopOutput]

    public init(config: ControllerConfig, logger: Logger, clock: @escaping @Sendable () -> Date = { Date() }) throws {
        self.config = config
        self.logger = logger
        let store = try GridStore(path: config.databasePath)
        let options = SocketLoopOptions(
            bind: config.bind, connect: config.role == .region ? config.national : nil, identity: config.id,
            maxMessageBytes: config.maxMessageBytes, tickMilliseconds: 50)
        do {
            loop = try SocketLoop<Never>(options: options)
        } catch {
            throw ConfigError(source: "bind/connect", problems: ["\(error) (is another controller already using \(config.bind)?)"])
        }
        endpoint = loop.boundEndpoint ?? config.bind
        switch config.role {
        case .region:
            let controller = try RegionController(config: config, store: store, logger: logger, now: clock())
            handle = { controller.handle($0, now: clock()) }
        case .national:
            var counter = 0
            let controller = NationalController(config: config, store: store, logger: logger) {
                counter += 1
                let ms = UInt64(max(0, clock().timeIntervalSince1970 * 1000))
                return JobID("j-\(String(ms, radix: 36))-\(counter)")
            }
            handle = { controller.handle($0, now: clock()) }
        }
    }

    public func run() async throws {
        logger.info("\(config.role.rawValue) controller \(config.id) serving", metadata: [
            "endpoint": "\(endpoint)", "database": "\(config.databasePath)",
        ])
        let loop = self.loop
        await withTaskCancellationOrGracefulShutdownHandler {
            await runOnDedicatedThread(name: "grid-\(config.role.rawValue)") {
                loop.run { self.handle($0) }
            }
        } onCancelOrGracefulShutdown: {
            loop.stop()
        }
        logger.info("\(config.role.rawValue) controller \(config.id) stopped")
    }
}
