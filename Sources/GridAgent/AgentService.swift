import Foundation
import GridCore
import GridProtocol
import GridTransport
import Logging
import ServiceLifecycle

/// Performs what an `AgentInstance` decides: encodes and sends messages, starts and signals job
/// processes, logs, and feeds back what happened (process started or failed, exits with the
/// output tail). Runs on the socket loop's thread.
public final class AgentShell {
    public private(set) var instance: AgentInstance
    let codec: EnvelopeCodec
    let logger: Logger
    let post: @Sendable (AgentEvent) -> Void
    let outputTailBytes: Int
    let clock: @Sendable () -> Int64
    var processes: [AssignmentID: JobProcess] = [:]
    var sequence: UInt64 = 0
    public private(set) var rejectedFrames = 0

    public init(instance: AgentInstance, maxFrameBytes: Int, outputTailBytes: Int, logger: Logger,
                clock: @escaping @Sendable () -> Int64 = AgentShell.monotonicMs,
                post: @escaping @Sendable (AgentEvent) -> Void) {
        self.instance = instance
        self.codec = EnvelopeCodec(maxFrameBytes: maxFrameBytes)
        self.logger = logger
        self.post = post
        self.outputTailBytes = outputTailBytes
        self.clock = clock
    }

    public static let monotonicMs: @Sendable () -> Int64 = { Int64(DispatchTime.now().uptimeNanoseconds / 1_000_000) }

    public func handle(_ input: LoopInput<AgentEvent>) -> [LoopOutput] {
        let now = clock()
        switch input {
        case .tick: return perform(instance.onTick(now: now))
        case .badShape(let peer, let frames):
            rejectedFrames += 1
            logger.warning("ignored message with \(frames) frames from \(peer.label)")
            return []
        case .event(.inventory(let report)): return perform(instance.onInventory(report, now: now))
        case .event(.exited(let id, let end)):
            let tail = processes.removeValue(forKey: id).map { JobProcess.tail(of: $0.outputPath, limit: outputTailBytes) } ?? ""
            return perform(instance.onProcessExited(id, end, tail: tail, now: now))
        case .frame(_, let payload, _):
            do {
                return perform(instance.receive(try codec.decode(payload), now: now))
            } catch {
                rejectedFrames += 1
                logger.warning("rejected frame from region: \(error)", metadata: ["rejected_total": "\(rejectedFrames)"])
                return []
            }
        }
    }

    func perform(_ directives: [AgentDirective]) -> [LoopOutput] {
        var out: [LoopOutput] = []
        var queue = directives[...]
        while let d = queue.popFirst() {
            switch d {
            case .send(let body):
                sequence &+= 1
                out.append(LoopOutput(to: .upstream, payload: codec.encode(Message(sender: instance.settings.node.rawValue, sequence: sequence, body: body))))
            case .log(let level, let message):
                logger.log(level: level, "\(message)")
            case .signal(let id, let sig):
                processes[id]?.signal(sig)
            case .start(let id, let command, let args, let environment, let outputPath):
                let post = self.post
                let dir = URL(fileURLWithPath: outputPath).deletingLastPathComponent()
                try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
                do {
                    let process = try JobProcess(command: command, args: args, environment: environment, outputPath: outputPath) { end in
                        post(.exited(id, end))
                    }
                    processes[id] = process
                    queue.append(contentsOf: instance.onProcessStarted(id, pid: process.pid, now: clock()))
                } catch {
                    queue.append(contentsOf: instance.onProcessFailed(id, reason: "\(error)", now: clock()))
                }
            }
        }
        return out
    }

    /// Signals every job's process group; used on shutdown so no child outlives the agent.
    public func terminateAll(grace: Double) {
        for p in processes.values { p.signal(SIGTERM) }
        let deadline = Date().addingTimeInterval(grace)
        while Date() < deadline && processes.values.contains(where: { kill($0.pid, 0) == 0 && !Self.isZombie($0.pid) }) {
            usleep(50_000)
        }
        for p in processes.values { p.signal(SIGKILL) }
    }

    static func isZombie(_ pid: pid_t) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return true }
        return stat[stat.index(close, offsetBy: 2)...].hasPrefix("Z")
    }
}

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
    let shell: AgentShell

    public init(config: AgentConfig, source: any InventorySource, initial: InventoryReport, logger: Logger) throws {
        self.config = config
        self.source = source
        self.logger = logger
        let loop = try SocketLoop<AgentEvent>(options: SocketLoopOptions(
            connect: config.region, identity: nil, maxMessageBytes: config.maxMessageBytes, tickMilliseconds: 50))
        self.loop = loop
        var env = ProcessInfo.processInfo.environment.filter { ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER"].contains($0.key) }
        env.merge(config.jobEnvironment) { _, new in new }
        var settings = AgentInstance.Settings(
            node: NodeID(config.nodeID), hostname: ProcessInfo.processInfo.hostName,
            jobsDirectory: URL(fileURLWithPath: config.dataDir).appendingPathComponent("jobs").path, baseEnvironment: env)
        settings.heartbeatIntervalMs = Int64(config.heartbeatIntervalMs)
        settings.killGraceMs = Int64(config.killGraceSeconds * 1000)
        self.shell = AgentShell(instance: AgentInstance(settings: settings, devices: initial.devices),
                                maxFrameBytes: config.maxMessageBytes, outputTailBytes: config.outputTailBytes,
                                logger: logger) { loop.post($0) }
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
                        loop.run { self.shell.handle($0) }
                        self.shell.terminateAll(grace: grace)
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
