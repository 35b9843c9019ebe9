import Foundation
import GridCore
import GridTransport
import Logging
import ServiceLifecycle

/// The agent's I/O shell: the socket loop thread (registration, heartbeats, jobs) and a probe
/// task feeding it fresh inventories. Heartbeats never wait for a probe: a hung vendor tool
/// delays only the next inventory. On graceful shutdown every job's process group is
/// terminated so nothing outlives the agent.
public final class AgentService: Service, @unchecked Sendable {
    public let config: AgentConfig
    let source: any InventorySource
    let logger: Logger
    let loop: SocketLoop<AgentEvent>
    /// Touched only on the loop thread once `run` starts.
    let core: AgentCore

    public init(config: AgentConfig, source: any InventorySource, initial: InventoryReport, logger: Logger) throws {
        self.config = config
        self.source = source
        self.logger = logger
        let loop = try SocketLoop<AgentEvent>(options: SocketLoopOptions(
            connect: config.region, identity: nil, maxMessageBytes: config.maxMessageBytes, tickMilliseconds: 50))
        self.loop = loop
        self.core = AgentCore(config: config, initial: initial, logger: logger) { loop.post($0) }
    }

    public func run() async throws {
        let loop = self.loop
        let source = self.source
        let interval = config.probeIntervalSeconds
        let grace = config.killGraceSeconds
        logger.info("agent \(config.nodeID) connecting to \(config.region)")
        await withTaskCancellationOrGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    await runOnDedicatedThread(name: "grid-agent") {
                        loop.run { self.core.handle($0, now: Date()) }
                        self.core.terminateAll(grace: grace)
                    }
                }
                group.addTask {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: .seconds(interval))
                        if Task.isCancelled { break }
                        loop.post(.inventory(await source.collect()))
                    }
                }
                await group.next()
                group.cancelAll()
            }
        } onCancelOrGracefulShutdown: {
            loop.stop()
        }
        logger.info("agent \(config.nodeID) stopped")
    }
}
