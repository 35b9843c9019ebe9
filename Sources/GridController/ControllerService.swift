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
    private let handle: ([LoopInput<Never>], Bool) -> [LoopOutput]
    private let nextWake: () -> UInt64?

    public init(config: ControllerConfig, logger: Logger, clock: MomentClock = .system) throws {
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
        do {
            loop = try SocketLoop<Never>(options: options)
        } catch {
            throw ConfigError(source: "bind/connect", problems: ["\(error) (is another controller already using \(config.bind)?)"])
        }
        endpoint = loop.boundEndpoint ?? config.bind
        switch config.role {
        case .region:
            let shell = try RegionShell(settings: RegionInstance.Settings(config: config), store: store,
                                        maxFrameBytes: config.maxMessageBytes, logger: logger, clock: clock)
            handle = { shell.handle($0, backlog: $1) }
            nextWake = { shell.nextWakeNanoseconds }
        case .national:
            let shell = try NationalShell(settings: NationalInstance.Settings(config: config), store: store,
                                          maxFrameBytes: config.maxMessageBytes, logger: logger, clock: clock)
            handle = { shell.handle($0, backlog: $1) }
            nextWake = { shell.nextWakeNanoseconds }
        }
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
